import { randomUUID } from 'node:crypto'
import t from 'tap'
import { build, testClock } from '../helper.js'
import { PASSWORD, auditOf, loginRes, register, uniqueEmail, uniqueIp } from '../accounts-helper.js'
import { forgetInRedis, REDIS_URL } from '../redis-helper.js'

// The failed-login throttle over HTTP: per account + address back-off, the account-wide
// cap, Retry-After, the audit trail, and the counters shared through Redis.
// Every test uses its own users and addresses, so Redis runs never collide.
type Test = Parameters<typeof build>[0]
const app = (t: Test, clock: ReturnType<typeof testClock>, env: Record<string, string> = {}) =>
  build(t, { env: { RATE_LIMIT_MAX: '100000', ...env }, now: clock.now })

const THROTTLED = { statusCode: 429, error: 'Too Many Requests', message: 'Too many attempts, try again later' }

t.test('5 free failures, then 429 with Retry-After even for the right password; past the lock it gets through', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const ip = uniqueIp()
  const userAgent = `throttle-test/${ip}`
  for (let i = 1; i <= 5; i++) {
    t.equal((await loginRes(a, user.email, `wrong guess ${i}`, { ip, userAgent })).statusCode, 401, `failure ${i}`)
  }
  for (const password of ['wrong guess 6', PASSWORD]) {
    const res = await loginRes(a, user.email, password, { ip, userAgent })
    t.equal(res.statusCode, 429)
    t.equal(res.headers['retry-after'], '1')
    t.same(res.json(), THROTTLED)
  }
  // A case variant of the email is the same account.
  t.equal((await loginRes(a, ` ${user.email.toUpperCase()}`, PASSWORD, { ip })).statusCode, 429)
  // Another address is not held up by this one's failures.
  t.equal((await loginRes(a, user.email, PASSWORD, { ip: uniqueIp() })).statusCode, 200)

  const throttled = (await auditOf(a, { userAgent })).filter((r) => r.type === 'login.throttled')
  t.equal(throttled.length, 2)
  t.match(throttled[0], { user_id: user.id, ip, user_agent: userAgent, details: { retry_after: 1 } })

  clock.advance(1)
  const ok = await loginRes(a, user.email, PASSWORD, { ip, userAgent })
  t.equal(ok.statusCode, 200, 'the lock has ended')
})

t.test('the lock doubles with each further failure; a success resets the account+address counter', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const ip = uniqueIp()
  for (let i = 0; i < 5; i++) await loginRes(a, user.email, 'wrong', { ip })
  t.equal((await loginRes(a, user.email, 'wrong', { ip })).headers['retry-after'], '1')
  clock.advance(1)
  t.equal((await loginRes(a, user.email, 'wrong', { ip })).statusCode, 401, 'failure 6 is judged, and locks for 2 s')
  t.equal((await loginRes(a, user.email, 'wrong', { ip })).headers['retry-after'], '2')
  clock.advance(2)
  t.equal((await loginRes(a, user.email, PASSWORD, { ip })).statusCode, 200)
  // Counted from zero again: five failures are free once more.
  for (let i = 1; i <= 5; i++) t.equal((await loginRes(a, user.email, 'wrong', { ip })).statusCode, 401, `failure ${i} after the success`)
  t.equal((await loginRes(a, user.email, PASSWORD, { ip })).statusCode, 429)
})

t.test('unknown emails are throttled like known ones, and the body does not tell them apart', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const ip = uniqueIp()
  const ghost = uniqueEmail('ghost')
  for (let i = 0; i < 5; i++) {
    await loginRes(a, user.email, 'wrong', { ip })
    await loginRes(a, ghost, 'wrong', { ip })
  }
  const known = await loginRes(a, user.email, 'wrong', { ip })
  const unknown = await loginRes(a, ghost, 'wrong', { ip })
  t.equal(known.statusCode, 429)
  t.equal(unknown.statusCode, 429)
  t.equal(known.body, unknown.body)
  t.equal(known.headers['retry-after'], unknown.headers['retry-after'])
})

t.test('failures spread over many addresses lock the account for 60 s at most, so the real user gets in', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  // 4 failures from each of 5 addresses: none reaches its own lock; the 20th locks the account.
  for (let i = 0; i < 20; i++) await loginRes(a, user.email, 'wrong', { ip: `10.250.${i % 5}.1` })
  const home = uniqueIp()
  const first = await loginRes(a, user.email, PASSWORD, { ip: home })
  t.equal(first.statusCode, 429, 'the account-wide lock holds everywhere')
  t.equal(first.headers['retry-after'], '1')
  // The guesser fails again each time a lock ends; the locks grow, up to their cap.
  const seen: number[] = []
  for (let i = 0; i < 8; i++) {
    const ip = uniqueIp()
    const wait = Number((await loginRes(a, user.email, 'wrong', { ip })).headers['retry-after'] ?? 0)
    clock.advance(wait)
    t.equal((await loginRes(a, user.email, 'wrong', { ip })).statusCode, 401)
    seen.push(Number((await loginRes(a, user.email, PASSWORD, { ip: home })).headers['retry-after']))
  }
  t.same(seen, [2, 4, 8, 16, 32, 60, 60, 60], 'capped at 60 s')
  clock.advance(60)
  t.equal((await loginRes(a, user.email, PASSWORD, { ip: home })).statusCode, 200, 'after a minute the user is in')
})

t.test('the OAuth password grant shares the throttle', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const ip = uniqueIp()
  for (let i = 0; i < 5; i++) await loginRes(a, user.email, 'wrong', { ip })
  const res = await a.inject({
    method: 'POST', url: '/oauth/token', remoteAddress: ip,
    payload: { grant_type: 'password', username: user.email, password: PASSWORD }
  })
  t.equal(res.statusCode, 429)
  t.equal(res.headers['retry-after'], '1')
})

t.test('with REDIS_URL two instances share the throttle', async (t) => {
  const clock = testClock()
  const one = await app(t, clock, { REDIS_URL })
  const two = await app(t, clock, { REDIS_URL })
  t.ok(one.redis && two.redis, 'both use Redis')
  const ip = uniqueIp()
  const user = await register(one, uniqueEmail(), PASSWORD, { ip })
  t.teardown(() => forgetInRedis(REDIS_URL, [user.email.toLowerCase(), ip]))
  for (let i = 0; i < 3; i++) t.equal((await loginRes(one, user.email, 'wrong', { ip })).statusCode, 401)
  for (let i = 0; i < 2; i++) t.equal((await loginRes(two, user.email, 'wrong', { ip })).statusCode, 401)
  for (const instance of [one, two]) {
    const res = await loginRes(instance, user.email, PASSWORD, { ip })
    t.equal(res.statusCode, 429, 'five failures across both instances lock both')
    t.equal(res.headers['retry-after'], '1')
  }
  clock.advance(1)
  t.equal((await loginRes(two, user.email, PASSWORD, { ip })).statusCode, 200)
  // The success on one instance reset the counter for both.
  for (let i = 1; i <= 5; i++) t.equal((await loginRes(one, user.email, 'wrong', { ip })).statusCode, 401)
  t.equal((await loginRes(two, user.email, PASSWORD, { ip })).statusCode, 429)
})

t.test('guesses sent all at once get no more than the 5 free ones', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const ip = uniqueIp()
  const userAgent = `burst-test/${ip}`
  // Without care each of these would pass the check before any had been counted.
  const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => loginRes(a, user.email, `burst guess ${i}`, { ip, userAgent })))
  t.same(burst.map((r) => r.statusCode).sort(), [...Array(5).fill(401), ...Array(7).fill(429)])
  for (const res of burst.filter((r) => r.statusCode === 429)) {
    t.equal(res.headers['retry-after'], '1')
    t.same(res.json(), THROTTLED)
  }
  const failures = (await auditOf(a, { userAgent })).filter((r) => r.type === 'login.failure')
  t.equal(failures.length, 5, 'five guesses were judged')
  // Concurrent logins with the right password all succeed.
  const other = uniqueIp()
  const logins = await Promise.all(Array.from({ length: 4 }, () => loginRes(a, user.email, PASSWORD, { ip: other })))
  t.same(logins.map((r) => r.statusCode), [200, 200, 200, 200])
})

t.test('guesses sent all at once from many addresses get no more than the account\'s 20 free ones', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const userAgent = `spread-burst-test/${randomUUID()}`
  // One guess from each of 30 addresses: no address comes near its own lock.
  const burst = await Promise.all(Array.from({ length: 30 }, (_, i) =>
    loginRes(a, user.email, `spread guess ${i}`, { ip: uniqueIp(), userAgent })))
  t.same(burst.map((r) => r.statusCode).sort(), [...Array(20).fill(401), ...Array(10).fill(429)])
  for (const res of burst.filter((r) => r.statusCode === 429)) {
    t.equal(res.headers['retry-after'], '1')
    t.same(res.json(), THROTTLED)
  }
  const failures = (await auditOf(a, { userAgent })).filter((r) => r.type === 'login.failure')
  t.equal(failures.length, 20, 'twenty guesses were judged')
  clock.advance(1)
  t.equal((await loginRes(a, user.email, PASSWORD, { ip: uniqueIp() })).statusCode, 200, 'past the lock the user is in')
})

t.test('failures of a made-up email never count against another account\'s address', async (t) => {
  const clock = testClock()
  const a = await app(t, clock)
  const user = await register(a)
  const home = uniqueIp()
  // A valid email that spells the victim's email and address: its account-wide counter must
  // not be the victim's counter for that address.
  const lookalike = `${user.email}|${home}`
  for (let i = 0; i < 21; i++) {
    t.equal((await loginRes(a, lookalike, 'wrong', { ip: `10.251.${i % 7}.1` })).statusCode, i < 20 ? 401 : 429)
  }
  t.equal((await loginRes(a, user.email, PASSWORD, { ip: home })).statusCode, 200, 'the user logs in from home')
  // Nor did those failures shorten the user's own free ones there.
  for (let i = 1; i <= 5; i++) t.equal((await loginRes(a, user.email, 'typo', { ip: home })).statusCode, 401, `typo ${i}`)
  const locked = await loginRes(a, user.email, PASSWORD, { ip: home })
  t.equal(locked.statusCode, 429)
  t.equal(locked.headers['retry-after'], '1', 'the first lock, not a longer one')
})
