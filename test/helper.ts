import { access, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createServer, type AddressInfo } from 'node:net'
import pg from 'pg'
import type { FastifyInstance } from 'fastify'
import tap from 'tap'
import { connect, type DatabaseHandle } from '../src/db/connect.js'
import { buildApp, type BuildOptions } from '../src/app.js'
import { loadConfig, type Config } from '../src/config.js'

type Test = { teardown(fn: () => unknown): void }

// Where a test's database lives. With TEST_DATABASE_URL (or DATABASE_URL) set, every call
// makes a fresh database on that server and drops it afterwards; otherwise a fresh
// embedded database in a temporary DATA_DIR.
export interface TestEnv {
  DATABASE_URL?: string
  DATA_DIR: string
  KEYS_DIR: string
  KEY_ENCRYPTION_SECRET: string
}

export const REAL_POSTGRES = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL

// initdb inside PGlite takes seconds; copying a cleanly closed data directory takes a
// fraction of one. The template is made once per machine and PGlite version.
async function embeddedTemplate(): Promise<string> {
  const pkg = new URL('../node_modules/@electric-sql/pglite/package.json', import.meta.url)
  const { version } = JSON.parse(await readFile(pkg, 'utf8')) as { version: string }
  const dir = join(tmpdir(), `keysmith-pglite-template-${version}`)
  const ready = join(dir, 'READY')
  const exists = (p: string) => access(p).then(() => true, () => false)
  for (let waited = 0; !(await exists(ready)); waited += 200) {
    try {
      await mkdir(`${dir}.lock`)
    } catch {
      if (waited > 60_000) throw new Error(`timed out waiting for ${dir}`)
      await sleep(200)
      continue
    }
    try {
      await rm(dir, { recursive: true, force: true })
      await mkdir(dir, { recursive: true })
      const { PGlite } = await import('@electric-sql/pglite')
      const db = await PGlite.create(join(dir, 'pgdata'))
      await db.close()
      await writeFile(ready, '')
    } finally {
      await rm(`${dir}.lock`, { recursive: true, force: true })
    }
  }
  return join(dir, 'pgdata')
}

export async function freshDatabase(t: Test): Promise<TestEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'keysmith-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const env: TestEnv = {
    DATA_DIR: join(dir, 'data'),
    KEYS_DIR: join(dir, 'keys'),
    KEY_ENCRYPTION_SECRET: randomBytes(24).toString('base64url')
  }
  if (!REAL_POSTGRES) {
    await cp(await embeddedTemplate(), join(env.DATA_DIR, 'pgdata'), { recursive: true })
  } else {
    const name = `keysmith_test_${randomBytes(6).toString('hex')}`
    const admin = new pg.Client({ connectionString: REAL_POSTGRES })
    await admin.connect()
    await admin.query(`create database ${name}`)
    await admin.end()
    const url = new URL(REAL_POSTGRES)
    url.pathname = `/${name}`
    env.DATABASE_URL = url.toString()
    t.teardown(async () => {
      const c = new pg.Client({ connectionString: REAL_POSTGRES })
      await c.connect()
      await c.query(`drop database if exists ${name} with (force)`)
      await c.end()
    })
  }
  return env
}

// Small limits and fast argon2 keep the suite quick; tests override what they exercise.
export function testConfig(env: Partial<TestEnv> & Record<string, string | undefined>): Config {
  return loadConfig({
    LOG_LEVEL: 'silent',
    ARGON2_MEMORY_KIB: '19456',
    ARGON2_TIME_COST: '2',
    ...env
  })
}

// One database per test file (each file runs in its own process): opening an embedded
// database costs seconds, so tests in a file share it and use their own users. This handle
// owns the embedded database; apps built on it, and scripts, reach it like any instance.
let shared: Promise<{ env: TestEnv; handle: DatabaseHandle }> | undefined
export function sharedDatabase(): Promise<{ env: TestEnv; handle: DatabaseHandle }> {
  shared ??= (async () => {
    const env = await freshDatabase(tap)
    const handle = await connect({ databaseUrl: env.DATABASE_URL, dataDir: env.DATA_DIR })
    tap.teardown(() => handle.close())
    return { env, handle }
  })()
  return shared
}

export interface BuildTestOptions extends BuildOptions {
  env?: Record<string, string | undefined>
  // A database of the test's own (from freshDatabase) instead of the file's shared one.
  db?: TestEnv
}

export type TestApp = FastifyInstance & { testEnv: TestEnv }

export async function build(t: Test, opts: BuildTestOptions = {}): Promise<TestApp> {
  let db = opts.db
  let database = opts.database
  if (!db) {
    const s = await sharedDatabase()
    db = s.env
    database ??= s.handle
  }
  const app = await buildApp(testConfig({ ...db, ...opts.env }), { logger: false, ...opts, database })
  t.teardown(() => app.close())
  return Object.assign(app, { testEnv: db })
}

// A clock tests can move, so expiry is exercised without sleeping.
export function testClock(start = Date.now()) {
  let now = start
  return { now: () => now, advance: (seconds: number) => { now += seconds * 1000 } }
}

// Keysmith on a real loopback socket, for tests that talk HTTP to it (resource servers,
// examples). The issuer names the port, and the issuer is fixed at build time, so a free
// port is picked first.
export async function buildListening(t: Test, opts: BuildTestOptions = {}): Promise<TestApp & { issuer: string }> {
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as AddressInfo
  await new Promise((resolve) => probe.close(resolve))
  const issuer = `http://127.0.0.1:${port}`
  const app = await build(t, { ...opts, env: { PORT: String(port), ISSUER: issuer, ...opts.env } })
  await app.listen({ port, host: '127.0.0.1' })
  return Object.assign(app, { issuer })
}
