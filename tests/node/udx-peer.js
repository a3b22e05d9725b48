// A udx-native stream peer for the Rust interop tests, on 127.0.0.1 only.
//
//   node udx-peer.js <rustPort> <localId> <remoteId> <sendBytes> [mode]
//
// Binds a UDX socket, prints {"port"}, connects stream <localId> to <remoteId> at
// 127.0.0.1:<rustPort>, writes <sendBytes> pseudo-random bytes (SHA-256 reported) and
// ends, hashes what it reads, and reports:
//   {"event":"finish","sent":n,"sha256":hex}     after its END was acknowledged
//   {"event":"end","received":n,"sha256":hex}    when the peer's END arrived
//   {"event":"message","data":"..."}             per message (echoed back with trySend)
//   {"event":"close","received":n,"err":null|code}  when the stream closed, then exits
// mode "hold" sends, then waits for the peer to end before ending itself; "idle" sends
// nothing and ends when the peer ends; "destroy" destroys the stream on the first data.

const UDX = require('udx-native')
const crypto = require('crypto')

const [rustPort, localId, remoteId, sendBytes] = process.argv.slice(2, 6).map(Number)
const mode = process.argv[6] || 'normal'

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')
out({ port: socket.address().port })

const stream = udx.createStream(localId)
stream.connect(socket, remoteId, rustPort, '127.0.0.1')

const rxHash = crypto.createHash('sha256')
let received = 0
let destroyed = false

stream.on('data', (d) => {
  rxHash.update(d)
  received += d.length
  if (mode === 'destroy' && !destroyed) {
    destroyed = true
    stream.destroy()
  }
})
stream.on('end', () => {
  out({ event: 'end', received, sha256: rxHash.digest('hex') })
  if (mode === 'hold' || mode === 'idle') stream.end()
})
stream.on('message', (m) => {
  out({ event: 'message', data: m.toString() })
  stream.trySend(Buffer.concat([Buffer.from('echo:'), m]))
})
let lastError = null
stream.on('error', (e) => {
  lastError = e.code || e.message
})
stream.on('close', () => {
  out({ event: 'close', received, err: lastError })
  socket.close().then(() => process.exit(0))
})

// Fresh random chunks: udx-native keeps a reference to each written buffer until acked.
const txHash = crypto.createHash('sha256')
let sent = 0

function pump() {
  while (sent < sendBytes) {
    const chunk = crypto.randomBytes(Math.min(65536, sendBytes - sent))
    txHash.update(chunk)
    sent += chunk.length
    if (!stream.write(chunk)) return stream.once('drain', pump)
  }
  if (mode !== 'hold' && mode !== 'destroy') stream.end()
}

stream.on('finish', () => out({ event: 'finish', sent, sha256: txHash.digest('hex') }))

if (mode !== 'idle') pump()

setTimeout(() => {
  out({ error: 'udx-peer timed out' })
  process.exit(1)
}, 120000).unref()
