import t from 'tap'
import { testClock, type TestApp } from '../helper.js'
import { auditTypes, buildApp, familiesOf, login, me, refresh, register } from '../sessions-helper.js'

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

function tokenForm(app: TestApp, params: Record<string, string> | string) {
  const payload = typeof params === 'string' ? params : new URLSearchParams(params).toString()
  return app.inject({ method: 'POST', url: '/oauth/token', headers: FORM, payload })
}

function tokenJson(app: TestApp, body: Record<string, unknown>) {
  return app.inject({ method: 'POST', url: '/oauth/token', payload: body })
}

function revoke(app: TestApp, token: string) {
  return app.inject({ method: 'POST', url: '/oauth/revoke', headers: FORM, payload: new URLSearchParams({ token }).toString() })
}

interface Tokens { access_token: string; token_type: string; expires_in: number; refresh_token: string }

async function passwordGrant(app: TestApp, user: { email: string; password: string }): Promise<Tokens> {
  const res = await tokenForm(app, { grant_type: 'password', username: user.email, password: user.password })
  if (res.statusCode !== 200) throw new Error(`password grant: ${res.statusCode} ${res.body}`)
  return res.json<Tokens>()
}

t.test('password grant, form-urlencoded and JSON: tokens in the body, no-store', async (t) => {
  const app = await buildApp(t, { env: { ACCESS_TOKEN_TTL: '600' } })
  const user = await register(app)
  const form = await tokenForm(app, { grant_type: 'password', username: user.email, password: user.password })
  const json = await tokenJson(app, { grant_type: 'password', username: user.email, password: user.password })
  for (const res of [form, json]) {
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /^application\/json/)
    t.equal(res.headers['cache-control'], 'no-store')
    t.same(Object.keys(res.json()).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type'])
    t.match(res.json(), { token_type: 'Bearer', expires_in: 600, refresh_token: /^[A-Za-z0-9_-]{43}$/ })
    t.same(res.cookies, [], 'no cookie on the OAuth surface')
    t.equal((await me(app, res.json<Tokens>().access_token)).json().id, user.id)
  }
  t.not(form.json<Tokens>().refresh_token, json.json<Tokens>().refresh_token)
  const fams = await familiesOf(app, user.id)
  t.same(fams.map((f) => f.client), ['oauth', 'oauth'], 'one family per grant')
})

t.test('a body declaring a charset other than UTF-8 is refused with 415, and starts no session', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const params = new URLSearchParams({ grant_type: 'password', username: user.email, password: user.password }).toString()
  const json = JSON.stringify({ grant_type: 'password', username: user.email, password: user.password })
  for (const [type, payload] of [['application/x-www-form-urlencoded; charset=ebcdic', params], ['application/x-www-form-urlencoded;charset="latin1"', params],
    ['application/json; charset=utf-16', json], ['application/json; charset=UTF-16LE', `\uFEFF${json}`]]) {
    const res = await app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': type! }, payload })
    t.equal(res.statusCode, 415, type)
    t.match(res.json(), { error: 'invalid_request', error_description: /UTF-8/ }, type)
  }
  t.same(await familiesOf(app, user.id), [], 'nothing started')
  for (const type of ['application/x-www-form-urlencoded; charset=UTF-8', 'application/x-www-form-urlencoded; charset="utf8"']) {
    t.equal((await app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': type }, payload: params })).statusCode, 200, type)
  }
  t.equal((await app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/json; charset=utf-8' }, payload: json })).statusCode, 200)
})

t.test('bad credentials → 400 invalid_grant, whatever was wrong', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const wrong = await tokenForm(app, { grant_type: 'password', username: user.email, password: 'not the password at all' })
  const unknown = await tokenForm(app, { grant_type: 'password', username: 'nobody-here@example.com', password: user.password })
  for (const res of [wrong, unknown]) {
    t.equal(res.statusCode, 400)
    t.equal(res.headers['cache-control'], 'no-store')
    t.match(res.json(), { error: 'invalid_grant', error_description: String })
    t.notMatch(res.body, /statusCode|stack/)
  }
  t.same(wrong.json(), unknown.json(), 'an unknown user looks like a wrong password')

  await app.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  const disabled = await tokenForm(app, { grant_type: 'password', username: user.email, password: user.password })
  t.equal(disabled.statusCode, 400)
  t.equal(disabled.json().error, 'invalid_grant')
})

t.test('refresh_token grant rotates; the spent token replayed → invalid_grant and the family revoked', async (t) => {
  const app = await buildApp(t, { now: testClock().now })
  const user = await register(app)
  const first = await passwordGrant(app, user)

  const second = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: first.refresh_token })
  t.equal(second.statusCode, 200)
  t.equal(second.headers['cache-control'], 'no-store')
  const rotated = second.json<Tokens>()
  t.match(rotated, { token_type: 'Bearer', expires_in: Number })
  t.not(rotated.refresh_token, first.refresh_token)
  t.not(rotated.access_token, first.access_token)
  t.equal((await me(app, rotated.access_token)).statusCode, 200)

  const third = await tokenJson(app, { grant_type: 'refresh_token', refresh_token: rotated.refresh_token })
  t.equal(third.statusCode, 200, 'JSON bodies rotate too')
  const newest = third.json<Tokens>()

  // No grace on this surface: the clock has not moved, and the replay is reuse all the same.
  const replay = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: first.refresh_token })
  t.equal(replay.statusCode, 400)
  t.match(replay.json(), { error: 'invalid_grant' })
  const [fam] = await familiesOf(app, user.id)
  t.type(fam!.revoked_at, Date, 'the family is revoked')
  t.equal(fam!.revoked_reason, 'reuse_detected')
  const dead = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: newest.refresh_token })
  t.equal(dead.statusCode, 400, 'the newest token of the family is dead too')
  t.equal(dead.json().error, 'invalid_grant')

  const events = await auditTypes(app, user.id)
  t.equal(events.filter((e) => e === 'refresh.rotated').length, 2)
  t.ok(events.includes('refresh.reuse_detected'))
})

t.test('refresh_token grant: unknown or malformed tokens, and a disabled user → invalid_grant', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  for (const token of ['A'.repeat(43), 'short', '../../etc/passwd']) {
    const res = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: token })
    t.equal(res.statusCode, 400)
    t.equal(res.json().error, 'invalid_grant')
  }
  const tokens = await passwordGrant(app, user)
  await app.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  const res = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token })
  t.equal(res.statusCode, 400)
  t.equal(res.json().error, 'invalid_grant')
})

t.test('malformed token requests → RFC 6749 errors', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const cases: Array<[string, Awaited<ReturnType<typeof tokenForm>>, string]> = [
    ['unsupported grant', await tokenForm(app, { grant_type: 'client_credentials' }), 'unsupported_grant_type'],
    ['unsupported grant (JSON)', await tokenJson(app, { grant_type: 'authorization_code', code: 'x' }), 'unsupported_grant_type'],
    ['no grant_type', await tokenForm(app, { username: user.email, password: user.password }), 'invalid_request'],
    ['no password', await tokenForm(app, { grant_type: 'password', username: user.email }), 'invalid_request'],
    ['no username (JSON)', await tokenJson(app, { grant_type: 'password', password: user.password }), 'invalid_request'],
    ['no refresh_token', await tokenForm(app, { grant_type: 'refresh_token' }), 'invalid_request'],
    ['empty refresh_token', await tokenForm(app, { grant_type: 'refresh_token', refresh_token: '' }), 'invalid_request'],
    ['repeated grant_type', await tokenForm(app, 'grant_type=password&grant_type=refresh_token'), 'invalid_request'],
    ['repeated password', await tokenForm(app, `grant_type=password&username=${encodeURIComponent(user.email)}&password=a&password=${encodeURIComponent(user.password)}`), 'invalid_request'],
    ['grant_type not a string', await tokenJson(app, { grant_type: ['password'] }), 'invalid_request'],
    ['malformed JSON', await app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/json' }, payload: '{"grant_type":' }), 'invalid_request']
  ]
  for (const [name, res, error] of cases) {
    t.equal(res.statusCode, 400, `${name}: 400`)
    t.equal(res.json().error, error, `${name}: ${error}`)
    t.equal(res.headers['cache-control'], 'no-store', `${name}: no-store`)
  }
  const events = await auditTypes(app, user.id)
  t.notOk(events.includes('login.success'), 'a repeated parameter never reaches the password check')
})

t.test('each surface rotates only its own refresh tokens', async (t) => {
  const app = await buildApp(t, { now: testClock().now })
  const user = await register(app)
  const browser = await login(app, user)
  const native = await passwordGrant(app, user)

  // A browser session's token must never come back in a JSON body.
  const viaOAuth = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: browser.cookie })
  t.equal(viaOAuth.statusCode, 400)
  t.equal(viaOAuth.json().error, 'invalid_grant')
  t.notMatch(viaOAuth.body, /refresh_token|access_token/)
  // And an OAuth token gets neither a cookie nor the browser's reuse grace.
  const viaCookie = await refresh(app, native.refresh_token)
  t.equal(viaCookie.res.statusCode, 401)

  t.equal((await refresh(app, browser.cookie)).res.statusCode, 200, 'the browser session is intact')
  const rotated = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: native.refresh_token })
  t.equal(rotated.statusCode, 200, 'the OAuth grant is intact')
  // Within the browser grace window, and still: a replayed OAuth token through the cookie
  // endpoint is refused, never answered 409.
  t.equal((await refresh(app, native.refresh_token)).res.statusCode, 401)
})

t.test('unrecognized form parameters are ignored, whatever their name', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  for (const name of ['client_id', 'scope', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const res = await tokenForm(app, { grant_type: 'password', username: user.email, password: user.password, [name]: 'x' })
    t.equal(res.statusCode, 200, name)
  }
})

t.test('/oauth/revoke: 200 for unknown tokens, revokes the family of a known one', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  for (const token of ['whatever', 'A'.repeat(43), 'a.b.c']) {
    const res = await revoke(app, token)
    t.equal(res.statusCode, 200, `unknown token ${token.slice(0, 8)}`)
    t.equal(res.headers['cache-control'], 'no-store')
  }
  const missing = await app.inject({ method: 'POST', url: '/oauth/revoke', headers: FORM, payload: '' })
  t.equal(missing.statusCode, 400)
  t.equal(missing.json().error, 'invalid_request')

  const kept = await passwordGrant(app, user)
  const first = await passwordGrant(app, user)
  const rotated = (await tokenForm(app, { grant_type: 'refresh_token', refresh_token: first.refresh_token })).json<Tokens>()
  // A spent token of the family is enough to end it.
  const res = await revoke(app, first.refresh_token)
  t.equal(res.statusCode, 200)
  const after = await tokenForm(app, { grant_type: 'refresh_token', refresh_token: rotated.refresh_token })
  t.equal(after.statusCode, 400)
  t.equal(after.json().error, 'invalid_grant')
  const fams = await familiesOf(app, user.id)
  t.equal(fams.filter((f) => f.revoked_at !== null).length, 1, 'only that family')
  t.equal((await tokenForm(app, { grant_type: 'refresh_token', refresh_token: kept.refresh_token })).statusCode, 200)
  t.ok((await auditTypes(app, user.id)).includes('session.revoked'))

  t.equal((await revoke(app, rotated.refresh_token)).statusCode, 200, 'revoking twice is fine')
})

t.test('/oauth/revoke of an access token: /auth/me refuses it', async (t) => {
  const app = await buildApp(t)
  const user = await register(app)
  const tokens = await passwordGrant(app, user)
  const other = await passwordGrant(app, user)
  t.equal((await me(app, tokens.access_token)).statusCode, 200)
  const res = await app.inject({ method: 'POST', url: '/oauth/revoke', payload: { token: tokens.access_token, token_type_hint: 'access_token' } })
  t.equal(res.statusCode, 200)
  const refused = await me(app, tokens.access_token)
  t.equal(refused.statusCode, 401)
  t.match(refused.headers['www-authenticate'], /^Bearer .*error="invalid_token"/)
  t.equal((await me(app, other.access_token)).statusCode, 200, 'other tokens are untouched')
  t.equal((await tokenForm(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token })).statusCode, 200,
    'the refresh token is a separate grant')
})
