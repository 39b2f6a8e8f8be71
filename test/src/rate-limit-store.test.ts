import t from 'tap'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import type { FastifyRateLimitStore } from '@fastify/rate-limit'
import { outageLog, redisWithFallback, type Outage } from '../../src/rate-limit-store.js'
import { REDIS_URL } from '../redis-helper.js'

// The request-limit store: Redis shared by instances, this instance's memory while Redis fails.
type Test = { teardown(fn: () => unknown): void }
const WINDOW = 60_000
const MAX = 100

function recorder(): Outage & { downs: number; ups: number } {
  return { downs: 0, ups: 0, down() { this.downs++ }, up() { this.ups++ } }
}

// One instance's client (configured like plugins/rate-limit.ts) and its store for a route.
async function instance(t: Test, nameSpace: string, outage: Outage) {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 })
  await redis.connect()
  t.teardown(() => redis.disconnect())
  const Store = redisWithFallback(redis, nameSpace, outage)
  const route = { routeInfo: { method: 'POST', url: '/auth/login' } } as unknown as Parameters<FastifyRateLimitStore['child']>[0]
  const store = new Store({}).child(route) as FastifyRateLimitStore & { read: FastifyRateLimitStore['incr'] }
  const op = (method: 'incr' | 'read', key: string) => new Promise<{ current: number; ttl: number }>((resolve, reject) =>
    store[method](key, (err, res) => err ? reject(err) : resolve(res!), WINDOW, MAX))
  return { redis, incr: (key: string) => op('incr', key), read: (key: string) => op('read', key) }
}

t.test('counts in Redis across instances, in memory while Redis fails, in Redis again once it answers', async (t) => {
  const nameSpace = `keysmith:test:rl:${randomUUID()}:`
  t.teardown(async () => {
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(`${nameSpace}*`)
    if (keys.length) await r.del(...keys)
    r.disconnect()
  })
  const outage = recorder()
  const one = await instance(t, nameSpace, outage)
  const two = await instance(t, nameSpace, recorder())
  const ip = '10.9.8.7'

  t.match(await one.incr(ip), { current: 1 })
  const shared = await two.incr(ip)
  t.equal(shared.current, 2, 'the second instance continues the first one\'s count')
  t.ok(shared.ttl > 0 && shared.ttl <= WINDOW, 'with the window\'s remaining time')
  t.equal(outage.downs, 0)

  const ended = once(one.redis, 'end')
  one.redis.disconnect()
  // Copies: the memory store hands out its live entry.
  const during = []
  for (let i = 0; i < 3; i++) during.push({ ...await one.incr(ip) })
  t.same(during.map((r) => r.current), [1, 2, 3], 'while its Redis fails, instance one counts in memory: limited, not skipped')
  t.ok(during.every((r) => r.ttl > 0 && r.ttl <= WINDOW))
  t.match(await one.read(ip), { current: 3 }, 'reads come from memory too')
  t.equal(outage.downs, 3 + 1, 'every failed command reports the outage (the log keeps it to one line)')
  t.match(await two.incr(ip), { current: 3 }, 'the other instance still counts in Redis')

  await ended
  await one.redis.connect()
  t.match(await one.incr(ip), { current: 4 }, 'back on Redis, instance one shares the count again')
  t.ok(outage.ups >= 1, 'and reports Redis as back')
})

t.test('the outage log says so once per outage, and once when Redis is back', async (t) => {
  const lines: string[] = []
  const outage = outageLog({ warn: (_o, msg) => lines.push(`warn ${msg}`), info: (msg) => lines.push(`info ${msg}`) })
  outage.up()
  for (let i = 0; i < 5; i++) outage.down(new Error('connect ECONNREFUSED'))
  outage.up()
  outage.up()
  outage.down(new Error('again'))
  t.equal(lines.length, 3)
  t.match(lines, [/^warn redis unavailable/, /^info redis is back/, /^warn redis unavailable/])
})
