import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { connect } from 'node:net'
import { Redis } from 'ioredis'
import { PASSWORD, uniqueEmail, uniqueIp } from '../accounts-helper.js'
import { eventually, freePort } from '../support.js'
import { startInstances } from './instances.js'
import { call, jwksKids, login, me, oauthToken, refresh, register, type CallOptions } from './http.js'

// Two instances on a Redis of this test's own, which it kills and brings back: with Redis
// gone every endpoint keeps answering (promptly, never 5xx), the request limit and the
// login throttle keep counting, each instance on its own, and once Redis is back the
// instances count together again. The shared Redis on 6379 is never touched.
const RATE_LIMIT_MAX = 6
const redisPort = await freePort()
const redisUrl = `redis://127.0.0.1:${redisPort}`

function ping(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(redisPort, '127.0.0.1', () => s.write('PING\r\n'))
    s.setEncoding('utf8').on('data', (d: string) => { s.destroy(); resolve(d.startsWith('+PONG')) })
    s.on('error', () => resolve(false))
  })
}

let redis: ChildProcess | undefined
async function startRedis() {
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    { stdio: 'ignore' })
  redis.on('error', (err) => t.fail(`redis-server: ${err.message}`))
  if (!(await eventually(ping, 10_000))) throw new Error(`redis-server did not answer on ${redisPort}`)
}
async function killRedis() {
  const exited = new Promise((resolve) => redis!.once('exit', resolve))
  redis!.kill('SIGKILL')
  await exited
}
t.teardown(() => { redis?.kill('SIGKILL') })

await startRedis()
const cluster = await startInstances(t, { count: 2, env: { REDIS_URL: redisUrl, RATE_LIMIT_MAX: String(RATE_LIMIT_MAX) } })
const [A, B] = cluster.urls as [string, string]
const warnings = (i: number) => cluster.procs[i]!.output().stdout.split('\n').filter((l) => l.includes('redis unavailable')).length

// During the outage nothing may hang: every call gets 2 s.
const quick: CallOptions = { timeoutMs: 2000 }

const user = await register(A)

// A request whose address Redis now holds a counter for shows the instance counts in Redis.
async function countsInRedis(base: string): Promise<boolean> {
  const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await probe.connect()
    return await eventually(async () => {
      const ip = uniqueIp()
      await call(base, '/auth/refresh', { ip, method: 'POST' })
      return (await probe.keys(`keysmith:rl:*${ip}`)).length > 0
    }, 15_000)
  } finally {
    probe.disconnect()
  }
}

t.test('with Redis gone, login, refresh, /auth/me, the token endpoint and JWKS keep working', async (t) => {
  await killRedis()
  const started = await login(A, user.email, PASSWORD, quick)
  t.equal(started.status, 200, 'login on A')
  const rotated = await refresh(B, started.cookie!, quick)
  t.equal(rotated.status, 200, 'refresh on B')
  t.equal((await me(A, rotated.body.access_token, quick)).status, 200, '/auth/me on A with a token from B')
  const grant = await oauthToken(B, { grant_type: 'password', username: user.email, password: PASSWORD }, quick)
  t.equal(grant.status, 200, 'password grant on B')
  t.equal((await oauthToken(A, { grant_type: 'refresh_token', refresh_token: grant.body.refresh_token }, quick)).status, 200,
    'refresh_token grant on A')
  for (const base of [A, B]) t.ok((await jwksKids(base, quick)).length >= 2, 'JWKS')
})

t.test('with Redis gone, the request limit still applies on each instance', async (t) => {
  const ip = uniqueIp()
  const attempt = (base: string) => login(base, uniqueEmail('outage'), 'wrong password', { ...quick, ip })
  for (let i = 1; i <= RATE_LIMIT_MAX; i++) t.equal((await attempt(A)).status, 401, `request ${i} on A`)
  const over = await attempt(A)
  t.equal(over.status, 429, `request ${RATE_LIMIT_MAX + 1} on A is refused`)
  t.match(over.headers.get('retry-after'), /^[1-9]\d*$/)
  t.equal((await attempt(B)).status, 401, 'B counts on its own while Redis is away')
})

t.test('with Redis gone, the failed-login throttle still applies on each instance', async (t) => {
  const victim = await register(B)
  const ip = uniqueIp()
  for (let i = 1; i <= 5; i++) t.equal((await login(A, victim.email, 'wrong password', { ...quick, ip })).status, 401, `failure ${i} on A`)
  const sixth = await login(A, victim.email, PASSWORD, { ...quick, ip })
  t.equal(sixth.status, 429, 'then even the right password waits on A')
  t.equal(sixth.body.message, 'Too many attempts, try again later')
  t.equal((await login(B, victim.email, 'wrong password', { ...quick, ip })).status, 401, 'B has seen no failures of its own')
})

t.test('each instance logged the outage once, not once per request', async (t) => {
  t.equal(warnings(0), 1, 'A')
  t.equal(warnings(1), 1, 'B')
})

t.test('once Redis is back, the instances count together again', async (t) => {
  await startRedis()
  t.ok(await countsInRedis(A), 'A counts in Redis again')
  t.ok(await countsInRedis(B), 'B counts in Redis again')

  const ip = uniqueIp()
  const attempt = (base: string) => login(base, uniqueEmail('outage'), 'wrong password', { ip })
  for (let i = 1; i <= RATE_LIMIT_MAX; i++) t.equal((await attempt(i % 2 ? A : B)).status, 401, `request ${i}, alternating`)
  for (const base of [A, B]) t.equal((await attempt(base)).status, 429, 'the shared total is over the limit on both')

  const victim = await register(A)
  const other = uniqueIp()
  for (const [i, base] of [A, B, A, B, A].entries()) {
    t.equal((await login(base, victim.email, 'wrong password', { ip: other })).status, 401, `failure ${i + 1}`)
  }
  const sixth = await login(B, victim.email, 'wrong password', { ip: other })
  t.equal(sixth.status, 429, 'the throttle counts the failures of both instances again')
  t.equal(sixth.body.message, 'Too many attempts, try again later')
  t.equal(warnings(0) + warnings(1), 2, 'and the recovery added no warnings')
})
