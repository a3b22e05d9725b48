// JS half of the wire benchmark: streams bytes over secret-stream + protomux on a TCP
// loopback connection between two node processes and reports MB/s.
//
//   node bench-wire.js receive            prints {"port":N}, then {"bytes":..} when done
//   node bench-wire.js send <port> <MB>   prints {"mbPerSec":..,"seconds":..,"bytes":..}
//
// Channel protocol 'intercom/bench', message 0 = 64 KiB raw chunk, message 1 = the
// receiver's acknowledgement once every byte arrived (a uint byte count).
'use strict'
const net = require('net')
const SecretStream = require('@hyperswarm/secret-stream')
const Protomux = require('protomux')
const c = require('compact-encoding')

const [role, portArg, mbArg] = process.argv.slice(2)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const CHUNK = 65536

function channel (stream, onchunk, onack) {
  const mux = new Protomux(stream)
  const ch = mux.createChannel({ protocol: 'intercom/bench' })
  const data = ch.addMessage({ encoding: c.raw, onmessage: onchunk })
  const ack = ch.addMessage({ encoding: c.uint, onmessage: onack })
  ch.open()
  return { ch, data, ack, mux }
}

if (role === 'receive') {
  const server = net.createServer((socket) => {
    server.close()
    const s = new SecretStream(false, socket)
    let bytes = 0
    let expected = Infinity
    const { ack } = channel(s, (m) => {
      bytes += m.byteLength
      if (bytes >= expected) finish()
    }, (n) => {
      expected = n
      if (bytes >= expected) finish()
    })
    function finish () {
      ack.send(bytes)
      out({ bytes })
    }
    s.on('error', () => {})
    s.on('close', () => process.exit(0))
  })
  server.listen(0, '127.0.0.1', () => out({ port: server.address().port }))
} else {
  const total = Number(mbArg) * 1024 * 1024
  const socket = net.connect(Number(portArg), '127.0.0.1')
  const s = new SecretStream(true, socket)
  const chunk = Buffer.alloc(CHUNK, 0xab)
  let start = 0
  const { data, ack, mux } = channel(s, () => {}, (n) => {
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    out({ bytes: n, seconds, mbPerSec: n / (1024 * 1024) / seconds })
    s.end()
    s.on('close', () => process.exit(0))
  })
  s.on('error', () => {})
  s.once('connect', () => {
    start = process.hrtime.bigint()
    let sent = 0
    ack.send(total) // tell the receiver how much to expect
    const pump = () => {
      while (sent < total) {
        sent += CHUNK
        if (data.send(chunk) === false) return
      }
    }
    mux.stream.on('drain', pump)
    pump()
  })
}
