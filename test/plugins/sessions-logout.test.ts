import t from 'tap'
import { randomUUID } from 'node:crypto'
import { COOKIE, auditTypes, buildApp, familiesOf, login, me, refresh, refreshCookieOf, register } from '../sessions-helper.js'

const bearer = (access: string) => ({ authorization: `Bearer ${access}` })

t.test('logout: 204, cookie cleared, family revoked, the access token refused', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const a = await login(app, user)
  t.equal((await me(app, a.access)).statusCode, 200)

  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(a.access), cookies: { [COOKIE]: a.cookie } })
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.match(refreshCookieOf(res), { value: '', path: '/auth', httpOnly: true, secure: true, sameSite: 'Strict' })
  t.ok(refreshCookieOf(res)!.maxAge === 0 || refreshCookieOf(res)!.expires!.getTime() <= Date.now(), 'the cookie expires now')

  const [fam] = await familiesOf(app, user.id)
  t.type(fam!.revoked_at, Date)
  t.equal(fam!.revoked_reason, 'logout')
  t.equal((await refresh(app, a.cookie)).res.statusCode, 401, 'the cookie no longer refreshes')

  const after = await me(app, a.access)
  t.equal(after.statusCode, 401)
  t.match(after.headers['www-authenticate'], /^Bearer .*error="invalid_token"/)
  t.ok((await auditTypes(app, user.id)).includes('logout'))
})

t.test('logout revokes only its own session', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const phone = await login(app, user)
  const laptop = await login(app, user)
  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(laptop.access), cookies: { [COOKIE]: laptop.cookie } })
  t.equal(res.statusCode, 204)
  t.equal((await refresh(app, phone.cookie)).res.statusCode, 200)
  t.equal((await me(app, phone.access)).statusCode, 200)
})

t.test('logout with only a Bearer, with nothing, or twice is still 204', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const a = await login(app, user)
  const onlyBearer = await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(a.access) })
  t.equal(onlyBearer.statusCode, 204)
  t.equal((await me(app, a.access)).statusCode, 401)
  t.equal((await refresh(app, a.cookie)).res.statusCode, 200, 'no cookie presented, no session ended')

  t.equal((await app.inject({ method: 'POST', url: '/auth/logout' })).statusCode, 204)
  const garbage = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: 'Bearer not.a.token' }, cookies: { [COOKIE]: 'nope' } })
  t.equal(garbage.statusCode, 204)
})

t.test('GET /auth/sessions lists the caller\'s active families, current marked', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const other = await register(app)
  const phone = await login(app, user, { 'user-agent': 'phone' })
  const laptop = await login(app, user, { 'user-agent': 'laptop' })
  const ended = await login(app, user)
  await app.inject({ method: 'POST', url: '/auth/logout', cookies: { [COOKIE]: ended.cookie } })
  await login(app, other)

  const res = await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(laptop.access), cookies: { [COOKIE]: laptop.cookie } })
  t.equal(res.statusCode, 200)
  const { sessions } = res.json<{ sessions: Array<{ id: string; user_agent: string; current: boolean; client: string }> }>()
  t.equal(sessions.length, 2, 'the logged-out session and other users\' are not listed')
  t.same(sessions.map((s) => s.user_agent).sort(), ['laptop', 'phone'])
  t.same(sessions.filter((s) => s.current).map((s) => s.user_agent), ['laptop'])
  t.ok(sessions.every((s) => s.client === 'browser'))
  t.match(sessions[0], { id: String, created_at: String, last_used_at: String, expires_at: String })
  t.equal(phone.res.statusCode, 200)

  const anonymous = await app.inject({ method: 'GET', url: '/auth/sessions' })
  t.equal(anonymous.statusCode, 401)
  t.match(anonymous.headers['www-authenticate'], /error="invalid_token"/)
})

t.test('DELETE /auth/sessions/:id revokes one session of the caller', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const phone = await login(app, user)
  const laptop = await login(app, user)
  const list = await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(laptop.access), cookies: { [COOKIE]: laptop.cookie } })
  const phoneId = list.json<{ sessions: Array<{ id: string; current: boolean }> }>().sessions.find((s) => !s.current)!.id

  const del = await app.inject({ method: 'DELETE', url: `/auth/sessions/${phoneId}`, headers: bearer(laptop.access) })
  t.equal(del.statusCode, 204)
  t.equal((await refresh(app, phone.cookie)).res.statusCode, 401, 'the revoked session cannot refresh')
  t.equal((await refresh(app, laptop.cookie)).res.statusCode, 200, 'the other one can')
  const events = await app.db.selectFrom('audit_events').selectAll()
    .where('user_id', '=', user.id).where('type', '=', 'session.revoked').execute()
  t.equal(events.length, 1)
  t.match(events[0], { actor_id: user.id, details: { family_id: phoneId, reason: 'user_revoked' } })

  const again = await app.inject({ method: 'DELETE', url: `/auth/sessions/${phoneId}`, headers: bearer(laptop.access) })
  t.equal(again.statusCode, 404, 'already revoked')
})

t.test('DELETE /auth/sessions/:id: someone else\'s id → 404, a bad id → 400, no token → 401', async (t) => {
  const app = await buildApp(t)
  const mallory = await register(app)
  const victim = await register(app)
  const m = await login(app, mallory)
  const v = await login(app, victim)
  const [victimFamily] = await familiesOf(app, victim.id)

  const theirs = await app.inject({ method: 'DELETE', url: `/auth/sessions/${victimFamily!.id}`, headers: bearer(m.access) })
  t.equal(theirs.statusCode, 404)
  t.match(theirs.json(), { statusCode: 404, error: 'Not Found' })
  const unknown = await app.inject({ method: 'DELETE', url: `/auth/sessions/${randomUUID()}`, headers: bearer(m.access) })
  t.equal(unknown.statusCode, 404)
  t.same(unknown.json(), theirs.json(), 'someone else\'s session and an unknown id look the same')
  t.equal((await refresh(app, v.cookie)).res.statusCode, 200, 'the victim is still logged in')

  for (const id of ['not-a-uuid', '1', `${randomUUID()}x`, "'%20or%201=1"]) {
    const bad = await app.inject({ method: 'DELETE', url: `/auth/sessions/${id}`, headers: bearer(m.access) })
    t.equal(bad.statusCode, 400, `id ${id}`)
  }
  t.equal((await app.inject({ method: 'DELETE', url: `/auth/sessions/${randomUUID()}` })).statusCode, 401)
})

t.test('POST /auth/password keeps the current session and revokes every other', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const phone = await login(app, user)
  const tablet = await login(app, user)
  const laptop = await login(app, user)
  const newPassword = 'a different horse entirely'

  const res = await app.inject({
    method: 'POST', url: '/auth/password', headers: bearer(laptop.access), cookies: { [COOKIE]: laptop.cookie },
    payload: { current_password: user.password, new_password: newPassword }
  })
  t.equal(res.statusCode, 204)
  t.equal((await refresh(app, phone.cookie)).res.statusCode, 401)
  t.equal((await refresh(app, tablet.cookie)).res.statusCode, 401)
  t.equal((await refresh(app, laptop.cookie)).res.statusCode, 200, 'the session that changed it stays')
  const active = (await familiesOf(app, user.id)).filter((f) => f.revoked_at === null)
  t.equal(active.length, 1)
  t.ok((await auditTypes(app, user.id)).includes('password.changed'))

  const loginOld = await app.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: user.password } })
  t.equal(loginOld.statusCode, 401)
  t.equal((await login(app, { email: user.email, password: newPassword })).res.statusCode, 200)
})

t.test('POST /auth/password with a wrong current password changes nothing', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const phone = await login(app, user)
  const laptop = await login(app, user)
  const res = await app.inject({
    method: 'POST', url: '/auth/password', headers: bearer(laptop.access),
    payload: { current_password: 'not my password at all', new_password: 'a different horse entirely' }
  })
  t.equal(res.statusCode, 401)
  t.equal((await refresh(app, phone.cookie)).res.statusCode, 200)
  t.notOk((await auditTypes(app, user.id)).includes('password.changed'))
})
