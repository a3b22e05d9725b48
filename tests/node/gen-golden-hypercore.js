// Writes tests/golden/hypercore-messages.json from the pinned JS hypercore 11.37.1:
//  * messages: every codec of lib/messages.js the replication protocol uses (manifest,
//    wire.*, multiSignature, multiSignaturev0) on representative values: the value given
//    to the encoder, the encoded bytes, the JS decoding and the re-encoding of that
//    decoding. Entries without `value` are hand-made bytes JS accepts. Manifest entries
//    also carry `manifestHash` (the log key hypercore derives from the manifest);
//  * prefixes: strict prefixes of each encoding (all of them for short ones), by message
//    index and length, with the JS decoding when it succeeds (no `decoded`: JS threw);
//  * trailing: each channel message followed by extra bytes, with what JS makes of it
//    (protomux ignores what a decoder leaves, but some decoders read optional tails);
//  * invalid: hand-made inputs the JS decoders reject.
// Values are JSON with buffers as hex, Uint32Arrays as arrays of numbers, absent as null.
// Usage (from /work/main/tests): node node/gen-golden-hypercore.js
'use strict'
const c = require('compact-encoding')
const fs = require('fs')
const path = require('path')
const m = require('hypercore/lib/messages')
const Verifier = require('hypercore/lib/verifier')
const caps = require('hypercore/lib/caps')
const hypercoreCrypto = require('hypercore-crypto')

const hex = (b) => Buffer.from(b).toString('hex')
const buf = (n, len = 32) => Buffer.alloc(len, n)
const codec = (type) => type.split('.').reduce((o, k) => o[k], m)

function norm(v) {
  if (v === null || v === undefined) return null
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return hex(v)
  if (v instanceof Uint32Array) return Array.from(v)
  if (Array.isArray(v)) return v.map(norm)
  if (typeof v === 'object') {
    const out = {}
    for (const k of Object.keys(v)) out[k] = norm(v[k])
    return out
  }
  return v
}

const node = (index, fill, size = index * 1024) => ({ index, size, hash: buf(fill) })
const signer = (fill, namespace = caps.DEFAULT_NAMESPACE) => ({
  signature: 'ed25519',
  namespace,
  publicKey: buf(fill)
})
const manifestOf = (fields) => ({
  version: 1,
  hash: 'blake2b',
  allowPatch: false,
  quorum: 1,
  signers: [],
  prologue: null,
  linked: null,
  userData: null,
  ...fields
})

// The manifest corestore gives a named core: Hypercore.key() runs createManifest on
// { version: 1, signers: [{ publicKey }] }.
const writer = hypercoreCrypto.keyPair(buf(0x42))
const corestoreManifest = Verifier.createManifest({ version: 1, signers: [{ publicKey: writer.publicKey }] })

const manifests = [
  // v0, type 0: prologue only (the prologue length is not encoded).
  manifestOf({ version: 0, quorum: 0, prologue: { hash: buf(0x01), length: 5 } }),
  // v0, type 1: a single signer.
  manifestOf({ version: 0, signers: [signer(0x02)] }),
  // v0, type 2: patches allowed.
  manifestOf({ version: 0, allowPatch: true, signers: [signer(0x03)] }),
  // v0, type 2: several signers.
  manifestOf({ version: 0, quorum: 2, signers: [signer(0x04), signer(0x05, buf(0x06)), signer(0x07)] }),
  // v0, type 2: no signers at all.
  manifestOf({ version: 0, quorum: 0 }),
  corestoreManifest,
  Verifier.createManifest({ signers: [{ publicKey: buf(0x08) }], prologue: { hash: buf(0x09), length: 1000 } }),
  manifestOf({ allowPatch: true, quorum: 0xfd, signers: [signer(0x0a)], prologue: { hash: buf(0x0b), length: 0 } }),
  manifestOf({ quorum: 0, prologue: { hash: buf(0x0c), length: 2 ** 53 - 1 } }),
  Verifier.createManifest({
    version: 2,
    signers: [{ publicKey: buf(0x0d) }],
    linked: [buf(0x0e), buf(0x0f)],
    userData: Buffer.from('subnet writer')
  }),
  // Empty linked and userData are still flagged (JS tests truthiness).
  manifestOf({ version: 2, signers: [signer(0x10)], linked: [], userData: Buffer.alloc(0) }),
  manifestOf({
    version: 3,
    allowPatch: true,
    quorum: 0x10000,
    signers: [signer(0x11), signer(0x12, buf(0x13))],
    prologue: { hash: buf(0x14), length: 0xffff },
    linked: [buf(0x15)],
    userData: buf(0x16, 300)
  })
]

const samples = {
  manifest: manifests,
  'wire.handshake': [
    { seeks: false, capability: buf(0x20) },
    { seeks: true, capability: buf(0x21) }
  ],
  'wire.sync': [],
  'wire.request': [
    { id: 0, fork: 0, block: null, hash: null, seek: null, upgrade: null, manifest: false, priority: 0 },
    { id: 1, fork: 0, block: { index: 0xfc, nodes: 0xfd }, hash: null, seek: null, upgrade: null, manifest: false, priority: 0 },
    { id: 2, fork: 1, block: null, hash: { index: 6, nodes: 0 }, seek: null, upgrade: null, manifest: true, priority: 0 },
    { id: 3, fork: 0, block: null, hash: null, seek: { bytes: 0x10000, padding: 0 }, upgrade: null, manifest: false, priority: 1 },
    { id: 4, fork: 2, block: null, hash: null, seek: null, upgrade: { start: 0, length: 0xffffffff }, manifest: false, priority: 0 },
    {
      id: 0xffff,
      fork: 0x10000,
      block: { index: 2 ** 32, nodes: 2 ** 53 - 1 },
      hash: { index: 0xffff, nodes: 1 },
      seek: { bytes: 2 ** 53 - 1, padding: 0xfd },
      upgrade: { start: 0x10000, length: 2 ** 32 },
      manifest: true,
      priority: 0x10000
    }
  ],
  'wire.cancel': [0, 0xfc, 0xfd, 0xffff, 0x10000, 2 ** 32, 2 ** 53 - 1].map((request) => ({ request })),
  'wire.data': [
    { request: 0, fork: 0, block: null, hash: null, seek: null, upgrade: null, manifest: null },
    { request: 1, fork: 0, block: { index: 5, value: Buffer.from('hello'), nodes: [node(10, 0x30), node(13, 0x31)] }, hash: null, seek: null, upgrade: null, manifest: null },
    { request: 2, fork: 0, block: { index: 0, value: Buffer.alloc(0), nodes: [] }, hash: null, seek: null, upgrade: null, manifest: null },
    { request: 3, fork: 1, block: { index: 0xfd, value: buf(0x32, 300), nodes: [node(2 ** 32, 0x33, 2 ** 53 - 1)] }, hash: null, seek: null, upgrade: null, manifest: null },
    { request: 4, fork: 0, block: null, hash: { index: 14, nodes: [node(14, 0x34)] }, seek: null, upgrade: null, manifest: null },
    { request: 5, fork: 0, block: null, hash: null, seek: { bytes: 0x10000, nodes: [] }, upgrade: null, manifest: null },
    {
      request: 6,
      fork: 0,
      block: null,
      hash: null,
      seek: null,
      upgrade: { start: 0, length: 1, nodes: [node(0, 0x35)], additionalNodes: [], signature: buf(0x36, 64) },
      manifest: null
    },
    {
      request: 7,
      fork: 3,
      block: null,
      hash: null,
      seek: null,
      upgrade: { start: 4, length: 4, nodes: [], additionalNodes: [node(3, 0x37), node(11, 0x38)], signature: null },
      manifest: null
    },
    // An empty signature buffer is written as absent.
    {
      request: 8,
      fork: 0,
      block: null,
      hash: null,
      seek: null,
      upgrade: { start: 0, length: 0, nodes: [], additionalNodes: [], signature: Buffer.alloc(0) },
      manifest: null
    },
    { request: 9, fork: 0, block: null, hash: null, seek: null, upgrade: null, manifest: corestoreManifest },
    {
      request: 2 ** 53 - 1,
      fork: 0xffff,
      block: { index: 3, value: Buffer.from('block three'), nodes: [node(6, 0x39)] },
      hash: { index: 7, nodes: [node(7, 0x3a)] },
      seek: { bytes: 4000, nodes: [node(1, 0x3b)] },
      upgrade: { start: 0, length: 4, nodes: [node(3, 0x3c)], additionalNodes: [node(9, 0x3d)], signature: buf(0x3e, 64) },
      manifest: manifests[3]
    }
  ],
  'wire.noData': [
    { request: 0, reason: 0 },
    { request: 7, reason: 1 },
    { request: 0x10000, reason: 2 ** 32 },
    { request: 2 ** 53 - 1, reason: 0xfd }
  ],
  'wire.want': [
    { start: 0, length: 0, any: false },
    { start: 1024, length: 1024, any: true },
    { start: 2 ** 53 - 1, length: 0xfd, any: false },
    { start: 0x10000, length: 2 ** 32, any: true }
  ],
  'wire.unwant': [
    { start: 0, length: 1, any: false },
    { start: 0xfc, length: 0xffff, any: true }
  ],
  'wire.bitfield': [
    { start: 0, bitfield: new Uint32Array(0) },
    { start: 0x10000, bitfield: new Uint32Array([0, 1, 0xffffffff, 0xdeadbeef]) },
    { start: 32768, bitfield: Uint32Array.from({ length: 64 }, (_, i) => (i * 0x01010101) >>> 0) }
  ],
  'wire.range': [
    { drop: false, start: 0, length: 1 },
    { drop: true, start: 5, length: 1 },
    { drop: false, start: 0xfc, length: 0 },
    { drop: true, start: 2 ** 32, length: 0x10000 },
    { drop: false, start: 0, length: 2 ** 53 - 1 },
    { drop: true, start: 0xfd, length: 2 }
  ],
  'wire.reorgHint': [
    { from: 0, to: 0, ancestors: 0 },
    { from: 0x10000, to: 2 ** 53 - 1, ancestors: 0xfd }
  ],
  'wire.extension': [
    { name: '', message: Buffer.alloc(0) },
    { name: 'autobase', message: Buffer.from('hi') },
    { name: 'ñ✓ extension', message: buf(0x40, 300) }
  ],
  multiSignature: [
    { proofs: [], patch: [] },
    { proofs: [{ signer: 0, signature: buf(0x50, 64), patch: 0 }], patch: [] },
    {
      proofs: [
        { signer: 1, signature: buf(0x51, 64), patch: 2 },
        { signer: 0x10000, signature: buf(0x52, 64), patch: 0 }
      ],
      patch: [node(2, 0x53), node(5, 0x54, 2 ** 53 - 1)]
    }
  ],
  multiSignaturev0: [
    { proofs: [], patch: [] },
    { proofs: [{ signer: 0, signature: buf(0x60, 64), patch: null }], patch: [] },
    {
      proofs: [
        { signer: 2, signature: buf(0x61, 64), patch: { start: 0, length: 3, nodes: [1, 0xfd, 2 ** 32] } },
        { signer: 1, signature: buf(0x62, 64), patch: { start: 5, length: 0, nodes: [] } }
      ],
      patch: [node(4, 0x63)]
    }
  ]
}

// Every flag combination of sync, with numbers crossing each varint width.
const widths = [0, 0xfc, 0xfd, 0xffff, 0x10000, 2 ** 32, 2 ** 53 - 1]
for (let flags = 0; flags < 32; flags++) {
  samples['wire.sync'].push({
    fork: widths[flags % widths.length],
    length: widths[(flags + 2) % widths.length],
    remoteLength: widths[(flags + 5) % widths.length],
    canUpgrade: (flags & 1) !== 0,
    uploading: (flags & 2) !== 0,
    downloading: (flags & 4) !== 0,
    hasManifest: (flags & 8) !== 0,
    allowPush: (flags & 16) !== 0
  })
}

function tryDecode(type, bytes) {
  try {
    return { decoded: norm(c.decode(codec(type), bytes)) }
  } catch (err) {
    return { error: err.message }
  }
}

const messages = []
const prefixes = []

function entry(type, encoded, value) {
  const decoded = c.decode(codec(type), encoded)
  const out = { type }
  if (value !== undefined) out.value = norm(value)
  out.encoded = hex(encoded)
  out.decoded = norm(decoded)
  out.reencoded = hex(c.encode(codec(type), decoded))
  if (type === 'manifest') out.manifestHash = hex(Verifier.manifestHash(decoded))
  messages.push(out)
}

for (const [type, list] of Object.entries(samples)) {
  for (const value of list) {
    const encoded = c.encode(codec(type), value)
    entry(type, encoded, value)
    const len = encoded.byteLength
    for (let n = 0; n < len; n++) {
      // Long values: every field boundary is near the start or the end.
      if (len > 160 && n >= 80 && n < len - 80 && n % 20 !== 0) continue
      const r = tryDecode(type, encoded.subarray(0, n))
      prefixes.push(r.error ? { message: messages.length - 1, length: n } : { message: messages.length - 1, length: n, decoded: r.decoded })
    }
  }
}

// Hand-made bytes JS accepts, whose decoding re-encodes differently.
const accepted = [
  ['wire.range', '000501'], // length 1 without the flag
  ['wire.request', '20010000'], // priority flag with priority 0
  ['wire.noData', '05'], // no flags at all
  ['wire.noData', '0500'],
  ['wire.noData', '050003'], // flags 0, then ignored bytes
  ['wire.want', '0102'],
  ['wire.want', '010203'], // flags 3: bit 1 is `any`, the rest is ignored
  ['wire.unwant', '010200'],
  ['wire.handshake', 'fd0001' + hex(buf(0x70))], // flags 0x100: no seeks bit
  ['wire.extension', '01ff0102'], // invalid UTF-8 name
  ['wire.sync', 'e0' + '000000'], // unknown flag bits
  ['manifest', '0000020500' + '00'], // v0 type 2, unknown flag bits, no signers
  ['manifest', '000002000101' + '00' + hex(caps.DEFAULT_NAMESPACE) + hex(buf(0x71))], // type 2 holding a type 1
  ['manifest', '01f000000000'], // v1 with unknown flag bits
  ['multiSignaturev0', '01' + '0200' + hex(buf(0x72, 64)) + '00'], // unknown input flag bits
  ['wire.data', '00010000'] // trailing byte after a data message
]
for (const [type, h] of accepted) entry(type, Buffer.from(h, 'hex'))

// Channel messages followed by extra bytes: protomux passes the whole payload.
const trailing = []
messages.forEach((msg, index) => {
  if (!msg.type.startsWith('wire.') || msg.type === 'wire.handshake' || msg.type === 'wire.reorgHint') return
  if (msg.value === undefined) return
  for (const suffix of ['01', '00', 'fd', '0301']) {
    const r = tryDecode(msg.type, Buffer.from(msg.encoded + suffix, 'hex'))
    trailing.push(r.error ? { message: index, suffix } : { message: index, suffix, decoded: r.decoded })
  }
})

const big = (n) => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return hex(b)
}
const signerHex = (sig) => sig + hex(buf(0x73)) + hex(buf(0x74))

const invalidInputs = [
  ['manifest', ''],
  ['manifest', '04'], // version 4
  ['manifest', 'fd0001'], // version 256
  ['manifest', '0003'], // v0, hash id 3
  ['manifest', '000003'], // v0, type 3
  ['manifest', '0000fd0001'], // v0, type 256
  ['manifest', '000001' + signerHex('01')], // v0 type 1, signature id 1
  ['manifest', '0100010100'], // v1, hash id 1
  ['manifest', '01000001' + '01' + signerHex('02')], // v1, signature id 2
  ['manifest', '01000001' + 'fe01001000'], // v1, 0x100001 signers
  ['manifest', '01020000' + '00' + hex(buf(0x75))], // v1 prologue without its length
  ['manifest', '01040000' + '00' + '02' + hex(buf(0x76))], // two linked keys, one present
  ['manifest', '01080000' + '00' + '05' + '0102'], // short userData
  ['manifest', '0100' + '00' + 'ff' + big(2 ** 53)], // quorum 2^53
  ['wire.handshake', '00' + hex(buf(0x77, 31))],
  ['wire.sync', '00ff' + big(2 ** 53) + '0000'],
  ['wire.request', '00' + 'ff' + big(2 ** 53) + '00'],
  ['wire.request', '0f010203'], // flags promise more than there is
  ['wire.request', '200100'], // priority flag without priority
  ['wire.cancel', 'ff' + big(2 ** 64 - 2 ** 11)],
  ['wire.data', '010000' + '05' + '00' + 'fe01001000'], // block with 0x100001 nodes
  ['wire.data', '010000' + '05' + '0a' + '0102'], // block value cut short
  ['wire.data', '080000' + '00' + '00' + '00' + '00' + '05' + '01'], // signature cut short
  ['wire.data', '100000' + '09'], // manifest version 9
  ['wire.data', '100000' + '0001' + '00'], // manifest v0, hash id 1
  ['wire.noData', '0501'], // reason flag without reason
  ['wire.noData', '05fd'], // flags cut short
  ['wire.want', '05'],
  ['wire.want', '0102fe'],
  ['wire.unwant', ''],
  ['wire.bitfield', '00' + '02' + '01000000'], // two words, one present
  ['wire.bitfield', '00' + 'ff' + big(2 ** 53 - 1)],
  ['wire.bitfield', '00' + 'fe00000040' + '00000000'],
  ['wire.range', '0005'], // no length and no length-1 flag
  ['wire.range', '01'],
  ['wire.extension', '0561'],
  ['wire.extension', ''],
  ['wire.reorgHint', '0102'],
  ['multiSignature', '01' + '00' + hex(buf(0x78, 63))],
  ['multiSignature', '00' + 'fe01001000'],
  ['multiSignature', '01' + '00' + hex(buf(0x79, 64))], // proof without its patch count
  ['multiSignaturev0', '01' + '0100' + hex(buf(0x7a, 64)) + '0000' + 'fe01001000'], // 0x100001 patch nodes
  ['multiSignaturev0', '01' + '0100' + hex(buf(0x7b, 64)) + '0000'], // patch without nodes
  ['multiSignaturev0', '00' + '01' + '00' + '00']
]
const invalid = invalidInputs.map(([type, h]) => {
  const r = tryDecode(type, Buffer.from(h, 'hex'))
  if (!r.error) throw new Error(`expected ${type} ${h} to fail`)
  return { type, hex: h, error: r.error }
})

const out = {
  generator: 'tests/node/gen-golden-hypercore.js',
  hypercore: require('hypercore/package.json').version,
  compactEncoding: require('compact-encoding/package.json').version,
  corestoreWriter: { seed: hex(buf(0x42)), publicKey: hex(writer.publicKey) },
  messages,
  prefixes,
  trailing,
  invalid
}
const file = path.join(__dirname, '..', 'golden', 'hypercore-messages.json')
fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n')
console.log(`wrote ${file}: ${messages.length} messages, ${prefixes.length} prefixes, ${trailing.length} trailing, ${invalid.length} invalid`)
