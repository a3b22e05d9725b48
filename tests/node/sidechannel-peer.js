// A JS sidechannel peer for the interop and policy tests, built from the pinned npm
// modules only (hyperswarm + hyperdht + protomux + compact-encoding + sodium-native),
// following the wire facts of Intercom's features/sidechannel/index.js:
//
//   topic     sha256('sidechannel:' + trimmed name)
//   protomux  protocol 'sidechannel/<name>', no id, no handshake, one message type c.json
//   payload   {type:'sidechannel', id, channel, from, origin, message, ts, ttl, pow?, sig}
//   sig       ed25519 over sorted-key JSON of
//             {kind:'sidechannel_message_v1', id, channel, from, origin, ts, message}
//   pow       leading zero bits of sha256(sorted-key JSON of
//             {id, channel, from, origin, message, ts, nonce})
//
// It enforces nothing: it reports what it receives (with its own verdict on signature
// and proof of work) and sends what it is told, including forged payloads.
//
//   node sidechannel-peer.js BOOTSTRAP         BOOTSTRAP = HOST:PORT,... (loopback)
//
// Environment: SC_SEED (hex, 32 bytes: our key). The DHT binds 127.0.0.1 only.
// Lines on stdout are JSON events:
//   {event:'ready', publicKey}
//   {event:'connection', peer}           {event:'disconnected', peer}
//   {event:'open', channel, peer}         {event:'closed', channel, peer}
//   {event:'message', channel, peer, bytes, payload, sigValid, powBits, welcomeValid?}
// Commands, one JSON per stdin line (each answered with {event:'reply', op, ...}):
//   {op:'join', channel}
//   {op:'dial', peer}                     also connect to PEER directly (swarm.joinPeer)
//   {op:'send', channel, message, pow?:BITS, powMax?:BITS, ttl?, spoofFrom?:HEX,
//    badSig?:true, pad?:N, invite?}      pow: proof of work of at least BITS (0: none);
//                                         powMax: a nonce with fewer than powMax bits;
//                                         spoofFrom: from/origin set to HEX, signed by us
//   {op:'stats'}                          per channel: application messages and their wire
//                                         bytes; control messages (welcome, auth) apart
'use strict'
const Hyperswarm = require('hyperswarm')
const HyperDHT = require('hyperdht')
const Protomux = require('protomux')
const c = require('compact-encoding')
const sodium = require('sodium-native')
const crypto = require('crypto')
const readline = require('readline')

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const hex = (b) => Buffer.from(b).toString('hex')
const sha256 = (text) => crypto.createHash('sha256').update(text).digest()
const norm = (name) => String(name || '').trim()
const topicOf = (name) => sha256('sidechannel:' + norm(name))

function sortedJson (v) {
  if (v === null || v === undefined) return 'null'
  if (typeof v !== 'object') return JSON.stringify(v)
  if (Array.isArray(v)) return '[' + v.map(sortedJson).join(',') + ']'
  return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + sortedJson(v[k])).join(',') + '}'
}

function keyHex (v) {
  if (!v) return null
  if (typeof v === 'string') return v.trim().toLowerCase()
  return String(v).trim().toLowerCase()
}

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

function verifyHex (sigHex, text, keyHexStr) {
  const sig = Buffer.from(String(sigHex || ''), 'hex')
  const key = Buffer.from(String(keyHexStr || ''), 'hex')
  if (sig.length !== 64 || key.length !== 32) return false
  return sodium.crypto_sign_verify_detached(sig, Buffer.from(text), key)
}

function signHex (text, secretKey) {
  const sig = Buffer.alloc(64)
  sodium.crypto_sign_detached(sig, Buffer.from(text), secretKey)
  return hex(sig)
}

function welcomeValid (w, channel) {
  if (!w || typeof w !== 'object') return false
  const body = w.payload && typeof w.payload === 'object' ? w.payload : w
  const n = {
    channel: String(body?.channel || '').trim(),
    ownerPubKey: keyHex(body?.ownerPubKey) || '',
    text: String(body?.text ?? ''),
    issuedAt: Number(body?.issuedAt),
    version: Number.isFinite(body?.version) ? Number(body.version) : 1
  }
  if (n.channel !== norm(channel) || !Number.isFinite(n.issuedAt)) return false
  return verifyHex(w.sig || w.signature, sortedJson(n), n.ownerPubKey)
}

async function main () {
  const bootstrap = (process.argv[2] || '').split(',').filter(Boolean).map((x) => {
    const [host, port] = x.split(':')
    return { host, port: Number(port) }
  })
  if (bootstrap.length === 0) throw new Error('bootstrap nodes required (loopback only)')
  for (const b of bootstrap) {
    if (b.host !== '127.0.0.1') throw new Error('loopback bootstrap only: ' + b.host)
  }
  const seed = process.env.SC_SEED ? Buffer.from(process.env.SC_SEED, 'hex') : undefined
  const keyPair = HyperDHT.keyPair(seed)
  const me = hex(keyPair.publicKey)
  const dht = new HyperDHT({ bootstrap, host: '127.0.0.1', keyPair })
  const swarm = new Hyperswarm({ dht, keyPair })

  const channels = new Set()
  const conns = new Map() // peer hex -> { mux, records: Map<name, {channel, message, open}> }
  const received = {} // channel -> { messages, bytes }

  function countingJson (name) {
    return {
      preencode: c.json.preencode,
      encode: c.json.encode,
      decode (state) {
        const start = state.start
        const v = c.json.decode(state)
        const r = received[name] || (received[name] = { messages: 0, bytes: 0, controls: {}, controlBytes: 0 })
        if (v && v.message && typeof v.message === 'object' && v.message.control) {
          r.controls[v.message.control] = (r.controls[v.message.control] || 0) + 1
          r.controlBytes += state.start - start
        } else {
          r.messages += 1
          r.bytes += state.start - start
        }
        return v
      }
    }
  }

  function openChannel (peer, name) {
    const conn = conns.get(peer)
    if (!conn || conn.records.has(name)) return
    const ch = conn.mux.createChannel({
      protocol: 'sidechannel/' + name,
      onopen () {
        rec.open = true
        out({ event: 'open', channel: name, peer })
      },
      onclose () {
        rec.open = false
        conn.records.delete(name)
        out({ event: 'closed', channel: name, peer })
      }
    })
    if (!ch) return
    const rec = { channel: ch, message: null, open: false }
    rec.message = ch.addMessage({
      encoding: countingJson(name),
      onmessage (payload) {
        const from = keyHex(payload?.from)
        const ev = {
          event: 'message',
          channel: name,
          peer,
          payload,
          sigValid: verifyHex(payload?.sig, sigBase(payload || {}), from),
          powBits: payload?.pow && typeof payload.pow.nonce === 'number'
            ? zeroBits(sha256(powBase(payload, payload.pow.nonce)))
            : 0
        }
        if (payload?.message?.control === 'welcome') {
          ev.welcomeValid = welcomeValid(payload.message.welcome, name)
        }
        out(ev)
      }
    })
    conn.records.set(name, rec)
    ch.open()
  }

  swarm.on('connection', (socket) => {
    const peer = hex(socket.remotePublicKey)
    const mux = Protomux.from(socket)
    const conn = { mux, records: new Map() }
    conns.set(peer, conn)
    out({ event: 'connection', peer })
    socket.on('error', () => {})
    socket.on('close', () => {
      if (conns.get(peer) === conn) conns.delete(peer)
      out({ event: 'disconnected', peer })
    })
    for (const name of channels) {
      mux.pair({ protocol: 'sidechannel/' + name }, () => openChannel(peer, name))
      openChannel(peer, name)
    }
  })

  async function join (name) {
    name = norm(name)
    if (channels.has(name)) return
    channels.add(name)
    for (const [peer, conn] of conns) {
      conn.mux.pair({ protocol: 'sidechannel/' + name }, () => openChannel(peer, name))
      openChannel(peer, name)
    }
    const d = swarm.join(topicOf(name), { server: true, client: true })
    await d.flushed()
  }

  function send (cmd) {
    const name = norm(cmd.channel)
    const from = cmd.spoofFrom ? keyHex(cmd.spoofFrom) : me
    const ts = Date.now()
    let message = cmd.message
    if (cmd.pad) message = { text: message, pad: 'x'.repeat(cmd.pad) }
    const p = {
      type: 'sidechannel',
      id: `${from}:${ts}:${Math.random().toString(36).slice(2, 10)}`,
      channel: name,
      from,
      origin: from,
      message,
      ts,
      ttl: cmd.ttl ?? 3
    }
    if (cmd.invite) p.invite = cmd.invite
    if (cmd.pow > 0) {
      for (let nonce = 0; ; nonce++) {
        if (zeroBits(sha256(powBase(p, nonce))) >= cmd.pow) { p.pow = { nonce, difficulty: cmd.pow }; break }
      }
    } else if (cmd.powMax > 0) {
      // A stamp that is not enough: fewer than powMax leading zero bits.
      for (let nonce = 0; ; nonce++) {
        const bits = zeroBits(sha256(powBase(p, nonce)))
        if (bits < cmd.powMax) { p.pow = { nonce, difficulty: cmd.powMax }; break }
      }
    }
    p.sig = signHex(sigBase(p), keyPair.secretKey)
    if (cmd.badSig) p.sig = (p.sig[0] === '0' ? '1' : '0') + p.sig.slice(1)
    let peers = 0
    for (const conn of conns.values()) {
      const rec = conn.records.get(name)
      if (rec && rec.open) {
        rec.message.send(p)
        peers++
      }
    }
    return { peers, id: p.id }
  }

  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', async (line) => {
    let cmd
    try { cmd = JSON.parse(line) } catch { return }
    try {
      if (cmd.op === 'join') {
        await join(cmd.channel)
        out({ event: 'reply', op: 'join', channel: norm(cmd.channel) })
      } else if (cmd.op === 'send') {
        out({ event: 'reply', op: 'send', ...send(cmd) })
      } else if (cmd.op === 'dial') {
        swarm.joinPeer(Buffer.from(cmd.peer, 'hex'))
        out({ event: 'reply', op: 'dial', peer: cmd.peer })
      } else if (cmd.op === 'stats') {
        out({ event: 'reply', op: 'stats', received, connections: conns.size })
      }
    } catch (e) {
      out({ event: 'reply', op: cmd.op, error: String(e && e.message) })
    }
  })
  rl.on('close', async () => {
    await swarm.destroy().catch(() => {})
    process.exit(0)
  })

  await join('0000intercom')
  out({ event: 'ready', publicKey: me })
}

main().catch((e) => {
  out({ event: 'fatal', error: String(e && e.stack) })
  process.exit(1)
})
