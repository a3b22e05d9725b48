// A JS Hyperswarm peer for the swarm interop tests and benchmarks. Its DHT node binds
// 127.0.0.1 (or HOST) and bootstraps from the given nodes only, so the same-LAN
// shortcut never sees anything but that address.
//
//   node swarm-peer.js BOOTSTRAP TOPIC MODE ROLE [ARGS...]
//     BOOTSTRAP  HOST:PORT,...     MODE  server | client | both
//     ROLE echo                      echo every connection (end when the remote ends)
//     ROLE exchange BYTES SEED       on the first connection send BYTES pseudo-random
//                                    bytes (keyed by SEED), end, read everything;
//                                    report SHA-256 of both directions
//     ROLE bench                     benchmark peer, driven over stdin (see below)
//
// Environment: SWARM_HOST (default 127.0.0.1), SWARM_SEED (hex, 32 bytes: our key).
// Lines on stdout are JSON: {"ready":true,"publicKey"} first, then
// {"connection":KEY,"client":BOOL} per connection and {"done":true,...} for exchange.
//
// Bench commands (one JSON per stdin line, answered on stdout):
//   {"op":"expect","bytes":N}        report {"op":"received","ms"} once N bytes arrived
//                                    (ms from the first byte to the N-th)
//   {"op":"send","bytes":N}          send N bytes on the connection (64 KiB messages)
//   {"op":"pong"}                    echo every message from now on
//   {"op":"pingpong","count":N,"size":S}  N round trips of S-byte messages; latencies
//   {"op":"rss"}                     resident memory
// The connection line carries "ms": the time from join() to the connection.

const Hyperswarm = require('hyperswarm')
const HyperDHT = require('hyperdht')
const crypto = require('crypto')
const readline = require('readline')

const [bootArg, topicHex, mode, role, ...rest] = process.argv.slice(2)
const HOST = process.env.SWARM_HOST || '127.0.0.1'
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

function parseNodes(s) {
  return s
    .split(',')
    .filter(Boolean)
    .map((x) => {
      const [host, port] = x.split(':')
      return { host, port: Number(port) }
    })
}

// Pseudo-random chunks: the AES-256-CTR keystream of SHA-256(SEED) (fast, repeatable).
function* stream(seedHex, total, chunk) {
  const key = crypto.createHash('sha256').update(Buffer.from(seedHex, 'hex')).digest()
  const cipher = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  let left = total
  while (left > 0) {
    const n = Math.min(chunk, left)
    left -= n
    yield cipher.update(Buffer.alloc(n))
  }
}

async function main() {
  const bootstrap = parseNodes(bootArg)
  if (bootstrap.length === 0) throw new Error('bootstrap nodes required')
  const dht = new HyperDHT({ bootstrap, host: HOST })
  const seed = process.env.SWARM_SEED ? Buffer.from(process.env.SWARM_SEED, 'hex') : null
  const swarm = new Hyperswarm({ dht, keyPair: HyperDHT.keyPair(seed || undefined) })
  const topic = Buffer.from(topicHex, 'hex')
  let first = null
  const firstConn = new Promise((resolve) => {
    first = resolve
  })

  let joinedAt = 0n
  swarm.on('connection', (conn, info) => {
    const remote = conn.remotePublicKey.toString('hex')
    const ms = Number(process.hrtime.bigint() - joinedAt) / 1e6
    out({ connection: remote, client: info.client, ms })
    conn.on('error', (e) => out({ connError: e.message, remote }))
    if (role === 'echo') {
      conn.on('data', (d) => conn.write(d))
      conn.on('end', () => conn.end())
    }
    first(conn)
  })

  await dht.fullyBootstrapped()
  const opts = { server: mode !== 'client', client: mode !== 'server' }
  joinedAt = process.hrtime.bigint()
  const discovery = swarm.join(topic, opts)
  await discovery.flushed()
  out({ ready: true, publicKey: swarm.keyPair.publicKey.toString('hex') })

  const close = async () => {
    await swarm.destroy()
    process.exit(0)
  }
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('close', close)

  if (role === 'exchange') {
    const bytes = Number(rest[0])
    const conn = await firstConn
    const t0 = Date.now()
    const recvHash = crypto.createHash('sha256')
    let received = 0
    const reading = new Promise((resolve, reject) => {
      conn.on('data', (d) => {
        received += d.length
        recvHash.update(d)
      })
      conn.on('end', resolve)
      conn.on('error', reject)
    })
    const sendHash = crypto.createHash('sha256')
    for (const chunk of stream(rest[1], bytes, 65536)) {
      sendHash.update(chunk)
      if (!conn.write(chunk)) await new Promise((resolve) => conn.once('drain', resolve))
    }
    conn.end()
    await reading
    out({
      done: true,
      sent: bytes,
      sentSha256: sendHash.digest('hex'),
      received,
      receivedSha256: recvHash.digest('hex'),
      ms: Date.now() - t0
    })
  } else if (role === 'bench') {
    const conn = await firstConn
    await bench(conn, rl)
  }
}

async function bench(conn, rl) {
  let expect = 0
  let got = 0
  let first = 0n
  let pong = false
  let waiter = null
  conn.on('data', (d) => {
    if (pong) return conn.write(d)
    if (waiter) return waiter(d)
    if (got === 0) first = process.hrtime.bigint()
    got += d.length
    if (expect > 0 && got >= expect) {
      out({ op: 'received', bytes: got, ms: Number(process.hrtime.bigint() - first) / 1e6 })
      expect = 0
      got = 0
    }
  })
  rl.on('line', async (line) => {
    const cmd = JSON.parse(line)
    switch (cmd.op) {
      case 'expect':
        expect = cmd.bytes
        got = 0
        out({ op: 'expect' })
        break
      case 'send': {
        const chunk = Buffer.alloc(65536, 7)
        let left = cmd.bytes
        while (left > 0) {
          const n = Math.min(left, chunk.length)
          left -= n
          if (!conn.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
            await new Promise((resolve) => conn.once('drain', resolve))
          }
        }
        out({ op: 'sent' })
        break
      }
      case 'pong':
        pong = true
        out({ op: 'pong' })
        break
      case 'pingpong': {
        const msg = Buffer.alloc(cmd.size, 1)
        const lat = []
        for (let i = 0; i < cmd.count; i++) {
          const t0 = process.hrtime.bigint()
          const echoed = new Promise((resolve) => {
            let have = 0
            waiter = (d) => {
              have += d.length
              if (have >= cmd.size) {
                waiter = null
                resolve()
              }
            }
          })
          conn.write(msg)
          await echoed
          lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
        }
        out({ op: 'pingpong', latencies: lat })
        break
      }
      case 'rss':
        out({ op: 'rss', rss: process.memoryUsage().rss })
        break
    }
  })
  out({ op: 'benchReady' })
}

main().catch((e) => {
  out({ error: e.stack || String(e) })
  process.exit(1)
})
