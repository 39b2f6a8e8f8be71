import t from 'tap'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import {
  FallbackThrottleStore, LoginThrottle, MemoryThrottleStore, RULES, RedisThrottleStore, lockFor, type ThrottleStore
} from '../../src/throttle.js'
import { testClock } from '../helper.js'

// The failed-login throttle on its own: the back-off schedule, both rules, and the three
// stores. Over HTTP it is in test/plugins/throttle.test.ts.
type Test = { teardown(fn: () => unknown): void }
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

// A Redis store under a prefix of its own, emptied afterwards.
async function redisStore(t: Test, prefix = `keysmith:test:${randomUUID()}:`) {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect()
  t.teardown(async () => {
    const keys = await redis.keys(`${prefix}*`)
    if (keys.length) await redis.del(...keys)
    redis.disconnect()
  })
  return { store: new RedisThrottleStore(redis, prefix), prefix, redis }
}

t.test('lockFor: the free failures cost nothing, then 1 s, doubling, up to the cap', async (t) => {
  const pair = RULES.accountAddress
  t.same([1, 2, 3, 4].map((n) => lockFor(n, pair)), [0, 0, 0, 0])
  t.same([5, 6, 7, 8].map((n) => lockFor(n, pair)), [1000, 2000, 4000, 8000])
  t.equal(lockFor(1000, pair), 15 * 60_000, 'the account+address lock is capped at 15 min')
  t.equal(lockFor(Number.MAX_SAFE_INTEGER, pair), 15 * 60_000)
  t.equal(lockFor(19, RULES.account), 0)
  t.equal(lockFor(20, RULES.account), 1000)
  t.equal(lockFor(1000, RULES.account), 60_000, 'the account-wide lock is capped at 60 s')
})

for (const kind of ['memory', 'redis'] as const) {
  const throttleOn = async (t: Test) => {
    const clock = testClock()
    const store: ThrottleStore = kind === 'memory' ? new MemoryThrottleStore(clock.now) : (await redisStore(t)).store
    return { clock, throttle: new LoginThrottle(store, clock.now) }
  }

  t.test(`${kind}: 5 free failures per account and address, then a lock that doubles and ends`, async (t) => {
    const { clock, throttle } = await throttleOn(t)
    const email = `${randomUUID()}@example.com`
    for (let i = 1; i <= 4; i++) {
      await throttle.failure(email, '10.0.0.1')
      t.equal(await throttle.retryAfter(email, '10.0.0.1'), 0, `after failure ${i}`)
    }
    await throttle.failure(email, '10.0.0.1')
    t.equal(await throttle.retryAfter(email, '10.0.0.1'), 1, 'after the 5th failure the next attempt waits')
    t.equal(await throttle.retryAfter(email, '10.0.0.2'), 0, 'another address is not held up')
    t.equal(await throttle.retryAfter(`x${email}`, '10.0.0.1'), 0, 'nor another account')
    clock.advance(0.5)
    t.equal(await throttle.retryAfter(email, '10.0.0.1'), 1, 'Retry-After rounds up')
    clock.advance(0.5)
    t.equal(await throttle.retryAfter(email, '10.0.0.1'), 0, 'the lock ends')
    const waits = []
    for (let i = 0; i < 4; i++) {
      await throttle.failure(email, '10.0.0.1')
      const wait = await throttle.retryAfter(email, '10.0.0.1')
      waits.push(wait)
      clock.advance(wait)
    }
    t.same(waits, [2, 4, 8, 16])
  })

  t.test(`${kind}: the account+address lock stops at 15 min`, async (t) => {
    const { throttle } = await throttleOn(t)
    const email = `${randomUUID()}@example.com`
    for (let i = 0; i < 40; i++) await throttle.failure(email, '10.0.0.1')
    t.equal(await throttle.retryAfter(email, '10.0.0.1'), 900)
  })

  t.test(`${kind}: failures from many addresses lock the account, for 60 s at most`, async (t) => {
    const { clock, throttle } = await throttleOn(t)
    const email = `${randomUUID()}@example.com`
    // 4 failures from each of 5 addresses: no address reaches its own lock.
    for (let i = 0; i < 20; i++) await throttle.failure(email, `10.1.0.${i % 5}`)
    t.equal(await throttle.retryAfter(email, '10.9.9.9'), 1, 'the 20th failure locks the account everywhere')
    // A distributed guesser keeps failing as soon as each lock ends...
    for (let i = 0; i < 30; i++) {
      clock.advance(await throttle.retryAfter(email, `10.2.0.${i}`))
      await throttle.failure(email, `10.2.0.${i}`)
    }
    // ...yet the real user, elsewhere, never waits more than a minute.
    const wait = await throttle.retryAfter(email, '10.9.9.9')
    t.equal(wait, 60)
    clock.advance(60)
    t.equal(await throttle.retryAfter(email, '10.9.9.9'), 0, 'and then may try')
  })

  t.test(`${kind}: a success resets the account+address counter only`, async (t) => {
    const { throttle } = await throttleOn(t)
    const email = `${randomUUID()}@example.com`
    for (let i = 0; i < 4; i++) await throttle.failure(email, '10.0.0.1')
    await throttle.success(email, '10.0.0.1')
    for (let i = 0; i < 4; i++) await throttle.failure(email, '10.0.0.1')
    t.equal(await throttle.retryAfter(email, '10.0.0.1'), 0, 'counted from zero again')
    await throttle.failure(email, '10.0.0.1')
    t.equal(await throttle.retryAfter(email, '10.0.0.1'), 1)
    // The account-wide count (here 9) is not reset by one address's success.
    for (let i = 0; i < 11; i++) await throttle.failure(email, `10.3.0.${i}`)
    t.equal(await throttle.retryAfter(email, '10.9.9.9'), 1)
  })
}

t.test('memory: counters are forgotten after an idle hour', async (t) => {
  const clock = testClock()
  const throttle = new LoginThrottle(new MemoryThrottleStore(clock.now), clock.now)
  for (let i = 0; i < 4; i++) await throttle.failure('idle@example.com', '10.0.0.1')
  clock.advance(3600)
  await throttle.failure('idle@example.com', '10.0.0.1')
  t.equal(await throttle.retryAfter('idle@example.com', '10.0.0.1'), 0, 'one failure, not five')
})

t.test('redis: two instances count together', async (t) => {
  const { store: a, prefix } = await redisStore(t)
  const { store: b } = await redisStore(t, prefix)
  const clock = testClock()
  const one = new LoginThrottle(a, clock.now)
  const two = new LoginThrottle(b, clock.now)
  const email = `${randomUUID()}@example.com`
  await Promise.all([1, 2, 3].map(() => one.failure(email, '10.0.0.1')))
  await Promise.all([1, 2].map(() => two.failure(email, '10.0.0.1')))
  t.equal(await one.retryAfter(email, '10.0.0.1'), 1, 'concurrent failures on both are all counted')
  t.equal(await two.retryAfter(email, '10.0.0.1'), 1)
  await two.success(email, '10.0.0.1')
  t.equal(await one.retryAfter(email, '10.0.0.1'), 0, 'a success on one resets both')
})

t.test('fallback: while Redis fails, counting goes on in memory and the error is reported', async (t) => {
  const clock = testClock()
  const broken: ThrottleStore = {
    get: () => Promise.reject(new Error('redis down')),
    fail: () => Promise.reject(new Error('redis down')),
    reset: () => Promise.reject(new Error('redis down'))
  }
  const errors: unknown[] = []
  const throttle = new LoginThrottle(new FallbackThrottleStore(broken, new MemoryThrottleStore(clock.now), (e) => errors.push(e)), clock.now)
  for (let i = 0; i < 5; i++) await throttle.failure('down@example.com', '10.0.0.1')
  t.equal(await throttle.retryAfter('down@example.com', '10.0.0.1'), 1)
  await throttle.success('down@example.com', '10.0.0.1')
  t.equal(await throttle.retryAfter('down@example.com', '10.0.0.1'), 0)
  t.ok(errors.length > 0)
  t.match(errors[0], { message: 'redis down' })
})

t.test('admit: a burst of guesses gets the free failures that are left, and no more', async (t) => {
  const throttle = new LoginThrottle(new MemoryThrottleStore())
  const email = `${randomUUID()}@example.com`
  for (let i = 0; i < 3; i++) await throttle.failure(email, '10.0.0.1')
  const guess = () => throttle.admit(email, '10.0.0.1', async () => {
    if (await throttle.retryAfter(email, '10.0.0.1') > 0) return 'throttled'
    await new Promise((r) => setTimeout(r, 5)) // the hash
    await throttle.failure(email, '10.0.0.1')
    return 'judged'
  })
  const outcomes = await Promise.all(Array.from({ length: 8 }, guess))
  t.same(outcomes.filter((o) => o === 'judged').length, 2)
  t.same(outcomes.filter((o) => o === 'throttled').length, 6)
  t.equal(await throttle.admit(email, '10.0.0.2', async () => throttle.retryAfter(email, '10.0.0.2')), 0, 'another address is not held up')
})

t.test('admit: honest attempts run side by side up to the free count; one that throws frees its place', async (t) => {
  const throttle = new LoginThrottle(new MemoryThrottleStore())
  const email = `${randomUUID()}@example.com`
  let running = 0
  let most = 0
  const login = (i: number) => throttle.admit(email, '10.0.0.1', async () => {
    if (await throttle.retryAfter(email, '10.0.0.1') > 0) return 'throttled'
    most = Math.max(most, ++running)
    await new Promise((r) => setTimeout(r, 5))
    running--
    if (i % 3 === 0) throw new Error('the database went away')
    await throttle.success(email, '10.0.0.1')
    return 'in'
  })
  const outcomes = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => login(i)))
  t.equal(outcomes.filter((o) => o.status === 'fulfilled' && o.value === 'in').length, 8)
  t.equal(outcomes.filter((o) => o.status === 'rejected').length, 4)
  t.equal(most, RULES.accountAddress.free, 'at most the free count at once')
})

t.test('memory: failures recorded at the same moment all count', async (t) => {
  const store = new MemoryThrottleStore()
  await Promise.all(Array.from({ length: 7 }, () => store.fail('k', RULES.account, Date.now())))
  t.equal((await store.get('k'))?.failures, 7)
})
