import t from 'tap'
import { testClock } from '../helper.js'
import { auditTypes, buildApp, familiesOf, login, me, refresh, refreshCookieOf, register } from '../sessions-helper.js'

t.test('each refresh rotates: a new access token and a new cookie, the old cookie is spent', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const first = await login(app, user)
  const seen = new Set([first.cookie])
  const access = new Set([first.access])
  let current = first
  for (let i = 0; i < 3; i++) {
    const next = await refresh(app, current.cookie)
    t.equal(next.res.statusCode, 200)
    t.match(next.res.json(), { token_type: 'Bearer', expires_in: Number })
    t.notOk(seen.has(next.cookie), 'a cookie never seen before')
    t.notOk(access.has(next.access), 'a new access token')
    t.equal((await me(app, next.access)).json().id, user.id)
    seen.add(next.cookie)
    access.add(next.access)
    // The cookie just rotated away no longer yields tokens.
    const again = await refresh(app, current.cookie)
    t.not(again.res.statusCode, 200, 'the old cookie is spent')
    current = next
  }
  const [fam, ...others] = await familiesOf(app, user.id)
  t.equal(others.length, 0, 'one login, one family')
  t.equal(fam!.revoked_at, null, 'rotation revokes nothing')
  t.equal((await auditTypes(app, user.id)).filter((e) => e === 'refresh.rotated').length, 3)
})

t.test('a spent cookie after the grace window: 401, the family revoked, its newest token dead', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now, env: { REFRESH_REUSE_GRACE: '2' } })
  const user = await register(app)
  const a = await login(app, user)
  const b = await refresh(app, a.cookie)
  const c = await refresh(app, b.cookie)
  t.equal(c.res.statusCode, 200)
  clock.advance(3)

  const replay = await refresh(app, a.cookie)
  t.equal(replay.res.statusCode, 401)
  t.match(replay.res.json(), { statusCode: 401, error: 'Unauthorized' })
  t.equal(refreshCookieOf(replay.res)?.value, '', 'the cookie is cleared')
  const [fam] = await familiesOf(app, user.id)
  t.type(fam!.revoked_at, Date, 'refresh_families.revoked_at is set')
  t.equal(fam!.revoked_reason, 'reuse_detected')

  const newest = await refresh(app, c.cookie)
  t.equal(newest.res.statusCode, 401, 'the legitimate holder is logged out too')
  const events = await app.db.selectFrom('audit_events').selectAll()
    .where('user_id', '=', user.id).where('type', '=', 'refresh.reuse_detected').execute()
  t.equal(events.length, 1, 'recorded once')
  t.match(events[0], { ip: '127.0.0.1', details: { family_id: fam!.id, reason: 'reuse_detected' } })
})

t.test('a spent cookie exactly at the end of the grace window counts as reuse', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now, env: { REFRESH_REUSE_GRACE: '2' } })
  const user = await register(app)
  const a = await login(app, user)
  t.equal((await refresh(app, a.cookie)).res.statusCode, 200)
  clock.advance(1.999)
  t.equal((await refresh(app, a.cookie)).res.statusCode, 409, 'inside the window')
  clock.advance(0.001)
  t.equal((await refresh(app, a.cookie)).res.statusCode, 401, 'window over')
})

t.test('two tabs share one cookie jar: the slower tab gets 409, retries with the new cookie', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now })
  const user = await register(app)
  const jar = { cookie: (await login(app, user)).cookie }

  const tabA = await refresh(app, jar.cookie)
  t.equal(tabA.res.statusCode, 200)
  const old = jar.cookie
  jar.cookie = tabA.cookie
  clock.advance(1)

  // Tab B sent its request with the cookie it had before A's answer landed.
  const tabB = await refresh(app, old)
  t.equal(tabB.res.statusCode, 409)
  t.equal(tabB.res.headers['retry-after'], '0')
  t.match(tabB.res.json(), { statusCode: 409, error: 'Conflict' })
  t.equal(refreshCookieOf(tabB.res), undefined, 'a 409 leaves the jar alone')

  const retry = await refresh(app, jar.cookie)
  t.equal(retry.res.statusCode, 200)
  t.equal((await me(app, retry.access)).statusCode, 200, 'still logged in')
  const [fam] = await familiesOf(app, user.id)
  t.equal(fam!.revoked_at, null, 'nothing revoked')
  t.notOk((await auditTypes(app, user.id)).includes('refresh.reuse_detected'))
})

t.test('with REFRESH_REUSE_GRACE=0 a spent cookie is reuse at once', async (t) => {
  const app = await buildApp(t, { now: testClock().now, env: { REFRESH_REUSE_GRACE: '0' } })
  const user = await register(app)
  const a = await login(app, user)
  const b = await refresh(app, a.cookie)
  t.equal(b.res.statusCode, 200)
  t.equal((await refresh(app, a.cookie)).res.statusCode, 401)
  t.equal((await refresh(app, b.cookie)).res.statusCode, 401)
  t.type((await familiesOf(app, user.id))[0]!.revoked_at, Date)
})

t.test('idle expiry: past REFRESH_TOKEN_TTL without a refresh → 401', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now, env: { REFRESH_TOKEN_TTL: '60' } })
  const user = await register(app)
  const a = await login(app, user)
  clock.advance(59)
  const b = await refresh(app, a.cookie)
  t.equal(b.res.statusCode, 200, 'within the idle lifetime')
  clock.advance(60)
  const late = await refresh(app, b.cookie)
  t.equal(late.res.statusCode, 401)
  t.equal(refreshCookieOf(late.res)?.value, '', 'the cookie is cleared')
})

t.test('absolute expiry: refreshing within the idle TTL does not outlive SESSION_MAX_AGE', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now, env: { REFRESH_TOKEN_TTL: '60', SESSION_MAX_AGE: '150' } })
  const user = await register(app)
  let cookie = (await login(app, user)).cookie
  for (const step of [50, 50, 40]) {
    clock.advance(step)
    const r = await refresh(app, cookie)
    t.equal(r.res.statusCode, 200, `refresh at +${step}s`)
    cookie = r.cookie
  }
  // At +140 s the cookie may only live until the family's end at +150 s.
  clock.advance(20)
  t.equal((await refresh(app, cookie)).res.statusCode, 401, 'past the absolute lifetime')
  t.equal((await familiesOf(app, user.id))[0]!.revoked_at, null, 'expired, not revoked as reuse')
})

t.test('a disabled user can no longer refresh', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const a = await login(app, user)
  await app.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  const r = await refresh(app, a.cookie)
  t.equal(r.res.statusCode, 401)
  t.notMatch(r.res.body, /access_token/)
})

t.test('no cookie, a malformed cookie, or an unknown cookie → 401', async (t) => {
  const app = await buildApp(t)
  const none = await app.inject({ method: 'POST', url: '/auth/refresh' })
  t.equal(none.statusCode, 401)
  t.match(none.json(), { statusCode: 401, error: 'Unauthorized', message: String })
  for (const bad of ['x', 'a'.repeat(43), '%00%01', 'a'.repeat(5000)]) {
    t.equal((await refresh(app, bad)).res.statusCode, 401, `cookie ${bad.slice(0, 10)}…`)
  }
})
