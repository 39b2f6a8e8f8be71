import t, { type Test } from 'tap'
import { readdir } from 'node:fs/promises'
import { connect as tcpConnect, createServer, type NetConnectOpts, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql, type Kysely } from 'kysely'
import pg from 'pg'
import { build, freshDatabase, REAL_POSTGRES, sharedDatabase, type TestEnv } from '../helper.js'
import { connect } from '../../src/db/connect.js'
import { migrateToLatest } from '../../src/db/migrate.js'
import { ROTATION_LANE, SessionEngine } from '../../src/sessions/engine.js'
import { createUser } from '../../src/accounts.js'
import { childEnv, eventually, freePort, run } from '../support.js'
import { answer, wire, WireClient } from '../pg-wire.js'

const MIGRATIONS = fileURLToPath(new URL('../../migrations', import.meta.url))
const migrationNames = async () =>
  (await readdir(MIGRATIONS)).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '')).sort()

const appliedMigrations = async (db: Kysely<any>) =>
  (await sql<{ name: string; n: number }>`select name, count(*)::int as n from kysely_migration group by name order by name`.execute(db)).rows

// Where the test database listens: the real server, or the embedded one's unix socket.
function databaseAddress(env: TestEnv): NetConnectOpts {
  if (!env.DATABASE_URL) return { path: join(env.DATA_DIR, '.s.PGSQL.5432') }
  const url = new URL(env.DATABASE_URL)
  return { host: url.hostname, port: Number(url.port || 5432) }
}

async function open(t: Test, env: TestEnv) {
  const handle = await connect({ databaseUrl: env.DATABASE_URL, dataDir: env.DATA_DIR })
  t.teardown(() => handle.close())
  return handle
}

t.test('the suite runs in the database mode it was given', async (t) => {
  const app = await build(t)
  t.equal(app.database.mode, REAL_POSTGRES ? 'postgres' : 'embedded')
  const { rows } = await sql<{ version: string }>`select version()`.execute(app.db)
  t.match(rows[0]!.version, /PostgreSQL/)
})

t.test('migrating applies each migration once, and a second run applies nothing', async (t) => {
  const env = await freshDatabase(t)
  const handle = await open(t, env)
  const names = await migrationNames()
  const first = await migrateToLatest(handle.db)
  t.same(first.map((r) => [r.migrationName, r.status]), names.map((n) => [n, 'Success']))
  t.same(await migrateToLatest(handle.db), [], 'the second run applies nothing')
  t.same(await appliedMigrations(handle.db), names.map((name) => ({ name, n: 1 })))
  const tables = await sql<{ table_name: string }>`select table_name from information_schema.tables
    where table_schema = 'public' and table_name not like 'kysely_%' order by table_name`.execute(handle.db)
  t.same(tables.rows.map((r) => r.table_name),
    ['audit_events', 'denied_tokens', 'refresh_families', 'refresh_tokens', 'signing_keys', 'user_roles', 'users'])
})

t.test('two instances opening and migrating a fresh database at once both succeed', async (t) => {
  const env = await freshDatabase(t)
  // In embedded mode one of them opens the database and the other waits for its socket.
  const [a, b] = await Promise.all([open(t, env), open(t, env)])
  t.equal(a.mode, b.mode)
  const results = await Promise.all([migrateToLatest(a.db), migrateToLatest(b.db)])
  const names = await migrationNames()
  t.same(results.flat().map((r) => r.migrationName).sort(), names, 'each migration ran once in all')
  t.same(await appliedMigrations(b.db), names.map((name) => ({ name, n: 1 })), 'one row per migration')
})

t.test('npm run migrate reports the applied migrations', async (t) => {
  const { env } = await sharedDatabase()
  const result = await run('scripts/migrate.ts', [], childEnv({ ...env, LOG_LEVEL: 'silent' }))
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stdout, `migrations applied: ${(await migrationNames()).length} (${REAL_POSTGRES ? 'postgres' : 'embedded'} database)\n`)
})

// A TCP hop between an app and its database, to take the database away and bring it back.
async function databaseProxy(t: Test, env: TestEnv) {
  const target = databaseAddress(env)
  const port = await freePort()
  const sockets = new Set<Socket>()
  let server: Server | undefined
  const up = () => new Promise<void>((resolve, reject) => {
    server = createServer((client) => {
      const upstream = tcpConnect(target)
      for (const s of [client, upstream]) {
        sockets.add(s)
        s.on('error', () => {}).on('close', () => { client.destroy(); upstream.destroy(); sockets.delete(s) })
      }
      client.pipe(upstream).pipe(client)
    })
    server.once('error', reject).listen(port, '127.0.0.1', () => resolve())
  })
  const down = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy()
    if (server) server.close(() => resolve())
    else resolve()
    server = undefined
  })
  t.teardown(down)
  await up()
  const url = new URL(env.DATABASE_URL ?? 'postgres://postgres@localhost/postgres')
  url.hostname = '127.0.0.1'
  url.port = String(port)
  return { url: url.toString(), up, down }
}

t.test("the refresh rotation's own connections plan for index lookups, on top of the URL's options", async (t) => {
  const { env } = await sharedDatabase()
  const url = env.DATABASE_URL ? new URL(env.DATABASE_URL) : undefined
  url?.searchParams.set('options', '-c statement_timeout=12345')
  const handle = await connect({ databaseUrl: url?.toString(), dataDir: env.DATA_DIR })
  t.teardown(() => handle.close())
  const lane = handle.lane('rotation', ROTATION_LANE)
  if (!url) {
    t.equal(lane, undefined, 'embedded: one session, no lanes')
    return
  }
  const show = async (pool: pg.Pool, name: string) => (await pool.query(`show ${name}`)).rows[0][name]
  for (const name of ['enable_seqscan', 'enable_hashjoin', 'enable_mergejoin', 'jit']) {
    t.equal(await show(lane!, name), 'off', `${name} on the rotation's connections`)
  }
  for (const name of ['enable_seqscan', 'enable_hashjoin', 'enable_mergejoin']) {
    t.equal(await show(handle.pool, name), 'on', `${name} left alone on the main pool`)
  }
  t.equal(await show(lane!, 'statement_timeout'), '12345ms', "the URL's own options still apply")
  t.equal(handle.lane('rotation', ROTATION_LANE), lane, 'one pool per name')
  t.equal(lane!.options.max, ROTATION_LANE.max)
})

// Real PostgreSQL only: the embedded database is one session, with no lanes. A prepared
// rotation keeps the plan made on its connection's first runs. Made while the
// tables were small, that plan scanned them, or started from the user's families, and every
// batch paid for it as the tables grew. Here the statistics say "nearly empty" while the
// tables hold thousands of sessions: the rotation must still go by primary key only.
if (REAL_POSTGRES) t.test('rotations read tokens and families by primary key, even with statistics from when the tables were empty', async (t) => {
  const env = await freshDatabase(t)
  const handle = await connect({ databaseUrl: env.DATABASE_URL, dataDir: env.DATA_DIR })
  t.teardown(() => handle.close())
  await migrateToLatest(handle.db)
  const engine = new SessionEngine(handle.db, {
    refreshTtlSeconds: 3600,
    maxAgeSeconds: 86_400,
    rotationPool: handle.lane('rotation', ROTATION_LANE)
  })
  const user = await createUser(handle.db, 'plan@example.com', 'not-a-hash')
  const chains = await Promise.all(Array.from({ length: 16 }, () => engine.start(user.id, 'oauth')))
  await sql`analyze`.execute(handle.db)
  for (let i = 0; i < 2000; i += 100) await Promise.all(Array.from({ length: 100 }, () => engine.start(user.id, 'oauth')))

  // Statistics reach the views when a backend flushes them: at once for the ones asked to.
  const lane = handle.lane('rotation', ROTATION_LANE) ?? handle.pool
  const flush = async (pool: pg.Pool, n: number) => {
    const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()))
    for (const c of clients) await c.query('select pg_stat_force_next_flush()')
    clients.forEach((c) => c.release())
  }
  const reads = async () => {
    await flush(lane, ROTATION_LANE.max)
    const r = await sql<{ relname: string; seq_scan: string; families_by_user: string | null }>`
      select t.relname, t.seq_scan::text,
        (select idx_scan::text from pg_stat_user_indexes i where i.indexrelname = 'refresh_families_user' and i.relid = t.relid) as families_by_user
      from pg_stat_user_tables t where t.relname in ('refresh_tokens', 'refresh_families')
      order by t.relname`.execute(handle.db)
    return r.rows
  }
  const before = await reads()
  for (let round = 0; round < 20; round++) {
    await Promise.all(chains.map(async (c) => {
      const r = await engine.rotate(c.refreshToken, 'oauth', 0)
      if (!r.ok) throw new Error(`rotation refused: ${r.reason}`)
      c.refreshToken = r.refreshToken
    }))
  }
  const after = await reads()
  t.equal(after.length, 2)
  t.same(after, before, 'no sequential scan, and no walk through the user\'s families, in 320 rotations')
  const spent = await sql<{ n: number }>`select count(*)::int as n from refresh_tokens where used_at is not null`.execute(handle.db)
  t.equal(spent.rows[0]!.n, 16 * 20, 'every rotation spent its token')
})

// Embedded only: a real server runs its own autovacuum.
if (!REAL_POSTGRES) t.test('the embedded database is vacuumed and analysed by its owner, between transactions', async (t) => {
  const env = await freshDatabase(t)
  const handle = await connect({ databaseUrl: undefined, dataDir: env.DATA_DIR, maintenanceIntervalMs: 150 })
  t.teardown(() => handle.close())
  await migrateToLatest(handle.db)
  await sql`insert into denied_tokens (jti, expires_at) select g::text, now() from generate_series(1, 1000) g`.execute(handle.db)
  await sql`delete from denied_tokens`.execute(handle.db)
  // A transaction spanning several maintenance ticks: VACUUM must wait for its end, not
  // run inside it (it would fail there) or between its statements.
  await handle.db.transaction().execute(async (trx) => {
    await sql`insert into denied_tokens (jti, expires_at) values ('kept', now())`.execute(trx)
    await sql`select pg_sleep(0.5)`.execute(trx)
  })
  // A tick before the commit already found the deleted rows (and no live one): wait for one
  // after it.
  const committed = (await sql<{ at: Date }>`select clock_timestamp() as at`.execute(handle.db)).rows[0]!.at
  const stats = async () => (await sql<{ vacuumed: boolean; analysed: boolean; dead: number; live: number }>`
    select coalesce(last_vacuum > ${committed}, false) as vacuumed, coalesce(last_analyze > ${committed}, false) as analysed,
      n_dead_tup::int as dead, n_live_tup::int as live
    from pg_stat_user_tables where relname = 'denied_tokens'`.execute(handle.db)).rows[0]
  const done = await eventually(async () => {
    const s = await stats()
    return s?.vacuumed && s.analysed && s.dead === 0 ? s : undefined
  }, 20_000)
  t.same(done, { vacuumed: true, analysed: true, dead: 0, live: 1 }, 'dead rows reclaimed, statistics taken')
  const kept = await sql<{ jti: string }>`select jti from denied_tokens`.execute(handle.db)
  t.same(kept.rows, [{ jti: 'kept' }], 'the transaction committed whole')
})

t.test('ready is 503 while the database is away, and 200 again once it is back', async (t) => {
  const { env } = await sharedDatabase()
  const proxy = await databaseProxy(t, env)
  const app = await build(t, { db: { ...env, DATABASE_URL: proxy.url } })
  app.get('/t', { onRequest: app.authenticate }, async (request) => ({ id: request.user!.id }))
  const { token } = await app.signer.mint({ sub: '00000000-0000-4000-8000-000000000001', roles: [] })
  const auth = { authorization: `Bearer ${token}` }
  t.equal((await app.inject('/ready')).statusCode, 200)
  t.equal((await app.inject({ url: '/t', headers: auth })).statusCode, 200)

  await proxy.down()
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 503)
  t.match(ready.json(), { status: 'unavailable', database: false, signing_key: true })
  t.equal((await app.inject('/health')).statusCode, 200, 'health still answers')
  const protectedRoute = await app.inject({ url: '/t', headers: auth })
  t.equal(protectedRoute.statusCode, 503, 'a route that needs the database answers 503')
  t.ok(protectedRoute.headers['retry-after'], 'with Retry-After')
  t.same(protectedRoute.json(), { statusCode: 503, error: 'Service Unavailable', message: 'Service temporarily unavailable' })

  await proxy.up()
  const back = await eventually(async () => (await app.inject('/ready')).statusCode === 200)
  t.ok(back, 'ready again once the database answers')
  t.equal((await app.inject({ url: '/t', headers: auth })).statusCode, 200)
})

t.test("a connection's statement batch is never mixed with another connection's", async (t) => {
  const { env } = await sharedDatabase()
  const database = env.DATABASE_URL ? new URL(env.DATABASE_URL).pathname.slice(1) : 'postgres'
  const a = await WireClient.open(databaseAddress(env), database)
  const b = await WireClient.open(databaseAddress(env), database)
  t.teardown(() => { a.close(); b.close() })
  // A's batch arrives in two parts, as it may from another process; B's comes in between.
  a.send(wire.parse('select $1::int + 1'), wire.flush())
  await a.until('1') // ParseComplete
  b.send(wire.parse("select $1::text || '!'"), wire.bind('b'), wire.execute(), wire.sync())
  a.send(wire.bind('41'), wire.execute(), wire.sync())
  const [answerA, answerB] = await Promise.all([a.until('Z'), b.until('Z')])
  t.same(answer(answerA), { values: ['42'] }, 'A runs its own statement')
  t.same(answer(answerB), { values: ['b!'] }, 'B runs its own statement')
})

t.test('a connection that hangs up mid-transaction has it rolled back and blocks no one', async (t) => {
  const { env, handle } = await sharedDatabase()
  await migrateToLatest(handle.db)
  const config = env.DATABASE_URL
    ? { connectionString: env.DATABASE_URL }
    : { host: env.DATA_DIR, user: 'postgres', database: 'postgres' }
  const type = `test.hangup.${Date.now()}`
  const a = new pg.Client(config)
  await a.connect()
  await a.query('begin')
  await a.query('insert into audit_events (type) values ($1)', [type])
  await a.end()
  const b = new pg.Client(config)
  await b.connect()
  t.teardown(() => b.end())
  const { rows } = await b.query('select count(*)::int as n from audit_events where type = $1', [type])
  t.same(rows, [{ n: 0 }])
})
