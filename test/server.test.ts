import t from 'tap'
import { connect as tcpConnect, createServer, type Socket } from 'node:net'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { freshDatabase, REAL_POSTGRES, type TestEnv } from './helper.js'
import { childEnv, connectOutcome, eventually, freePort, lines, run, startServer } from './support.js'

// src/server.ts as an operator runs it: its own process, its own port, its own database.

const LOCK = 'embedded.lock'
const SOCKET = '.s.PGSQL.5432'

function serverEnv(db: TestEnv, port: number) {
  return childEnv({ ...db, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' })
}


t.test('SIGTERM finishes the request in flight, exits 0 and releases port and database', async (t) => {
  const db = await freshDatabase(t)
  const port = await freePort()
  const server = await startServer(t, serverEnv(db, port), port)
  const ready = await fetch(`http://127.0.0.1:${port}/ready`)
  t.equal(ready.status, 200)
  if (!REAL_POSTGRES) {
    t.ok(existsSync(join(db.DATA_DIR, LOCK)), 'the running server holds the embedded lock')
    t.ok(existsSync(join(db.DATA_DIR, SOCKET)), 'and serves the embedded socket')
  }

  // A request whose body is still arriving when the signal comes.
  const client: Socket = tcpConnect(port, '127.0.0.1')
  let response = ''
  client.setEncoding('utf8').on('data', (d: string) => { response += d })
  const clientClosed = new Promise<void>((resolve) => client.on('close', () => resolve()))
  await new Promise<void>((resolve) => client.on('connect', () => resolve()))
  client.write('POST /in-flight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"slow"')
  t.ok(await eventually(() => /"incoming request".*\/in-flight|\/in-flight.*"incoming request"/.test(server.output().stdout), 10_000),
    'the server has the request')

  server.child.kill('SIGTERM')
  t.ok(await eventually(() => server.output().stdout.includes('shutting down'), 10_000), 'the server logged the shutdown')
  client.write(':true}')
  // The connection stays open on the client side: the server must answer and hang up itself.
  await clientClosed

  t.match(response, /^HTTP\/1\.1 404 /, 'the in-flight request got its complete answer')
  t.match(response, /"statusCode":404/)
  const result = await server.exited
  t.equal(result.code, 0, 'exit code 0')
  t.equal(result.signal, null)
  t.equal(await connectOutcome(port), 'ECONNREFUSED', 'the port no longer accepts connections')
  t.notOk(existsSync(join(db.DATA_DIR, LOCK)), 'the embedded lock is removed')
  t.notOk(existsSync(join(db.DATA_DIR, SOCKET)), 'the embedded socket is removed')
})

t.test('a port already in use stops the server with one line naming PORT', async (t) => {
  const db = await freshDatabase(t)
  const blocker = createServer()
  const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)))
  t.teardown(() => new Promise((resolve) => blocker.close(resolve)))
  const result = await run('src/server.ts', [], serverEnv(db, port), { timeoutMs: 90_000 })
  t.not(result.code, 0)
  const stderr = lines(result.stderr)
  t.equal(stderr.length, 1, 'one line on stderr')
  t.match(stderr[0], /PORT/)
  t.match(stderr[0], /EADDRINUSE/)
  t.notOk(existsSync(join(db.DATA_DIR, LOCK)), 'the embedded lock is removed')
  t.notOk(existsSync(join(db.DATA_DIR, SOCKET)), 'the embedded socket is removed')
})

t.test('a database that does not answer stops the server with one line', async (t) => {
  const db = await freshDatabase(t)
  const dead = await freePort()
  const result = await run('src/server.ts', [], childEnv({
    ...db, DATABASE_URL: `postgres://postgres@127.0.0.1:${dead}/keysmith`, PORT: String(await freePort()), LOG_LEVEL: 'silent'
  }))
  t.not(result.code, 0)
  const stderr = lines(result.stderr)
  t.equal(stderr.length, 1, 'one line on stderr')
  t.match(stderr[0], /ECONNREFUSED/)
})

t.test('at LOG_LEVEL=trace every request is logged, and no password, token or cookie is', async (t) => {
  const db = await freshDatabase(t)
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const server = await startServer(t, childEnv({ ...db, PORT: String(port), HOST: '127.0.0.1', ISSUER: base, LOG_LEVEL: 'trace' }), port)
  const secrets: string[] = []
  const call = async (method: string, path: string, init: { json?: unknown; form?: Record<string, string>; headers?: Record<string, string> } = {}) => {
    const headers: Record<string, string> = { ...init.headers }
    let body: string | undefined
    if (init.json !== undefined) [headers['content-type'], body] = ['application/json', JSON.stringify(init.json)]
    if (init.form) [headers['content-type'], body] = ['application/x-www-form-urlencoded', new URLSearchParams(init.form).toString()]
    const res = await fetch(base + path, { method, headers, body })
    const text = await res.text()
    const json = text.startsWith('{') ? JSON.parse(text) as Record<string, string> : {}
    for (const key of ['access_token', 'refresh_token']) if (json[key]) secrets.push(json[key])
    const cookie = /keysmith_refresh=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')?.[1]
    if (cookie) secrets.push(cookie)
    return { status: res.status, json, cookie }
  }
  const email = `logs-${Date.now()}@example.com`
  const [password, newPassword, wrongPassword] = ['first secret passphrase', 'second secret passphrase', 'wrong secret passphrase']
  secrets.push(password, newPassword, wrongPassword)
  const origin = { origin: base }

  t.equal((await call('POST', '/auth/register', { json: { email, password } })).status, 201)
  const login = await call('POST', '/auth/login', { json: { email, password }, headers: origin })
  t.equal(login.status, 200)
  const refreshed = await call('POST', '/auth/refresh', { headers: { ...origin, cookie: `keysmith_refresh=${login.cookie}` } })
  t.equal(refreshed.status, 200)
  t.equal((await call('GET', '/auth/me', { headers: { authorization: `Bearer ${refreshed.json.access_token}` } })).status, 200)
  t.equal((await call('POST', '/auth/password', {
    json: { current_password: password, new_password: newPassword },
    headers: { ...origin, authorization: `Bearer ${refreshed.json.access_token}`, cookie: `keysmith_refresh=${refreshed.cookie}` }
  })).status, 204)
  t.equal((await call('POST', '/auth/login', { json: { email, password: wrongPassword } })).status, 401)
  const granted = await call('POST', '/oauth/token', { form: { grant_type: 'password', username: email, password: newPassword } })
  t.equal(granted.status, 200)
  const rotated = await call('POST', '/oauth/token', { form: { grant_type: 'refresh_token', refresh_token: granted.json.refresh_token! } })
  t.equal(rotated.status, 200)
  t.equal((await call('POST', '/oauth/token', { form: { grant_type: 'refresh_token', refresh_token: granted.json.refresh_token! } })).status, 400, 'a replay')
  t.equal((await call('POST', '/oauth/revoke', { form: { token: rotated.json.access_token! } })).status, 200)

  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0)
  const { stdout, stderr } = server.output()
  const requests = lines(stdout).filter((l) => l.includes('"incoming request"'))
  t.ok(requests.length >= 11, `every request was logged (${requests.length} lines for 11 requests and the health probes)`)
  t.ok(lines(stdout).some((l) => l.includes('"request completed"') && l.includes('"reqId"')), 'with its request id')
  t.equal(secrets.length, 11, 'three passwords, four access tokens, two refresh tokens, two cookies')
  for (const secret of secrets) {
    t.notOk(stdout.includes(secret) || stderr.includes(secret), `never logged: ${secret.slice(0, 12)}…`)
  }
})
