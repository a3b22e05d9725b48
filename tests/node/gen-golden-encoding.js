// Writes tests/golden/compact-encoding.json: values encoded by the pinned JS
// compact-encoding, for the Rust codecs to reproduce byte for byte.
// Usage: node tests/node/gen-golden-encoding.js
'use strict'
const c = require('compact-encoding')
const fs = require('fs')
const path = require('path')

const hex = (b) => Buffer.from(b).toString('hex')
const vectors = []

function add (type, enc, value, jsonValue = value) {
  vectors.push({ type, value: jsonValue, hex: hex(c.encode(enc, value)) })
}

for (const n of [0, 1, 0xfc, 0xfd, 0xfe, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 0x100000000, 2 ** 53 - 1]) {
  add('uint', c.uint, n)
}
for (const n of [0, 1, 127, 255]) add('uint8', c.uint8, n)
for (const n of [0, 1, 0x1234, 0xffff]) add('uint16', c.uint16, n)
for (const n of [0, 1, 0x123456, 0xffffff]) add('uint24', c.uint24, n)
for (const n of [0, 1, 0x12345678, 0xffffffff]) add('uint32', c.uint32, n)
for (const n of [0, 0x12345678, 0xffffffff]) add('uint32be', c.uint32be, n)
for (const n of [0, 1, 0x1234567890, 2 ** 53 - 1]) add('uint64', c.uint64, n)
for (const n of [0, 1, -1, 2, -2, 63, -64, 126, -127, 1000000, -1000000, 2 ** 52 - 1, -(2 ** 52)]) {
  add('int', c.int, n)
}
for (const n of [0, -1, 1, 63, -64]) add('int8', c.int8, n)
for (const n of [0, -1, 1, 16000, -16000]) add('int16', c.int16, n)
for (const n of [0, -1, 1, 1000000000, -1000000000]) add('int32', c.int32, n)
for (const n of [0.5, -1.25, 3.4028234663852886e38]) add('float32', c.float32, n)
for (const n of [0, 0.1, -1.5, 1e300, 5e-324, Math.PI]) add('float64', c.float64, n)
add('bool', c.bool, true)
add('bool', c.bool, false)

const bytes = (n, seed = 7) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff))
for (const n of [0, 1, 32, 252, 253, 300, 70000]) add('buffer', c.buffer, bytes(n), hex(bytes(n)))
add('optionalBuffer', c.optionalBuffer, null, null)
add('optionalBuffer', c.optionalBuffer, bytes(5), hex(bytes(5)))
add('raw', c.raw, bytes(40), hex(bytes(40)))
add('fixed32', c.fixed32, bytes(32, 1), hex(bytes(32, 1)))
add('fixed64', c.fixed64, bytes(64, 2), hex(bytes(64, 2)))

for (const s of ['', 'hello', 'héllo wörld', '日本語テキスト', '🦀 emoji', 'x'.repeat(300), 'sidechannel/0000intercom']) {
  add('string', c.string, s)
}

const jsonValues = [
  null, true, 42, -3.5, 1e21, 1.5e-7, 'text', [1, 'two', null, { three: 3 }],
  { type: 'sidechannel', id: 'abc', ttl: 3, nested: { b: 1, a: [true, false] } },
  { z: 1, 10: 'ten', 2: 'two', a: 'a' },
  { quote: 'he said "hi"\n\t\u0001', unicode: 'ü€𝄞', slash: 'a/b\\c' },
  { big: 9007199254740991, neg: -0, float: 0.30000000000000004, exp: 123e-20 }
]
for (const v of jsonValues) add('json', c.json, v)

add('array_uint', c.array(c.uint), [1, 300, 70000, 0])
add('array_string', c.array(c.string), ['a', 'bc', ''])
add('array_buffer', c.array(c.buffer), [bytes(3), bytes(0)], [hex(bytes(3)), ''])

for (const a of [{ host: '127.0.0.1', port: 49737 }, { host: '0.0.0.0', port: 0 }, { host: '255.255.255.255', port: 65535 }]) {
  add('ipv4Address', c.ipv4Address, a)
}
for (const a of [{ host: '::1', port: 443 }, { host: '2001:db8::ff00:42:8329', port: 8080 }, { host: 'fe80:0:0:0:0:0:0:1', port: 1 }]) {
  add('ipv6Address', c.ipv6Address, a)
}
add('ipAddress', c.ipAddress, { host: '10.1.2.3', port: 5 })
add('ipAddress', c.ipAddress, { host: '::ffff:1', port: 6 })

// Inputs the JS decoder rejects; Rust must reject them too.
const invalid = []
function bad (type, enc, buf) {
  let threw = false
  try { c.decode(enc, buf) } catch { threw = true }
  if (!threw) throw new Error('expected JS to reject ' + type + ' ' + hex(buf))
  invalid.push({ type, hex: hex(buf) })
}
bad('uint', c.uint, Buffer.from([]))
bad('uint', c.uint, Buffer.from([0xfd, 0x01]))
bad('uint', c.uint, Buffer.from([0xfe, 1, 2, 3]))
bad('uint', c.uint, Buffer.from([0xff, 1, 2, 3, 4, 5, 6, 7]))
bad('uint16', c.uint16, Buffer.from([1]))
bad('uint32', c.uint32, Buffer.from([1, 2, 3]))
bad('buffer', c.buffer, Buffer.from([5, 1, 2]))
bad('string', c.string, Buffer.from([0xfd, 0x00, 0x01]))
bad('fixed32', c.fixed32, bytes(31))
bad('json', c.json, c.encode(c.string, '{"a":'))
bad('array_uint', c.array(c.uint), Buffer.from([3, 1, 2]))
bad('array_uint', c.array(c.uint), Buffer.from([0xfe, 0x01, 0x00, 0x20, 0x00]))
bad('ipv4Address', c.ipv4Address, Buffer.from([127, 0, 0, 1, 5]))

const out = path.join(__dirname, '..', 'golden', 'compact-encoding.json')
fs.writeFileSync(out, JSON.stringify({ generator: 'tests/node/gen-golden-encoding.js', vectors, invalid }, null, 1) + '\n')
console.log('wrote', vectors.length, 'vectors and', invalid.length, 'invalid inputs to', out)
