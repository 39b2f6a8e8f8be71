import { randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { chromium, type Page, type Response } from 'playwright-core'
import type { FastifyRequest } from 'fastify'
import { createPageServer } from '../src/page-server.js'
import { buildService } from '../../resource-server/src/app.js'
// Keysmith itself, from this repository, on the test database (embedded or
// TEST_DATABASE_URL), listening on loopback.
import { build } from '../../../test/helper.js'

// Held open together, so no two of them can be handed the same port.
async function freePorts(n: number): Promise<number[]> {
  const probes = Array.from({ length: n }, () => createServer())
  await Promise.all(probes.map((p) => new Promise<void>((resolve) => p.listen(0, '127.0.0.1', resolve))))
  const ports = probes.map((p) => (p.address() as AddressInfo).port)
  await Promise.all(probes.map((p) => new Promise((resolve) => p.close(resolve))))
  return ports
}

// Every host is `localhost`: the page and Keysmith are then the same site on different
// origins (ports), so the SameSite=Strict cookie rides on the page's fetches, and
// Chromium treats http://localhost as potentially trustworthy, so it keeps the Secure
// cookie over plain HTTP.
const [keysmithPort, apiPort, pagePort, strangerPort] = await freePorts(4)
const issuer = `http://localhost:${keysmithPort}`
const apiUrl = `http://localhost:${apiPort}`
const pageUrl = `http://localhost:${pagePort}`
// The same page from an origin Keysmith was not told about.
const strangerUrl = `http://localhost:${strangerPort}`

const keysmith = await build(t, {
  env: { PORT: String(keysmithPort), ISSUER: issuer, CORS_ORIGINS: pageUrl, RATE_LIMIT_MAX: '100000' }
})

// What Keysmith answered, as Keysmith saw it: a refused origin's answer is hidden from the
// page (and from the browser's network events) by CORS.
const answered: Array<{ method: string; url: string; origin?: string; status: number }> = []
keysmith.addHook('onResponse', async (request, reply) => {
  answered.push({ method: request.method, url: request.url, origin: request.headers.origin, status: reply.statusCode })
})

// Two tabs refreshing at once, made deterministic: while armed, the first POST
// /auth/refresh waits for a second one, which then waits until the first has been
// answered. The second presents the cookie the first just rotated away.
interface Race { first?: FastifyRequest; second: boolean; release(): void; released: Promise<void>; answered(): void; done: Promise<void> }
let race: Race | undefined
function armRace() {
  let release!: () => void
  let answered!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const done = new Promise<void>((resolve) => { answered = resolve })
  // Never hang the suite if the second tab's request does not come.
  setTimeout(release, 10_000).unref()
  race = { second: false, release, released, answered, done }
}
keysmith.addHook('preHandler', async (request) => {
  const r = race
  if (!r || r.second || request.method !== 'POST' || request.url !== '/auth/refresh') return
  if (!r.first) {
    r.first = request
    await r.released
  } else {
    r.second = true
    r.release()
    await r.done
  }
})
keysmith.addHook('onResponse', async (request) => {
  if (race?.first !== request) return
  race.answered()
  race = undefined
})
await keysmith.listen({ port: keysmithPort, host: '127.0.0.1' })

const api = await buildService({ issuer, audience: issuer, corsOrigins: [pageUrl] })
await api.listen({ port: apiPort, host: '127.0.0.1' })
t.teardown(() => api.close())

async function listen(server: Server, port: number) {
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
}
await listen(createPageServer({ keysmithUrl: issuer, apiUrl }), pagePort)
await listen(createPageServer({ keysmithUrl: issuer, apiUrl }), strangerPort)

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
})
t.teardown(() => browser.close())
const context = await browser.newContext()
// The page must live within its own strict CSP (Trusted Types included) and never throw.
const violations: string[] = []
context.on('weberror', (e) => violations.push(`uncaught: ${e.error().message}`))
context.on('console', (m) => {
  if (/Content Security Policy|Trusted ?(Type|HTML|Script)/i.test(m.text())) violations.push(m.text())
})
const page = await context.newPage()

const email = `${randomUUID()}@example.com`
const PASSWORD = 'correct horse battery staple'
let userId = ''

const isRefresh = (r: Response) => r.url() === `${issuer}/auth/refresh` && r.request().method() === 'POST'

// The cookie is scoped to Path=/auth, so it is listed only for URLs under it.
async function refreshCookie() {
  return (await context.cookies(`${issuer}/auth/refresh`)).find((c) => c.name === 'keysmith_refresh')
}

// Nothing the page's JavaScript can reach holds a token: the cookie is HttpOnly and the
// access token lives in a module variable.
async function scriptVisibleStorage(p: Page) {
  return p.evaluate(() => ({ cookie: document.cookie, local: localStorage.length, session: sessionStorage.length }))
}

t.test('page load without a session: a silent refresh, then signed out', async (t) => {
  const refreshed = page.waitForResponse(isRefresh)
  await page.goto(pageUrl)
  t.equal((await refreshed).status(), 401, 'no cookie yet')
  await page.locator('[data-testid="status"][data-state="signed-out"]').waitFor()
  t.equal(await page.getByTestId('call-api').isDisabled(), true)
})

t.test('the page is served with a strict CSP of its own', async (t) => {
  const res = await fetch(pageUrl)
  t.equal(res.headers.get('content-type'), 'text/html; charset=utf-8')
  const csp = res.headers.get('content-security-policy') ?? ''
  t.match(csp, /default-src 'none'/)
  t.match(csp, /script-src 'self'(;|$)/)
  t.match(csp, new RegExp(`connect-src ${issuer} ${apiUrl}(;|$)`))
  t.equal((await fetch(`${pageUrl}/app.js`)).headers.get('content-type'), 'text/javascript; charset=utf-8')
  t.equal((await fetch(`${pageUrl}/../package.json`)).status, 404)
  t.equal((await fetch(pageUrl, { method: 'POST' })).status, 405)
})

t.test('register, then log in: the page shows the user', async (t) => {
  await page.getByTestId('email').fill(email)
  await page.getByTestId('password').fill(PASSWORD)
  const registered = page.waitForResponse((r) => r.url() === `${issuer}/auth/register`)
  await page.getByTestId('register').click()
  t.equal((await registered).status(), 201)
  await page.getByTestId('message').getByText(`Registered ${email}`).waitFor()

  await page.getByTestId('password').fill(PASSWORD)
  const loggedIn = page.waitForResponse((r) => r.url() === `${issuer}/auth/login`)
  await page.getByTestId('login').click()
  t.equal((await loggedIn).status(), 200)
  await page.locator('[data-testid="status"][data-state="signed-in"]').waitFor()
  t.equal(await page.getByTestId('user').textContent(), email)
  userId = (await page.getByTestId('user').getAttribute('data-user-id')) ?? ''
  t.match(userId, /^[0-9a-f-]{36}$/)
})

t.test('the refresh token stays out of reach of the page\'s JavaScript', async (t) => {
  const cookie = await refreshCookie()
  t.ok(cookie, 'the browser holds the refresh cookie for Keysmith')
  t.match(cookie, { httpOnly: true, secure: true, sameSite: 'Strict', path: '/auth', domain: 'localhost' })
  const seen = await scriptVisibleStorage(page)
  t.same(seen, { cookie: '', local: 0, session: 0 }, 'no cookie, no storage visible to scripts')
  t.notOk(seen.cookie.includes(cookie!.value))
  t.notOk(await page.evaluate(() => 'accessToken' in window), 'the token is no global either')
})

t.test('a reload restores the session through POST /auth/refresh', async (t) => {
  const before = (await refreshCookie())!.value
  const logins: string[] = []
  const onRequest = (r: { url(): string }) => { if (r.url() === `${issuer}/auth/login`) logins.push(r.url()) }
  page.on('request', onRequest)
  const refreshed = page.waitForResponse(isRefresh)
  await page.reload()
  const res = await refreshed
  page.off('request', onRequest)
  t.equal(res.status(), 200)
  t.equal(await res.request().headerValue('origin'), pageUrl, 'a cross-origin fetch, with the cookie')
  t.equal(res.headers()['access-control-allow-origin'], pageUrl)
  t.equal(res.headers()['access-control-allow-credentials'], 'true')
  await page.locator('[data-testid="status"][data-state="signed-in"]').waitFor()
  t.equal(await page.getByTestId('user').textContent(), email)
  t.same(logins, [], 'no login on reload')
  t.not((await refreshCookie())!.value, before, 'the cookie was rotated')
  t.same(await scriptVisibleStorage(page), { cookie: '', local: 0, session: 0 })
})

t.test('the page calls the resource server with its Bearer token', async (t) => {
  const called = page.waitForResponse((r) => r.url() === `${apiUrl}/me` && r.request().method() === 'GET')
  await page.getByTestId('call-api').click()
  t.equal((await called).status(), 200)
  const result = page.getByTestId('api-result')
  await page.locator('[data-testid="api-result"][data-status="200"]').waitFor()
  const text = (await result.textContent()) ?? ''
  t.same(JSON.parse(text.slice(text.indexOf('\n') + 1)), { id: userId, roles: ['user'] })
})

t.test('two tabs restoring at once: one gets 409 and retries once with the new cookie', async (t) => {
  const tabs = [await context.newPage(), await context.newPage()]
  const statuses: number[] = []
  for (const tab of tabs) tab.on('response', (r) => { if (isRefresh(r)) statuses.push(r.status()) })
  armRace()
  await Promise.all(tabs.map((tab) => tab.goto(pageUrl)))
  for (const tab of tabs) {
    await tab.locator('[data-testid="status"][data-state="signed-in"]').waitFor()
    t.equal(await tab.getByTestId('user').textContent(), email)
  }
  t.same(statuses.sort(), [200, 200, 409], 'one winner, one 409, one successful retry')
  const race = answered.filter((a) => a.url === '/auth/refresh').slice(-3).map((a) => a.status)
  t.same(race, [200, 409, 200], 'as Keysmith answered them')
  await Promise.all(tabs.map((tab) => tab.close()))
})

t.test('the page refreshes its access token shortly before it expires', async (t) => {
  const tab = await context.newPage()
  await tab.clock.install()
  await tab.goto(pageUrl)
  const token = tab.getByTestId('token')
  await tab.locator('[data-testid="token"][data-refreshes="1"]').waitFor()
  const refreshed = tab.waitForResponse(isRefresh)
  // ACCESS_TOKEN_TTL is 900 s: the page refreshes 60 s before expiry, not earlier.
  await tab.clock.runFor(830_000)
  t.equal(await token.getAttribute('data-refreshes'), '1', 'not yet at 830 s')
  await tab.clock.runFor(15_000)
  t.equal((await refreshed).status(), 200)
  await tab.locator('[data-testid="token"][data-refreshes="2"]').waitFor()
  t.equal(await tab.getByTestId('status').getAttribute('data-state'), 'signed-in')
  await tab.close()
})

t.test('logout ends the session', async (t) => {
  const oldCookie = (await refreshCookie())!.value
  const loggedOut = page.waitForResponse((r) => r.url() === `${issuer}/auth/logout` && r.request().method() === 'POST')
  await page.getByTestId('logout').click()
  t.equal((await loggedOut).status(), 204)
  await page.locator('[data-testid="status"][data-state="signed-out"]').waitFor()
  t.equal(await refreshCookie(), undefined, 'the cookie is cleared')

  const refreshed = page.waitForResponse(isRefresh)
  await page.reload()
  t.equal((await refreshed).status(), 401)
  await page.locator('[data-testid="status"][data-state="signed-out"]').waitFor()
  t.equal(await page.getByTestId('user').textContent(), '')

  const replay = await fetch(`${issuer}/auth/refresh`, { method: 'POST', headers: { cookie: `keysmith_refresh=${oldCookie}` } })
  t.equal(replay.status, 401, 'the last refresh cookie no longer works')
})

t.test('a page on an origin not in CORS_ORIGINS gets nothing', async (t) => {
  // Log in again on the allowed page, so the jar holds a live cookie the stranger's
  // requests carry (same site: localhost).
  await page.getByTestId('email').fill(email)
  await page.getByTestId('password').fill(PASSWORD)
  await page.getByTestId('login').click()
  await page.locator('[data-testid="status"][data-state="signed-in"]').waitFor()
  const cookie = (await refreshCookie())!.value

  const stranger = await context.newPage()
  await stranger.goto(strangerUrl)
  await stranger.locator('[data-testid="status"][data-state="signed-out"]').waitFor()
  await stranger.locator('[data-testid="message"][data-kind="error"]').getByText('does not allow this page\'s origin').waitFor()
  t.same(answered.filter((a) => a.origin === strangerUrl).map((a) => `${a.method} ${a.url} ${a.status}`),
    ['POST /auth/refresh 403'], 'Keysmith refused the silent refresh for its Origin')
  t.equal((await refreshCookie())!.value, cookie, 'and did not rotate the cookie it carried')

  await stranger.getByTestId('email').fill(email)
  await stranger.getByTestId('password').fill(PASSWORD)
  await stranger.getByTestId('message').evaluate((el) => { el.textContent = '' })
  await stranger.getByTestId('login').click()
  await stranger.locator('[data-testid="message"][data-kind="error"]').getByText('does not allow this page\'s origin').waitFor()
  t.equal(await stranger.getByTestId('status').getAttribute('data-state'), 'signed-out', 'login failed')
  t.notOk(answered.some((a) => a.origin === strangerUrl && a.url === '/auth/login' && a.method === 'POST'),
    'the preflight failed, so the login itself was never sent')

  for (const path of ['/auth/refresh', '/auth/login']) {
    const res = await fetch(`${issuer}${path}`, {
      method: 'POST',
      headers: { origin: strangerUrl, cookie: `keysmith_refresh=${cookie}`, 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD })
    })
    t.equal(res.status, 403, `${path} with Origin ${strangerUrl}`)
    t.equal(res.headers.get('access-control-allow-origin'), null)
  }
  const preflight = await fetch(`${issuer}/auth/login`, {
    method: 'OPTIONS',
    headers: { origin: strangerUrl, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
  })
  t.equal(preflight.headers.get('access-control-allow-origin'), null, 'no CORS grant for the stranger')
  await stranger.close()
})

t.test('no page broke its CSP or threw', async (t) => {
  t.same(violations, [])
})
