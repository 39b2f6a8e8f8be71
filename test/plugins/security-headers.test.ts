import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { build } from '../helper.js'
import { PASSWORD, register, login, refreshCookieOf, COOKIE } from '../sessions-helper.js'

const APP_ORIGIN = 'https://app.example.test'
const app = await build(t, { env: { CORS_ORIGINS: APP_ORIGIN, RATE_LIMIT_MAX: '100000' } })

// A CSP header as a map of directive → sources, whatever the spacing.
const csp = (res: LightMyRequestResponse) => Object.fromEntries(String(res.headers['content-security-policy'] ?? '')
  .split(';').map((d) => d.trim()).filter(Boolean).map((d) => { const [name, ...sources] = d.split(/\s+/); return [name!, sources] }))

t.test('API responses forbid rendering, framing, sniffing and no-cors embedding', async (t) => {
  const responses = [
    await app.inject('/health'),
    await app.inject('/auth/me'), // 401
    await app.inject({ method: 'POST', url: '/auth/login', payload: { email: 'x@example.com', password: 'wrong password' } }),
    await app.inject('/nope') // 404
  ]
  for (const res of responses) {
    const where = `${res.statusCode} ${res.raw.req.url}`
    t.same(csp(res), { 'default-src': ["'none'"], 'frame-ancestors': ["'none'"] }, `${where}: CSP`)
    t.equal(res.headers['x-content-type-options'], 'nosniff', where)
    t.equal(res.headers['x-frame-options'], 'DENY', where)
    t.equal(res.headers['referrer-policy'], 'no-referrer', where)
    t.equal(res.headers['cross-origin-resource-policy'], 'same-origin', where)
    t.equal(res.headers['strict-transport-security'], undefined, `${where}: no HSTS for an http issuer`)
    t.equal(res.headers['x-powered-by'], undefined, where)
  }
})

t.test('an https issuer gets HSTS for its own host only', async (t) => {
  const secure = await build(t, { env: { ISSUER: 'https://id.example.test' } })
  const res = await secure.inject('/health')
  t.equal(res.headers['strict-transport-security'], 'max-age=31536000')
})

t.test('/docs gets a CSP that lets its own scripts and styles run, and nothing else', async (t) => {
  const page = await app.inject('/docs')
  t.equal(page.statusCode, 200)
  const policy = csp(page)
  t.same(policy['default-src'], ["'none'"])
  t.same(policy['script-src'], ["'self'"])
  t.same(policy['style-src']?.filter((s) => !s.startsWith("'sha256-")), ["'self'"], 'styles from files (and one hashed logo style)')
  t.same(policy['frame-ancestors'], ["'none'"])
  t.ok(policy['connect-src']?.includes("'self'"), 'the page may fetch the document')
  t.ok(policy['img-src']?.includes('data:'), 'the logo is a data: URI')
  // Without 'unsafe-inline' the page only works if it has no inline script or style.
  for (const [, attrs, body] of page.body.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)) {
    t.match(attrs, /\ssrc="/, 'scripts are files')
    t.equal(body!.trim(), '', 'no inline script')
  }
  t.notMatch(page.body, /<style|\sstyle="|\son\w+="/, 'no inline style or handler')
  const asset = await app.inject('/docs/static/swagger-ui-bundle.js')
  t.equal(asset.statusCode, 200)
  t.match(asset.headers['content-type'], /javascript/)
  t.same(csp(asset)['script-src'], ["'self'"], 'the assets carry the docs policy too')
})

t.test('a browser app on an allowed origin still gets CORS with credentials', async (t) => {
  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/auth/login',
    headers: { origin: APP_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
  })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], APP_ORIGIN)
  t.equal(preflight.headers['access-control-allow-credentials'], 'true')
  t.match(preflight.headers['access-control-allow-methods'], /POST/)
  t.match(preflight.headers['access-control-allow-headers'], /content-type/i)

  const user = await register(app)
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { origin: APP_ORIGIN }, payload: { email: user.email, password: PASSWORD } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['access-control-allow-origin'], APP_ORIGIN)
  t.equal(res.headers['access-control-allow-credentials'], 'true')
  // CORP governs no-cors loads only; a CORS fetch like this one is not subject to it. No
  // Cross-Origin-Embedder-Policy, which would constrain the pages that call us.
  t.equal(res.headers['cross-origin-embedder-policy'], undefined)

  const stranger = await app.inject({ method: 'POST', url: '/auth/login', headers: { origin: 'https://evil.example' }, payload: { email: user.email, password: PASSWORD } })
  t.equal(stranger.headers['access-control-allow-origin'], undefined, 'other origins get no CORS on the API')
})

t.test('the JWKS and discovery documents are readable and loadable from any origin', async (t) => {
  for (const url of ['/.well-known/jwks.json', '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    for (const origin of ['https://resource.example', APP_ORIGIN]) {
      const res = await app.inject({ url, headers: { origin } })
      t.equal(res.statusCode, 200, url)
      t.equal(res.headers['access-control-allow-origin'], '*', `${url} from ${origin}: readable with CORS`)
      t.notOk(res.headers['access-control-allow-credentials'], `${url}: never with credentials`)
      t.equal(res.headers['cross-origin-resource-policy'], 'cross-origin', `${url}: loadable without CORS too`)
      t.ok(res.json(), `${url}: a JSON body`)
    }
  }
})

t.test('responses that carry tokens are never cached (RFC 6749 5.1)', async (t) => {
  const noStore = (res: LightMyRequestResponse, what: string) => {
    t.equal(res.statusCode, 200, what)
    t.match(res.headers['cache-control'], /(^|,\s*)no-store(\s*,|$)/, `${what}: no-store`)
    t.equal(res.headers.pragma, 'no-cache', `${what}: pragma for HTTP/1.0 caches`)
  }
  const user = await register(app)
  const session = await login(app, user)
  noStore(session.res, 'POST /auth/login')
  t.ok(session.access && session.cookie, 'login carried an access token and the refresh cookie')

  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', cookies: { [COOKIE]: session.cookie } })
  noStore(refreshed, 'POST /auth/refresh')
  t.ok(refreshed.json<{ access_token: string }>().access_token && refreshCookieOf(refreshed)?.value)

  const password = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'password', username: user.email, password: PASSWORD } })
  noStore(password, 'POST /oauth/token (password)')
  const refreshToken = password.json<{ refresh_token: string }>().refresh_token
  t.ok(refreshToken)

  const rotated = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString()
  })
  noStore(rotated, 'POST /oauth/token (refresh_token)')
  t.ok(rotated.json<{ refresh_token: string }>().refresh_token)

  // Registration answers {id, email}: no token, so no claim on no-store to check there.
  const reg = await app.inject({ method: 'POST', url: '/auth/register', payload: { email: `x-${Date.now()}@example.com`, password: PASSWORD } })
  t.equal(reg.statusCode, 201)
  t.notMatch(reg.body, /token/)
})
