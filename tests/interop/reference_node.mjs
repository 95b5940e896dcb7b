#!/usr/bin/env node
// One node of the Sirannon reference implementation (@delali/sirannon-db, built locally by
// run_reference.sh and linked into node_modules through package.json), started from the command
// line and driven over a small HTTP control API, so that interop.py can put it next to real
// gatestream processes. The reference is used as a black box: this file only calls its public
// exports (Database, ChangeTracker, ReplicationEngine, PrimaryReplicaTopology,
// GrpcReplicationTransport, the better-sqlite3 driver).
//
// Usage:
//   node reference_node.mjs --role primary|replica --node-id ID --db PATH
//        [--grpc-host H] [--grpc-port P]          gRPC server address (a primary always listens)
//        [--peer HOST:PORT]...                    endpoints a replica dials (its primary)
//        [--cert F --key F [--ca F] | --insecure] TLS material (CN = node id) or plaintext
//        [--schema FILE]                          SQL run before the engine starts; every user
//                                                 table is then watched (change capture)
//        [--write-forwarding] [--no-initial-sync] [--forward-deadline-ms N]
//        [--control-port P]                       HTTP control port on 127.0.0.1 (0 = any)
//
// When the node is up it prints one line to stdout:
//   {"event":"ready","nodeId":...,"controlPort":N,"grpcPort":N}
// and then one JSON line per replication error the engine reports ({"event":"replication-error"}).
//
// Control API (JSON bodies; values are tagged so that nothing is lost through JavaScript
// numbers: {"int":"<decimal>"} an int64, {"real":<number>} a double, {"blob":"<base64>"} a
// blob, a string a text, null a NULL; a plain JSON number is passed as a JavaScript number):
//   GET  /status                  phase, role, current seq, applied seq per peer, peers, errors
//   POST /execute {sql, params}   engine.execute (a replica forwards it when forwarding is on)
//   POST /forward {statements}    engine.forwardStatements([{sql, params}])
//   POST /query {sql, params}     engine.query, rows with tagged values
//   POST /watch {table}           start capturing changes of a table created later
//   POST /stop                    stop the engine, close the database, exit 0
// An error answers 500 {"error": {"name", "code", "message"}}.

import { Buffer } from 'node:buffer'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'

import { ChangeTracker, Database } from '@delali/sirannon-db'
import { betterSqlite3 } from '@delali/sirannon-db/driver/better-sqlite3'
import { PrimaryReplicaTopology, ReplicationEngine } from '@delali/sirannon-db/replication'
import { GrpcReplicationTransport } from '@delali/sirannon-db/transport/grpc'

const { values: opt } = parseArgs({
  options: {
    role: { type: 'string' },
    'node-id': { type: 'string' },
    db: { type: 'string' },
    'grpc-host': { type: 'string', default: '127.0.0.1' },
    'grpc-port': { type: 'string', default: '0' },
    peer: { type: 'string', multiple: true, default: [] },
    cert: { type: 'string' },
    key: { type: 'string' },
    ca: { type: 'string' },
    insecure: { type: 'boolean', default: false },
    schema: { type: 'string' },
    'write-forwarding': { type: 'boolean', default: false },
    'no-initial-sync': { type: 'boolean', default: false },
    'forward-deadline-ms': { type: 'string', default: '10000' },
    'control-port': { type: 'string', default: '0' },
  },
  strict: true,
})

function die(msg) {
  process.stderr.write(`reference_node: ${msg}\n`)
  process.exit(2)
}

if (opt.role !== 'primary' && opt.role !== 'replica') die('--role must be primary or replica')
if (!opt['node-id']) die('--node-id is required')
if (!opt.db) die('--db is required')
if (!opt.insecure && (!opt.cert || !opt.key)) die('--cert and --key are required unless --insecure')
if (opt.role === 'replica' && opt.peer.length === 0) die('a replica needs --peer HOST:PORT')

const nodeId = opt['node-id']
const log = msg => process.stderr.write(`[${new Date().toISOString()}] ${nodeId}: ${msg}\n`)

// ---- tagged values ----

function fromTagged(v) {
  if (v === null || v === undefined) return null
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v
  if (Array.isArray(v)) return v.map(fromTagged)
  if (typeof v === 'object') {
    if ('int' in v) return BigInt(v.int)
    if ('real' in v) {
      if (v.real === 'NaN') return Number.NaN
      if (v.real === 'Infinity') return Number.POSITIVE_INFINITY
      if (v.real === '-Infinity') return Number.NEGATIVE_INFINITY
      return Number(v.real)
    }
    if ('blob' in v) return Buffer.from(v.blob, 'base64')
    const named = {}
    for (const [k, x] of Object.entries(v)) named[k] = fromTagged(x)
    return named
  }
  throw new Error(`cannot decode parameter ${JSON.stringify(v)}`)
}

function toTagged(v) {
  if (v === null || v === undefined) return null
  if (typeof v === 'bigint') return { int: v.toString() }
  if (typeof v === 'number') return Number.isInteger(v) ? { int: String(v) } : { real: v }
  if (typeof v === 'string') return v
  if (typeof v === 'boolean') return v
  if (v instanceof Uint8Array) return { blob: Buffer.from(v).toString('base64') }
  if (Array.isArray(v)) return v.map(toTagged)
  if (typeof v === 'object') {
    const out = {}
    for (const [k, x] of Object.entries(v)) out[k] = toTagged(x)
    return out
  }
  return String(v)
}

function jsonSafe(v) {
  return JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x)))
}

// ---- the node ----

const driver = betterSqlite3()
const conn = await driver.open(opt.db)
await conn.exec('PRAGMA journal_mode = WAL')
const tracker = new ChangeTracker()

if (opt.schema) {
  await conn.exec(readFileSync(opt.schema, 'utf8'))
}

async function userTables() {
  const stmt = await conn.prepare(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' " +
      "AND name NOT LIKE '\\_sirannon\\_%' ESCAPE '\\' ORDER BY name",
  )
  return (await stmt.all()).map(r => r.name)
}

if (opt.role === 'primary') {
  for (const table of await userTables()) {
    await tracker.watch(conn, table)
  }
}

const db = await Database.create(`ref-${nodeId}`, opt.db, driver)

const transport = new GrpcReplicationTransport(
  opt.insecure
    ? {
        host: opt['grpc-host'],
        port: Number(opt['grpc-port']),
        insecure: true,
        forwardDeadlineMs: Number(opt['forward-deadline-ms']),
      }
    : {
        host: opt['grpc-host'],
        port: Number(opt['grpc-port']),
        tlsCert: opt.cert,
        tlsKey: opt.key,
        tlsCaCert: opt.ca,
        forwardDeadlineMs: Number(opt['forward-deadline-ms']),
      },
)

const config = {
  nodeId,
  topology: new PrimaryReplicaTopology(opt.role),
  transport,
  batchIntervalMs: 30,
  changeTracker: tracker,
  writeForwarding: opt['write-forwarding'],
  initialSync: !opt['no-initial-sync'],
  syncAckTimeoutMs: 10_000,
  catchUpDeadlineMs: 20_000,
  maxSyncLagBeforeReady: 10,
}
if (opt.role === 'primary') {
  config.snapshotConnectionFactory = () => driver.open(opt.db, { readonly: true })
} else {
  config.transportConfig = { localRole: 'replica', endpoints: opt.peer }
}

const engine = new ReplicationEngine(db, conn, config)
const errors = []
engine.on('replication-error', ev => {
  const rec = {
    event: 'replication-error',
    operation: ev.operation,
    peerId: ev.peerId,
    recoverable: ev.recoverable,
    message: ev.error?.message ?? String(ev.error),
    code: ev.error?.code,
  }
  errors.push(rec)
  if (errors.length > 100) errors.shift()
  process.stdout.write(`${JSON.stringify(rec)}\n`)
})

await engine.start()
log(`engine started as ${opt.role}; gRPC port ${transport.getPort()}`)

// ---- control API ----

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      try {
        resolve(text ? JSON.parse(text) : {})
      } catch (e) {
        reject(e)
      }
    })
    req.on('error', reject)
  })
}

function status() {
  const st = engine.status()
  const applied = {}
  for (const peer of st.peers) applied[peer.nodeId] = engine.getAppliedSeq(peer.nodeId).toString()
  return jsonSafe({
    nodeId: st.nodeId,
    role: st.role,
    phase: st.syncState?.phase ?? null,
    syncState: st.syncState,
    health: st.health,
    currentSeq: engine.getCurrentSeq().toString(),
    applied,
    peers: st.peers,
    transportPeers: [...transport.peers().keys()],
    errors,
  })
}

let stopping = false
async function shutdown(code) {
  if (stopping) return
  stopping = true
  try {
    await engine.stop()
  } catch (e) {
    log(`engine.stop: ${e.message}`)
  }
  try {
    if (!db.closed) await db.close()
  } catch (e) {
    log(`db.close: ${e.message}`)
  }
  try {
    await conn.close()
  } catch (e) {
    log(`conn.close: ${e.message}`)
  }
  process.exit(code)
}

const routes = {
  'GET /status': async () => status(),
  'POST /execute': async b => {
    const r = await engine.execute(b.sql, fromTagged(b.params ?? undefined) ?? undefined)
    return { changes: r.changes, lastInsertRowId: toTagged(r.lastInsertRowId) }
  },
  'POST /forward': async b => {
    const r = await engine.forwardStatements(
      b.statements.map(s => ({
        sql: s.sql,
        params: fromTagged(s.params ?? undefined) ?? undefined,
      })),
    )
    return jsonSafe({
      requestId: r.requestId,
      results: r.results.map(x => ({
        changes: x.changes,
        lastInsertRowId: toTagged(x.lastInsertRowId),
      })),
    })
  },
  'POST /query': async b => {
    const rows = await engine.query(b.sql, fromTagged(b.params ?? undefined) ?? undefined)
    return { rows: rows.map(toTagged) }
  },
  'POST /watch': async b => {
    await tracker.watch(conn, b.table)
    return { watched: b.table }
  },
  'POST /stop': async () => {
    setImmediate(() => shutdown(0))
    return { stopping: true }
  },
}

const server = createServer(async (req, res) => {
  const route = routes[`${req.method} ${req.url}`]
  let code = 200
  let out
  if (!route) {
    code = 404
    out = { error: { message: `no route ${req.method} ${req.url}` } }
  } else {
    try {
      out = await route(await readBody(req))
    } catch (e) {
      code = 500
      out = { error: { name: e?.name, code: e?.code, message: e?.message ?? String(e) } }
    }
  }
  const text = JSON.stringify(out)
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  })
  res.end(text)
})

server.listen(Number(opt['control-port']), '127.0.0.1', () => {
  const ready = {
    event: 'ready',
    nodeId,
    role: opt.role,
    controlPort: server.address().port,
    grpcPort: transport.getPort(),
  }
  process.stdout.write(`${JSON.stringify(ready)}\n`)
})

process.on('SIGTERM', () => shutdown(0))
process.on('SIGINT', () => shutdown(0))
