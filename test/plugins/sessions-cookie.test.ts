import t from 'tap'
import { testClock } from '../helper.js'
import { COOKIE, buildApp, login, refresh, refreshCookieOf, register } from '../sessions-helper.js'

t.test('the refresh cookie: HttpOnly, Secure, SameSite=Strict, Path=/auth, Max-Age', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now, env: { REFRESH_TOKEN_TTL: '3600' } })
  const user = await register(app)
  const a = await login(app, user)
  for (const res of [a.res, (await refresh(app, a.cookie)).res]) {
    const cookie = refreshCookieOf(res)
    t.match(cookie, { name: COOKIE, httpOnly: true, secure: true, sameSite: 'Strict', path: '/auth', maxAge: 3600 })
    t.match(cookie!.value, /^[A-Za-z0-9_-]{43}$/, '256 random bits, base64url')
    t.equal(res.headers['cache-control'], 'no-store')
    // The refresh token travels in the cookie only.
    t.notOk(res.body.includes(cookie!.value), 'the refresh token is not in the body')
    t.same(Object.keys(res.json()).sort(), ['access_token', 'expires_in', 'token_type'])
  }
})

t.test('Max-Age counts down to the idle expiry and never past the absolute one', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now, env: { REFRESH_TOKEN_TTL: '100', SESSION_MAX_AGE: '150' } })
  const user = await register(app)
  const a = await login(app, user)
  t.equal(refreshCookieOf(a.res)!.maxAge, 100)
  clock.advance(90)
  const b = await refresh(app, a.cookie)
  t.equal(refreshCookieOf(b.res)!.maxAge, 60, 'the family ends 150 s after login')
})

t.test('no response of the cookie surface carries the refresh token in its body', async (t) => {
  const clock = testClock()
  const app = await buildApp(t, { now: clock.now })
  const user = await register(app)
  const a = await login(app, user)
  const b = await refresh(app, a.cookie)
  const race = await refresh(app, a.cookie)
  t.equal(race.res.statusCode, 409)
  const sessions = await app.inject({
    method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${b.access}` }, cookies: { [COOKIE]: b.cookie }
  })
  t.equal(sessions.statusCode, 200)
  const logout = await app.inject({ method: 'POST', url: '/auth/logout', cookies: { [COOKIE]: b.cookie } })
  for (const res of [a.res, b.res, race.res, sessions, logout]) {
    for (const token of [a.cookie, b.cookie]) t.notOk(res.body.includes(token))
  }
})

t.test('cookie endpoints refuse an Origin that is not allowed', async (t) => {
  const app = await buildApp(t, { env: { CORS_ORIGINS: 'https://app.example.com, https://admin.example.com' } })
  const user = await register(app)
  const evil = { origin: 'https://evil.example.net' }

  const loginRes = await app.inject({ method: 'POST', url: '/auth/login', headers: evil, payload: { email: user.email, password: user.password } })
  t.equal(loginRes.statusCode, 403)
  t.match(loginRes.json(), { statusCode: 403, error: 'Forbidden' })
  t.equal(refreshCookieOf(loginRes), undefined, 'no cookie for a foreign origin')
  t.equal(loginRes.headers['access-control-allow-origin'], undefined)

  const a = await login(app, user)
  const foreign = await refresh(app, a.cookie, evil)
  t.equal(foreign.res.statusCode, 403)
  t.equal(foreign.res.headers['access-control-allow-origin'], undefined)
  t.equal((await refresh(app, a.cookie, { origin: 'null' })).res.statusCode, 403, 'an opaque origin')
  const logout = await app.inject({ method: 'POST', url: '/auth/logout', headers: evil, cookies: { [COOKIE]: a.cookie } })
  t.equal(logout.statusCode, 403)

  // The refused requests changed nothing: the cookie still rotates.
  const ok = await refresh(app, a.cookie)
  t.equal(ok.res.statusCode, 200)
})

t.test('an allowed origin gets credentials CORS headers', async (t) => {
  const app = await buildApp(t, { env: { CORS_ORIGINS: 'https://app.example.com' } })
  const user = await register(app)
  const origin = 'https://app.example.com'

  const preflight = await app.inject({
    method: 'OPTIONS', url: '/auth/refresh',
    headers: { origin, 'access-control-request-method': 'POST' }
  })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], origin)
  t.equal(preflight.headers['access-control-allow-credentials'], 'true')

  const a = await login(app, user, { origin })
  t.equal(a.res.headers['access-control-allow-origin'], origin)
  t.equal(a.res.headers['access-control-allow-credentials'], 'true')
  const b = await refresh(app, a.cookie, { origin })
  t.equal(b.res.statusCode, 200)
  t.equal(b.res.headers['access-control-allow-origin'], origin)
  t.equal(b.res.headers['access-control-allow-credentials'], 'true')
  t.match(b.res.headers.vary, /Origin/i)
  // Without this a page cannot read when to retry after the two-tab 409 or a 429.
  t.match(b.res.headers['access-control-expose-headers'], /Retry-After/i)
})

t.test('requests without an Origin (same-origin navigation, native tools) are served', async (t) => {
  const app = await buildApp(t, { env: { CORS_ORIGINS: 'https://app.example.com' } })
  const user = await register(app)
  const a = await login(app, user)
  t.equal((await refresh(app, a.cookie)).res.statusCode, 200)
  t.equal(a.res.headers['access-control-allow-origin'], undefined)
})

t.test('a JSON content type with an empty body is "no body" on the cookie endpoints', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const a = await login(app, user)
  const json = { 'content-type': 'application/json' }
  const ok = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { ...json, cookie: `${COOKIE}=${a.cookie}` } })
  t.equal(ok.statusCode, 200, 'refresh works as browsers send it')
  const none = await app.inject({ method: 'POST', url: '/auth/refresh', headers: json })
  t.equal(none.statusCode, 401, 'no cookie is still 401, not a JSON error')
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: json })
  t.equal(out.statusCode, 204)
  const bad = await app.inject({ method: 'POST', url: '/auth/login', headers: json, payload: '{"email":' })
  t.equal(bad.statusCode, 400, 'malformed JSON is still a 400')
  const empty = await app.inject({ method: 'POST', url: '/auth/login', headers: json })
  t.equal(empty.statusCode, 400, 'a route that needs a body still says so')
})
