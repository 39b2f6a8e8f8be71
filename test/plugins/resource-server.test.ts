import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createPublicKey, randomUUID, type KeyObject } from 'node:crypto'
import t, { type Test } from 'tap'
import Fastify, { type LightMyRequestResponse } from 'fastify'
import { SignJWT, exportJWK, generateKeyPair, type JWK, type JWTPayload } from 'jose'
import { resourceServer, type ResourceServerOptions } from '../../plugins/resource-server.js'
import { rotateKeys } from '../../src/signing/key-store.js'
import { buildListening, testClock } from '../helper.js'

// One real Keysmith on loopback for the whole file; every test builds its own resource
// server, so each starts with an empty JWKS cache. Its clock only moves for minting
// tokens in the past; the resource servers check against real time.
const clock = testClock()
const keysmith = await buildListening(t, { now: clock.now })
const issuer = keysmith.issuer
const TTL = 900

// A small HTTP server of our own: serves `body` and counts who came to fetch it.
async function httpServer(t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>) {
  let hits = 0
  const server = createServer((req, res) => {
    hits++
    void handler(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits }
}

// Keysmith's JWKS through a counting proxy, so a test can see how often it is fetched.
const jwksProxy = (t: Test) => httpServer(t, async (_req, res) => {
  const upstream = await fetch(`${issuer}/.well-known/jwks.json`)
  res.writeHead(upstream.status, { 'content-type': 'application/json' }).end(await upstream.text())
})

// A service that trusts Keysmith: one route per decorator, each echoing request.user.
async function resourceApp(t: Test, opts: Partial<ResourceServerOptions> = {}) {
  const app = Fastify({ logger: false })
  await app.register(resourceServer, { issuer, audience: issuer, ...opts })
  const echo = async (request: { user: unknown }) => ({ user: request.user })
  app.get('/public', echo)
  app.get('/me', { onRequest: app.authenticate }, echo)
  app.get('/admin', { onRequest: app.requireRole('admin') }, echo)
  app.get('/ops', { onRequest: app.requireRole('admin', 'ops') }, echo)
  app.get('/read', { onRequest: app.requireScope('read') }, echo)
  t.teardown(() => app.close())
  const call = (url: string, authorization?: string) =>
    app.inject({ url, headers: authorization === undefined ? {} : { authorization } })
  return { app, call, bearer: (url: string, token: string) => call(url, `Bearer ${token}`) }
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const nowSeconds = () => Math.floor(Date.now() / 1000)

// Claims as Keysmith issues them, for tokens crafted here.
function claims(over: JWTPayload = {}): JWTPayload {
  const iat = nowSeconds()
  return { iss: issuer, aud: issuer, sub: randomUUID(), iat, exp: iat + 300, jti: randomUUID(), roles: ['user'], ...over }
}

// Signed with Keysmith's real active key: only the claims or header under test are off.
function signedByKeysmith(payload: JWTPayload, header: Record<string, unknown> = {}) {
  const active = keysmith.keyring.active!
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: active.kid, ...header }).sign(active.privateKey)
}

async function attackerKey() {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  return { publicKey, privateKey, jwk: { ...(await exportJWK(publicKey)), alg: 'RS256', use: 'sig' } as JWK }
}

async function keysmithPublicKey(): Promise<{ jwk: JWK; key: KeyObject }> {
  const { keys } = await (await fetch(`${issuer}/.well-known/jwks.json`)).json() as { keys: JWK[] }
  const jwk = keys.find((k) => k.kid === keysmith.keyring.active!.kid)!
  return { jwk, key: createPublicKey({ key: jwk as never, format: 'jwk' }) }
}

function refused(t: Test, res: LightMyRequestResponse, what: string) {
  t.equal(res.statusCode, 401, `${what}: 401`)
  t.match(res.headers['www-authenticate'], /^Bearer .*error="invalid_token"/, `${what}: RFC 6750 challenge`)
  t.match(res.json(), { statusCode: 401, message: 'Missing or invalid access token' }, `${what}: generic message`)
}

t.test('a token minted by Keysmith is accepted and becomes request.user', async (t) => {
  const rs = await resourceApp(t)
  const sub = randomUUID()
  const { token, jti } = await keysmith.signer.mint({ sub, roles: ['user', 'editor'], scope: 'read write' })
  const res = await rs.bearer('/me', token)
  t.equal(res.statusCode, 200)
  const { user } = res.json()
  t.same({ id: user.id, roles: user.roles, scope: user.scope }, { id: sub, roles: ['user', 'editor'], scope: ['read', 'write'] })
  t.match(user.claims, { iss: issuer, aud: issuer, sub, jti, exp: Number, iat: Number })

  // The scheme is case-insensitive (RFC 7235).
  t.equal((await rs.call('/me', `bearer ${token}`)).statusCode, 200)
  // Routes without a hook see no user.
  t.same((await rs.bearer('/public', token)).json(), { user: null })
})

t.test('an audience list may name Keysmith among others', async (t) => {
  const rs = await resourceApp(t, { audience: ['https://api.example', issuer] })
  const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  t.equal((await rs.bearer('/me', token)).statusCode, 200)
})

t.test('missing or malformed Authorization is a 401 with a Bearer challenge', async (t) => {
  const rs = await resourceApp(t)
  const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['admin'] })
  // Verified and cached first: a malformed header around a known-good token is still refused.
  t.equal((await rs.bearer('/me', token)).statusCode, 200, 'the token itself is good')
  for (const header of [`Bearer   ${token}  `, `BEARER ${token}`]) {
    t.equal((await rs.call('/me', header)).statusCode, 200, `${JSON.stringify(header.slice(0, 9))}…: spaces and case of the scheme`)
  }
  refused(t, await rs.call('/me'), 'no header')
  refused(t, await rs.call('/admin'), 'no header on a role route')
  refused(t, await rs.call('/read'), 'no header on a scope route')
  const malformed = [
    '', 'Bearer', 'Bearer ', token, `Basic ${token}`, `Token ${token}`, `Bearer ${token} extra`,
    `Bearer ${token}.more`, 'Bearer a.b', 'Bearer a.b.c', 'Bearer ..', `Bearer ${token.replace(/\./g, '')}`,
    `Bearer ${token.slice(0, -1)}!`, `Bearer ${'a'.repeat(5000)}.${'b'.repeat(5000)}.c`,
    `Bearer\t${token}`, `Bearer\u00a0${token}`, `Bearer ${token}\t`, `Bearer x${token}`, `Bearer ${token.slice(1)}`, `Bearer .${token}`
  ]
  for (const header of malformed) refused(t, await rs.call('/me', header), JSON.stringify(header.slice(0, 30)))
})

t.test('forged tokens are refused', async (t) => {
  const rs = await resourceApp(t)
  const realKid = keysmith.keyring.active!.kid
  const attacker = await attackerKey()

  t.test('alg none', async (t) => {
    const unsigned = `${b64({ alg: 'none', typ: 'at+jwt', kid: realKid })}.${b64(claims({ roles: ['admin'] }))}`
    refused(t, await rs.bearer('/me', `${unsigned}.`), 'empty signature')
    refused(t, await rs.bearer('/me', `${unsigned}.AAAA`), 'junk signature')
    refused(t, await rs.bearer('/admin', `${unsigned}.AAAA`), 'on a role route')
  })

  t.test('HS256 keyed with Keysmith\'s public key (key confusion)', async (t) => {
    const { jwk, key } = await keysmithPublicKey()
    const secrets = {
      'public key PEM': Buffer.from(key.export({ type: 'spki', format: 'pem' }) as string),
      'public key DER': key.export({ type: 'spki', format: 'der' }),
      'modulus bytes': Buffer.from(jwk.n!, 'base64url'),
      'JWKS entry': Buffer.from(JSON.stringify(jwk))
    }
    for (const [name, secret] of Object.entries(secrets)) {
      const forged = await new SignJWT(claims({ roles: ['admin'] }))
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: realKid }).sign(secret)
      refused(t, await rs.bearer('/admin', forged), name)
    }
  })

  t.test('an embedded jwk header carrying the attacker\'s key', async (t) => {
    const payload = claims({ roles: ['admin'] })
    for (const header of [{ jwk: attacker.jwk }, { jwk: attacker.jwk, kid: realKid }]) {
      const forged = await new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', ...header }).sign(attacker.privateKey)
      refused(t, await rs.bearer('/admin', forged), `jwk header${header.kid ? ' with the real kid' : ''}`)
    }
  })

  t.test('jku and x5u headers pointing at the attacker\'s server are never fetched', async (t) => {
    const evil = await httpServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...attacker.jwk, kid: 'evil' }] }))
    })
    for (const header of [{ jku: `${evil.url}/jwks.json`, kid: 'evil' }, { jku: `${evil.url}/jwks.json`, kid: realKid }, { x5u: `${evil.url}/cert.pem`, kid: 'evil' }]) {
      const forged = await new SignJWT(claims({ roles: ['admin'] })).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', ...header }).sign(attacker.privateKey)
      refused(t, await rs.bearer('/admin', forged), JSON.stringify(header))
    }
    t.equal(evil.hits(), 0, 'the attacker\'s server was never contacted')
  })

  t.test('an unknown kid, and the attacker\'s key under the real kid', async (t) => {
    const unknown = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'not-a-keysmith-kid' }).sign(attacker.privateKey)
    refused(t, await rs.bearer('/me', unknown), 'unknown kid')
    const noKid = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt' }).sign(attacker.privateKey)
    refused(t, await rs.bearer('/me', noKid), 'no kid')
    const impostor = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: realKid }).sign(attacker.privateKey)
    refused(t, await rs.bearer('/me', impostor), 'attacker key, real kid')
  })

  t.test('a tampered payload under a real signature', async (t) => {
    const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
    t.equal((await rs.bearer('/me', token)).statusCode, 200, 'the original is good')
    const [header, payload, signature] = token.split('.')
    const elevated = { ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), roles: ['admin'] }
    const tampered = `${header}.${b64(elevated)}.${signature}`
    refused(t, await rs.bearer('/admin', tampered), 'roles changed to admin')
    refused(t, await rs.bearer('/me', tampered), 'on the plain route too')
    // The header is signed as well: the same claims under another typ or kid fail.
    const otherHeader = `${b64({ alg: 'RS256', typ: 'at+jwt', kid: realKid, extra: 1 })}.${payload}.${signature}`
    refused(t, await rs.bearer('/me', otherHeader), 'header changed')
  })
})

t.test('claims are checked: exp and nbf with at most 60 s leeway, iss, aud, typ', async (t) => {
  const rs = await resourceApp(t)
  const now = nowSeconds()

  // Tokens Keysmith really minted, at a time in the past.
  const mintedAgo = async (seconds: number) => {
    clock.advance(-seconds)
    try {
      return (await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })).token
    } finally {
      clock.advance(seconds)
    }
  }
  refused(t, await rs.bearer('/me', await mintedAgo(TTL + 120)), 'expired 2 minutes ago')
  t.equal((await rs.bearer('/me', await mintedAgo(TTL + 20))).statusCode, 200, 'expired 20 s ago: within the leeway')

  refused(t, await rs.bearer('/me', await signedByKeysmith(claims({ iat: now - 1000, exp: now - 90 }))), 'expired 90 s ago')
  refused(t, await rs.bearer('/me', await signedByKeysmith(claims({ nbf: now + 120 }))), 'nbf 2 minutes ahead')
  t.equal((await rs.bearer('/me', await signedByKeysmith(claims({ nbf: now + 20 })))).statusCode, 200, 'nbf 20 s ahead: within the leeway')
  const noExp = claims()
  delete noExp.exp
  refused(t, await rs.bearer('/me', await signedByKeysmith(noExp)), 'no exp')
  const noSub = claims()
  delete noSub.sub
  refused(t, await rs.bearer('/me', await signedByKeysmith(noSub)), 'no sub')

  refused(t, await rs.bearer('/me', await signedByKeysmith(claims({ iss: 'http://127.0.0.1:1' }))), 'wrong iss')
  refused(t, await rs.bearer('/me', await signedByKeysmith(claims({ iss: `${issuer}/` }))), 'iss with a trailing slash')
  refused(t, await rs.bearer('/me', await signedByKeysmith(claims({ aud: 'https://other.example' }))), 'wrong aud')
  refused(t, await rs.bearer('/me', await signedByKeysmith(claims({ aud: ['https://other.example'] }))), 'wrong aud list')

  refused(t, await rs.bearer('/me', await signedByKeysmith(claims(), { typ: 'JWT' })), 'typ JWT (an ID token or any other JWT)')
  refused(t, await rs.bearer('/me', await signedByKeysmith(claims(), { typ: undefined })), 'no typ')
  t.equal((await rs.bearer('/me', await signedByKeysmith(claims(), { typ: 'application/at+jwt' }))).statusCode, 200,
    'application/at+jwt is the same media type (RFC 9068)')

  // A resource server with its own audience refuses tokens meant for Keysmith itself.
  const other = await resourceApp(t, { audience: 'https://api.example' })
  const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  refused(t, await other.bearer('/me', token), 'token for another audience')
})

t.test('requireRole: 403 insufficient_scope without any of the roles, 200 with one', async (t) => {
  const rs = await resourceApp(t)
  const user = (await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })).token
  const admin = (await keysmith.signer.mint({ sub: randomUUID(), roles: ['user', 'admin'] })).token
  const ops = (await keysmith.signer.mint({ sub: randomUUID(), roles: ['ops'] })).token
  const none = (await keysmith.signer.mint({ sub: randomUUID(), roles: [] })).token

  for (const [token, name] of [[user, 'user'], [none, 'no roles']] as const) {
    const res = await rs.bearer('/admin', token)
    t.equal(res.statusCode, 403, `${name} on /admin`)
    t.match(res.headers['www-authenticate'], /^Bearer .*error="insufficient_scope"/)
    t.match(res.json(), { statusCode: 403, message: 'Insufficient permissions' })
  }
  const ok = await rs.bearer('/admin', admin)
  t.equal(ok.statusCode, 200)
  t.same(ok.json().user.roles, ['user', 'admin'])
  t.equal((await rs.bearer('/ops', ops)).statusCode, 200, 'any one of the roles is enough')
  t.equal((await rs.bearer('/ops', admin)).statusCode, 200)
  t.equal((await rs.bearer('/ops', user)).statusCode, 403)
  // A roles claim that is not a list of strings grants nothing.
  const odd = await signedByKeysmith(claims({ roles: 'admin' as never }))
  t.equal((await rs.bearer('/admin', odd)).statusCode, 403)
})

t.test('requireScope: 403 insufficient_scope without the scope, 200 with it', async (t) => {
  const rs = await resourceApp(t)
  for (const scope of [undefined, 'write', 'reader', 'read:all']) {
    const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'], scope })
    const res = await rs.bearer('/read', token)
    t.equal(res.statusCode, 403, `scope ${scope}`)
    t.match(res.headers['www-authenticate'], /^Bearer .*error="insufficient_scope"/)
  }
  const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'], scope: 'write read' })
  const res = await rs.bearer('/read', token)
  t.equal(res.statusCode, 200)
  t.same(res.json().user.scope, ['write', 'read'])
})

t.test('the JWKS is fetched once and shared by all requests', async (t) => {
  const proxy = await jwksProxy(t)
  const rs = await resourceApp(t, { jwksUrl: `${proxy.url}/jwks` })
  const tokens = await Promise.all(Array.from({ length: 10 }, () => keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })))
  const results = await Promise.all(tokens.map(({ token }) => rs.bearer('/me', token)))
  t.same(results.map((r) => r.statusCode), Array(10).fill(200))
  t.equal((await rs.bearer('/me', tokens[0]!.token)).statusCode, 200)
  t.equal(proxy.hits(), 1)
})

t.test('tokens with made-up kids cannot make the resource server hammer the JWKS', async (t) => {
  const proxy = await jwksProxy(t)
  const rs = await resourceApp(t, { jwksUrl: `${proxy.url}/jwks` })
  const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  t.equal((await rs.bearer('/me', token)).statusCode, 200)
  const attacker = await attackerKey()
  for (let i = 0; i < 20; i++) {
    const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: `made-up-${i}` }).sign(attacker.privateKey)
    refused(t, await rs.bearer('/me', forged), `made-up kid ${i}`)
  }
  // One fetch per 30 s cooldown at most: the whole flood costs Keysmith no more than that.
  t.ok(proxy.hits() <= 2, `${proxy.hits()} JWKS fetches for 20 unknown kids`)
})

t.test('a key rotation at Keysmith needs no restart of the resource server', async (t) => {
  const proxy = await jwksProxy(t)
  // No cooldown here, so that the refetch on an unknown kid is observable in a test.
  const rs = await resourceApp(t, { jwksUrl: `${proxy.url}/jwks`, jwksCooldown: 0 })
  const first = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  t.equal((await rs.bearer('/me', first.token)).statusCode, 200)
  t.equal(proxy.hits(), 1)
  const kid1 = keysmith.keyring.active!.kid

  // One rotation: the new active key was pre-published as `next`, so it is already cached.
  await rotateKeys(keysmith.db, keysmith.keyStore)
  await keysmith.keyring.refresh(true)
  const kid2 = keysmith.keyring.active!.kid
  t.not(kid2, kid1)
  const second = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  t.equal((await rs.bearer('/me', second.token)).statusCode, 200, 'token under the new kid')
  t.equal(proxy.hits(), 1, 'no fetch was needed: the key was pre-published')

  // Two rotations in a row: now the active key is one the resource server never saw.
  await rotateKeys(keysmith.db, keysmith.keyStore)
  await keysmith.keyring.refresh(true)
  const kid3 = keysmith.keyring.active!.kid
  t.not(kid3, kid2)
  const third = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  t.equal((await rs.bearer('/me', third.token)).statusCode, 200, 'token under a kid unknown to the cache')
  t.equal(proxy.hits(), 2, 'fetched the JWKS again for the unknown kid')

  // Tokens signed before the rotations stay good while their retired keys are published.
  t.equal((await rs.bearer('/me', first.token)).statusCode, 200, 'token under the retired first key')
  t.equal((await rs.bearer('/me', second.token)).statusCode, 200, 'token under the retired second key')
  t.equal(proxy.hits(), 2)

  // A resource server started after the rotations knows all three keys.
  const fresh = await resourceApp(t)
  for (const { token } of [first, second, third]) t.equal((await fresh.bearer('/me', token)).statusCode, 200)
})

t.test('invalid options stop the service at start', async (t) => {
  const bad: [string, unknown, RegExp][] = [
    ['no options', {}, /issuer must be an http\(s\) URL/],
    ['issuer not a URL', { issuer: 'keysmith', audience: 'x' }, /issuer/],
    ['no audience', { issuer }, /audience is required/],
    ['empty audience list', { issuer, audience: [] }, /audience is required/],
    ['negative cooldown', { issuer, audience: issuer, jwksCooldown: -1 }, /jwksCooldown/],
    ['bad leeway', { issuer, audience: issuer, clockTolerance: 'a minute' }, /clockTolerance/]
  ]
  for (const [name, opts, message] of bad) {
    const app = Fastify({ logger: false })
    app.register(resourceServer, opts as ResourceServerOptions)
    await t.rejects(async () => { await app.ready() }, { code: 'KEYSMITH_ERR_RESOURCE_SERVER_OPTIONS', message }, name)
    await app.close().catch(() => {})
  }

  const app = Fastify({ logger: false })
  await app.register(resourceServer, { issuer, audience: issuer })
  t.teardown(() => app.close())
  t.throws(() => app.requireRole(), /role needs at least one value/)
  t.throws(() => app.requireScope(), /scope needs at least one value/)
})

t.test('an unreachable issuer means 401, never a 500', async (t) => {
  const gone = await httpServer(t, (_req, res) => { res.writeHead(503).end() })
  const rs = await resourceApp(t, { jwksUrl: `${gone.url}/jwks` })
  const { token } = await keysmith.signer.mint({ sub: randomUUID(), roles: ['user'] })
  refused(t, await rs.bearer('/me', token), 'JWKS answering 503')
  const closed = await resourceApp(t, { jwksUrl: 'http://127.0.0.1:1/jwks' })
  refused(t, await closed.bearer('/me', token), 'JWKS refusing connections')
})
