// Several real Keysmith servers (src/server.ts, each its own process and loopback port) on
// one PostgreSQL database, the way a cluster behind a load balancer runs.
//
//   const c = await startInstances(t, { count: 3, env: { RATE_LIMIT_MAX: '6' } })
//   c.urls[i]                 'http://127.0.0.1:<port>' of instance i
//   c.procs[i]                its Child (test/support.ts): .child, .output(), .exited
//   c.env                     the environment every instance shares (DATABASE_URL, secrets…)
//   await c.stop(i)           SIGTERM, SIGKILL after 10 s; resolves with its RunResult
//   await c.kill(i)           SIGKILL at once
//   await c.restart(i, env?)  start instance i again on its port (env merged over c.env), wait for /ready
//
// Every instance gets ISSUER = AUDIENCE = http://keysmith.test (tokens of one verify on the
// others), one KEY_ENCRYPTION_SECRET, REDIS_URL (test/redis-helper.ts), LOG_LEVEL=warn and
// TRUST_PROXY=127.0.0.1, so a test plays many clients by sending X-Forwarded-For.
// `env` overrides any of these; a value `undefined` removes the variable. Without a
// DATABASE_URL in `env`, a scratch database is made on the run's PostgreSQL
// (TEST_DATABASE_URL or DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres) and
// dropped after the servers stop. Teardown (registered on `t`) stops whatever still runs.
import { mkdtemp, rm } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { scratchDatabase } from '../../scripts/bench/harness.js'
import { REAL_POSTGRES } from '../helper.js'
import { REDIS_URL } from '../redis-helper.js'
import { childEnv, eventually, freePort, start, type Child, type RunResult } from '../support.js'

type Test = { teardown(fn: () => unknown): void }
export type Env = Record<string, string | undefined>

export const ISSUER = 'http://keysmith.test'
export const LOCAL_POSTGRES = 'postgres://postgres@127.0.0.1:5432/postgres'

export interface Instances {
  urls: string[]
  procs: Child[]
  env: Env
  stop(i: number): Promise<RunResult>
  kill(i: number): Promise<RunResult>
  restart(i: number, env?: Env): Promise<void>
}

const running = (c: Child) => c.child.exitCode === null && c.child.signalCode === null

export async function stopChild(c: Child, graceMs = 10_000): Promise<RunResult> {
  if (running(c)) c.child.kill('SIGTERM')
  const timer = setTimeout(() => { if (running(c)) c.child.kill('SIGKILL') }, graceMs)
  try {
    return await c.exited
  } finally {
    clearTimeout(timer)
  }
}

// Resolves once `url`/ready answers 200; throws with the server's stderr if it exits first
// or is not ready within `ms` (a fresh database migrates and makes RSA keys first).
export async function waitReady(c: Child, url: string, ms = 90_000): Promise<void> {
  let exited = false
  void c.exited.then(() => { exited = true })
  const ready = await eventually(async () => exited ||
    await fetch(`${url}/ready`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false), ms)
  if (exited || !ready) throw new Error(`keysmith at ${url} did not become ready: ${c.output().stderr.slice(-2000)}`)
}

export async function startInstances(t: Test, opts: { count: number; env?: Env }): Promise<Instances> {
  const dir = await mkdtemp(join(tmpdir(), 'keysmith-cluster-'))
  const procs: Child[] = []
  let drop: (() => Promise<void>) | undefined
  t.teardown(async () => {
    await Promise.all(procs.map((c) => stopChild(c)))
    await drop?.()
    await rm(dir, { recursive: true, force: true })
  })

  let databaseUrl = opts.env?.DATABASE_URL
  if (!opts.env || !('DATABASE_URL' in opts.env)) {
    const scratch = await scratchDatabase(REAL_POSTGRES ?? LOCAL_POSTGRES, 'cluster')
    drop = scratch.drop
    databaseUrl = scratch.url
  }
  const env: Env = {
    DATABASE_URL: databaseUrl,
    DATA_DIR: join(dir, 'data'),
    KEYS_DIR: join(dir, 'keys'),
    KEY_ENCRYPTION_SECRET: randomBytes(32).toString('base64url'),
    ISSUER,
    AUDIENCE: ISSUER,
    REDIS_URL,
    HOST: '127.0.0.1',
    TRUST_PROXY: '127.0.0.1',
    LOG_LEVEL: 'warn',
    ...opts.env
  }
  const ports = await Promise.all(Array.from({ length: opts.count }, () => freePort()))
  const urls = ports.map((p) => `http://127.0.0.1:${p}`)
  const launch = (i: number, extra: Env = {}) => {
    procs[i] = start('src/server.ts', [], childEnv({ ...env, ...extra, PORT: String(ports[i]) }))
    return waitReady(procs[i]!, urls[i]!)
  }
  await Promise.all(ports.map((_, i) => launch(i)))

  return {
    urls,
    procs,
    env,
    stop: (i) => stopChild(procs[i]!),
    kill: (i) => {
      if (running(procs[i]!)) procs[i]!.child.kill('SIGKILL')
      return procs[i]!.exited
    },
    restart: async (i, extra) => {
      await stopChild(procs[i]!)
      await launch(i, extra)
    }
  }
}
