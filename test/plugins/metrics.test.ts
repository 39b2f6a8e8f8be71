import t from 'tap'
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:net'
import { freshDatabase, type TestApp } from '../helper.js'
import { buildApp, login, refresh, register } from '../sessions-helper.js'
import { loginRes, uniqueIp } from '../accounts-helper.js'
import { childEnv, connectOutcome, freePort, lines, run, startServer } from '../support.js'

// Prometheus metrics: what the services count, the request histogram's labels, the key
// gauges, and the separate listener src/server.ts opens on METRICS_PORT.

type Labels = Record<string, string>

// The value of one series in the text exposition, or undefined when it is absent.
function sample(text: string, name: string, labels: Labels = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const found = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]))
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(m[3])
  }
  return undefined
}

const scrape = (app: TestApp) => app.metrics.registry.metrics()

function oauthToken(app: TestApp, body: Record<string, string>) {
  return app.inject({ method: 'POST', url: '/oauth/token', payload: body })
}

t.test('logins and refreshes are counted by surface and result', async (t) => {
  const app = await buildApp(t, { env: { REFRESH_REUSE_GRACE: '0' } })
  const before = await scrape(app)
  t.equal(sample(before, 'keysmith_logins_total', { surface: 'browser', result: 'success' }), 0, 'series exist from the start')
  t.equal(sample(before, 'keysmith_refreshes_total', { surface: 'oauth', result: 'reuse_detected' }), 0)

  const user = await register(app)
  const first = await login(app, user)
  const second = await refresh(app, first.cookie)
  t.equal(second.res.statusCode, 200)
  t.equal((await refresh(app, first.cookie)).res.statusCode, 401, 'the spent cookie is reuse')
  t.equal((await refresh(app, second.cookie)).res.statusCode, 401, 'its family is revoked: invalid')

  const ip = uniqueIp()
  for (let i = 0; i < 5; i++) t.equal((await loginRes(app, user.email, 'wrong password', { ip })).statusCode, 401)
  t.equal((await loginRes(app, user.email, user.password, { ip })).statusCode, 429)

  const granted = await oauthToken(app, { grant_type: 'password', username: user.email, password: user.password })
  const token = granted.json<{ refresh_token: string }>().refresh_token
  t.equal((await oauthToken(app, { grant_type: 'refresh_token', refresh_token: token })).statusCode, 200)
  t.equal((await oauthToken(app, { grant_type: 'refresh_token', refresh_token: token })).statusCode, 400)

  await app.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  t.equal((await loginRes(app, user.email, user.password, { ip: uniqueIp() })).statusCode, 403)

  const text = await scrape(app)
  const logins = (surface: string, result: string) => sample(text, 'keysmith_logins_total', { surface, result })
  const refreshes = (surface: string, result: string) => sample(text, 'keysmith_refreshes_total', { surface, result })
  t.equal(logins('browser', 'success'), 1)
  t.equal(logins('browser', 'failure'), 5)
  t.equal(logins('browser', 'throttled'), 1)
  t.equal(logins('browser', 'disabled'), 1)
  t.equal(logins('browser', 'error'), 0)
  t.equal(logins('oauth', 'success'), 1)
  t.equal(refreshes('browser', 'rotated'), 1)
  t.equal(refreshes('browser', 'reuse_detected'), 1)
  t.equal(refreshes('browser', 'invalid'), 1)
  t.equal(refreshes('oauth', 'rotated'), 1)
  t.equal(refreshes('oauth', 'reuse_detected'), 1)
  t.equal(refreshes('browser', 'error'), 0)
})

t.test('two tabs within the grace: the loser counts as a race, nothing as reuse', async (t) => {
  const app = await buildApp(t, { env: { REFRESH_REUSE_GRACE: '2' } })
  const user = await register(app)
  const first = await login(app, user)
  t.equal((await refresh(app, first.cookie)).res.statusCode, 200)
  t.equal((await refresh(app, first.cookie)).res.statusCode, 409)
  const text = await scrape(app)
  t.equal(sample(text, 'keysmith_refreshes_total', { surface: 'browser', result: 'rotated' }), 1)
  t.equal(sample(text, 'keysmith_refreshes_total', { surface: 'browser', result: 'race' }), 1)
  t.equal(sample(text, 'keysmith_refreshes_total', { surface: 'browser', result: 'reuse_detected' }), 0)
})

t.test('request durations are labelled by route pattern; /metrics is not on the public port', async (t) => {
  const app = await buildApp(t)
  const id = randomUUID()
  t.equal((await app.inject({ method: 'GET', url: `/admin/users/${id}` })).statusCode, 401)
  t.equal((await app.inject({ method: 'GET', url: `/no/such/${id}` })).statusCode, 404)
  const publicMetrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(publicMetrics.statusCode, 404)
  t.notMatch(publicMetrics.body, /keysmith_/)

  const text = await scrape(app)
  const count = (labels: Labels) => sample(text, 'keysmith_http_request_duration_seconds_count', labels)
  t.equal(count({ method: 'GET', route: '/admin/users/:id', status_code: '401' }), 1)
  t.equal(count({ method: 'GET', route: 'unmatched', status_code: '404' }), 2, 'unknown paths share one series')
  t.notMatch(text, id, 'no raw URL in any label')
  const sum = sample(text, 'keysmith_http_request_duration_seconds_sum', { route: '/admin/users/:id' })
  t.ok(sum !== undefined && sum > 0 && sum < 10, `a duration in seconds (${sum})`)
  t.equal(sample(text, 'keysmith_http_request_duration_seconds_bucket', { route: '/admin/users/:id', le: '+Inf' }), 1)
  t.equal(sample(text, 'process_cpu_user_seconds_total'), undefined, 'no process metrics without a metrics listener')
})

t.test('the key gauges read the keyring at scrape time', async (t) => {
  const app = await buildApp(t)
  const text = await scrape(app)
  const age = sample(text, 'keysmith_signing_key_age_seconds')
  t.ok(age !== undefined && age >= 0 && age < 3600, `the active key's age is sane (${age})`)
  t.equal(sample(text, 'keysmith_signing_keys', { state: 'active' }), 1)
  t.equal(sample(text, 'keysmith_signing_keys', { state: 'next' }), 1)

  // The age comes from the key's activation as stored, not from when this instance started.
  const active = app.db.updateTable('signing_keys').where('state', '=', 'active')
  const { activated_at: activatedAt } = await app.db.selectFrom('signing_keys').select('activated_at').where('state', '=', 'active').executeTakeFirstOrThrow()
  await active.set({ activated_at: new Date(Date.now() - 86_400_000) }).execute()
  t.teardown(() => active.set({ activated_at: activatedAt }).execute())
  const other = await buildApp(t)
  const later = sample(await scrape(other), 'keysmith_signing_key_age_seconds')
  t.ok(later !== undefined && Math.abs(later - 86_400) < 60, `a day-old key is a day old (${later})`)
})



t.test('the server serves /metrics on METRICS_PORT only, and closes it on SIGTERM', async (t) => {
  const db = await freshDatabase(t)
  const port = await freePort()
  const metricsPort = await freePort()
  const server = await startServer(t, childEnv({ ...db, PORT: String(port), METRICS_PORT: String(metricsPort), LOG_LEVEL: 'info' }), port)

  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 404, 'not on the public port')
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const text = await res.text()
  t.ok(sample(text, 'keysmith_http_request_duration_seconds_count', { method: 'GET', route: '/health', status_code: '200' })! >= 1,
    'the health probe was timed')
  t.ok(sample(text, 'process_cpu_user_seconds_total')! > 0, 'process metrics on a served registry')
  t.ok(sample(text, 'keysmith_signing_key_age_seconds')! >= 0)
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/health`)).status, 404, 'the metrics port serves nothing else')
  t.match(server.output().stdout, /"metrics":"127\.0\.0\.1:\d+"/, 'the ready line says where')
  t.notMatch(server.output().stdout, /"listener":"metrics"[^\n]*"req(Id)?"/, 'scrapes are not logged')

  server.child.kill('SIGTERM')
  const result = await server.exited
  t.equal(result.code, 0)
  t.equal(await connectOutcome(metricsPort), 'ECONNREFUSED', 'the metrics port is closed too')
})

t.test('a METRICS_PORT in use stops the server with one line naming it', async (t) => {
  const db = await freshDatabase(t)
  const blocker = createServer()
  const taken = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)))
  t.teardown(() => new Promise((resolve) => blocker.close(resolve)))
  const port = await freePort()
  const result = await run('src/server.ts', [], childEnv({ ...db, PORT: String(port), METRICS_PORT: String(taken), LOG_LEVEL: 'silent' }), { timeoutMs: 90_000 })
  t.equal(result.code, 78)
  const stderr = lines(result.stderr)
  t.equal(stderr.length, 1, 'one line on stderr')
  t.match(stderr[0], /^keysmith: configuration error: METRICS_PORT: .*EADDRINUSE/)
  t.equal(await connectOutcome(port), 'ECONNREFUSED', 'the public port never opened')
})
