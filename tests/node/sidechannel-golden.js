// Sidechannel vectors, from a plain-JS rendition of the wire facts of Intercom's
// features/sidechannel (payload signature and proof-of-work bases, welcomes, invites,
// c.json framing), using the pinned sodium-native and compact-encoding.
//
// Usage:
//   node tests/node/sidechannel-golden.js            writes tests/golden/sidechannel.json
//   node tests/node/sidechannel-golden.js verify F   checks the vectors in F (made by the
//                                                    Rust crate) and prints a JSON report
'use strict'
const sodium = require('sodium-native')
const c = require('compact-encoding')
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')

const hex = (b) => Buffer.from(b).toString('hex')

function keyPair (n) {
  const publicKey = Buffer.alloc(32)
  const secretKey = Buffer.alloc(64)
  sodium.crypto_sign_seed_keypair(publicKey, secretKey, Buffer.alloc(32, n))
  return { publicKey, secretKey }
}

function signHex (text, secretKey) {
  const sig = Buffer.alloc(64)
  sodium.crypto_sign_detached(sig, Buffer.from(text), secretKey)
  return hex(sig)
}

function verifyHex (sigHex, text, keyHex) {
  const sig = Buffer.from(String(sigHex), 'hex')
  const key = Buffer.from(String(keyHex), 'hex')
  if (sig.length !== 64 || key.length !== 32) return false
  return sodium.crypto_sign_verify_detached(sig, Buffer.from(text), key)
}

// JSON with object keys in sorted order at every level.
function sortedJson (v) {
  if (v === null || v === undefined) return 'null'
  if (Array.isArray(v)) return '[' + v.map(sortedJson).join(',') + ']'
  if (typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + sortedJson(v[k])).join(',') + '}'
  }
  return JSON.stringify(v)
}

function keyHex (v) {
  if (!v) return null
  if (Buffer.isBuffer(v)) return hex(v)
  if (typeof v === 'string') return v.trim().toLowerCase()
  if (typeof v === 'object' && v.type === 'Buffer' && Array.isArray(v.data)) return hex(Buffer.from(v.data))
  return String(v).trim().toLowerCase()
}

const sha256 = (text) => crypto.createHash('sha256').update(text).digest()
const topic = (name) => hex(sha256('sidechannel:' + String(name || '').trim()))

function zeroBits (buf) {
  let n = 0
  for (const b of buf) {
    if (b === 0) { n += 8; continue }
    return n + Math.clz32(b) - 24
  }
  return n
}

function sigBase (p) {
  return sortedJson({
    kind: 'sidechannel_message_v1',
    id: p.id ?? null,
    channel: p.channel ?? null,
    from: keyHex(p.from) ?? null,
    origin: keyHex(p.origin) ?? null,
    ts: p.ts ?? null,
    message: JSON.parse(JSON.stringify(p.message ?? null))
  })
}

function powBase (p, nonce) {
  return sortedJson({
    id: p.id ?? null,
    channel: p.channel ?? null,
    from: p.from ?? null,
    origin: p.origin ?? null,
    message: p.message ?? null,
    ts: p.ts ?? null,
    nonce
  })
}

function powOk (p, difficulty) {
  if (!p.pow || typeof p.pow.nonce !== 'number') return false
  return zeroBits(sha256(powBase(p, p.pow.nonce))) >= difficulty
}

function buildPayload (kp, { channel, message, ts, ttl, idSuffix, invite, difficulty }) {
  const from = hex(kp.publicKey)
  const p = { type: 'sidechannel', id: `${from}:${ts}:${idSuffix}`, channel, from, origin: from, message, ts, ttl }
  if (invite) p.invite = invite
  if (difficulty > 0) {
    for (let nonce = 0; ; nonce++) {
      if (zeroBits(sha256(powBase(p, nonce))) >= difficulty) { p.pow = { nonce, difficulty }; break }
    }
  }
  p.sig = signHex(sigBase(p), kp.secretKey)
  return p
}

function welcomeBody (p) {
  return {
    channel: String(p?.channel || '').trim(),
    ownerPubKey: keyHex(p?.ownerPubKey) || '',
    text: String(p?.text ?? ''),
    issuedAt: Number(p?.issuedAt),
    version: Number.isFinite(p?.version) ? Number(p.version) : 1
  }
}

function inviteBody (p) {
  return {
    channel: String(p?.channel ?? ''),
    inviteePubKey: keyHex(p?.inviteePubKey) || '',
    inviterPubKey: keyHex(p?.inviterPubKey) || '',
    inviterAddress: p?.inviterAddress ?? null,
    issuedAt: Number(p?.issuedAt),
    expiresAt: Number(p?.expiresAt),
    nonce: String(p?.nonce ?? ''),
    version: Number.isFinite(p?.version) ? Number(p.version) : 1
  }
}

function makeWelcome (kp, channel, text, issuedAt) {
  const payload = welcomeBody({ channel, ownerPubKey: hex(kp.publicKey), text, issuedAt, version: 1 })
  return { payload, sig: signHex(sortedJson(payload), kp.secretKey) }
}

function makeInvite (kp, channel, invitee, issuedAt, ttlMs, nonce, welcome) {
  const payload = inviteBody({
    channel, inviteePubKey: invitee, inviterPubKey: hex(kp.publicKey), inviterAddress: null,
    issuedAt, expiresAt: issuedAt + ttlMs, nonce, version: 1
  })
  return { payload, sig: signHex(sortedJson(payload), kp.secretKey), welcome: welcome || undefined }
}

function splitCredential (w) {
  if (!w || typeof w !== 'object') return null
  const body = w.payload && typeof w.payload === 'object' ? w.payload : w
  const sig = w.sig || w.signature
  if (typeof sig !== 'string' || sig.length === 0) return null
  return { body, sig }
}

function welcomeOk (w, channel, ownerKey) {
  const s = splitCredential(w)
  if (!s) return false
  const n = welcomeBody(s.body)
  if (n.channel !== String(channel || '').trim() || n.ownerPubKey !== ownerKey) return false
  if (!Number.isFinite(n.issuedAt)) return false
  return verifyHex(s.sig, sortedJson(n), ownerKey)
}

function inviteOk (inv, channel, invitee, now) {
  const s = splitCredential(inv)
  if (!s) return false
  const n = inviteBody(s.body)
  if (n.channel !== channel || n.inviteePubKey !== invitee || !n.inviterPubKey) return false
  if (!Number.isFinite(n.issuedAt) || !Number.isFinite(n.expiresAt) || n.expiresAt <= now) return false
  return verifyHex(s.sig, sortedJson(n), n.inviterPubKey)
}

const encodeJson = (v) => hex(c.encode(c.json, v))
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64')

function generate () {
  const owner = keyPair(1)
  const peer = keyPair(2)
  const ownerHex = hex(owner.publicKey)
  const peerHex = hex(peer.publicKey)
  const out = {
    keys: [1, 2, 3].map((n) => ({ seed: n, publicKey: hex(keyPair(n).publicKey) })),
    topics: ['0000intercom', ' room ', 'swap-1', 'ünïcødé'].map((name) => ({ name, topic: topic(name) })),
    leadingZeros: ['00', '0f', '0010', '0000ff', '80', '0001'].map((h) => ({ hex: h, bits: zeroBits(Buffer.from(h, 'hex')) })),
    keyHex: [' ABcd ', { type: 'Buffer', data: [1, 255, 16] }, 12, 0, '', true].map((input) => ({ input, output: keyHex(input) })),
    payloads: [],
    relayed: [],
    welcomes: [],
    invites: []
  }

  const welcome = makeWelcome(owner, 'room', 'welcome to room', 1700000000000)
  out.welcomes.push({ seed: 1, channel: 'room', text: 'welcome to room', issuedAt: 1700000000000, welcome, b64: b64(welcome) })
  const w2 = makeWelcome(owner, 'vip', 'ünï "quoted"\n', 1700000000001)
  out.welcomes.push({ seed: 1, channel: 'vip', text: 'ünï "quoted"\n', issuedAt: 1700000000001, welcome: w2, b64: b64(w2) })

  const inv = makeInvite(owner, 'vip', peerHex, 1700000000000, 604800000, 'k3j9x0aa', w2)
  const invJson = JSON.parse(JSON.stringify(inv))
  out.invites.push({ seed: 1, channel: 'vip', invitee: peerHex, issuedAt: 1700000000000, ttlMs: 604800000, nonce: 'k3j9x0aa', welcome: w2, invite: invJson, b64: b64(invJson) })
  const inv2 = JSON.parse(JSON.stringify(makeInvite(owner, 'vip', peerHex, 1700000000000, 60000, 'zz', null)))
  out.invites.push({ seed: 1, channel: 'vip', invitee: peerHex, issuedAt: 1700000000000, ttlMs: 60000, nonce: 'zz', welcome: null, invite: inv2, b64: b64(inv2) })

  const cases = [
    { desc: 'text, no pow', seed: 2, channel: '0000intercom', message: 'hello', ts: 1700000000123, ttl: 3, idSuffix: 'abc123xy', difficulty: 0 },
    { desc: 'object message, pow 12', seed: 2, channel: '0000intercom', message: { text: 'hi', n: 1.5, z: [1, null, { b: 2, a: 1 }], 10: 'ten' }, ts: 1700000000124, ttl: 3, idSuffix: 'q1w2e3r4', difficulty: 12 },
    { desc: 'welcome control', seed: 1, channel: 'room', message: { control: 'welcome', welcome }, ts: 1700000000125, ttl: 3, idSuffix: 'wwwwwwww', difficulty: 8 },
    { desc: 'auth control', seed: 2, channel: 'vip', message: { control: 'auth', invite: invJson }, ts: 1700000000126, ttl: 3, idSuffix: 'aaaaaaaa', difficulty: 8 },
    { desc: 'with invite, unicode', seed: 2, channel: 'vip', message: 'ünïcødé 🦀 \u2028 "q"', ts: 1700000000127, ttl: 2, idSuffix: 'iiiiiiii', invite: invJson, difficulty: 4 },
    { desc: 'open_channel with welcome', seed: 2, channel: '0000intercom', message: { control: 'open_channel', channel: 'room', welcome }, ts: 1700000000128, ttl: 3, idSuffix: 'oooooooo', difficulty: 12 }
  ]
  for (const cs of cases) {
    const kp = keyPair(cs.seed)
    const p = buildPayload(kp, cs)
    const received = JSON.parse(JSON.stringify(p))
    out.payloads.push({
      ...cs,
      invite: cs.invite || null,
      payload: received,
      json: JSON.stringify(p),
      wire: encodeJson(p),
      sigBase: sigBase(received),
      powOk: cs.difficulty > 0 ? powOk(received, cs.difficulty) : null
    })
  }
  {
    const base = out.payloads[0].payload
    const relayed = { ...base, ttl: base.ttl - 1, relayedBy: ownerHex }
    out.relayed.push({ payload: base, ttl: base.ttl - 1, relayedBy: ownerHex, json: JSON.stringify(relayed), wire: encodeJson(relayed) })
  }
  {
    // requestOpen without an invite: the sender hashes `invite: undefined` as null, which
    // the JSON round trip then drops.
    const kp = keyPair(2)
    const p = buildPayload(kp, { channel: '0000intercom', message: { control: 'open_channel', channel: 'room', invite: undefined, welcome }, ts: 1700000000129, ttl: 3, idSuffix: 'uuuuuuuu', difficulty: 12 })
    const received = JSON.parse(JSON.stringify(p))
    out.openChannelQuirk = { payload: received, wire: encodeJson(p), jsReceiverPowOk: powOk(received, 12) }
  }
  out.owner = ownerHex
  out.peer = peerHex
  const file = path.join(__dirname, '..', 'golden', 'sidechannel.json')
  fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n')
  console.log('wrote', file)
}

function verify (file) {
  const input = JSON.parse(fs.readFileSync(file, 'utf8'))
  const report = { payloads: [], welcomes: [], invites: [], topics: [] }
  for (const v of input.payloads || []) {
    const decoded = c.decode(c.json, Buffer.from(v.wire, 'hex'))
    report.payloads.push({
      sameJson: JSON.stringify(decoded) === v.json,
      sig: verifyHex(decoded.sig, sigBase(decoded), keyHex(decoded.from)),
      pow: v.difficulty > 0 ? powOk(decoded, v.difficulty) : null,
      reencoded: encodeJson(decoded) === v.wire,
      bytes: Buffer.byteLength(JSON.stringify(decoded))
    })
  }
  for (const v of input.welcomes || []) report.welcomes.push(welcomeOk(v.welcome, v.channel, v.owner))
  for (const v of input.invites || []) report.invites.push(inviteOk(v.invite, v.channel, v.invitee, v.now))
  for (const v of input.topics || []) report.topics.push(topic(v.name) === v.topic)
  console.log(JSON.stringify(report))
}

if (process.argv[2] === 'verify') verify(process.argv[3])
else generate()
