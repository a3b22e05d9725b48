// A JS HyperDHT peer driven over stdin/stdout (JSON lines), for the Rust DHT interop
// tests and the lookup benchmark. Everything binds 127.0.0.1 and bootstraps from loopback
// addresses only.
//
//   node dht-peer.js testnet SIZE [HOST:PORT,...]   createTestnet(SIZE) (joined to the given
//                                                  bootstrap nodes, if any) plus a client
//   node dht-peer.js client HOST:PORT,...           only a client node
//   node dht-peer.js node HOST:PORT,...             one idle persistent node (memory figure)
//
// Ops: announce, unannounce, lookup, lookupTimed (benchmark), findPeer, immutablePut,
// immutableGet, mutablePut, mutableGet, listen (a server on its own node, echoing),
// connect (to a server's public key; round-trips one message), rss.
//
// First line: {"ready":true,"bootstrap":[{host,port}],"ports":[...],"pid":N}. Then each
// stdin line {"id":N,"op":...} is run concurrently and answered with {"id":N,...} or
// {"id":N,"fail":"message"}. The process exits when stdin closes.

const HyperDHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const readline = require('readline')

const HOST = '127.0.0.1'
const [mode, arg1, arg2] = process.argv.slice(2)

function parseNodes(s) {
  if (!s) return []
  return s.split(',').filter(Boolean).map((x) => {
    const [host, port] = x.split(':')
    if (host !== HOST) throw new Error('loopback bootstrap nodes only: ' + x)
    return { host, port: Number(port) }
  })
}

const hex = (b) => (b ? Buffer.from(b).toString('hex') : null)
const buf = (h) => Buffer.from(h, 'hex')
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const servers = []

async function main() {
  let testnet = null
  let nodes = []
  let bootstrap
  if (mode === 'testnet') {
    testnet = await createTestnet(Number(arg1), { host: HOST, bootstrap: parseNodes(arg2) })
    nodes = testnet.nodes.slice()
    bootstrap = testnet.bootstrap
  } else if (mode === 'client' || mode === 'node') {
    bootstrap = parseNodes(arg1)
    // Never fall back to HyperDHT's public bootstrap nodes.
    if (bootstrap.length === 0) throw new Error('a loopback bootstrap node is required')
  } else {
    throw new Error('usage: dht-peer.js testnet SIZE [BOOT] | client BOOT | node BOOT')
  }

  let client
  if (mode === 'node') {
    client = new HyperDHT({ bootstrap, host: HOST, ephemeral: false, firewalled: false })
  } else {
    client = new HyperDHT({ bootstrap, host: HOST, ephemeral: true })
  }
  await client.fullyBootstrapped()
  nodes.push(client)

  out({
    ready: true,
    bootstrap,
    ports: nodes.map((n) => n.address().port),
    clientPort: client.address().port,
    persistent: nodes.filter((n) => !!n.id).length,
    pid: process.pid
  })

  const close = async () => {
    for (const s of servers) await s.destroy()
    if (testnet) await testnet.destroy()
    else await client.destroy()
    process.exit(0)
  }

  const rl = readline.createInterface({ input: process.stdin })
  rl.on('close', close)
  rl.on('line', async (line) => {
    if (!line.trim()) return
    let cmd
    try {
      cmd = JSON.parse(line)
    } catch (e) {
      out({ id: null, fail: 'bad json: ' + e.message })
      return
    }
    try {
      out({ id: cmd.id, ...(await run(client, cmd)) })
    } catch (e) {
      out({ id: cmd.id, fail: e.message || String(e) })
    }
  })
}

async function lookupKeys(client, topic) {
  const keys = new Set()
  let replies = 0
  for await (const r of client.lookup(buf(topic))) {
    replies++
    for (const p of r.peers) keys.add(hex(p.publicKey))
  }
  return { peers: [...keys], replies }
}

async function run(client, cmd) {
  switch (cmd.op) {
    case 'announce': {
      const kp = HyperDHT.keyPair(buf(cmd.seed))
      const q = client.announce(buf(cmd.topic), kp, [])
      await q.finished()
      return { publicKey: hex(kp.publicKey), closest: q.closestNodes.length }
    }
    case 'unannounce': {
      const kp = HyperDHT.keyPair(buf(cmd.seed))
      await client.unannounce(buf(cmd.topic), kp)
      return { publicKey: hex(kp.publicKey) }
    }
    case 'lookup':
      return lookupKeys(client, cmd.topic)
    case 'lookupTimed': {
      // Sequential lookups of the given topics; latency = until the query ends.
      const latencies = []
      let found = 0
      for (let i = 0; i < cmd.count; i++) {
        const topic = cmd.topics[i % cmd.topics.length]
        const start = process.hrtime.bigint()
        const r = await lookupKeys(client, topic)
        latencies.push(Number(process.hrtime.bigint() - start) / 1e6)
        if (r.peers.length > 0) found++
      }
      return { latencies, found }
    }
    case 'findPeer': {
      for await (const r of client.findPeer(buf(cmd.publicKey))) {
        return { peer: hex(r.peer.publicKey) }
      }
      return { peer: null }
    }
    case 'immutablePut': {
      const r = await client.immutablePut(buf(cmd.value))
      return { hash: hex(r.hash), closest: r.closestNodes.length }
    }
    case 'immutableGet': {
      const r = await client.immutableGet(buf(cmd.hash))
      return { value: r ? hex(r.value) : null }
    }
    case 'mutablePut': {
      const kp = HyperDHT.keyPair(buf(cmd.seed))
      const r = await client.mutablePut(kp, buf(cmd.value), { seq: cmd.seq || 0 })
      return { publicKey: hex(r.publicKey), seq: r.seq, closest: r.closestNodes.length }
    }
    case 'mutableGet': {
      const r = await client.mutableGet(buf(cmd.publicKey), { seq: cmd.seq || 0 })
      return r ? { seq: r.seq, value: hex(r.value) } : { seq: null, value: null }
    }
    case 'listen': {
      // A server on its own (ephemeral) node; it announces itself on the closest DHT
      // nodes, which then relay handshakes to it. Echoes whatever it receives.
      const node = new HyperDHT({ bootstrap: client.bootstrapNodes, host: HOST, ephemeral: true })
      await node.fullyBootstrapped()
      servers.push(node)
      const kp = HyperDHT.keyPair(buf(cmd.seed))
      const server = node.createServer((socket) => {
        socket.on('data', (d) => socket.write(d))
        socket.on('error', () => {})
      })
      await server.listen(kp)
      return { publicKey: hex(kp.publicKey) }
    }
    case 'connect': {
      // Connects through the DHT and round-trips a message.
      const socket = client.connect(buf(cmd.publicKey))
      const echoed = await new Promise((resolve, reject) => {
        socket.once('error', reject)
        socket.once('open', () => socket.write(Buffer.from(cmd.message)))
        socket.once('data', (d) => resolve(d.toString()))
      })
      const relayed = socket.rawStream ? socket.rawStream.remoteHost : null
      socket.destroy()
      return { echoed, remoteHost: relayed }
    }
    case 'rss':
      return { rss: process.memoryUsage().rss }
    default:
      throw new Error('unknown op ' + cmd.op)
  }
}

main().catch((e) => {
  out({ fail: e.stack || String(e) })
  process.exit(1)
})
