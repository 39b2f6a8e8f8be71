import t from 'tap'
import { build, testClock, type TestApp } from '../helper.js'
import { hashToken } from '../../src/sessions/engine.js'
import { PASSWORD, accessToken, auditOf, loginRes, register, uniqueIp } from '../accounts-helper.js'

// POST /auth/password (Bearer) {current_password, new_password} → 204, and every other
// refresh family of the user is revoked (CONTRACT.md section 4).
type Test = Parameters<typeof build>[0]
const app = (t: Test, now?: () => number) => build(t, { env: { RATE_LIMIT_MAX: '100000' }, now })

const NEW_PASSWORD = 'a brand new passphrase'
const COOKIE = 'keysmith_refresh'

async function browserLogin(a: TestApp, email: string, password = PASSWORD) {
  const res = await loginRes(a, email, password)
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return { access: res.json().access_token as string, cookie: res.cookies.find((c) => c.name === COOKIE)!.value }
}

function changePassword(a: TestApp, access: string, body: object, opts: { cookie?: string; ip?: string; userAgent?: string } = {}) {
  return a.inject({
    method: 'POST', url: '/auth/password', payload: body, remoteAddress: opts.ip,
    headers: { authorization: `Bearer ${access}`, ...(opts.userAgent ? { 'user-agent': opts.userAgent } : {}) },
    cookies: opts.cookie ? { [COOKIE]: opts.cookie } : {}
  })
}

const families = (a: TestApp, userId: string) =>
  a.db.selectFrom('refresh_families').select(['id', 'client', 'revoked_at', 'revoked_reason'])
    .where('user_id', '=', userId).orderBy('created_at').orderBy('id').execute()

t.test('204: the new password works, the old one stops, other families are revoked, the caller\'s survives', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const mine = await browserLogin(a, user.email)
  const otherBrowser = await browserLogin(a, user.email)
  const native = await a.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'password', username: user.email, password: PASSWORD } })
  t.equal(native.statusCode, 200)
  const { family_id: myFamily } = await a.db.selectFrom('refresh_tokens').select('family_id')
    .where('token_hash', '=', hashToken(mine.cookie)).executeTakeFirstOrThrow()
  const before = await a.db.selectFrom('users').select('password_changed_at').where('id', '=', user.id).executeTakeFirstOrThrow()

  const ip = uniqueIp()
  const res = await changePassword(a, mine.access, { current_password: PASSWORD, new_password: NEW_PASSWORD }, { cookie: mine.cookie, ip, userAgent: 'pw-test/1' })
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')

  const rows = await families(a, user.id)
  t.equal(rows.length, 3)
  for (const f of rows) {
    if (f.id === myFamily) t.equal(f.revoked_at, null, 'the caller\'s family survives')
    else t.match(f, { revoked_at: Date, revoked_reason: 'password_changed' }, `the ${f.client} family is revoked`)
  }
  t.same(rows.filter((f) => f.revoked_at).map((f) => f.client).sort(), ['browser', 'oauth'])

  t.same((await loginRes(a, user.email, PASSWORD)).json(), { statusCode: 401, error: 'Unauthorized', message: 'Invalid email or password' }, 'the old password stops working')
  t.equal((await loginRes(a, user.email, NEW_PASSWORD)).statusCode, 200, 'the new one works')
  t.equal((await a.inject({ method: 'POST', url: '/auth/refresh', cookies: { [COOKIE]: otherBrowser.cookie } })).statusCode, 401, 'the other browser is signed out')
  t.equal((await a.inject({ method: 'POST', url: '/auth/refresh', cookies: { [COOKIE]: mine.cookie } })).statusCode, 200, 'this browser is not')

  const after = await a.db.selectFrom('users').select('password_changed_at').where('id', '=', user.id).executeTakeFirstOrThrow()
  t.ok(after.password_changed_at > before.password_changed_at, 'password_changed_at moves')
  const changed = (await auditOf(a, { userId: user.id })).filter((r) => r.type === 'password.changed')
  t.match(changed, [{ ip, user_agent: 'pw-test/1', details: { sessions_revoked: 2 } }])
})

t.test('without the refresh cookie, or with someone else\'s, every family of the user is revoked', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const stranger = await register(a)
  const first = await browserLogin(a, user.email)
  await browserLogin(a, user.email)
  const theirs = await browserLogin(a, stranger.email)
  t.equal((await changePassword(a, first.access, { current_password: PASSWORD, new_password: NEW_PASSWORD }, { cookie: theirs.cookie })).statusCode, 204)
  t.same((await families(a, user.id)).map((f) => f.revoked_reason), ['password_changed', 'password_changed'])
  t.same((await families(a, stranger.id)).map((f) => f.revoked_at), [null], 'the stranger\'s family is not touched')

  const third = await browserLogin(a, user.email, NEW_PASSWORD)
  t.equal((await changePassword(a, third.access, { current_password: NEW_PASSWORD, new_password: PASSWORD })).statusCode, 204, 'no cookie')
  t.same((await families(a, user.id)).map((f) => f.revoked_reason), ['password_changed', 'password_changed', 'password_changed'])
})

t.test('401 for a wrong current password, 400 for a weak new one; nothing changes', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const mine = await browserLogin(a, user.email)
  await browserLogin(a, user.email)

  const wrong = await changePassword(a, mine.access, { current_password: 'not my password', new_password: NEW_PASSWORD }, { cookie: mine.cookie })
  t.equal(wrong.statusCode, 401)
  t.same(wrong.json(), { statusCode: 401, error: 'Unauthorized', message: 'Invalid email or password' })

  for (const [password, message] of [['short', /at least 8/], ['x'.repeat(257), /at most 256/], ['password1', /too common/]] as const) {
    const weak = await changePassword(a, mine.access, { current_password: PASSWORD, new_password: password }, { cookie: mine.cookie })
    t.equal(weak.statusCode, 400)
    t.match(weak.json(), { statusCode: 400, error: 'Bad Request', message })
  }
  for (const body of [{}, { current_password: PASSWORD }, { new_password: NEW_PASSWORD }, { current_password: '', new_password: NEW_PASSWORD },
    { current_password: PASSWORD, new_password: 'x'.repeat(1025) }, { current_password: [PASSWORD], new_password: { a: 1 } }]) {
    t.equal((await changePassword(a, mine.access, body)).statusCode, 400, JSON.stringify(body).slice(0, 60))
  }
  const anonymous = await a.inject({ method: 'POST', url: '/auth/password', payload: { current_password: PASSWORD, new_password: NEW_PASSWORD } })
  t.equal(anonymous.statusCode, 401, 'no Bearer token')

  t.equal((await loginRes(a, user.email, PASSWORD)).statusCode, 200, 'the password is unchanged')
  t.same((await families(a, user.id)).map((f) => f.revoked_at), [null, null, null], 'no session revoked')

  await a.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  t.equal((await changePassword(a, mine.access, { current_password: PASSWORD, new_password: NEW_PASSWORD })).statusCode, 401, 'disabled')
})

t.test('guesses at the current password are throttled like failed logins', async (t) => {
  const clock = testClock()
  const a = await app(t, clock.now)
  const user = await register(a)
  const access = await accessToken(a, user.email, PASSWORD)
  const ip = uniqueIp()
  for (let i = 1; i <= 5; i++) {
    t.equal((await changePassword(a, access, { current_password: `guess ${i}`, new_password: NEW_PASSWORD }, { ip })).statusCode, 401)
  }
  const locked = await changePassword(a, access, { current_password: PASSWORD, new_password: NEW_PASSWORD }, { ip })
  t.equal(locked.statusCode, 429, 'even the right password waits')
  t.equal(locked.headers['retry-after'], '1')
  t.match(locked.json(), { statusCode: 429, error: 'Too Many Requests' })
  t.equal((await loginRes(a, user.email, PASSWORD, { ip })).statusCode, 429, 'one count with login')
  clock.advance(1)
  t.equal((await changePassword(a, access, { current_password: PASSWORD, new_password: NEW_PASSWORD }, { ip })).statusCode, 204)
})

t.test('guesses at the current password sent all at once get no more than the 5 free ones', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const access = await accessToken(a, user.email, PASSWORD)
  const ip = uniqueIp()
  const burst = await Promise.all(Array.from({ length: 12 }, (_, i) =>
    changePassword(a, access, { current_password: `burst guess ${i}`, new_password: NEW_PASSWORD }, { ip })))
  t.same(burst.map((r) => r.statusCode).sort(), [...Array(5).fill(401), ...Array(7).fill(429)])
  t.equal((await loginRes(a, user.email, PASSWORD, { ip })).statusCode, 429, 'and login at that address waits too')
})
