// Append throughput of JS hypercore 11 (the log_bench benchmark's JS side): a fresh
// corestore log in a temporary directory, COUNT single awaited appends of SIZE bytes,
// then COUNT more in batches of 1000. Prints one JSON line:
//   {"single": entries/s, "batched": entries/s}
//   node hypercore-append-bench.js COUNT SIZE
'use strict'
const Corestore = require('corestore')
const fs = require('fs')
const os = require('os')
const path = require('path')

async function main() {
  const [count, size] = process.argv.slice(2).map(Number)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hypercore-bench-'))
  const store = new Corestore(dir)
  const core = store.get({ name: 'bench' })
  await core.ready()
  const value = Buffer.alloc(size, 0x61)

  let t = process.hrtime.bigint()
  for (let i = 0; i < count; i++) await core.append(value)
  const single = count / (Number(process.hrtime.bigint() - t) / 1e9)

  const batch = new Array(1000).fill(value)
  t = process.hrtime.bigint()
  for (let i = 0; i < count; i += 1000) await core.append(batch)
  const batched = count / (Number(process.hrtime.bigint() - t) / 1e9)

  process.stdout.write(JSON.stringify({ single, batched }) + '\n')
  await store.close()
  fs.rmSync(dir, { recursive: true, force: true })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
