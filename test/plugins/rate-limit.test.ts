import t, { type Test as TapTest } from 'tap'
import { randomUUID } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import { build, type TestApp } from '../helper.js'
import { PASSWORD, register, uniqueEmail, uniqueIp } from '../accounts-helper.js'
import { forgetInRedis, REDIS_URL } from '../redis-helper.js'
import { freePort } from '../support.js'

// The per-address request limit (@fastify/rate-limit) on the credential routes, in memory
// and shared through Redis. A long window keeps the count from rolling over mid-test.
type Test = Parameters<typeof build>[0]
const limited = (t: Test, env: Record<string, string> = {}) =>
  build(t, { env: { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW: '3600', ...env } })

// A failed login from `ip` with a fresh email (tagged, so its throttle keys can be found).
const attempt = (a: TestApp, ip: string, tag = 'rl') =>
  a.inject({ method: 'POST', url: '/auth/login', remoteAddress: ip, payload: { email: uniqueEmail(tag), password: 'wrong password' } })

function isLimited(t: TapTest, res: LightMyRequestResponse, why: string) {
  t.equal(res.statusCode, 429, why)
  t.match(res.headers['retry-after'], /^[1-9]\d*$/, `${why}: Retry-After in seconds`)
  t.match(res.json(), { statusCode: 429, error: 'Too Many Requests', message: String }, why)
}

t.test('memory: RATE_LIMIT_MAX requests per address, then 429 with Retry-After; other addresses unaffected', async (t) => {
  const a = await limited(t)
  const ip = uniqueIp()
  for (let i = 1; i <= 3; i++) t.equal((await attempt(a, ip)).statusCode, 401, `request ${i}`)
  isLimited(t, await attempt(a, ip), 'request 4')
  // Even a correct login is refused by the limit: it runs before the handler.
  const user = await register(a, uniqueEmail(), PASSWORD, { ip: uniqueIp() })
  isLimited(t, await a.inject({ method: 'POST', url: '/auth/login', remoteAddress: ip, payload: { email: user.email, password: PASSWORD } }), 'right password')
  t.equal((await attempt(a, uniqueIp())).statusCode, 401, 'another address')
  // Register has a count of its own.
  const reg = await a.inject({ method: 'POST', url: '/auth/register', remoteAddress: ip, payload: { email: uniqueEmail(), password: PASSWORD } })
  t.equal(reg.statusCode, 201)
  for (let i = 0; i < 2; i++) await a.inject({ method: 'POST', url: '/auth/register', remoteAddress: ip, payload: { email: uniqueEmail(), password: PASSWORD } })
  isLimited(t, await a.inject({ method: 'POST', url: '/auth/register', remoteAddress: ip, payload: { email: uniqueEmail(), password: PASSWORD } }), 'register 4')
})

t.test('memory: each instance counts on its own without Redis', async (t) => {
  const one = await limited(t)
  const two = await limited(t)
  t.equal(one.redis, null)
  const ip = uniqueIp()
  for (let i = 0; i < 3; i++) await attempt(one, ip)
  isLimited(t, await attempt(one, ip), 'instance one')
  t.equal((await attempt(two, ip)).statusCode, 401, 'instance two has its own count')
})

t.test('with REDIS_URL two instances share one count per address', async (t) => {
  const one = await limited(t, { REDIS_URL })
  const two = await limited(t, { REDIS_URL })
  t.ok(one.redis && two.redis)
  const ip = uniqueIp()
  const other = uniqueIp()
  const tag = `rl-${randomUUID()}`
  t.teardown(() => forgetInRedis(REDIS_URL, [ip, other, tag]))
  t.equal((await attempt(one, ip, tag)).statusCode, 401)
  t.equal((await attempt(two, ip, tag)).statusCode, 401)
  t.equal((await attempt(one, ip, tag)).statusCode, 401)
  isLimited(t, await attempt(two, ip, tag), 'the 4th request, on the other instance')
  isLimited(t, await attempt(one, ip, tag), 'and on the first')
  t.equal((await attempt(two, other, tag)).statusCode, 401, 'another address')
})

t.test('with REDIS_URL but Redis away, each instance still limits on its own and nothing fails', async (t) => {
  // Nothing listens on a port just freed: every Redis command fails at once.
  const away = `redis://127.0.0.1:${await freePort()}`
  const one = await limited(t, { REDIS_URL: away })
  const two = await limited(t, { REDIS_URL: away })
  const ip = uniqueIp()
  for (let i = 1; i <= 3; i++) t.equal((await attempt(one, ip)).statusCode, 401, `request ${i}`)
  isLimited(t, await attempt(one, ip), 'request 4 on the same instance')
  t.equal((await attempt(two, ip)).statusCode, 401, 'the other instance counts on its own')
  const user = await register(two, uniqueEmail(), PASSWORD, { ip: uniqueIp() })
  const ok = await two.inject({ method: 'POST', url: '/auth/login', remoteAddress: uniqueIp(), payload: { email: user.email, password: PASSWORD } })
  t.equal(ok.statusCode, 200, 'a right password still logs in')
})
