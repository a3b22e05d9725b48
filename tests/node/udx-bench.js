// One end of a udx-native throughput run, for benches/udx_throughput.rs (127.0.0.1 only).
//
//   node udx-bench.js send|recv <localId> <remoteId> <bytes>
//
// Binds, prints {"port"}, reads the peer's port from the first stdin line and connects.
// A sender then waits for a "go" line, writes <bytes> (one reused 64 KiB buffer) and
// ends, printing {"event":"finish"} once its END is acked. A receiver counts bytes and
// prints {"event":"end","bytes":n} at the peer's END, then ends too. Exits on close.

const UDX = require('udx-native')
const readline = require('readline')

const [role, localId, remoteId, bytes] = [
  process.argv[2],
  ...process.argv.slice(3, 6).map(Number)
]
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')
out({ port: socket.address().port })

const stream = udx.createStream(localId)
stream.on('error', (e) => out({ event: 'stream-error', code: e.code }))
stream.on('close', () => socket.close().then(() => process.exit(0)))

let received = 0
stream.on('data', (d) => {
  received += d.length
})
stream.on('end', () => {
  out({ event: 'end', bytes: received })
  stream.end()
})
stream.on('finish', () => out({ event: 'finish' }))

const chunk = Buffer.alloc(65536, 0x5a)
let sent = 0
function pump() {
  while (sent < bytes) {
    const c = bytes - sent >= chunk.length ? chunk : chunk.subarray(0, bytes - sent)
    sent += c.length
    if (!stream.write(c)) return stream.once('drain', pump)
  }
  stream.end()
}

const lines = readline.createInterface({ input: process.stdin })
let step = 0
lines.on('line', (line) => {
  if (step++ === 0) {
    stream.connect(socket, remoteId, Number(line), '127.0.0.1')
    out({ event: 'connected' })
  } else if (line === 'go' && role === 'send') {
    pump()
  }
})

setTimeout(() => {
  out({ event: 'timeout' })
  process.exit(1)
}, 300000).unref()
