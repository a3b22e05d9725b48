// A JS corestore + Hyperswarm peer for the log interop tests and benchmarks. Its DHT node
// binds 127.0.0.1 and bootstraps from the given nodes only.
//
//   node hypercore-peer.js BOOTSTRAP serve ENTRIES SIZE
//       creates log "log" in a fresh corestore, appends ENTRIES entries of SIZE bytes
//       (see entry()), joins the swarm on its discovery key and serves it
//   node hypercore-peer.js BOOTSTRAP replicate KEY
//       downloads log KEY from the swarm (hypercore verifies every block against the
//       signed tree), then keeps serving it and reports each later length
//
// stdout, JSON lines: {"event":"serving",key,discoveryKey,length} |
// {"event":"replicated",length,sha256,ms} (SHA-256 of the blocks in order, ms from join to
// complete) | {"event":"appended",length} | {"event":"length",length} | {"event":"peer"}.
// stdin lines: "append TEXT" appends TEXT (serve mode); "rss" prints {"event":"rss",bytes}.
// The process exits when stdin ends.
'use strict'
const Corestore = require('corestore')
const Hyperswarm = require('hyperswarm')
const HyperDHT = require('hyperdht')
const crypto = require('crypto')
const fs = require('fs')
const os = require('os')
const path = require('path')
const readline = require('readline')

const [bootArg, mode, ...rest] = process.argv.slice(2)
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

// Entry i: "js-<i>:" padded with '.' to SIZE bytes (at least the prefix).
function entry(i, size) {
  const head = 'js-' + i + ':'
  return Buffer.from(head.padEnd(Math.max(size, head.length), '.'))
}

async function sha256Of(core) {
  const h = crypto.createHash('sha256')
  for (let i = 0; i < core.length; i++) h.update(await core.get(i))
  return h.digest('hex')
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypercore-peer-'))
  const store = new Corestore(dir)
  const dht = new HyperDHT({ bootstrap: parseNodes(bootArg), host: '127.0.0.1' })
  const swarm = new Hyperswarm({ dht })
  swarm.on('connection', (conn) => {
    store.replicate(conn)
    out({ event: 'peer' })
  })

  let core
  if (mode === 'serve') {
    const [entries, size] = rest.map(Number)
    core = store.get({ name: 'log' })
    await core.ready()
    const batch = []
    for (let i = 0; i < entries; i++) {
      batch.push(entry(i, size))
      if (batch.length === 1000) await core.append(batch.splice(0))
    }
    if (batch.length) await core.append(batch)
    swarm.join(core.discoveryKey, { server: true, client: true })
    await swarm.flush()
    out({
      event: 'serving',
      key: core.key.toString('hex'),
      discoveryKey: core.discoveryKey.toString('hex'),
      length: core.length
    })
  } else if (mode === 'replicate') {
    const started = Date.now()
    core = store.get({ key: Buffer.from(rest[0], 'hex') })
    await core.ready()
    swarm.join(core.discoveryKey, { server: true, client: true })
    // Wait for a peer to tell us the length, then fetch everything.
    while (core.length === 0) {
      await core.update({ wait: true })
      if (core.length === 0) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    await core.download({ start: 0, end: core.length }).done()
    out({ event: 'replicated', length: core.length, sha256: await sha256Of(core), ms: Date.now() - started })
    core.download({ start: 0, end: -1 }) // follow live appends
    core.on('append', async () => {
      const length = core.length
      await core.get(length - 1)
      out({ event: 'length', length })
    })
  } else {
    throw new Error('mode must be serve or replicate')
  }

  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    if (line.startsWith('append ')) {
      await core.append(Buffer.from(line.slice(7)))
      out({ event: 'appended', length: core.length })
    } else if (line === 'rss') {
      out({ event: 'rss', bytes: process.memoryUsage().rss })
    }
  }
  await swarm.destroy()
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
