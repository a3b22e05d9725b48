// Writes tests/golden/noise.json: Noise XX and IK transcripts made by the pinned JS
// noise-handshake + noise-curve-ed with fixed static and ephemeral keys, plus
// DHT.keyPair(seed) outputs and secret-stream stream ids.
// Usage: node tests/node/gen-golden-noise.js
'use strict'
const Noise = require('noise-handshake')
const curve = require('noise-curve-ed')
const DHT = require('hyperdht')
const SecretStream = require('@hyperswarm/secret-stream')
const fs = require('fs')
const path = require('path')

const hex = (b) => Buffer.from(b).toString('hex')
const seed = (n) => Buffer.alloc(32, n)

function transcript (pattern, prologue, payloads) {
  const si = curve.generateKeyPair(seed(1))
  const sr = curve.generateKeyPair(seed(2))
  const i = new Noise(pattern, true, si, { curve })
  const r = new Noise(pattern, false, sr, { curve })
  i.initialise(prologue, pattern === 'IK' ? sr.publicKey : undefined)
  r.initialise(prologue)
  i.e = curve.generateKeyPair(seed(3))
  r.e = curve.generateKeyPair(seed(4))
  const messages = []
  let from = i
  let to = r
  let k = 0
  while (!i.complete || !r.complete) {
    const payload = Buffer.from(payloads[k++] || '')
    const m = from.send(payload)
    // recv zeroes the remote ephemeral key inside the buffer it was given once the
    // handshake completes, so keep a copy of the message as it went on the wire.
    const wire = Buffer.from(m)
    const got = to.recv(m)
    messages.push({ payload: hex(payload), message: hex(wire), received: hex(got) })
    ;[from, to] = [to, from]
  }
  return {
    pattern,
    prologue: hex(prologue),
    initiatorSeed: hex(seed(1)),
    responderSeed: hex(seed(2)),
    initiatorEphemeralSeed: hex(seed(3)),
    responderEphemeralSeed: hex(seed(4)),
    messages,
    hash: hex(i.hash),
    initiatorTx: hex(i.tx),
    initiatorRx: hex(i.rx),
    responderTx: hex(r.tx),
    responderRx: hex(r.rx)
  }
}

const transcripts = [
  transcript('XX', Buffer.alloc(0), []),
  transcript('XX', Buffer.from('some prologue'), ['hello', 'from responder', 'last']),
  transcript('IK', Buffer.alloc(0), ['ik payload from initiator', 'ik reply']),
  transcript('IK', Buffer.from('prologue'), [])
]

const keyPairs = [0, 1, 42, 255].map((n) => {
  const kp = DHT.keyPair(seed(n))
  return { seed: hex(seed(n)), publicKey: hex(kp.publicKey), secretKey: hex(kp.secretKey) }
})

const hash = Buffer.from(transcripts[0].hash, 'hex')
const streamIds = {
  handshakeHash: hex(hash),
  initiator: hex(SecretStream.id(hash, true)),
  responder: hex(SecretStream.id(hash, false))
}

const out = path.join(__dirname, '..', 'golden', 'noise.json')
fs.writeFileSync(out, JSON.stringify({ generator: 'tests/node/gen-golden-noise.js', transcripts, keyPairs, streamIds }, null, 1) + '\n')
console.log('wrote', transcripts.length, 'transcripts to', out)
