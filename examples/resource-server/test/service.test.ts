import { randomUUID } from 'node:crypto'
import t from 'tap'
import { buildService } from '../src/app.js'
// Keysmith itself, from this repository: a real server on loopback with a test database.
import { buildListening } from '../../../test/helper.js'
import { grantRole } from '../../../src/accounts.js'

// Everything over real sockets: the browser-ish client talks to Keysmith and to the
// service, and the service fetches Keysmith's JWKS, exactly as in production.
const keysmith = await buildListening(t, { env: { RATE_LIMIT_MAX: '100000' } })
const service = await buildService({ issuer: keysmith.issuer, audience: keysmith.issuer })
await service.listen({ port: 0, host: '127.0.0.1' })
t.teardown(() => service.close())
const address = service.server.address()
const serviceUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`

const PASSWORD = 'correct horse battery staple'

async function keysmithPost(path: string, body: object) {
  const res = await fetch(`${keysmith.issuer}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

async function login(email: string): Promise<string> {
  const res = await keysmithPost('/auth/login', { email, password: PASSWORD })
  if (res.status !== 200) throw new Error(`login: ${res.status}`)
  return res.body.access_token as string
}

async function call(path: string, token?: string) {
  const res = await fetch(`${serviceUrl}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body: await res.json() as Record<string, unknown> }
}

t.test('public, user and admin routes against a real Keysmith', async (t) => {
  const email = `${randomUUID()}@example.com`
  const registered = await keysmithPost('/auth/register', { email, password: PASSWORD })
  t.equal(registered.status, 201)
  const id = registered.body.id as string

  const pub = await call('/public')
  t.equal(pub.status, 200)
  t.same(pub.body, { message: 'anyone may read this' })

  const anonymous = await call('/me')
  t.equal(anonymous.status, 401)
  t.match(anonymous.challenge, /^Bearer .*error="invalid_token"/)
  t.equal((await call('/me', 'not.a.token')).status, 401)

  const userToken = await login(email)
  const me = await call('/me', userToken)
  t.equal(me.status, 200)
  t.same(me.body, { id, roles: ['user'] })

  t.equal((await call('/admin')).status, 401, 'admin route without a token')
  const forbidden = await call('/admin', userToken)
  t.equal(forbidden.status, 403, 'a plain user')
  t.match(forbidden.challenge, /^Bearer .*error="insufficient_scope"/)

  // Roles travel in the token: after the grant, the next login carries admin.
  await grantRole(keysmith.db, id, 'admin')
  t.equal((await call('/admin', userToken)).status, 403, 'the old token still has the old roles')
  const adminToken = await login(email)
  const admin = await call('/admin', adminToken)
  t.equal(admin.status, 200)
  t.same(admin.body, { message: 'admins only', admin: id })
  t.same((await call('/me', adminToken)).body, { id, roles: ['admin', 'user'] })
})
