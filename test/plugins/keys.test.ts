import t, { type Test } from 'tap'
import { createPrivateKey, randomUUID } from 'node:crypto'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import type { Kysely } from 'kysely'
import type { Database } from '../../src/db/schema.js'
import { rotateKeys } from '../../src/signing/key-store.js'
import { build, freshDatabase, type BuildTestOptions, type TestApp } from '../helper.js'
import { eventually, keysScript } from '../support.js'

const JWKS = '/.well-known/jwks.json'
// testConfig leaves ISSUER and AUDIENCE at their defaults.
const ISSUER = 'http://localhost:3000'

const keyRows = (db: Kysely<Database>) =>
  db.selectFrom('signing_keys').select(['kid', 'state']).orderBy('created_at').orderBy('kid').execute()
const kidIn = (rows: { kid: string; state: string }[], state: string) => rows.find((r) => r.state === state)?.kid
const kidOf = (token: string) => decodeProtectedHeader(token).kid

async function jwks(app: TestApp): Promise<JSONWebKeySet> {
  return (await app.inject(JWKS)).json() as JSONWebKeySet
}

async function mint(app: TestApp): Promise<string> {
  return (await app.signer.mint({ sub: randomUUID(), roles: ['user'] })).token
}

// What a client of the JWKS sees: a token verified against the published keys.
async function verifyWithJwks(app: TestApp, token: string) {
  return jwtVerify(token, createLocalJWKSet(await jwks(app)), {
    algorithms: ['RS256'], typ: 'at+jwt', issuer: ISSUER, audience: ISSUER
  })
}

// An app with one protected route, guarded by Keysmith's own app.authenticate.
async function protectedApp(t: Test, opts: BuildTestOptions = {}): Promise<TestApp> {
  const app = await build(t, opts)
  app.get('/t', { onRequest: app.authenticate }, async (request) => ({ id: request.user!.id }))
  await app.ready()
  return app
}

const callProtected = (app: TestApp, token: string) =>
  app.inject({ url: '/t', headers: { authorization: `Bearer ${token}` } })

async function keyEvents(db: Kysely<Database>, afterId: string) {
  const rows = await db.selectFrom('audit_events').select(['type', 'details'])
    .where('type', 'in', ['key.rotated', 'key.revoked']).where('id', '>', afterId).orderBy('id').execute()
  return rows.map((r) => ({ type: r.type, ...r.details }))
}
async function lastAuditId(db: Kysely<Database>): Promise<string> {
  const row = await db.selectFrom('audit_events').select((eb) => eb.fn.max('id').as('id')).executeTakeFirst()
  return String(row?.id ?? 0)
}

t.test('the JWKS publishes the public members of the published keys only', async (t) => {
  const app = await build(t)
  const res = await app.inject(JWKS)
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  const { keys } = res.json() as JSONWebKeySet
  const published = await app.db.selectFrom('signing_keys').select('kid')
    .where((eb) => eb.or([eb('state', 'in', ['next', 'active']), eb('publish_until', '>', new Date())]))
    .execute()
  t.same(keys.map((k) => k.kid).sort(), published.map((r) => r.kid).sort(), 'the next, active and unexpired retired keys')
  t.ok(keys.length >= 2)
  for (const key of keys) {
    t.same(Object.keys(key).sort(), ['alg', 'e', 'kid', 'kty', 'n', 'use'], `${key.kid}: no private member`)
    t.match(key, { kty: 'RSA', use: 'sig', alg: 'RS256', e: 'AQAB' })
    t.ok(Buffer.from(key.n as string, 'base64url').length >= 256, `${key.kid}: at least 2048 bits`)
  }
})

t.test('the JWKS is cacheable and revalidates with its ETag', async (t) => {
  const app = await build(t)
  const res = await app.inject(JWKS)
  t.match(res.headers['cache-control'], /^public, max-age=\d+/)
  const etag = res.headers.etag as string
  t.match(etag, /^"[^"]+"$/)
  for (const ifNoneMatch of [etag, `W/${etag}`, `"an-older-one", ${etag}`]) {
    const cached = await app.inject({ url: JWKS, headers: { 'if-none-match': ifNoneMatch } })
    t.equal(cached.statusCode, 304, `If-None-Match: ${ifNoneMatch}`)
    t.equal(cached.body, '')
    t.equal(cached.headers.etag, etag)
    t.match(cached.headers['cache-control'], /^public, max-age=\d+/)
  }
  const stale = await app.inject({ url: JWKS, headers: { 'if-none-match': '"an-older-one"' } })
  t.equal(stale.statusCode, 200)
  t.equal(stale.body, res.body)
})

t.test('discovery names the issuer and its JWKS', async (t) => {
  const app = await build(t)
  for (const url of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 200)
    t.match(res.json(), {
      issuer: ISSUER,
      jwks_uri: `${ISSUER}${JWKS}`,
      token_endpoint: `${ISSUER}/oauth/token`,
      revocation_endpoint: `${ISSUER}/oauth/revoke`,
      id_token_signing_alg_values_supported: ['RS256']
    })
  }
})

t.test('private keys are encrypted at rest; public_jwk holds public members only', async (t) => {
  const app = await build(t)
  const rows = await app.db.selectFrom('signing_keys').select(['kid', 'private_key', 'public_jwk']).execute()
  t.ok(rows.length >= 2)
  for (const row of rows) {
    t.notMatch(row.private_key, /PRIVATE KEY/, `${row.kid}: no PEM in the table`)
    t.throws(() => createPrivateKey(row.private_key), `${row.kid}: the stored text is no usable key`)
    t.same(Object.keys(row.public_jwk).sort(), ['e', 'kty', 'n'], `${row.kid}: public members only`)
    t.equal(await calculateJwkThumbprint(row.public_jwk), row.kid, `${row.kid}: the kid is the RFC 7638 thumbprint`)
  }
})

t.test('minted tokens verify with jose against the JWKS', async (t) => {
  const app = await protectedApp(t)
  const sub = randomUUID()
  const { token, jti, exp, expiresIn } = await app.signer.mint({ sub, roles: ['admin'] })
  const { payload, protectedHeader } = await verifyWithJwks(app, token)
  const active = kidIn(await keyRows(app.db), 'active')
  t.same(protectedHeader, { alg: 'RS256', typ: 'at+jwt', kid: active })
  t.same(Object.keys(payload).sort(), ['aud', 'exp', 'iat', 'iss', 'jti', 'roles', 'sub'], 'no personal data')
  t.match(payload, { iss: ISSUER, aud: ISSUER, sub, jti, exp, roles: ['admin'] })
  t.equal(payload.exp! - payload.iat!, 900)
  t.equal(expiresIn, 900)
  const res = await callProtected(app, token)
  t.equal(res.statusCode, 200, 'app.authenticate accepts it')
  t.same(res.json(), { id: sub })
})

t.test('first start makes one active and one next key, and a restart keeps them', async (t) => {
  const db = await freshDatabase(t)
  let first: { kid: string; state: string }[] = []
  let firstJwks = ''
  await t.test('first start', async (t) => {
    const app = await build(t, { db })
    first = await keyRows(app.db)
    t.same(first.map((k) => k.state).sort(), ['active', 'next'])
    t.equal(app.keyring.active?.kid, kidIn(first, 'active'))
    firstJwks = (await app.inject(JWKS)).body
    t.same((JSON.parse(firstJwks) as JSONWebKeySet).keys.map((k) => k.kid).sort(), first.map((k) => k.kid).sort())
  })
  // The first app has closed its database; this one opens it again, as a restarted server.
  const app = await build(t, { db })
  t.same(await keyRows(app.db), first, 'the same keys in the same states')
  t.equal(app.keyring.active?.kid, kidIn(first, 'active'))
  t.equal((await app.inject(JWKS)).body, firstJwks, 'the same JWKS')
  t.equal(kidOf(await mint(app)), kidIn(first, 'active'))
})

t.test('two instances starting at once on a fresh database make one active and one next key', async (t) => {
  const db = await freshDatabase(t)
  const [a, b] = await Promise.all([build(t, { db }), build(t, { db })])
  const rows = await keyRows(a.db)
  t.same(rows.map((k) => k.state).sort(), ['active', 'next'])
  t.equal(a.keyring.active?.kid, kidIn(rows, 'active'))
  t.equal(b.keyring.active?.kid, kidIn(rows, 'active'))
  t.equal((await a.inject(JWKS)).body, (await b.inject(JWKS)).body, 'both publish the same JWKS')
})

t.test('rotation by the script while serving: old tokens keep verifying, new ones use the new key', async (t) => {
  const app = await protectedApp(t, { env: { KEY_REFRESH_INTERVAL: '1' } })
  const before = await keyRows(app.db)
  const oldKid = kidIn(before, 'active')!
  const nextKid = kidIn(before, 'next')!
  const oldToken = await mint(app)
  t.equal(kidOf(oldToken), oldKid)
  const oldEtag = (await app.inject(JWKS)).headers.etag
  const mark = await lastAuditId(app.db)

  const rotate = await keysScript(app.testEnv, 'rotate')
  t.equal(rotate.code, 0, rotate.stderr)
  t.equal(rotate.stdout, `${nextKid}\n`, 'the pre-published next key is the new active one')
  t.ok(await eventually(async () => kidOf(await mint(app)) === nextKid), 'new tokens carry the new kid within 5 s')

  const after = await keyRows(app.db)
  t.equal(after.find((k) => k.kid === oldKid)?.state, 'retired')
  t.equal(kidIn(after, 'active'), nextKid)
  const newNext = kidIn(after, 'next')
  t.ok(newNext && newNext !== oldKid && newNext !== nextKid, 'a new next key is made')
  const kids = (await jwks(app)).keys.map((k) => k.kid)
  t.ok(kids.includes(oldKid) && kids.includes(nextKid) && kids.includes(newNext), 'retired, active and next are published')
  t.not((await app.inject(JWKS)).headers.etag, oldEtag, 'the ETag changed')

  t.equal((await callProtected(app, oldToken)).statusCode, 200, 'a token of the retired key is still accepted')
  t.equal((await verifyWithJwks(app, oldToken)).protectedHeader.kid, oldKid, 'and verifies against the JWKS')
  const newToken = await mint(app)
  t.equal((await callProtected(app, newToken)).statusCode, 200)
  t.equal((await verifyWithJwks(app, newToken)).protectedHeader.kid, nextKid)
  t.same(await keyEvents(app.db, mark), [{ type: 'key.rotated', kid: nextKid, retired: oldKid }], 'audited')

  // Revoking the retired key ends its tokens at once.
  const revoke = await keysScript(app.testEnv, 'revoke', oldKid)
  t.equal(revoke.code, 0, revoke.stderr)
  t.ok(await eventually(async () => !(await jwks(app)).keys.some((k) => k.kid === oldKid)), 'the key leaves the JWKS within 5 s')
  const refused = await callProtected(app, oldToken)
  t.equal(refused.statusCode, 401, 'its tokens are refused')
  t.match(refused.headers['www-authenticate'], /^Bearer .*error="invalid_token"/)
  await t.rejects(verifyWithJwks(app, oldToken), { code: 'ERR_JWKS_NO_MATCHING_KEY' })
  t.equal((await callProtected(app, newToken)).statusCode, 200, 'tokens of the active key are not affected')
})

t.test('revoking the active key rotates first, and its tokens are refused within 5 s', async (t) => {
  const app = await protectedApp(t, { env: { KEY_REFRESH_INTERVAL: '1' } })
  const before = await keyRows(app.db)
  const activeKid = kidIn(before, 'active')!
  const nextKid = kidIn(before, 'next')!
  const token = await mint(app)
  t.equal((await callProtected(app, token)).statusCode, 200)
  const mark = await lastAuditId(app.db)

  const revoke = await keysScript(app.testEnv, 'revoke', activeKid)
  t.equal(revoke.code, 0, revoke.stderr)
  t.equal(revoke.stdout, `revoked ${activeKid}\n`)
  t.ok(await eventually(async () => !(await jwks(app)).keys.some((k) => k.kid === activeKid)), 'the key leaves the JWKS within 5 s')
  t.ok(await eventually(async () => kidOf(await mint(app)) === nextKid), 'the next key signs')

  const refused = await callProtected(app, token)
  t.equal(refused.statusCode, 401)
  t.match(refused.headers['www-authenticate'], /error="invalid_token"/)
  t.match(refused.json(), { statusCode: 401, error: 'Unauthorized' })
  await t.rejects(verifyWithJwks(app, token), { code: 'ERR_JWKS_NO_MATCHING_KEY' })

  const after = await keyRows(app.db)
  t.equal(after.find((k) => k.kid === activeKid)?.state, 'revoked')
  t.equal(kidIn(after, 'active'), nextKid)
  t.equal(after.filter((k) => k.state === 'active').length, 1)
  t.equal(after.filter((k) => k.state === 'next').length, 1)
  t.same(await keyEvents(app.db, mark), [
    { type: 'key.rotated', kid: nextKid, retired: activeKid },
    { type: 'key.revoked', kid: activeKid, was: 'active' }
  ], 'audited')
})

t.test('a key-set change is adopted even when it does not move the newest updated_at', async (t) => {
  // now() is a transaction's start time: a revocation whose transaction began before another
  // change committed carries an older updated_at than that change.
  const app = await build(t, { env: { KEY_REFRESH_INTERVAL: '1' } })
  const retired = kidIn(await keyRows(app.db), 'active')!
  const active = await rotateKeys(app.db, app.keyStore)
  t.ok(await eventually(async () => kidOf(await mint(app)) === active), 'the rotation is adopted')
  t.ok((await jwks(app)).keys.some((k) => k.kid === retired), 'the retired key is published')
  await app.db.updateTable('signing_keys').set({ state: 'revoked', publish_until: null })
    .where('kid', '=', retired).execute()
  t.ok(await eventually(async () => !(await jwks(app)).keys.some((k) => k.kid === retired)), 'and leaves the JWKS within 5 s')
})

t.test('a wrong KEY_ENCRYPTION_SECRET stops start-up and leaves the stored keys alone', async (t) => {
  const app = await build(t)
  const snapshot = () => app.db.selectFrom('signing_keys').selectAll().orderBy('kid').execute()
  const before = await snapshot()
  await t.rejects(build(t, { env: { KEY_ENCRYPTION_SECRET: 'not-the-secret-that-sealed-them' } }), { message: /KEY_ENCRYPTION_SECRET/ })
  t.same(await snapshot(), before, 'no key was minted, changed or removed')
})

t.test('without KEY_ENCRYPTION_SECRET a generated secret is kept in KEYS_DIR with mode 0600', async (t) => {
  const db = await freshDatabase(t)
  const noSecret = { KEY_ENCRYPTION_SECRET: undefined }
  let first: { kid: string; state: string }[] = []
  await t.test('first start', async (t) => {
    const app = await build(t, { db, env: noSecret })
    first = await keyRows(app.db)
  })
  const file = join(db.KEYS_DIR, 'encryption-secret')
  t.equal((await stat(file)).mode & 0o777, 0o600, 'the secret file is mode 0600')
  t.equal((await stat(db.KEYS_DIR)).mode & 0o777, 0o700, 'in a directory only its owner reads')
  t.same(await readdir(db.KEYS_DIR), ['encryption-secret'], 'and nothing else is left there')
  t.ok((await readFile(file, 'utf8')).trim().length >= 32)

  const app = await build(t, { db, env: noSecret })
  t.same(await keyRows(app.db), first, 'a restart opens the same keys with it')
  await t.rejects(build(t, { db, database: app.database, env: { KEY_ENCRYPTION_SECRET: 'some-other-secret' } }),
    { message: /KEY_ENCRYPTION_SECRET/ }, 'and they are sealed with it, not stored in clear')
})

t.test('KEY_ROTATION_INTERVAL rotates on schedule and the instance follows', async (t) => {
  const db = await freshDatabase(t)
  const app = await build(t, { db, env: { KEY_ROTATION_INTERVAL: '1', KEY_REFRESH_INTERVAL: '1' } })
  const before = app.keyring.active!.kid
  const now = await eventually(() => app.keyring.active?.kid !== before && app.keyring.active?.kid)
  t.ok(now, 'the instance signs with a new key within 5 s')
  const rows = await keyRows(app.db)
  t.equal(rows.find((k) => k.kid === before)?.state, 'retired', 'the old key was retired, not revoked')
  const kids = (JSON.parse((await app.inject(JWKS)).body) as JSONWebKeySet).keys.map((k) => k.kid)
  t.ok(kids.includes(before), 'the retired key stays published')
  const events = await app.db.selectFrom('audit_events').select('details').where('type', '=', 'key.rotated').execute()
  t.ok(events.some((e) => e.details.retired === before), 'the rotation is audited')
})
