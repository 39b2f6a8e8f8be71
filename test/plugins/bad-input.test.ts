import { generateKeyPairSync, randomUUID, sign as rsaSign, createHmac } from 'node:crypto'
import t from 'tap'
import fc from 'fast-check'
import { sql } from 'kysely'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { grantRole } from '../../src/accounts.js'
import { build } from '../helper.js'
import { PASSWORD, uniqueIp } from '../accounts-helper.js'

// Random and hostile input at every route (CONTRACT.md sections 4 and 6): no input, header
// or token yields a 5xx or a stack trace, and a request that is refused changes nothing
// (audit_events aside: failed and throttled logins are recorded by design).
// Every request below is built so that it cannot be a valid, state-changing one, so the
// table checksums are compared after every request, 2xx (JWKS, a logout without a session,
// RFC 7009's 200 for an unknown token) as well as 4xx.
// A failure prints fast-check's seed and path; FC_SEED=<seed> FC_PATH=<path> replays it.
// FC_RUNS overrides the number of runs per property.
const RUNS = Number(process.env.FC_RUNS ?? 120)
const fcParams = (numRuns = RUNS): fc.Parameters<unknown> => ({
  numRuns,
  ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED), path: process.env.FC_PATH } : {}),
  endOnFailure: true
})

const app = await build(t, { env: { RATE_LIMIT_MAX: '1000000' } })

// ---------- fixtures: a user, an admin, their tokens, a refresh cookie ----------
async function registerUser(): Promise<{ id: string; email: string }> {
  const email = `fuzz-${randomUUID()}@example.com`
  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password: PASSWORD } })
  if (res.statusCode !== 201) throw new Error(`register: ${res.statusCode} ${res.body}`)
  return res.json()
}
async function loginUser(email: string) {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: PASSWORD }, remoteAddress: uniqueIp() })
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return { access: res.json<{ access_token: string }>().access_token, cookie: res.cookies.find((c) => c.name === 'keysmith_refresh')!.value }
}
const user = await registerUser()
const userSession = await loginUser(user.email)
const boss = await registerUser()
await grantRole(app.db, boss.id, 'admin')
const adminSession = await loginUser(boss.email)
const jwks = (await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json<{ keys: { kid: string; n: string }[] }>()

// ---------- the state that refused requests must not touch ----------
const TABLES = ['users', 'user_roles', 'refresh_families', 'refresh_tokens', 'signing_keys', 'denied_tokens'] as const
async function snapshot(): Promise<Record<string, string>> {
  const parts = TABLES.map((name) =>
    sql`(select count(*)::text || ':' || coalesce(md5(string_agg(t::text, ',' order by t::text)), '-') from ${sql.table(name)} t) as ${sql.ref(name)}`)
  const { rows } = await sql<Record<string, string>>`select ${sql.join(parts)}`.execute(app.db)
  return rows[0]!
}

// ---------- what every answer must look like ----------
const STACK = [/\n\s+at /, / {4}at /, /\.[cm]?[tj]s:\d+/, /node_modules/, /\/work\//, /file:\/\//]
function checkResponse(res: LightMyRequestResponse, what: string) {
  if (res.statusCode >= 500) throw new Error(`${what}: ${res.statusCode} ${res.body.slice(0, 500)}`)
  for (const re of STACK) {
    if (re.test(res.body)) throw new Error(`${what}: body looks like a stack trace (${re}): ${res.body.slice(0, 500)}`)
  }
  if (res.statusCode >= 400 && res.body !== '') {
    let body: Record<string, unknown>
    try {
      body = res.json()
    } catch {
      throw new Error(`${what}: ${res.statusCode} without a JSON body: ${res.body.slice(0, 200)}`)
    }
    const shaped = (typeof body.message === 'string' && typeof body.statusCode === 'number') || typeof body.error === 'string'
    if (!shaped) throw new Error(`${what}: ${res.statusCode} with an unexpected error shape: ${res.body.slice(0, 200)}`)
  }
}

const describe = (o: InjectOptions) => {
  const payload = typeof o.payload === 'string' ? o.payload : JSON.stringify(o.payload)
  return `${o.method} ${o.url} headers=${JSON.stringify(o.headers ?? {}).slice(0, 300)} payload=${(payload ?? '').slice(0, 300)}`
}

// One request: no 5xx, no stack, and nothing but audit_events changed.
async function send(o: InjectOptions): Promise<LightMyRequestResponse> {
  const before = await snapshot()
  const res = await app.inject({ remoteAddress: uniqueIp(), ...o })
  const what = describe(o)
  checkResponse(res, what)
  const after = await snapshot()
  for (const table of TABLES) {
    if (before[table] !== after[table]) throw new Error(`${what}: ${res.statusCode} changed ${table}: ${res.body.slice(0, 300)}`)
  }
  return res
}

// ---------- arbitraries ----------
// Header values: what an HTTP/1.1 parser lets through (visible ASCII, tab, obs-text).
const headerChar = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  fc.constant(0x09),
  fc.integer({ min: 0x80, max: 0xff })
).map((c) => String.fromCharCode(c))
const headerString = (maxLength = 120) => fc.string({ unit: headerChar, maxLength })
const b64url = (maxLength = 80) => fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 1, maxLength })
const enc = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

// Strings that have broken servers before: NULs, lone surrogates, SQL, huge, format specifiers.
const NASTY = [
  '', ' ', '\u0000', 'a\u0000b@example.com', `${user.email}\u0000`, '\uD800', '\uDFFF\uD800', '\u202E', '\uFEFF',
  "' or 1=1 --", "'; drop table users; --", '%00', '%s%s%s%n', '${7*7}', '{{7*7}}', '../../../../etc/passwd',
  '__proto__', 'constructor', 'null', 'undefined', 'NaN', '-1', '1e309', 'x'.repeat(320), 'y'.repeat(1025),
  `${'z'.repeat(64)}@${'q'.repeat(250)}.com`, 'ÄÖÜ@ß.de', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢@example.com', '\uFB00'.repeat(300),
  'not-a-uuid', '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff'
]
const weirdString = fc.oneof(
  fc.constantFrom(...NASTY),
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc.string({ unit: 'grapheme', maxLength: 64 }),
  fc.string({ maxLength: 2000 })
)
// Any JSON value at all, including the keys routes look for with the wrong types.
const KEYS = ['email', 'password', 'grant_type', 'username', 'refresh_token', 'token', 'token_type_hint', 'roles',
  'current_password', 'new_password', 'scope', 'constructor', 'prototype', 'toString', 'hasOwnProperty']
const hostileObject = fc.dictionary(fc.constantFrom(...KEYS), fc.oneof(weirdString, fc.jsonValue({ maxDepth: 3 })), { maxKeys: 6 })
const jsonBody = fc.oneof(fc.jsonValue({ maxDepth: 5 }), hostileObject)

// Raw payloads a JSON parser must survive.
const rawJson = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.constantFrom('', '{', '[', '{"a":', 'nul', '"\\u0000"', '{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"x":1}}}',
    '{"email":"a@b.co","email":"b@c.co"}', '\uFEFF{}', '{"a":1}garbage', '1e999999', '-', '[1,]', '{"a":01}', '"\\ud800"'),
  fc.integer({ min: 1, max: 30_000 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.integer({ min: 1, max: 10_000 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)),
  fc.integer({ min: 1, max: 60_000 }).map((n) => '['.repeat(n)),
  // Just above the 64 KiB limit, and far above it.
  fc.integer({ min: 64 * 1024 + 1, max: 400 * 1024 }).map((n) => `{"email":"${'a'.repeat(n)}"}`),
  // Many keys, within the limit.
  fc.integer({ min: 100, max: 5_000 }).map((n) => JSON.stringify(Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]))))
)
const wrongContentType = fc.oneof(
  fc.constantFrom('text/plain', 'text/html', 'application/xml', 'multipart/form-data; boundary=xyz', 'application/octet-stream',
    'application/json; charset=utf-16', 'application/jsonp', 'application/x-www-form-urlencoded; charset=ebcdic', 'json', '*/*', ';', 'application/'),
  headerString(60)
)

// Access tokens nobody should accept.
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 })
const realKid = jwks.keys[0]!.kid
function signRs256(header: object, claims: object, key = otherKey.privateKey): string {
  const input = `${enc(header)}.${enc(claims)}`
  return `${input}.${rsaSign('sha256', Buffer.from(input), key).toString('base64url')}`
}
const nowS = () => Math.floor(Date.now() / 1000)
// The claims of a real admin token, but fresh: only the signature can give a forgery away.
const realClaims = JSON.parse(Buffer.from(adminSession.access.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>
const goodClaims = () => ({ ...realClaims, exp: nowS() + 600, iat: nowS(), jti: randomUUID(), roles: ['user', 'admin'] })
const forgedJwt = fc.oneof(
  // alg none, HS256 keyed with public material, another RSA key under our kid, embedded keys.
  fc.constant(null).map(() => `${enc({ alg: 'none', typ: 'at+jwt', kid: realKid })}.${enc(goodClaims())}.`),
  fc.constant(null).map(() => `${enc({ alg: 'none', typ: 'at+jwt', kid: realKid })}.${enc(goodClaims())}.AAAA`),
  fc.constant(null).map(() => {
    const input = `${enc({ alg: 'HS256', typ: 'at+jwt', kid: realKid })}.${enc(goodClaims())}`
    return `${input}.${createHmac('sha256', JSON.stringify(jwks.keys[0])).update(input).digest('base64url')}`
  }),
  fc.constant(null).map(() => signRs256({ alg: 'RS256', typ: 'at+jwt', kid: realKid }, goodClaims())),
  fc.constant(null).map(() => signRs256({ alg: 'RS256', typ: 'at+jwt', kid: 'attacker', jwk: otherKey.publicKey.export({ format: 'jwk' }) }, goodClaims())),
  fc.constant(null).map(() => signRs256({ alg: 'RS256', typ: 'at+jwt', kid: realKid, jku: 'http://127.0.0.1:1/jwks.json', x5u: 'http://127.0.0.1:1/x' }, goodClaims())),
  // The real token's header and signature over other claims.
  fc.constant(null).map(() => {
    const [h, , s] = adminSession.access.split('.')
    return `${h}.${enc({ ...goodClaims(), sub: randomUUID() })}.${s}`
  }),
  // Random headers and claims, random kids (any JSON type), garbage segments.
  fc.tuple(fc.jsonValue({ maxDepth: 2 }), fc.jsonValue({ maxDepth: 2 }), b64url(400)).map(([h, c, s]) => `${enc(h)}.${enc(c)}.${s}`),
  fc.tuple(fc.oneof(weirdString, fc.jsonValue({ maxDepth: 2 })), fc.dictionary(fc.constantFrom('sub', 'exp', 'iat', 'nbf', 'iss', 'aud', 'roles', 'jti', 'scope'), fc.jsonValue({ maxDepth: 2 })))
    .map(([kid, claims]) => signRs256({ alg: 'RS256', typ: 'at+jwt', kid }, claims)),
  fc.tuple(b64url(), b64url(), b64url()).map(([a, b, c]) => `${a}.${b}.${c}`)
)
const authorization = fc.oneof(
  headerString(300),
  forgedJwt.map((jwt) => `Bearer ${jwt}`),
  fc.tuple(fc.constantFrom('Bearer', 'bearer', 'BEARER', 'Basic', 'Bearer  ', 'Token', 'Bearer\t', ''), fc.oneof(forgedJwt, headerString(200)))
    .map(([scheme, v]) => `${scheme} ${v}`),
  fc.constant(null).map(() => `Bearer ${adminSession.access}.${adminSession.access}`),
  fc.constant(null).map(() => `Bearer ${adminSession.access.slice(0, -3)}`),
  fc.integer({ min: 4 * 1024, max: 12 * 1024 }).map((n) => `Bearer ${'a'.repeat(n)}.b.c`)
)
const refreshCookieValue = fc.oneof(
  headerString(200).map((s) => s.replace(/;/g, '')),
  b64url(200),
  fc.tuple(fc.uuid(), b64url(64)).map(([id, s]) => `${id}.${s}`),
  fc.constant(null).map(() => `${userSession.cookie}x`),
  fc.constant(null).map(() => userSession.cookie.slice(0, -1)),
  fc.constantFrom('%', '%E0%A4%A', '%00', '%ZZ', '""', '"unterminated', 'a=b=c', '\\', '%25%32%35', ' '.repeat(10))
)
const cookieHeader = fc.oneof(
  refreshCookieValue.map((v) => `keysmith_refresh=${v}`),
  fc.tuple(refreshCookieValue, refreshCookieValue).map(([a, b]) => `keysmith_refresh=${a}; keysmith_refresh=${b}`),
  headerString(300)
)
const origin = fc.oneof(headerString(100), fc.constantFrom('null', 'http://evil.example', 'https://localhost.evil', 'file://', 'http://localhost:3000.evil.com'))
const randomHeaders = fc.record({
  authorization: fc.option(authorization, { nil: undefined }),
  cookie: fc.option(cookieHeader, { nil: undefined }),
  origin: fc.option(origin, { nil: undefined }),
  'user-agent': fc.option(headerString(300), { nil: undefined }),
  'x-forwarded-for': fc.option(headerString(60), { nil: undefined }),
  'if-none-match': fc.option(headerString(60), { nil: undefined }),
  accept: fc.option(headerString(40), { nil: undefined })
}, { requiredKeys: [] }).map((h) => Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) as Record<string, string>)

// Path segments and query strings: random, percent-encoded or not.
const pathSegment = fc.oneof(
  fc.uuid(),
  fc.string({ unit: 'binary', maxLength: 60 }).map(encodeURIComponent),
  fc.constantFrom('%', '%zz', '%00', '..', '%2e%2e', '%2F', 'a%2Fb', '%C0%AF', '%ED%A0%80', '%FF', '-1', '0', 'null', 'x'.repeat(2000), '00000000-0000-0000-0000-00000000000g')
)
const queryString = fc.oneof(
  fc.array(fc.tuple(
    fc.oneof(fc.constantFrom('limit', 'cursor', 'email', 'type', 'user_id', 'before', '__proto__', 'constructor', 'limit[]', 'type[0]'), fc.string({ maxLength: 10 }).map(encodeURIComponent)),
    fc.oneof(pathSegment, fc.integer().map(String), fc.constantFrom('', '1e3', '0x10', '99999999999999999999', '-0', '1.5', 'true', '%00', 'a%00b', '%25', '%'))
  ), { maxLength: 6 }).map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join('&')),
  fc.string({ unit: headerChar, maxLength: 100 }).map((s) => s.replace(/[#\s]/g, ''))
)

// ---------- the routes ----------
interface Route { method: 'GET' | 'POST' | 'PUT' | 'DELETE'; path: (id: string) => string; body?: boolean; form?: boolean; admin?: boolean }
const ROUTES: Route[] = [
  { method: 'POST', path: () => '/auth/register', body: true },
  { method: 'POST', path: () => '/auth/login', body: true },
  { method: 'POST', path: () => '/auth/refresh', body: true },
  { method: 'POST', path: () => '/auth/logout', body: true },
  { method: 'GET', path: () => '/auth/me' },
  { method: 'GET', path: () => '/auth/sessions' },
  { method: 'DELETE', path: (id) => `/auth/sessions/${id}` },
  { method: 'POST', path: () => '/auth/password', body: true },
  { method: 'POST', path: () => '/oauth/token', body: true, form: true },
  { method: 'POST', path: () => '/oauth/revoke', body: true, form: true },
  { method: 'GET', path: () => '/admin/users', admin: true },
  { method: 'GET', path: (id) => `/admin/users/${id}`, admin: true },
  { method: 'PUT', path: (id) => `/admin/users/${id}/roles`, body: true, admin: true },
  { method: 'POST', path: (id) => `/admin/users/${id}/disable`, body: true, admin: true },
  { method: 'POST', path: (id) => `/admin/users/${id}/enable`, body: true, admin: true },
  { method: 'POST', path: (id) => `/admin/users/${id}/revoke-sessions`, body: true, admin: true },
  { method: 'GET', path: () => '/admin/keys', admin: true },
  { method: 'POST', path: () => '/admin/keys/rotate', body: true, admin: true },
  { method: 'GET', path: () => '/admin/audit', admin: true },
  { method: 'GET', path: () => '/.well-known/jwks.json' },
  { method: 'GET', path: () => '/.well-known/openid-configuration' },
  { method: 'GET', path: () => '/.well-known/oauth-authorization-server' },
  { method: 'GET', path: () => '/health' },
  { method: 'GET', path: () => '/ready' }
]
const route = fc.constantFrom(...ROUTES)
const bodyRoute = fc.constantFrom(...ROUTES.filter((r) => r.body))
const label = (r: Route) => `${r.method} ${r.path(':id')}`

// Admin routes with a real admin token: the ids are random (unknown users, or not ids at
// all), so a mutating admin route can only answer 400 or 404.
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

// ---------- properties ----------
t.test('random JSON bodies at every route, anonymous, with garbage credentials, and as admin on unknown ids', async (t) => {
  await fc.assert(fc.asyncProperty(bodyRoute, jsonBody, fc.constantFrom('none', 'garbage', 'admin'), pathSegment, randomHeaders,
    async (r, body, who, id, headers) => {
      // The admin token only at admin routes (at logout it would be refused from then on),
      // and not at rotate, which ignores its body and would rotate whatever was sent.
      if (who === 'admin' && (!r.admin || r.path('x') === '/admin/keys/rotate')) who = 'garbage'
      const h = who === 'none' ? {} : who === 'admin' ? { ...headers, ...bearer(adminSession.access) } : headers
      if (who === 'admin') delete (h as Record<string, string>).cookie
      await send({ method: r.method, url: r.path(who === 'admin' ? randomUUID() : id), headers: { ...h, 'content-type': 'application/json' }, payload: JSON.stringify(body) })
    }), fcParams())
  t.pass('no 5xx, no stack, nothing changed')
})

t.test('schema-shaped bodies with hostile strings: register, login, password, OAuth token and revoke', async (t) => {
  const cases = fc.oneof(
    // Register: a weird email with a too-short password, or the taken email with a weird password.
    fc.tuple(weirdString, fc.string({ maxLength: 7 })).map(([email, password]) => ({ url: '/auth/register', body: { email, password } as object, auth: false })),
    fc.tuple(fc.constantFrom(user.email, user.email.toUpperCase(), ` ${user.email}\t`), weirdString).map(([email, password]) => ({ url: '/auth/register', body: { email, password }, auth: false })),
    fc.tuple(fc.oneof(weirdString, fc.constant(user.email)), weirdString).map(([email, password]) => ({ url: '/auth/login', body: { email, password }, auth: false })),
    fc.tuple(weirdString, weirdString).map(([current_password, new_password]) => ({ url: '/auth/password', body: { current_password, new_password }, auth: true })),
    fc.tuple(fc.oneof(weirdString, fc.constantFrom('password', 'refresh_token', 'client_credentials', 'authorization_code')), weirdString, weirdString, weirdString)
      .map(([grant_type, username, password, refresh_token]) => ({ url: '/oauth/token', body: { grant_type, username, password, refresh_token }, auth: false })),
    fc.tuple(fc.oneof(weirdString, forgedJwt), fc.option(weirdString, { nil: undefined })).map(([token, token_type_hint]) => ({ url: '/oauth/revoke', body: { token, token_type_hint }, auth: false }))
  )
  await fc.assert(fc.asyncProperty(cases, fc.boolean(), async (c, form) => {
    const headers: Record<string, string> = c.auth ? bearer(userSession.access) : {}
    // The OAuth endpoints take forms too.
    const asForm = form && c.url.startsWith('/oauth/')
    const payload = asForm
      ? new URLSearchParams(Object.entries(c.body).filter(([, v]) => v !== undefined) as [string, string][]).toString()
      : JSON.stringify(c.body)
    headers['content-type'] = asForm ? 'application/x-www-form-urlencoded' : 'application/json'
    await send({ method: 'POST', url: c.url, headers, payload })
  }), fcParams())
  t.pass()
})

t.test('malformed, deeply nested, huge and oversized bodies, and wrong content types, at every body route', async (t) => {
  await fc.assert(fc.asyncProperty(bodyRoute, fc.oneof(rawJson, fc.string({ unit: 'binary', maxLength: 500 })),
    fc.oneof(fc.constant('application/json'), fc.constant('application/x-www-form-urlencoded'), wrongContentType, fc.constant(undefined)),
    fc.constantFrom('none', 'admin'),
    async (r, payload, contentType, who) => {
      const headers: Record<string, string> = contentType === undefined ? {} : { 'content-type': contentType }
      // The admin token only at admin routes: at logout a parsable body would end it.
      if (who === 'admin' && r.admin) Object.assign(headers, bearer(adminSession.access))
      // rotate parses a JSON body and then rotates: give the admin only bodies it must refuse.
      if (who === 'admin' && r.path('x') === '/admin/keys/rotate') {
        if (contentType === 'application/json' || contentType === undefined) payload = payload.length > 64 * 1024 ? payload : `{${payload}`
        if (!contentType?.trim()) headers['content-type'] = 'application/json'
        if (/^application\/json(\s*;.*)?$/i.test(headers['content-type']!) && isJson(payload)) payload = `{${payload}`
        if (headers['content-type']!.startsWith('application/x-www-form-urlencoded')) headers['content-type'] = 'text/plain'
      }
      await send({ method: r.method, url: r.path(randomUUID()), headers, payload })
    }), fcParams())
  t.pass()
})
function isJson(s: string): boolean {
  try {
    JSON.parse(s)
    return true
  } catch {
    return false
  }
}

t.test('garbage, forged and mangled access tokens at every route, with random cookies and origins', async (t) => {
  await fc.assert(fc.asyncProperty(route, authorization, fc.option(cookieHeader, { nil: undefined }), fc.option(origin, { nil: undefined }), pathSegment,
    async (r, auth, cookie, org, id) => {
      const headers: Record<string, string> = { authorization: auth }
      if (cookie !== undefined) headers.cookie = cookie
      if (org !== undefined) headers.origin = org
      const o: InjectOptions = { method: r.method, url: r.path(id), headers }
      if (r.body) {
        headers['content-type'] = 'application/json'
        o.payload = JSON.stringify(r.path('x') === '/oauth/revoke' ? { token: auth.replace(/^\S*\s*/, '') } : {})
      }
      const res = await send(o)
      if ((r.admin || ['/auth/me', '/auth/sessions', '/auth/password'].includes(r.path('x'))) && res.statusCode < 400) {
        throw new Error(`${label(r)} with ${auth.slice(0, 200)}: ${res.statusCode}, want it refused`)
      }
    }), fcParams(Math.max(RUNS, 150)))
  t.pass()
})

t.test('random refresh cookies and origins at the cookie endpoints, random refresh tokens at the OAuth ones', async (t) => {
  const cases = fc.oneof(
    fc.tuple(fc.constantFrom('/auth/refresh', '/auth/logout', '/auth/sessions', '/auth/login'), cookieHeader, fc.option(origin, { nil: undefined }))
      .map(([url, cookie, org]) => ({ url, cookie, org, body: undefined as object | undefined })),
    refreshCookieValue.map((token) => ({ url: '/oauth/token', cookie: undefined, org: undefined, body: { grant_type: 'refresh_token', refresh_token: token } as object | undefined })),
    refreshCookieValue.map((token) => ({ url: '/oauth/revoke', cookie: undefined, org: undefined, body: { token } as object | undefined }))
  )
  await fc.assert(fc.asyncProperty(cases, async (c) => {
    const headers: Record<string, string> = {}
    if (c.cookie !== undefined) headers.cookie = c.cookie
    if (c.org !== undefined) headers.origin = c.org
    // /auth/sessions needs a Bearer; the real one (a GET changes nothing).
    if (c.url === '/auth/sessions') Object.assign(headers, bearer(userSession.access))
    const method = c.url === '/auth/sessions' ? 'GET' : 'POST'
    const body = c.body ?? (c.url === '/auth/login' ? { email: user.email, password: 'wrong password!' } : undefined)
    if (body) headers['content-type'] = 'application/json'
    await send({ method, url: c.url, headers, payload: body ? JSON.stringify(body) : undefined })
  }), fcParams())
  t.pass()
})

t.test('random path parameters, query strings and headers at every route, as admin and as a user', async (t) => {
  await fc.assert(fc.asyncProperty(route, pathSegment, queryString, randomHeaders, fc.constantFrom('admin', 'user', 'headers'),
    async (r, id, query, headers, who) => {
      let h: Record<string, string> = headers
      if (who !== 'headers') {
        // Only the bearer of a real session; no cookie (logout would end it), no body.
        h = { ...bearer(who === 'admin' ? adminSession.access : userSession.access) }
        if (headers['if-none-match']) h['if-none-match'] = headers['if-none-match']
      }
      // A real token at logout or rotate would (rightly) change state: those get garbage.
      if (who !== 'headers' && ['/auth/logout', '/admin/keys/rotate', '/auth/refresh'].includes(r.path('x'))) h = headers
      const url = `${r.path(id)}${query ? `?${query}` : ''}`
      await send({ method: r.method, url, headers: h })
    }), fcParams(Math.max(RUNS, 150)))
  t.pass()
})

t.test('unknown routes and methods, and hostile URLs', async (t) => {
  const url = fc.oneof(
    fc.tuple(fc.constantFrom('/auth', '/admin', '/oauth', '/.well-known', '', '/admin/users'), pathSegment, queryString).map(([p, s, q]) => `${p}/${s}${q ? `?${q}` : ''}`),
    fc.constantFrom('//', '/%', '/auth/%E0%A4%A', '/admin/users/%00', '/./health', '/health/', '/HEALTH', '/health?%', '/.well-known/jwks.json/..', '/' + 'a/'.repeat(2000))
  )
  await fc.assert(fc.asyncProperty(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), url, randomHeaders, async (method, u, headers) => {
    if (method === 'OPTIONS') headers['access-control-request-method'] = 'POST'
    await send({ method: method as InjectOptions['method'], url: u, headers })
  }), fcParams())
  t.pass()
})

// Tokens with our real signature but claims we never mint: defence in depth, since only a
// leaked key could make one, but they must still be refused, not crash a query.
function signReal(claims: object): string {
  const key = app.keyring.active!
  const input = `${key.headerB64}.${enc(claims)}`
  return `${input}.${rsaSign('sha256', Buffer.from(input), key.privateKey).toString('base64url')}`
}
t.test('tokens signed with the real key whose claims are hostile', async (t) => {
  const claims = fc.record({
    sub: fc.oneof(weirdString, fc.jsonValue({ maxDepth: 2 }), fc.uuid()),
    roles: fc.oneof(fc.constant(['user', 'admin']), fc.jsonValue({ maxDepth: 2 }), fc.array(weirdString, { maxLength: 3 })),
    jti: fc.oneof(weirdString, fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined)),
    scope: fc.oneof(weirdString, fc.jsonValue({ maxDepth: 1 }), fc.constant(undefined)),
    exp: fc.oneof(fc.constant(nowS() + 600), fc.constant(1e300), fc.constant(-1), fc.double(), fc.constant('9999999999'))
  })
  // Only refusing routes: admin ones on unknown ids, and the user's reads; not logout or revoke.
  const routes = ROUTES.filter((r) => r.admin ? r.path('x') !== '/admin/keys/rotate' : ['/auth/me', '/auth/sessions', '/auth/password'].includes(r.path('x')) || r.method === 'DELETE')
  await fc.assert(fc.asyncProperty(fc.constantFrom(...routes), claims, async (r, c) => {
    const token = signReal({ ...realClaims, iat: nowS(), ...c })
    const o: InjectOptions = { method: r.method, url: r.path(randomUUID()), headers: bearer(token) }
    if (r.body) o.payload = {}
    await send(o)
  }), fcParams())
  t.pass()
})

t.test('known hostile requests (regressions)', async (t) => {
  const admin = bearer(adminSession.access)
  const json = { 'content-type': 'application/json' }
  const cases: InjectOptions[] = [
    { method: 'GET', url: '/admin/users?email=%00', headers: admin },
    { method: 'GET', url: '/admin/users?email=a%00b&limit=1', headers: admin },
    { method: 'GET', url: '/admin/users?email=%ED%A0%80', headers: admin },
    { method: 'GET', url: '/admin/users?cursor=%00', headers: admin },
    { method: 'GET', url: '/admin/audit?before=999999999999999999', headers: admin },
    { method: 'GET', url: '/admin/audit?type=constructor&user_id=__proto__', headers: admin },
    { method: 'GET', url: '/admin/users/%00', headers: admin },
    { method: 'DELETE', url: '/auth/sessions/%00', headers: bearer(userSession.access) },
    { method: 'POST', url: '/auth/login', headers: json, payload: JSON.stringify({ email: 'a\u0000@b.co', password: 'x\u0000' }) },
    { method: 'POST', url: '/auth/login', headers: json, payload: JSON.stringify({ email: user.email + '\u0000', password: PASSWORD }) },
    { method: 'POST', url: '/auth/login', headers: json, payload: JSON.stringify({ email: '\uD800@example.com', password: '\uDFFF' }) },
    { method: 'POST', url: '/auth/register', headers: json, payload: JSON.stringify({ email: user.email, password: 'p\u0000ssword-that-is-long' }) },
    { method: 'POST', url: '/oauth/token', headers: json, payload: JSON.stringify({ grant_type: 'password', username: '\u0000', password: '\u0000' }) },
    { method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=password&username=%00&password=%00' },
    { method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=refresh_token&refresh_token=%ED%A0%80' },
    { method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: '%' },
    { method: 'POST', url: '/oauth/revoke', headers: json, payload: JSON.stringify({ token: '\u0000' }) },
    { method: 'POST', url: '/auth/refresh', headers: { cookie: 'keysmith_refresh=%00' } },
    { method: 'POST', url: '/auth/refresh', headers: { cookie: 'keysmith_refresh=%E0%A4%A' } },
    { method: 'POST', url: '/auth/logout', headers: { cookie: 'keysmith_refresh=%00', authorization: 'Bearer a.b.c' } },
    { method: 'POST', url: '/auth/password', headers: { ...bearer(userSession.access), ...json }, payload: JSON.stringify({ current_password: '\u0000', new_password: '\u0000' }) }
  ]
  for (const c of cases) {
    try {
      const res = await send(c)
      t.ok(res.statusCode < 500, `${c.method} ${c.url}: ${res.statusCode}`)
    } catch (err) {
      t.fail((err as Error).message.slice(0, 600))
    }
  }
})

t.test('the fixtures still work: fuzzing broke nothing', async (t) => {
  t.equal((await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(userSession.access) })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/admin/keys', headers: bearer(adminSession.access) })).statusCode, 200)
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { keysmith_refresh: userSession.cookie } })
  t.equal(res.statusCode, 200)
})
