// A JS peer for the wire-layer interop tests, built only from the pinned npm modules.
// It speaks over one TCP connection on 127.0.0.1 and reports on stdout as JSON lines.
//
//   node wire-peer.js <mode> <tcp-role> [port] [options]
//     tcp-role: listen (prints {"port":N} first) | connect (needs port)
//   modes:
//     noise <XX|IK> <initiator|responder> [remoteKeyHex]
//         raw noise-handshake with uint24 framing; prints hash and transport keys
//     echo <initiator|responder>
//         secret-stream; echoes every message until the remote ends
//     send <initiator|responder> <bytes>
//         secret-stream; sends <bytes> of pseudo-random data in 64 KiB messages, then
//         reads the same amount back and prints the SHA-256 of both
//     mux <initiator|responder>
//         secret-stream + protomux; see runMux below
'use strict'
const net = require('net')
const crypto = require('crypto')
const Noise = require('noise-handshake')
const curve = require('noise-curve-ed')
const SecretStream = require('@hyperswarm/secret-stream')
const Protomux = require('protomux')
const c = require('compact-encoding')

const [mode, tcpRole, portArg, ...rest] = process.argv.slice(2)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const hex = (b) => Buffer.from(b).toString('hex')
const SEED_JS = Buffer.alloc(32, 0x4a) // 'J'

function withSocket (fn) {
  if (tcpRole === 'listen') {
    const server = net.createServer((socket) => {
      server.close()
      fn(socket)
    })
    server.listen(0, '127.0.0.1', () => out({ port: server.address().port }))
  } else {
    const socket = net.connect(Number(portArg), '127.0.0.1')
    socket.on('connect', () => fn(socket))
  }
}

function fail (err) {
  out({ error: String(err && err.stack || err) })
  process.exit(1)
}

function runNoise (socket) {
  const [pattern, role, remoteKeyHex] = rest
  const initiator = role === 'initiator'
  const keyPair = curve.generateKeyPair(SEED_JS)
  const noise = new Noise(pattern, initiator, keyPair, { curve })
  noise.initialise(Buffer.alloc(0), remoteKeyHex ? Buffer.from(remoteKeyHex, 'hex') : undefined)
  const payloads = []
  let buf = Buffer.alloc(0)
  let step = 0
  const send = () => {
    const m = noise.send(Buffer.from('js payload ' + step++))
    const len = Buffer.alloc(3)
    len.writeUIntLE(m.length, 0, 3)
    socket.write(Buffer.concat([len, m]))
  }
  const done = () => {
    out({ hash: hex(noise.hash), tx: hex(noise.tx), rx: hex(noise.rx), remotePublicKey: hex(noise.rs), publicKey: hex(keyPair.publicKey), payloads })
    socket.end()
  }
  socket.on('data', (data) => {
    buf = Buffer.concat([buf, data])
    while (buf.length >= 3) {
      const len = buf.readUIntLE(0, 3)
      if (buf.length < 3 + len) break
      const m = buf.subarray(3, 3 + len)
      buf = buf.subarray(3 + len)
      try {
        payloads.push(noise.recv(Buffer.from(m)).toString())
        step++
      } catch (err) { return fail(err) }
      if (noise.complete) return done()
      send()
      if (noise.complete) return done()
    }
  })
  socket.on('error', fail)
  if (initiator) send()
}

function secretStream (socket) {
  const initiator = rest[0] === 'initiator'
  const s = new SecretStream(initiator, socket, { keyPair: SecretStream.keyPair(SEED_JS) })
  s.on('error', fail)
  s.on('handshake', () => out({ handshake: hex(s.handshakeHash), publicKey: hex(s.publicKey), remotePublicKey: hex(s.remotePublicKey) }))
  return s
}

function runEcho (socket) {
  const s = secretStream(socket)
  let bytes = 0
  s.on('data', (m) => { bytes += m.length; s.write(m) })
  s.on('end', () => { out({ echoed: bytes }); s.end() })
}

function runSend (socket) {
  const s = secretStream(socket)
  const total = Number(rest[1])
  const sent = crypto.createHash('sha256')
  const got = crypto.createHash('sha256')
  let received = 0
  s.on('data', (m) => {
    got.update(m)
    received += m.length
    if (received >= total) {
      out({ sentSha256: sent.digest('hex'), receivedSha256: got.digest('hex'), bytes: received })
      s.end()
    }
  })
  s.on('end', () => s.end())
  let offset = 0
  let counter = 0
  const pump = () => {
    while (offset < total) {
      const n = Math.min(65536, total - offset)
      const chunk = crypto.createHash('sha512').update('chunk' + counter++).digest()
      const m = Buffer.alloc(n)
      for (let i = 0; i < n; i += 64) chunk.copy(m, i, 0, Math.min(64, n - i))
      sent.update(m)
      offset += n
      if (!s.write(m)) return s.once('drain', pump)
    }
  }
  s.once('connect', pump)
}

// Protomux interop: channels 'interop/alpha' (opened by the initiator side first) and
// 'interop/beta' (opened by the responder side first), each with messages
// [json, buffer, uint]. Every message received is echoed back with the same type
// (json gains "echo": "js"). A json message {"cmd":"close"} makes JS close that channel.
// Every event is printed.
function runMux (socket) {
  const s = secretStream(socket)
  const initiator = rest[0] === 'initiator'
  const mux = new Protomux(s)
  const channels = {}
  const open = (name) => {
    const ch = mux.createChannel({
      protocol: 'interop/' + name,
      id: Buffer.from('id-' + name),
      handshake: c.json,
      onopen (hs) { out({ event: 'open', channel: name, handshake: hs }) },
      onclose (isRemote) { out({ event: 'close', channel: name, remote: isRemote }) }
    })
    const msgs = []
    msgs.push(ch.addMessage({
      encoding: c.json,
      onmessage (m) {
        out({ event: 'message', channel: name, type: 'json', value: m })
        if (m && m.cmd === 'close') return ch.close()
        msgs[0].send({ ...m, echo: 'js' })
      }
    }))
    msgs.push(ch.addMessage({
      encoding: c.buffer,
      onmessage (m) { out({ event: 'message', channel: name, type: 'buffer', value: hex(m) }); msgs[1].send(m) }
    }))
    msgs.push(ch.addMessage({
      encoding: c.uint,
      onmessage (m) { out({ event: 'message', channel: name, type: 'uint', value: m }); msgs[2].send(m + 1) }
    }))
    ch.open({ from: 'js', channel: name })
    channels[name] = ch
  }
  mux.pair({ protocol: 'interop/beta', id: Buffer.from('id-beta') }, () => { if (!channels.beta) open('beta') })
  mux.pair({ protocol: 'interop/alpha', id: Buffer.from('id-alpha') }, () => { if (!channels.alpha) open('alpha') })
  if (initiator) open('alpha')
  else open('beta')
  s.on('end', () => { out({ event: 'end' }); s.end() })
  s.on('close', () => process.exit(0))
}

const modes = { noise: runNoise, echo: runEcho, send: runSend, mux: runMux }
if (!modes[mode]) fail('unknown mode ' + mode)
withSocket(modes[mode])
