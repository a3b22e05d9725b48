// JS side of protomux/mux/tests/js_interop.rs: a protomux 3.12.1 peer over uint24-framed TCP.
// Prints "PORT <n>" once listening; logs what it sees; exits when the stream closes.
const net = require('net')
const Protomux = require('protomux')
const c = require('compact-encoding')
const { Duplex } = require('streamx')

class Framed extends Duplex {
  constructor (sock) {
    super()
    this.sock = sock
    this.buf = Buffer.alloc(0)
    sock.on('data', (d) => this._ondata(d))
    sock.on('end', () => this.push(null))
    sock.on('error', (e) => this.destroy(e))
  }

  _ondata (d) {
    this.buf = Buffer.concat([this.buf, d])
    while (this.buf.length >= 3) {
      const len = this.buf.readUIntLE(0, 3)
      if (this.buf.length < 3 + len) break
      this.push(Buffer.from(this.buf.subarray(3, 3 + len)))
      this.buf = this.buf.subarray(3 + len)
    }
  }

  _write (data, cb) {
    const header = Buffer.alloc(3)
    header.writeUIntLE(data.length, 0, 3)
    this.sock.write(Buffer.concat([header, data]))
    cb()
  }

  _final (cb) {
    this.sock.end()
    cb()
  }
}

const server = net.createServer((sock) => {
  const framed = new Framed(sock)
  framed.on('close', () => {
    // The ghost's slot (index 1) is freed by the reject; the echo channel may take it
    // again if the reject arrived before the echo open.
    console.log('JS: ghost id freed ' + (mux._free.includes(1) || mux._local[1] !== null))
    console.log('JS: stream closed')
    server.close()
  })
  const mux = new Protomux(framed)
  let echoed = 0

  // "echo": opened on request; echoes type t back as type (t + 1) % 3.
  mux.pair({ protocol: 'echo' }, (id) => {
    console.log('JS: pair request ' + (id && id.toString('hex')))
    const ch = mux.createChannel({
      protocol: 'echo',
      id,
      handshake: c.raw,
      onopen (hs) { console.log('JS: echo opened, remote handshake ' + hs.toString()) },
      onclose (isRemote) { console.log('JS: echo closed remote=' + isRemote + ' echoed=' + echoed) }
    })
    for (let t = 0; t < 3; t++) {
      ch.addMessage({
        encoding: c.raw,
        onmessage (m) {
          echoed++
          ch.messages[(t + 1) % 3].send(m)
        }
      })
    }
    ch.open(Buffer.from('js-hs'))
  })

  // "js-first": opened before the Rust side has a channel for it, with messages sent
  // right away (the Rust side holds them for its grace period), then closed by JS.
  const first = mux.createChannel({
    protocol: 'js-first',
    handshake: c.raw,
    messages: [{ encoding: c.raw }, { encoding: c.raw }],
    onopen (hs) {
      console.log('JS: js-first opened, remote handshake ' + hs.toString())
      setTimeout(() => first.close(), 50)
    }
  })
  first.open(Buffer.from('x'))
  first.messages[1].send(Buffer.from('early1'))
  mux.cork()
  first.messages[0].send(Buffer.from('early2'))
  first.messages[1].send(Buffer.from('early3'))
  mux.uncork()

  // "ghost": opened and closed at once; the Rust side's reject frees the id.
  const ghost = mux.createChannel({ protocol: 'ghost' })
  ghost.open()
  ghost.close()
})
server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port))
