// Writes tests/golden/hyperdht-messages.json from the pinned JS hyperdht 6.34.0:
//  * messages: every codec of lib/messages.js on representative values (encoded bytes,
//    the JS decoding, and the re-encoding of that decoding), plus strict prefixes of each
//    encoding (all of them for short ones), by message index and length, with the JS
//    decoding when it succeeds (no `decoded` means JS threw);
//  * invalid: hand-made inputs the JS decoders reject;
//  * constants and namespaces (lib/constants.js);
//  * signatures: announce / unannounce / mutable signables and signatures with fixed seeds;
//  * securePayload: a holepunch payload encrypted by lib/secure-payload.js, address
//    tokens and the holepunch secret derivation of lib/noise-wrap.js;
//  * persistent: scripted request sequences run through lib/persistent.js (with the real
//    lib/router.js forwards) and what it replied to each.
// Usage (from /work/main/tests): node node/gen-golden-hyperdht.js
'use strict'
const c = require('compact-encoding')
const sodium = require('sodium-universal')
const fs = require('fs')
const path = require('path')
const DHT = require('hyperdht')
const m = require('hyperdht/lib/messages')
const Persistent = require('hyperdht/lib/persistent')
const Router = require('hyperdht/lib/router')
const SecurePayload = require('hyperdht/lib/secure-payload')
const { COMMANDS, FIREWALL, ERROR, NS } = require('hyperdht/lib/constants')

const hex = (b) => Buffer.from(b).toString('hex')
const buf = (n, len = 32) => Buffer.alloc(len, n)
const hash = (b) => DHT.hash(Buffer.from(b))

// JSON form of decoded values: buffers as hex, addresses as "host:port" ("[v6]:port").
function norm(v) {
  if (v === null || v === undefined) return null
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return hex(v)
  if (Array.isArray(v)) return v.map(norm)
  if (typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 2 && 'host' in v && 'port' in v) {
      return v.host.includes(':') ? `[${v.host}]:${v.port}` : `${v.host}:${v.port}`
    }
    const out = {}
    for (const k of keys) out[k] = norm(v[k])
    return out
  }
  return v
}

const a4 = (i, port) => ({ host: `10.0.${i}.${i + 1}`, port })

const samples = {
  peer: [
    { publicKey: buf(1), relayAddresses: [] },
    { publicKey: buf(2), relayAddresses: [a4(1, 49737), a4(2, 1), { host: '255.255.255.255', port: 65535 }] }
  ],
  peers: [[], [{ publicKey: buf(3), relayAddresses: [a4(3, 80)] }, { publicKey: buf(4), relayAddresses: [] }]],
  lookupRawReply: [
    { peers: [], bump: 0 },
    {
      peers: [
        c.encode(m.peer, { publicKey: buf(5), relayAddresses: [a4(4, 4000)] }),
        c.encode(m.peer, { publicKey: buf(6), relayAddresses: [] })
      ],
      bump: 1700000000123
    }
  ],
  announce: [
    { peer: null, refresh: null, signature: null, bump: 0 },
    { peer: null, refresh: buf(7), signature: null, bump: 0 },
    { peer: { publicKey: buf(8), relayAddresses: [a4(5, 5)] }, refresh: null, signature: buf(9, 64), bump: 0 },
    { peer: { publicKey: buf(10), relayAddresses: [] }, refresh: buf(11), signature: buf(12, 64), bump: 253 },
    { peer: { publicKey: buf(13), relayAddresses: [] }, refresh: null, signature: buf(14, 64), bump: 2 ** 53 - 1 }
  ],
  handshake: [
    { mode: 0, noise: Buffer.alloc(0), peerAddress: null, relayAddress: null },
    { mode: 2, noise: buf(15, 96), peerAddress: a4(6, 6), relayAddress: null },
    { mode: 3, noise: buf(16, 300), peerAddress: a4(7, 7), relayAddress: a4(8, 8) },
    { mode: 4, noise: buf(17, 5), peerAddress: null, relayAddress: a4(9, 9) }
  ],
  noisePayload: [
    { version: 1, error: 0, firewall: 0 },
    {
      version: 1,
      error: 3,
      firewall: FIREWALL.CONSISTENT,
      holepunch: { id: 7, relays: [{ relayAddress: a4(10, 10), peerAddress: a4(11, 11) }] },
      addresses4: [a4(12, 12), a4(13, 13)],
      addresses6: [{ host: '::1', port: 443 }, { host: '2001:db8::ff00:42:8329', port: 8080 }],
      udx: { reusableSocket: true, id: 70000, seq: 12345 },
      secretStream: {},
      relayThrough: { publicKey: buf(18), token: buf(19) },
      relayAddresses: [a4(14, 14)]
    },
    {
      version: 1,
      error: 0,
      firewall: FIREWALL.RANDOM,
      holepunch: { id: 0, relays: [] },
      addresses4: [],
      addresses6: [],
      udx: { reusableSocket: false, id: 1, seq: 0 },
      secretStream: null,
      relayThrough: null,
      relayAddresses: []
    }
  ],
  holepunch: [
    { mode: 0, id: 0, payload: Buffer.alloc(0), peerAddress: null },
    { mode: 2, id: 300, payload: buf(20, 64), peerAddress: a4(15, 15) }
  ],
  holepunchPayload: [
    { error: 0, firewall: 0, round: 0, connected: false, punching: false, addresses: null, remoteAddress: null, token: null, remoteToken: null },
    { error: 1, firewall: 2, round: 9, connected: true, punching: true, addresses: [], remoteAddress: a4(16, 16), token: buf(21), remoteToken: buf(22) },
    { error: 0, firewall: 1, round: 1, connected: false, punching: true, addresses: [a4(17, 17)], remoteAddress: null, token: null, remoteToken: buf(23) }
  ],
  mutableSignable: [
    { seq: 0, value: Buffer.alloc(0) },
    { seq: 65536, value: Buffer.from('hello world') }
  ],
  mutablePutRequest: [
    { publicKey: buf(24), seq: 0, value: Buffer.from('x'), signature: buf(25, 64) },
    { publicKey: buf(26), seq: 4294967296, value: buf(27, 1000), signature: buf(28, 64) }
  ],
  mutableGetResponse: [
    { seq: 1, value: Buffer.alloc(0), signature: buf(29, 64) },
    { seq: 0xfd, value: Buffer.from('value'), signature: buf(30, 64) }
  ],
  pluginRequest: [
    { plugin: 'p', version: 1, command: 0, value: null },
    { plugin: 'blind-relay', version: 2, command: 300, value: Buffer.from('payload') }
  ]
}

function tryDecode(type, bytes) {
  try {
    return { decoded: norm(c.decode(m[type], bytes)) }
  } catch (err) {
    return { error: err.message }
  }
}

const messages = []
const prefixes = []
for (const [type, list] of Object.entries(samples)) {
  for (const value of list) {
    const encoded = c.encode(m[type], value)
    const decoded = c.decode(m[type], encoded)
    // A decoded lookupRawReply holds peer objects; the encoder takes raw records.
    const again = type === 'lookupRawReply' ? { ...decoded, peers: decoded.peers.map((p) => c.encode(m.peer, p)) } : decoded
    const reencoded = c.encode(m[type], again)
    messages.push({ type, encoded: hex(encoded), decoded: norm(decoded), reencoded: hex(reencoded) })
    const len = encoded.byteLength
    for (let n = 0; n < len; n++) {
      // Long values: every field boundary is near the start or the end.
      if (len > 160 && n >= 80 && n < len - 80 && n % 20 !== 0) continue
      const r = tryDecode(type, encoded.subarray(0, n))
      prefixes.push(r.error ? { message: messages.length - 1, length: n } : { message: messages.length - 1, length: n, decoded: r.decoded })
    }
  }
}

// Other-version noise payloads are returned without decoding the rest.
messages.push({
  type: 'noisePayload',
  encoded: '02ffffff',
  decoded: norm(c.decode(m.noisePayload, Buffer.from('02ffffff', 'hex'))),
  reencoded: hex(c.encode(m.noisePayload, c.decode(m.noisePayload, Buffer.from('02ffffff', 'hex'))))
})
// A flag bit for a bump of zero decodes to bump 0, which is re-encoded without the flag.
messages.push({
  type: 'announce',
  encoded: '0800',
  decoded: norm(c.decode(m.announce, Buffer.from('0800', 'hex'))),
  reencoded: hex(c.encode(m.announce, c.decode(m.announce, Buffer.from('0800', 'hex'))))
})

const invalidInputs = [
  ['peers', 'fe01001000'], // array of 0x100001 elements
  ['peer', hex(buf(1)) + 'fe01001000'],
  ['mutableSignable', 'ff' + '0000000000002000'], // 2^53
  ['announce', '08ff0000000000002000'],
  ['lookupRawReply', '00ff0000000000002000'],
  ['noisePayload', '01ff'],
  ['holepunchPayload', '04000000' + '02' + '0a000001'],
  ['handshake', '0100' + '00' + '0a0000'],
  ['mutablePutRequest', hex(buf(1)) + '00' + '05' + '0102']
]
const invalid = invalidInputs.map(([type, h]) => {
  const r = tryDecode(type, Buffer.from(h, 'hex'))
  if (!r.error) throw new Error(`expected ${type} ${h} to fail`)
  return { type, hex: h, error: r.error }
})

// Signatures. A keyPair with a `sign` hook lets us capture the exact signable.
function capturing(kp) {
  const cap = { signable: null }
  cap.keyPair = {
    publicKey: kp.publicKey,
    sign(signable) {
      cap.signable = Buffer.from(signable)
      const sig = Buffer.alloc(64)
      sodium.crypto_sign_detached(sig, signable, kp.secretKey)
      return sig
    }
  }
  return cap
}

const seedKp = (n) => DHT.keyPair(buf(n))
const signatures = { announce: [], mutable: [], keyPairs: [] }
for (const n of [1, 2, 3, 4]) {
  const kp = seedKp(n)
  signatures.keyPairs.push({ seed: hex(buf(n)), publicKey: hex(kp.publicKey), target: hex(DHT.hash(kp.publicKey)) })
}
const annCases = [
  { seed: 1, target: hash('topic'), token: buf(0x71), id: buf(0x81), relayAddresses: [], refresh: null },
  { seed: 2, target: hash('other'), token: buf(0x72), id: buf(0x82), relayAddresses: [a4(1, 1), a4(2, 2)], refresh: buf(0x91) },
  { seed: 3, target: null, token: buf(0x73), id: buf(0x83), relayAddresses: [a4(3, 3)], refresh: null }
]
for (const a of annCases) {
  const kp = seedKp(a.seed)
  const target = a.target || DHT.hash(kp.publicKey)
  const ann = { peer: { publicKey: kp.publicKey, relayAddresses: a.relayAddresses }, refresh: a.refresh, signature: null }
  const capA = capturing(kp)
  const sigA = Persistent.signAnnounce(target, a.token, a.id, ann, capA.keyPair)
  const capU = capturing(kp)
  const sigU = Persistent.signUnannounce(target, a.token, a.id, ann, capU.keyPair)
  const plainSig = Persistent.signAnnounce(target, a.token, a.id, ann, kp)
  if (!plainSig.equals(sigA)) throw new Error('sign hook differs')
  signatures.announce.push({
    seed: hex(buf(a.seed)),
    target: hex(target),
    token: hex(a.token),
    nodeId: hex(a.id),
    peer: norm(ann.peer),
    refresh: norm(a.refresh),
    announceSignable: hex(capA.signable),
    announceSignature: hex(sigA),
    unannounceSignable: hex(capU.signable),
    unannounceSignature: hex(sigU),
    announceValue: hex(c.encode(m.announce, { ...ann, signature: sigA, bump: 0 }))
  })
}
for (const [n, seq, value] of [[1, 0, ''], [2, 1, 'hello'], [3, 2 ** 40, 'x'.repeat(300)]]) {
  const kp = seedKp(n)
  const cap = capturing(kp)
  const sig = Persistent.signMutable(seq, Buffer.from(value), cap.keyPair)
  if (!Persistent.verifyMutable(sig, seq, Buffer.from(value), kp.publicKey)) throw new Error('verify')
  signatures.mutable.push({
    seed: hex(buf(n)),
    seq,
    value: hex(Buffer.from(value)),
    signable: hex(cap.signable),
    signature: hex(sig),
    target: hex(DHT.hash(kp.publicKey)),
    putRequest: hex(c.encode(m.mutablePutRequest, { publicKey: kp.publicKey, seq, value: Buffer.from(value), signature: sig }))
  })
}
signatures.immutable = ['', 'hello', 'x'.repeat(1000)].map((v) => ({ value: hex(Buffer.from(v)), target: hex(hash(v)) }))

// Secure holepunch payloads.
const handshakeHash = Buffer.alloc(64)
for (let i = 0; i < 64; i++) handshakeHash[i] = i
const holepunchSecret = Buffer.alloc(32)
sodium.crypto_generichash(holepunchSecret, NS.PEER_HOLEPUNCH, handshakeHash)
// Deterministic output: the nonces secure-payload draws come from a counter while it runs.
const randombytes = sodium.randombytes_buf
let nonceCounter = 0
sodium.randombytes_buf = (b) => b.fill(++nonceCounter)
const sp = new SecurePayload(holepunchSecret)
sp._localSecret = buf(0x42)
const payloads = samples.holepunchPayload.map((p) => ({ payload: norm(c.decode(m.holepunchPayload, c.encode(m.holepunchPayload, p))), encrypted: hex(sp.encrypt(p)) }))
sodium.randombytes_buf = randombytes
const securePayload = {
  handshakeHash: hex(handshakeHash),
  holepunchSecret: hex(holepunchSecret),
  localSecret: hex(sp._localSecret),
  payloads,
  tokens: ['1.2.3.4', '127.0.0.1', '255.255.255.255'].map((host) => ({ host, token: hex(sp.token({ host, port: 1 })) }))
}

// Persistent scenarios.
function scenario(name, limits, script) {
  const nodeId = buf(0xee)
  const dht = { id: nodeId }
  dht._router = new Router(dht, { forwards: limits.forwards })
  const p = new Persistent(dht, limits)
  const steps = []
  const now = NOW
  const run = (command, { target = null, token = null, value = null, from = { host: '1.1.1.1', port: 1111 } }) => {
    let out = { kind: 'drop' }
    const req = {
      target,
      token,
      value,
      from,
      reply(v, opts = {}) {
        out = { kind: 'reply', value: v ? hex(v) : null, token: opts.token !== false, closerNodes: opts.closerNodes !== false }
      },
      error(code, opts = {}) {
        out = { kind: 'error', code, token: opts.token === true, closerNodes: opts.closerNodes !== false }
      }
    }
    switch (command) {
      case COMMANDS.FIND_PEER: p.onfindpeer(req); break
      case COMMANDS.LOOKUP: p.onlookup(req); break
      case COMMANDS.ANNOUNCE: p.onannounce(req); break
      case COMMANDS.UNANNOUNCE: p.onunannounce(req); break
      case COMMANDS.MUTABLE_PUT: p.onmutableput(req); break
      case COMMANDS.MUTABLE_GET: p.onmutableget(req); break
      case COMMANDS.IMMUTABLE_PUT: p.onimmutableput(req); break
      case COMMANDS.IMMUTABLE_GET: p.onimmutableget(req); break
      default: throw new Error('command')
    }
    const step = { command, target: norm(target), token: norm(token), value: norm(value), from: norm(from), reply: out }
    if (command === COMMANDS.LOOKUP && target) {
      // Every record the reply may have been sampled from.
      const k = hex(target)
      const all = p.records.get(k).map(hex)
      const fwd = dht._router.get(k)
      if (fwd) all.push(hex(fwd.record))
      step.candidates = all.sort()
    }
    steps.push(step)
    return out
  }
  const ctx = {
    nodeId,
    now,
    run,
    announce(kp, target, { token = buf(0x70), relayAddresses = [], refresh = null, bump = 0, signToken = token || buf(0x70), signId = nodeId, from } = {}) {
      const ann = { peer: { publicKey: kp.publicKey, relayAddresses }, refresh, signature: null, bump }
      ann.signature = Persistent.signAnnounce(target, signToken, signId, ann, kp)
      return run(COMMANDS.ANNOUNCE, { target, token, value: c.encode(m.announce, ann), from })
    },
    unannounce(kp, target, { token = buf(0x70), signToken = token || buf(0x70) } = {}) {
      const ann = { peer: { publicKey: kp.publicKey, relayAddresses: [] }, refresh: null, signature: null }
      ann.signature = Persistent.signUnannounce(target, signToken, nodeId, ann, kp)
      return run(COMMANDS.UNANNOUNCE, { target, token, value: c.encode(m.announce, ann) })
    },
    refresh(target, refresh, from) {
      return run(COMMANDS.ANNOUNCE, { target, token: buf(0x70), value: c.encode(m.announce, { peer: null, refresh, signature: null, bump: 0 }), from })
    },
    mutablePut(kp, seq, value, { token = buf(0x70), target = DHT.hash(kp.publicKey), signSeq = seq } = {}) {
      const signature = Persistent.signMutable(signSeq, Buffer.from(value), kp)
      return run(COMMANDS.MUTABLE_PUT, { target, token, value: c.encode(m.mutablePutRequest, { publicKey: kp.publicKey, seq, value: Buffer.from(value), signature }) })
    },
    mutableGet(kp, seq) {
      return run(COMMANDS.MUTABLE_GET, { target: DHT.hash(kp.publicKey), value: c.encode(c.uint, seq) })
    }
  }
  script(ctx)
  p.destroy()
  dht._router.destroy()
  return { name, nodeId: hex(nodeId), now, limits, steps }
}

// persistent.js checks bumps against Date.now(): pin it so the output is reproducible.
const NOW = 1700000000000
Date.now = () => NOW
// record-cache samples lookups with Math.random: make it a fixed sequence.
let rand = 1
Math.random = () => {
  rand = (rand * 48271) % 2147483647
  return rand / 2147483647
}

const big = { maxSize: 1000, maxAge: 0 }
const bigLimits = { records: big, refreshes: big, mutables: big, immutables: big, bumps: big, forwards: big }

const main = scenario('main', bigLimits, (s) => {
  const [A, B, C, S] = [1, 2, 3, 4].map(seedKp)
  const T = hash('topic')
  const T2 = hash('topic 2')
  const tok = buf(0x70)

  s.run(COMMANDS.LOOKUP, { target: T })
  s.run(COMMANDS.LOOKUP, {})
  s.run(COMMANDS.FIND_PEER, {})
  s.announce(A, T, { token: null })
  s.run(COMMANDS.ANNOUNCE, { token: tok, value: Buffer.from([0]) })
  s.run(COMMANDS.ANNOUNCE, { target: T, token: tok })
  s.run(COMMANDS.ANNOUNCE, { target: T, token: tok, value: Buffer.from([0]) })
  s.run(COMMANDS.ANNOUNCE, { target: T, token: tok, value: Buffer.from([1, 2, 3]) })
  s.run(COMMANDS.ANNOUNCE, { target: T, token: tok, value: c.encode(m.announce, { peer: { publicKey: A.publicKey, relayAddresses: [] }, refresh: null, signature: null, bump: 0 }) })
  s.announce(A, T, { relayAddresses: [a4(1, 1), a4(2, 2), a4(3, 3), a4(4, 4)], bump: 1000 })
  s.announce(B, T, { signToken: buf(0x99) })
  s.announce(B, T, { signId: buf(0x98) })
  s.announce(B, T, { bump: 500, relayAddresses: [a4(5, 5)] })
  s.announce(C, T, { bump: s.now + 10 * 60 * 1000 })
  s.run(COMMANDS.LOOKUP, { target: T })
  // A record still fresh keeps its old value.
  s.announce(A, T, { relayAddresses: [a4(9, 9)], bump: s.now + 30 * 1000 })
  s.run(COMMANDS.LOOKUP, { target: T })

  // A server announcing its own key becomes a forward.
  const TS = DHT.hash(S.publicKey)
  const y = buf(0x55)
  const x = DHT.hash(y)
  s.run(COMMANDS.FIND_PEER, { target: TS })
  s.announce(S, TS, { relayAddresses: [a4(6, 6)], refresh: x, from: { host: '2.2.2.2', port: 2222 } })
  s.run(COMMANDS.FIND_PEER, { target: TS })
  s.run(COMMANDS.LOOKUP, { target: TS })
  s.unannounce(S, TS)
  s.run(COMMANDS.FIND_PEER, { target: TS })
  s.refresh(TS, y, { host: '3.3.3.3', port: 3333 })
  s.run(COMMANDS.FIND_PEER, { target: TS })
  s.refresh(TS, y)
  s.refresh(TS, x)
  // Someone else announcing under the server's target is a normal record.
  s.announce(A, TS)
  s.run(COMMANDS.LOOKUP, { target: TS })

  // Refresh of a topic record.
  const y2 = buf(0x56)
  s.announce(B, T2, { refresh: DHT.hash(y2) })
  s.unannounce(B, T2)
  s.run(COMMANDS.LOOKUP, { target: T2 })
  s.refresh(hash('unrelated'), y2)
  s.run(COMMANDS.LOOKUP, { target: T2 })
  s.refresh(T2, buf(0x57))
  s.refresh(T2, null)

  // Unannounce.
  s.unannounce(A, T, { signToken: buf(0x99) })
  s.unannounce(A, T, { token: null })
  s.run(COMMANDS.UNANNOUNCE, { target: T, token: tok, value: c.encode(m.announce, { peer: null, refresh: null, signature: buf(1, 64), bump: 0 }) })
  s.run(COMMANDS.UNANNOUNCE, { target: T, token: tok, value: c.encode(m.announce, { peer: { publicKey: A.publicKey, relayAddresses: [] }, refresh: null, signature: null, bump: 0 }) })
  s.run(COMMANDS.UNANNOUNCE, { target: T, token: tok })
  s.unannounce(A, T)
  s.run(COMMANDS.LOOKUP, { target: T })
  s.unannounce(A, T)

  // Lookups return at most 20 records.
  const T3 = hash('crowded')
  for (let i = 0; i < 25; i++) s.announce(seedKp(100 + i), T3)
  s.run(COMMANDS.LOOKUP, { target: T3 })

  // Mutable values.
  s.mutableGet(A, 0)
  s.mutablePut(A, 1, 'v1')
  s.mutableGet(A, 0)
  s.mutableGet(A, 1)
  s.mutableGet(A, 2)
  s.mutablePut(A, 1, 'other')
  s.mutablePut(A, 0, 'old')
  s.mutablePut(A, 1, 'v1')
  s.mutablePut(A, 2, 'v2')
  s.mutableGet(A, 2)
  s.mutablePut(A, 3, 'v3', { token: null })
  s.mutablePut(A, 3, 'v3', { target: T })
  s.mutablePut(A, 3, 'v3', { signSeq: 4 })
  s.mutablePut(B, 0, '')
  s.mutableGet(B, 0)
  s.run(COMMANDS.MUTABLE_GET, { target: DHT.hash(A.publicKey) })
  s.run(COMMANDS.MUTABLE_GET, { target: DHT.hash(A.publicKey), value: Buffer.alloc(0) })
  s.run(COMMANDS.MUTABLE_GET, { value: c.encode(c.uint, 0) })
  s.run(COMMANDS.MUTABLE_PUT, { target: DHT.hash(A.publicKey), token: tok, value: Buffer.from([1, 2]) })
  s.run(COMMANDS.MUTABLE_PUT, { target: DHT.hash(A.publicKey), token: tok })

  // Immutable values.
  const v = Buffer.from('hello')
  s.run(COMMANDS.IMMUTABLE_GET, { target: hash(v) })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: hash(v), value: v })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: hash(v), token: tok })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: T, token: tok, value: v })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: hash(v), token: tok, value: v })
  s.run(COMMANDS.IMMUTABLE_GET, { target: hash(v) })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: hash(''), token: tok, value: Buffer.alloc(0) })
  s.run(COMMANDS.IMMUTABLE_GET, { target: hash('') })
  s.run(COMMANDS.IMMUTABLE_GET, {})
})

const small = (maxSize) => ({ maxSize, maxAge: 0 })
const gc = scenario('size-gc', { records: small(3), refreshes: small(2), mutables: small(2), immutables: small(2), bumps: small(2), forwards: small(2) }, (s) => {
  const T = hash('gc topic')
  const kps = [1, 2, 3, 4, 5, 6, 7].map(seedKp)
  for (const kp of kps.slice(0, 4)) s.announce(kp, T)
  s.run(COMMANDS.LOOKUP, { target: T })
  for (const kp of kps.slice(4)) s.announce(kp, T)
  s.run(COMMANDS.LOOKUP, { target: T })
  s.announce(kps[6], T)
  s.announce(kps[5], T)
  s.announce(kps[4], T)
  s.announce(kps[0], T)
  s.run(COMMANDS.LOOKUP, { target: T })
  s.announce(kps[1], T)
  s.run(COMMANDS.LOOKUP, { target: T })

  const vals = ['a', 'b', 'c', 'd'].map((x) => Buffer.from(x))
  for (const v of vals) s.run(COMMANDS.IMMUTABLE_PUT, { target: hash(v), token: buf(0x70), value: v })
  for (const v of vals) s.run(COMMANDS.IMMUTABLE_GET, { target: hash(v) })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: hash(vals[2]), token: buf(0x70), value: vals[2] })
  s.run(COMMANDS.IMMUTABLE_PUT, { target: hash('e'), token: buf(0x70), value: Buffer.from('e') })
  for (const v of [...vals, Buffer.from('e')]) s.run(COMMANDS.IMMUTABLE_GET, { target: hash(v) })

  for (const kp of kps.slice(0, 3)) s.mutablePut(kp, 1, 'm')
  for (const kp of kps.slice(0, 3)) s.mutableGet(kp, 0)

  // Server forwards and bumps under size pressure.
  for (const kp of kps.slice(0, 3)) s.announce(kp, DHT.hash(kp.publicKey))
  for (const kp of kps.slice(0, 3)) s.run(COMMANDS.FIND_PEER, { target: DHT.hash(kp.publicKey) })
  const topics = ['b1', 'b2', 'b3'].map(hash)
  topics.forEach((t, i) => s.announce(kps[i], t, { bump: 10 + i }))
  for (const t of topics) s.run(COMMANDS.LOOKUP, { target: t })
})

const out = {
  generator: 'tests/node/gen-golden-hyperdht.js',
  hyperdht: require('hyperdht/package.json').version,
  constants: { COMMANDS, FIREWALL, ERROR },
  namespaces: Object.fromEntries(Object.entries(NS).map(([k, v]) => [k, hex(v)])),
  messages,
  prefixes,
  invalid,
  signatures,
  securePayload,
  persistent: [main, gc]
}

const file = path.join(__dirname, '..', 'golden', 'hyperdht-messages.json')
fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n')
console.log(`wrote ${messages.length} messages, ${prefixes.length} prefixes, ${main.steps.length + gc.steps.length} persistent steps to ${file}`)
