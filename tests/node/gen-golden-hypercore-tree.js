// Writes tests/golden/hypercore-tree.json from the pinned JS hypercore 11.37.1: a log
// created from a fixed key pair (default single-signer manifest-v1, as corestore makes
// them), with its key, discovery key, encoded manifest, and after every append its tree
// hash, roots and signature; then proofs (`core.proof`) for block, hash and upgrade
// requests against the final log, and the requests JS refuses.
// Usage (from /work/main/tests): node node/gen-golden-hypercore-tree.js
'use strict'
const fs = require('fs')
const os = require('os')
const path = require('path')
const c = require('compact-encoding')
const crypto = require('hypercore-crypto')
const Hypercore = require('hypercore')
const m = require('hypercore/lib/messages')

const hex = (b) => (b === null || b === undefined ? null : Buffer.from(b).toString('hex'))
const nodeJson = (n) => ({ index: n.index, size: n.size, hash: hex(n.hash) })
const nodesJson = (ns) => (ns ? ns.map(nodeJson) : null)
const LENGTH = 37

function entry(i) {
  // Varying sizes so byte lengths and sizes in parents differ.
  return Buffer.from('entry-' + i + '-' + 'x'.repeat(i % 7))
}

function proofJson(p) {
  return {
    fork: p.fork,
    block: p.block ? { index: p.block.index, value: hex(p.block.value), nodes: nodesJson(p.block.nodes) } : null,
    hash: p.hash ? { index: p.hash.index, nodes: nodesJson(p.hash.nodes) } : null,
    upgrade: p.upgrade
      ? {
          start: p.upgrade.start,
          length: p.upgrade.length,
          nodes: nodesJson(p.upgrade.nodes),
          additionalNodes: nodesJson(p.upgrade.additionalNodes),
          signature: hex(p.upgrade.signature)
        }
      : null
  }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'golden-hypercore-'))
  const seed = Buffer.alloc(32, 7)
  const keyPair = crypto.keyPair(seed)
  const core = new Hypercore(dir, { keyPair })
  await core.ready()

  const heads = []
  for (let i = 0; i < LENGTH; i++) {
    await core.append(entry(i))
    const state = core.core.state
    heads.push({
      length: state.length,
      byteLength: state.byteLength,
      treeHash: hex(await core.treeHash()),
      roots: state.roots.map(nodeJson),
      signature: hex(state.signature)
    })
  }

  const requests = [
    { block: { index: 0, nodes: 0 } },
    { block: { index: 5, nodes: 2 } },
    { block: { index: 31, nodes: 4 } },
    { block: { index: 36, nodes: 0 } },
    { block: { index: 33, nodes: 1 } },
    { hash: { index: 9, nodes: 1 } },
    { hash: { index: 3, nodes: 0 } },
    { upgrade: { start: 0, length: LENGTH } },
    { upgrade: { start: 5, length: 32 } },
    { upgrade: { start: 13, length: 10 } },
    { upgrade: { start: 36, length: 1 } },
    { upgrade: { start: 8, length: 8 } },
    { block: { index: 20, nodes: 0 }, upgrade: { start: 13, length: 24 } },
    { block: { index: 3, nodes: 2 }, upgrade: { start: 13, length: 24 } },
    { block: { index: 12, nodes: 0 }, upgrade: { start: 13, length: 3 } },
    { block: { index: 12, nodes: 3 }, upgrade: { start: 13, length: 3 } }, // answered, not verifiable at length 13
    { block: { index: 36, nodes: 0 }, upgrade: { start: 32, length: 5 } },
    { block: { index: 2, nodes: 0 }, upgrade: { start: 0, length: 4 } },
    { hash: { index: 41, nodes: 0 }, upgrade: { start: 17, length: 12 } },
    // refused by JS
    { upgrade: { start: 30, length: 10 } },
    { upgrade: { start: 3, length: 0 } },
    { block: { index: 0, nodes: 7 } }
  ]

  const proofs = []
  for (const req of requests) {
    const copy = JSON.parse(JSON.stringify(req))
    try {
      const p = await core.proof(req)
      proofs.push({ request: copy, proof: proofJson(p) })
    } catch (err) {
      proofs.push({ request: copy, error: err.code || err.message })
    }
  }

  const out = {
    generator: 'tests/node/gen-golden-hypercore-tree.js (hypercore 11.37.1)',
    seed: hex(seed),
    publicKey: hex(keyPair.publicKey),
    key: hex(core.key),
    discoveryKey: hex(core.discoveryKey),
    manifest: hex(c.encode(m.manifest, core.manifest)),
    entries: Array.from({ length: LENGTH }, (_, i) => hex(entry(i))),
    heads,
    proofs
  }
  await core.close()
  fs.rmSync(dir, { recursive: true, force: true })
  const file = path.join(__dirname, '..', 'golden', 'hypercore-tree.json')
  fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n')
  console.log('wrote', file, proofs.length, 'proofs')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
