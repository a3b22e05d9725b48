// @hyperswarm/secret-stream over a udx-native stream (the HyperDHT connection stack
// without the holepunch), for the Rust interop test. 127.0.0.1 only.
//
//   node udx-secret-peer.js <rustPort> <localId> <remoteId> <initiator|responder>
//
// Prints {"port"}, connects stream <localId> to <remoteId> at 127.0.0.1:<rustPort>,
// runs the Noise XX handshake with the seed 0x4a * 32, prints {"handshake":hex}, echoes
// every message until the remote ends, then prints {"echoed":n} and ends.
'use strict'
const UDX = require('udx-native')
const SecretStream = require('@hyperswarm/secret-stream')

const [rustPort, localId, remoteId] = process.argv.slice(2, 5).map(Number)
const initiator = process.argv[5] === 'initiator'
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')
out({ port: socket.address().port })

const raw = udx.createStream(localId)
raw.connect(socket, remoteId, rustPort, '127.0.0.1')

const s = new SecretStream(initiator, raw, { keyPair: SecretStream.keyPair(Buffer.alloc(32, 0x4a)) })
s.on('handshake', () => out({ handshake: s.handshakeHash.toString('hex') }))
let bytes = 0
s.on('data', (m) => {
  bytes += m.length
  s.write(m)
})
s.on('end', () => {
  out({ echoed: bytes })
  s.end()
})
s.on('error', (e) => out({ error: String(e) }))
raw.on('close', () => socket.close().then(() => process.exit(0)))

setTimeout(() => {
  out({ error: 'udx-secret-peer timed out' })
  process.exit(1)
}, 120000).unref()
