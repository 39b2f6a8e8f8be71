import { randomUUID } from 'node:crypto'
import t from 'tap'
import { decodeProtectedHeader } from 'jose'
import { grantRole } from '../../src/accounts.js'
import { build, freshDatabase, testClock } from '../helper.js'

// One Keysmith for the file (tests use their own users); many requests come from one
// address, so the per-address limit is lifted. Its clock moves only in the expiry test.
const clock = testClock()
const app = await build(t, { now: clock.now, env: { RATE_LIMIT_MAX: '100000' } })
const PASSWORD = 'correct horse battery staple'

interface User { id: string; email: string }

async function register(email = `${randomUUID()}@example.com`): Promise<User> {
  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password: PASSWORD } })
  if (res.statusCode !== 201) throw new Error(`register: ${res.statusCode} ${res.body}`)
  return res.json()
}

async function login(user: User) {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: PASSWORD } })
  const cookie = res.cookies.find((c) => c.name === 'keysmith_refresh')?.value
  return { res, access: res.json().access_token as string, cookie }
}

// A user who holds the admin role, logged in after the grant so their token carries it.
async function admin(): Promise<User & { access: string }> {
  const user = await register()
  await grantRole(app.db, user.id, 'admin')
  return { ...user, access: (await login(user)).access }
}

const as = (access: string | undefined) => ({
  get: (url: string) => app.inject({ method: 'GET', url, headers: access ? { authorization: `Bearer ${access}` } : {} }),
  post: (url: string, payload?: object) => app.inject({ method: 'POST', url, payload, headers: access ? { authorization: `Bearer ${access}` } : {} }),
  put: (url: string, payload?: object) => app.inject({ method: 'PUT', url, payload, headers: access ? { authorization: `Bearer ${access}` } : {} })
})

const activeFamilies = async (userId: string) =>
  app.db.selectFrom('refresh_families').select(['id', 'revoked_at', 'revoked_reason']).where('user_id', '=', userId).execute()

t.test('every admin route: 401 without a valid token, 403 without the role, and nothing happens', async (t) => {
  const target = await register()
  const targetLogin = await login(target)
  const user = await register()
  const userToken = (await login(user)).access
  const activeKid = app.keyring.active!.kid
  const routes: [string, string, object?][] = [
    ['GET', '/admin/users'],
    ['GET', `/admin/users/${target.id}`],
    ['PUT', `/admin/users/${target.id}/roles`, { roles: ['admin'] }],
    ['POST', `/admin/users/${target.id}/disable`],
    ['POST', `/admin/users/${target.id}/enable`],
    ['POST', `/admin/users/${target.id}/revoke-sessions`],
    ['GET', '/admin/keys'],
    ['POST', '/admin/keys/rotate'],
    ['GET', '/admin/audit']
  ]
  for (const [method, url, payload] of routes) {
    const call = (authorization?: string) =>
      app.inject({ method: method as 'GET', url, payload, headers: authorization ? { authorization } : {} })
    const none = await call()
    t.equal(none.statusCode, 401, `${method} ${url} without a token`)
    t.match(none.headers['www-authenticate'], /^Bearer .*error="invalid_token"/)
    t.same(Object.keys(none.json()).sort(), ['error', 'message', 'statusCode'])
    t.equal((await call('Bearer not.a.token')).statusCode, 401, `${method} ${url} with a garbage token`)
    const forbidden = await call(`Bearer ${userToken}`)
    t.equal(forbidden.statusCode, 403, `${method} ${url} as a plain user`)
    t.match(forbidden.headers['www-authenticate'], /^Bearer .*error="insufficient_scope"/)
    t.match(forbidden.json(), { statusCode: 403, error: 'Forbidden', message: 'Insufficient permissions' })
  }
  // None of the refused calls changed anything.
  const row = await app.db.selectFrom('users').select('disabled').where('id', '=', target.id).executeTakeFirstOrThrow()
  t.equal(row.disabled, false)
  t.same((await app.db.selectFrom('user_roles').select('role').where('user_id', '=', target.id).execute()).map((r) => r.role), ['user'])
  t.same((await activeFamilies(target.id)).map((f) => f.revoked_at), [null])
  t.equal(app.keyring.active!.kid, activeKid)
  t.ok(targetLogin.cookie)
})

t.test('the role is checked against the database too: a demoted, disabled or unknown admin is refused at once', async (t) => {
  const boss = await admin()
  const demoted = await admin()
  const disabled = await admin()
  t.equal((await as(demoted.access).get('/admin/keys')).statusCode, 200)
  t.equal((await as(boss.access).put(`/admin/users/${demoted.id}/roles`, { roles: [] })).statusCode, 200)
  t.equal((await as(demoted.access).get('/admin/keys')).statusCode, 403, 'demoted: the token still says admin')

  t.equal((await as(disabled.access).get('/admin/keys')).statusCode, 200)
  t.equal((await as(boss.access).post(`/admin/users/${disabled.id}/disable`)).statusCode, 200)
  t.equal((await as(disabled.access).get('/admin/keys')).statusCode, 401, 'disabled')

  // A genuine signature over a subject that is not a user grants nothing either.
  const ghost = await app.signer.mint({ sub: randomUUID(), roles: ['user', 'admin'] })
  t.equal((await as(ghost.token).get('/admin/users')).statusCode, 401)
})

t.test('a logged-out or expired admin token is refused', async (t) => {
  const a = await admin()
  t.equal((await as(a.access).get('/admin/users?limit=1')).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${a.access}` } })).statusCode, 204)
  t.equal((await as(a.access).get('/admin/users?limit=1')).statusCode, 401, 'after logout')

  const b = await admin()
  clock.advance(900 + 61)
  try {
    t.equal((await as(b.access).get('/admin/users?limit=1')).statusCode, 401, 'past exp and the leeway')
  } finally {
    clock.advance(-(900 + 61))
  }
  t.equal((await as(b.access).get('/admin/users?limit=1')).statusCode, 200)
})

t.test('GET /admin/users pages with a cursor: everyone exactly once', async (t) => {
  const { access } = await admin()
  const domain = `page-${randomUUID().slice(0, 8)}.example`
  const mine: User[] = []
  for (let i = 0; i < 5; i++) mine.push(await register(`u${i}@${domain}`))

  const pageAll = async (query: string) => {
    const seen: string[] = []
    let pages = 0
    let cursor: string | null = null
    do {
      const res = await as(access).get(`/admin/users?limit=2${query}${cursor ? `&cursor=${cursor}` : ''}`)
      t.equal(res.statusCode, 200)
      const body = res.json() as { users: { id: string }[]; next_cursor: string | null }
      t.ok(body.users.length <= 2)
      seen.push(...body.users.map((u) => u.id))
      cursor = body.next_cursor
      pages++
    } while (cursor !== null && pages < 1000)
    return { seen, pages }
  }

  const filtered = await pageAll(`&email=${encodeURIComponent(domain.toUpperCase())}`)
  t.same([...filtered.seen].sort(), mine.map((u) => u.id).sort(), 'the filter finds exactly these five')
  t.equal(filtered.pages, 3)

  const all = await pageAll('')
  t.equal(new Set(all.seen).size, all.seen.length, 'no user on two pages')
  for (const u of mine) t.ok(all.seen.includes(u.id))

  const first = (await as(access).get(`/admin/users?email=${encodeURIComponent(`u0@${domain}`)}`)).json()
  t.match(first, { users: [{ id: mine[0]!.id, email: `u0@${domain}`, disabled: false, roles: ['user'], created_at: String }], next_cursor: null })
  t.notOk('password_hash' in first.users[0], 'no password hash in the listing')
  // The filter is a substring match; LIKE wildcards in it are literal.
  t.same((await as(access).get('/admin/users?email=%25')).json(), { users: [], next_cursor: null })
  t.same((await as(access).get('/admin/users?email=_')).json().users, [])
})

t.test('GET /admin/users/:id', async (t) => {
  const { access } = await admin()
  const user = await register()
  const res = await as(access).get(`/admin/users/${user.id}`)
  t.equal(res.statusCode, 200)
  t.same(Object.keys(res.json()).sort(), ['created_at', 'disabled', 'email', 'id', 'roles'])
  t.match(res.json(), { id: user.id, email: user.email, disabled: false, roles: ['user'] })
  t.ok(!Number.isNaN(Date.parse(res.json().created_at)))
  const missing = await as(access).get(`/admin/users/${randomUUID()}`)
  t.equal(missing.statusCode, 404)
  t.match(missing.json(), { statusCode: 404, error: 'Not Found' })
})

t.test('PUT /admin/users/:id/roles replaces the roles, keeps "user", audits with the actor', async (t) => {
  const boss = await admin()
  const user = await register()
  const put = (roles: string[]) => as(boss.access).put(`/admin/users/${user.id}/roles`, { roles })

  let res = await put(['editor', 'ops'])
  t.equal(res.statusCode, 200)
  t.same(res.json().roles, ['editor', 'ops', 'user'])
  res = await put(['ops', 'admin'])
  t.same(res.json().roles, ['admin', 'ops', 'user'])
  res = await put([])
  t.same(res.json().roles, ['user'], '"user" is always kept')
  t.same((await as(boss.access).get(`/admin/users/${user.id}`)).json().roles, ['user'])

  const events = await app.db.selectFrom('audit_events').select(['type', 'actor_id', 'details'])
    .where('user_id', '=', user.id).where('type', 'in', ['role.granted', 'role.revoked']).orderBy('id').execute()
  t.same(events.map((e) => [e.type, e.details.role]), [
    ['role.granted', 'editor'], ['role.granted', 'ops'],
    ['role.granted', 'admin'], ['role.revoked', 'editor'],
    ['role.revoked', 'admin'], ['role.revoked', 'ops']
  ])
  t.ok(events.every((e) => e.actor_id === boss.id), 'every change names the admin who made it')

  // The new roles reach the user's next token.
  await put(['ops'])
  const token = (await login(user)).access
  t.same((await app.verifyAccessToken(token))!.roles, ['ops', 'user'])
})

t.test('PUT roles never takes the admin role from the last enabled admin', async (t) => {
  // A database of its own, where the admins are exactly the ones made here.
  const own = await build(t, { db: await freshDatabase(t), env: { RATE_LIMIT_MAX: '100000' } })
  const signUp = async () => {
    const email = `${randomUUID()}@example.com`
    const reg = await own.inject({ method: 'POST', url: '/auth/register', payload: { email, password: PASSWORD } })
    return { id: reg.json<{ id: string }>().id, email }
  }
  const tokenOf = async (u: { email: string }) =>
    (await own.inject({ method: 'POST', url: '/auth/login', payload: { email: u.email, password: PASSWORD } })).json<{ access_token: string }>().access_token
  const put = async (actor: string, userId: string, roles: string[]) =>
    own.inject({ method: 'PUT', url: `/admin/users/${userId}/roles`, payload: { roles }, headers: { authorization: `Bearer ${actor}` } })
  const rolesOf = async (userId: string) =>
    (await own.db.selectFrom('user_roles').select('role').where('user_id', '=', userId).orderBy('role').execute()).map((r) => r.role)
  const roleEvents = async () => (await own.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n'))
    .where('type', 'in', ['role.granted', 'role.revoked']).executeTakeFirstOrThrow()).n

  const first = await signUp()
  await grantRole(own.db, first.id, 'admin')
  const firstToken = await tokenOf(first)
  const before = await roleEvents()
  const alone = await put(firstToken, first.id, ['ops'])
  t.equal(alone.statusCode, 409, 'the only admin cannot demote themselves')
  t.match(alone.json(), { statusCode: 409, message: /last enabled admin/ })
  t.same(await rolesOf(first.id), ['admin', 'user'], 'nothing changed, not even the ops grant')
  t.equal(await roleEvents(), before, 'and nothing was audited')

  const second = await signUp()
  t.equal((await put(firstToken, second.id, ['admin'])).statusCode, 200)
  const secondToken = await tokenOf(second)
  t.equal((await put(secondToken, first.id, [])).statusCode, 200, 'with another admin left, one can be demoted')
  t.same(await rolesOf(first.id), ['user'])
  t.equal((await put(secondToken, second.id, [])).statusCode, 409, 'and then the remaining one is the last')

  // A disabled admin does not count as the one who remains.
  await grantRole(own.db, first.id, 'admin')
  await own.db.updateTable('users').set({ disabled: true }).where('id', '=', first.id).execute()
  t.equal((await put(secondToken, second.id, [])).statusCode, 409)
  t.same(await rolesOf(second.id), ['admin', 'user'])
})

t.test('disable: no more login, sessions ended, audited; enable restores login', async (t) => {
  const boss = await admin()
  const user = await register()
  const session = await login(user)
  await login(user)
  t.equal((await activeFamilies(user.id)).length, 2)

  const res = await as(boss.access).post(`/admin/users/${user.id}/disable`)
  t.equal(res.statusCode, 200)
  t.match(res.json(), { id: user.id, disabled: true })

  const right = await login(user)
  t.equal(right.res.statusCode, 403, 'right password: 403')
  t.match(right.res.json(), { statusCode: 403, message: 'Account is disabled' })
  const wrong = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: 'wrong password here' } })
  t.equal(wrong.statusCode, 401, 'wrong password: still just 401')
  const families = await activeFamilies(user.id)
  t.equal(families.length, 2)
  t.ok(families.every((f) => f.revoked_at !== null && f.revoked_reason === 'user_disabled'), 'every family revoked')
  const refresh = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { keysmith_refresh: session.cookie! } })
  t.equal(refresh.statusCode, 401)
  t.equal((await app.inject({ url: '/auth/me', headers: { authorization: `Bearer ${session.access}` } })).statusCode, 401)
  t.match((await as(boss.access).get(`/admin/users/${user.id}`)).json(), { disabled: true })

  const enabled = await as(boss.access).post(`/admin/users/${user.id}/enable`)
  t.equal(enabled.statusCode, 200)
  t.match(enabled.json(), { id: user.id, disabled: false })
  t.equal((await login(user)).res.statusCode, 200)

  const audit = await app.db.selectFrom('audit_events').select(['type', 'actor_id'])
    .where('user_id', '=', user.id).where('type', 'in', ['user.disabled', 'user.enabled']).orderBy('id').execute()
  t.same(audit, [{ type: 'user.disabled', actor_id: boss.id }, { type: 'user.enabled', actor_id: boss.id }])
  t.equal((await as(boss.access).post(`/admin/users/${randomUUID()}/disable`)).statusCode, 404)
})

t.test('POST /admin/users/:id/revoke-sessions', async (t) => {
  const boss = await admin()
  const user = await register()
  const other = await register()
  const a = await login(user)
  await login(user)
  await login(other)

  const res = await as(boss.access).post(`/admin/users/${user.id}/revoke-sessions`)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: 2 })
  t.ok((await activeFamilies(user.id)).every((f) => f.revoked_at !== null && f.revoked_reason === 'admin_revoked'))
  t.same((await activeFamilies(other.id)).map((f) => f.revoked_at), [null], 'other users keep theirs')
  t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { keysmith_refresh: a.cookie! } })).statusCode, 401)
  t.same((await as(boss.access).post(`/admin/users/${user.id}/revoke-sessions`)).json(), { revoked: 0 })

  const [event] = await app.db.selectFrom('audit_events').select(['actor_id', 'details'])
    .where('user_id', '=', user.id).where('type', '=', 'session.revoked').orderBy('id').execute()
  t.match(event, { actor_id: boss.id, details: { count: 2 } })
  t.equal((await as(boss.access).post(`/admin/users/${randomUUID()}/revoke-sessions`)).statusCode, 404)
})

t.test('GET /admin/keys and POST /admin/keys/rotate', async (t) => {
  const boss = await admin()
  const before = (await as(boss.access).get('/admin/keys')).json().keys as { kid: string; state: string }[]
  t.equal(before.filter((k) => k.state === 'active').length, 1)
  t.equal(before.filter((k) => k.state === 'next').length, 1)
  t.ok(before.every((k) => Object.keys(k).sort().join() === 'activated_at,created_at,kid,retired_at,revoked_at,state'), 'no key material listed')
  const oldActive = before.find((k) => k.state === 'active')!.kid
  const oldNext = before.find((k) => k.state === 'next')!.kid

  const res = await as(boss.access).post('/admin/keys/rotate')
  t.equal(res.statusCode, 200)
  const { kid } = res.json()
  t.equal(kid, oldNext, 'the pre-published key took over')
  const after = (await as(boss.access).get('/admin/keys')).json().keys as { kid: string; state: string; retired_at: string | null }[]
  t.equal(after.find((k) => k.state === 'active')!.kid, kid)
  t.match(after.find((k) => k.kid === oldActive), { state: 'retired', retired_at: String })
  t.equal(after.filter((k) => k.state === 'next').length, 1)

  const jwks = (await app.inject('/.well-known/jwks.json')).json().keys as { kid: string }[]
  t.ok(jwks.some((k) => k.kid === kid), 'the new active kid is in the JWKS')
  t.ok(jwks.some((k) => k.kid === oldActive), 'the retired key still verifies old tokens')
  t.equal(decodeProtectedHeader((await login(boss)).access).kid, kid, 'new tokens are signed with it')
  t.equal((await as(boss.access).get('/admin/keys')).statusCode, 200, 'the admin\'s older token still works')

  const [event] = await app.db.selectFrom('audit_events').select(['actor_id', 'details'])
    .where('type', '=', 'key.rotated').where('actor_id', '=', boss.id).execute()
  t.match(event, { actor_id: boss.id, details: { kid, retired: oldActive } })
})

t.test('GET /admin/audit filters by type, user and limit, newest first', async (t) => {
  const { access } = await admin()
  const user = await register()
  await login(user)
  await login(user)
  await app.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: 'not the password' } })

  const q = (query: string) => as(access).get(`/admin/audit?${query}`)
  const mine = (await q(`user_id=${user.id}`)).json().events as { id: string; type: string; user_id: string }[]
  t.same(mine.map((e) => e.type), ['login.failure', 'login.success', 'login.success', 'user.registered'])
  t.ok(mine.every((e) => e.user_id === user.id))
  t.same(mine.map((e) => Number(e.id)), mine.map((e) => Number(e.id)).sort((a, b) => b - a), 'newest first')
  t.match(mine[0], { type: 'login.failure', ip: String, details: { reason: 'wrong_password' }, created_at: String })

  const successes = (await q(`type=login.success&user_id=${user.id}`)).json().events
  t.equal(successes.length, 2)
  t.same((await q(`type=login.success&user_id=${user.id}&limit=1`)).json().events, [successes[0]])
  const page2 = (await q(`user_id=${user.id}&limit=2&before=${mine[1]!.id}`)).json().events as { id: string }[]
  t.same(page2.map((e) => e.id), [mine[2]!.id, mine[3]!.id], 'before= continues after the last id seen')

  const registered = (await q('type=user.registered&limit=500')).json().events as { type: string }[]
  t.ok(registered.length > 0 && registered.every((e) => e.type === 'user.registered'))
  t.ok((await q('')).json().events.length <= 100, 'a default limit applies')
  t.same((await q(`user_id=${randomUUID()}`)).json(), { events: [] })
})

t.test('bad input is a 400, never a 500', async (t) => {
  const { access } = await admin()
  const user = await register()
  const bad: [string, string, object?][] = [
    ['GET', '/admin/users/not-a-uuid'],
    ['GET', `/admin/users/${user.id}x`],
    ['GET', '/admin/users?limit=0'],
    ['GET', '/admin/users?limit=201'],
    ['GET', '/admin/users?limit=two'],
    ['GET', '/admin/users?cursor=not-a-uuid'],
    ['GET', `/admin/users?email=${'a'.repeat(400)}`],
    ['PUT', `/admin/users/${user.id}/roles`, {}],
    ['PUT', `/admin/users/${user.id}/roles`, { roles: ['Admin'] }],
    ['PUT', `/admin/users/${user.id}/roles`, { roles: ['has space'] }],
    ['PUT', `/admin/users/${user.id}/roles`, { roles: [''] }],
    ['PUT', `/admin/users/${user.id}/roles`, { roles: ['ops', 'ops'] }],
    ['PUT', `/admin/users/${user.id}/roles`, { roles: [{ name: 'admin' }] }],
    ['PUT', `/admin/users/${user.id}/roles`, { roles: Array.from({ length: 51 }, (_, i) => `r${i}`) }],
    ['PUT', '/admin/users/not-a-uuid/roles', { roles: [] }],
    ['POST', '/admin/users/not-a-uuid/disable'],
    ['POST', '/admin/users/not-a-uuid/enable'],
    ['POST', '/admin/users/not-a-uuid/revoke-sessions'],
    ['GET', '/admin/audit?type=user.deleted'],
    ['GET', '/admin/audit?type='],
    ['GET', '/admin/audit?user_id=not-a-uuid'],
    ['GET', '/admin/audit?limit=0'],
    ['GET', '/admin/audit?limit=501'],
    ['GET', '/admin/audit?limit=-1'],
    ['GET', '/admin/audit?before=abc'],
    ['GET', '/admin/audit?before=99999999999999999999999']
  ]
  for (const [method, url, payload] of bad) {
    const res = await app.inject({ method: method as 'GET', url, payload, headers: { authorization: `Bearer ${access}` } })
    t.equal(res.statusCode, 400, `${method} ${url.slice(0, 60)} ${payload ? JSON.stringify(payload).slice(0, 40) : ''}`)
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message: String })
  }
  const text = await app.inject({
    method: 'PUT', url: `/admin/users/${user.id}/roles`, payload: 'roles=admin',
    headers: { authorization: `Bearer ${access}`, 'content-type': 'text/plain' }
  })
  t.equal(text.statusCode, 415)
  t.same((await as(access).get(`/admin/users/${user.id}`)).json().roles, ['user'], 'no bad request changed the roles')
})
