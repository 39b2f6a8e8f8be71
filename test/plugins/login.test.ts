import t from 'tap'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { build, testClock } from '../helper.js'
import { PASSWORD, UUID, accessToken, auditOf, decodeJwt, loginRes, register, uniqueEmail, uniqueIp } from '../accounts-helper.js'

// POST /auth/login (CONTRACT.md sections 3, 4 and 6). Throttling is in throttle.test.ts and
// rate-limit.test.ts; refresh and logout belong to the sessions tests.
type Test = Parameters<typeof build>[0]
const app = (t: Test, env: Record<string, string> = {}, now?: () => number) =>
  build(t, { env: { RATE_LIMIT_MAX: '100000', ...env }, now })

const INVALID = { statusCode: 401, error: 'Unauthorized', message: 'Invalid email or password' }

t.test('login: 200 with a Bearer access token that is not cached, and the refresh cookie', async (t) => {
  const a = await app(t)
  const user = await register(a, uniqueEmail('Login'))
  // Emails are trimmed and compared case-insensitively.
  const res = await loginRes(a, `  ${user.email.toUpperCase()} `, PASSWORD)
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'token_type'])
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, 900)
  t.match(res.headers['cache-control'], /no-store/)
  const cookie = res.cookies.find((c) => c.name === 'keysmith_refresh')
  t.ok(cookie, 'refresh cookie set')
  t.match(cookie, { httpOnly: true, secure: true, sameSite: 'Strict', path: '/auth' })
  t.notOk(JSON.stringify(body).includes(cookie!.value), 'the refresh token is not in the body')
})

t.test('access token: RS256 at+jwt with a published kid; iss, sub, aud, exp, iat, jti and roles from the database; no email', async (t) => {
  const clock = testClock()
  const a = await app(t, { ACCESS_TOKEN_TTL: '600', ISSUER: 'https://id.example.test', AUDIENCE: 'https://api.example.test' }, clock.now)
  const user = await register(a, uniqueEmail('Claims'))
  const token = await accessToken(a, user.email, PASSWORD)
  const { header, claims } = decodeJwt(token)
  t.same(Object.keys(header).sort(), ['alg', 'kid', 'typ'])
  t.equal(header.alg, 'RS256')
  t.equal(header.typ, 'at+jwt')
  const jwks = (await a.inject('/.well-known/jwks.json')).json<JSONWebKeySet>()
  t.ok(jwks.keys.some((k) => k.kid === header.kid), 'the kid is in the JWKS')

  t.same(Object.keys(claims).sort(), ['aud', 'exp', 'iat', 'iss', 'jti', 'roles', 'sub'])
  t.equal(claims.iss, 'https://id.example.test')
  t.equal(claims.aud, 'https://api.example.test')
  t.equal(claims.sub, user.id)
  t.match(claims.sub, UUID)
  t.equal(claims.iat, Math.floor(clock.now() / 1000), 'iat from the injected clock')
  t.equal(claims.exp, (claims.iat as number) + 600)
  t.type(claims.jti, 'string')
  t.ok((claims.jti as string).length >= 16)
  t.same(claims.roles, ['user'])
  const raw = Buffer.from(token.split('.')[1]!, 'base64url').toString()
  t.notOk(raw.toLowerCase().includes(user.email.toLowerCase()), 'no email in the token')
  t.notOk(raw.includes(PASSWORD), 'no password in the token')

  // The signature verifies against the published key set, with the contract's checks.
  const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), {
    algorithms: ['RS256'], typ: 'at+jwt', issuer: 'https://id.example.test', audience: 'https://api.example.test',
    currentDate: new Date(clock.now())
  })
  t.equal(payload.sub, user.id)

  // Roles come from the database at login: grant one, log in again, see it.
  await a.db.insertInto('user_roles').values({ user_id: user.id, role: 'billing:read' }).execute()
  const second = decodeJwt(await accessToken(a, user.email, PASSWORD)).claims
  t.same(second.roles, ['billing:read', 'user'])
  t.not(second.jti, claims.jti, 'every token has its own jti')
  await a.db.deleteFrom('user_roles').where('user_id', '=', user.id).execute()
  t.same(decodeJwt(await accessToken(a, user.email, PASSWORD)).claims.roles, [], 'no roles is an empty array')
})

t.test('401 for any bad credential, with the same body for an unknown email and a wrong password', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const attempts: [string, string, string][] = [
    ['unknown email', uniqueEmail('nobody'), PASSWORD],
    ['wrong password', user.email, 'not the password'],
    ['password in another case', user.email, PASSWORD.toUpperCase()],
    ['password with a trailing space', user.email, `${PASSWORD} `],
    ['password over 256 characters', user.email, PASSWORD + 'x'.repeat(300)],
    ['short password', user.email, 'x'],
    ['empty email', ' ', PASSWORD],
    ['email that cannot exist', 'no\u0000such@example.com', PASSWORD]
  ]
  const bodies = new Set<string>()
  for (const [why, email, password] of attempts) {
    const res = await loginRes(a, email, password)
    t.equal(res.statusCode, 401, why)
    t.same(res.json(), INVALID, why)
    t.equal(res.headers['set-cookie'], undefined, `${why}: no cookie`)
    t.equal(res.headers['retry-after'], undefined, `${why}: not throttled`)
    bodies.add(res.body)
  }
  t.equal(bodies.size, 1, 'byte-identical bodies')
})

t.test('disabled account: a wrong password is 401, only the right one learns 403', async (t) => {
  const a = await app(t)
  const user = await register(a)
  await a.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  const wrong = await loginRes(a, user.email, 'not the password')
  t.equal(wrong.statusCode, 401)
  t.same(wrong.json(), INVALID)
  const right = await loginRes(a, user.email, PASSWORD)
  t.equal(right.statusCode, 403)
  t.same(right.json(), { statusCode: 403, error: 'Forbidden', message: 'Account is disabled' })
  t.equal(right.headers['set-cookie'], undefined, 'no session for a disabled account')
  t.equal(await a.db.selectFrom('refresh_families').select('id').where('user_id', '=', user.id).executeTakeFirst(), undefined)
  await a.db.updateTable('users').set({ disabled: false }).where('id', '=', user.id).execute()
  t.equal((await loginRes(a, user.email, PASSWORD)).statusCode, 200, 'enabled again, the login works')
})

t.test('passwords are compared after NFKC; emails fold case as the database does, beyond ASCII', async (t) => {
  const a = await app(t)
  // U+FB00 (ﬀ) normalizes to "ff".
  const ligature = await register(a, uniqueEmail(), `sta\uFB00 o\uFB03ce keys`)
  t.equal((await loginRes(a, ligature.email, 'staff office keys')).statusCode, 200)
  t.equal((await loginRes(a, ligature.email, `sta\uFB00 o\uFB03ce keys`)).statusCode, 200)
  // PostgreSQL folds 'İ' to 'i', JavaScript to 'i̇': the user must still get in.
  const dotted = await register(a, `İlkay-${uniqueEmail()}`)
  t.equal((await loginRes(a, dotted.email, PASSWORD)).statusCode, 200, 'the email as registered')
  t.equal((await loginRes(a, dotted.email.toUpperCase(), PASSWORD)).statusCode, 200, 'upper case')
  const umlaut = await register(a, `Ärger-${uniqueEmail()}`)
  t.equal((await loginRes(a, umlaut.email.toLowerCase(), PASSWORD)).statusCode, 200, 'lower case')
})

t.test('audit: login.success and login.failure with ip and user agent, the reason only in the log', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const ip = uniqueIp()
  const userAgent = `login-audit/${uniqueIp()}`
  await loginRes(a, user.email, 'not the password', { ip, userAgent })
  await loginRes(a, user.email, PASSWORD, { ip, userAgent })
  const unknown = uniqueEmail('ghost')
  await loginRes(a, unknown, PASSWORD, { ip, userAgent })
  const rows = await auditOf(a, { userAgent })
  t.match(rows, [
    { type: 'login.failure', user_id: user.id, ip, user_agent: userAgent, details: { reason: 'wrong_password' } },
    { type: 'login.success', user_id: user.id, ip, user_agent: userAgent },
    { type: 'login.failure', user_id: null, ip, user_agent: userAgent, details: { reason: 'unknown_email' } }
  ])
  t.equal(rows.length, 3)
  t.notOk(JSON.stringify(rows).includes(PASSWORD), 'no password in the audit log')
})

t.test('re-hash on login when the argon2 parameters rise, never downwards', async (t) => {
  const t2 = await app(t, { ARGON2_TIME_COST: '2' })
  const t3 = await app(t, { ARGON2_TIME_COST: '3' })
  const user = await register(t2)
  const stored = async () => (await t2.db.selectFrom('users').select(['password_hash', 'password_changed_at'])
    .where('id', '=', user.id).executeTakeFirstOrThrow())
  const before = await stored()
  t.match(before.password_hash, /^\$argon2id\$v=19\$m=19456,p=1,t=2\$/)

  t.equal((await loginRes(t2, user.email, PASSWORD)).statusCode, 200)
  t.equal((await stored()).password_hash, before.password_hash, 'same parameters: untouched')

  t.equal((await loginRes(t3, user.email, 'not the password')).statusCode, 401)
  t.equal((await stored()).password_hash, before.password_hash, 'a wrong password re-hashes nothing')

  t.equal((await loginRes(t3, user.email, PASSWORD)).statusCode, 200)
  const after = await stored()
  t.match(after.password_hash, /^\$argon2id\$v=19\$m=19456,p=1,t=3\$/, 'stronger parameters: re-hashed')
  t.same(after.password_changed_at, before.password_changed_at, 'a re-hash is not a password change')

  t.equal((await loginRes(t2, user.email, PASSWORD)).statusCode, 200, 'the stronger hash verifies everywhere')
  t.equal((await stored()).password_hash, after.password_hash, 'weaker settings do not downgrade it')
  t.equal((await loginRes(t3, user.email, PASSWORD)).statusCode, 200)
})

t.test('an unknown email takes as long as a wrong password (ratio of medians, not a timed assertion)', async (t) => {
  const a = await app(t)
  // Wrong passwords spread over three accounts and many addresses stay clear of the throttle.
  const users = await Promise.all([register(a), register(a), register(a)])
  const N = 15
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!
  const timed = async (email: string, password: string) => {
    const start = performance.now()
    const res = await loginRes(a, email, password, { ip: uniqueIp() })
    const ms = performance.now() - start
    t.equal(res.statusCode, 401)
    return ms
  }
  // Warm up: the first unknown email computes the dummy hash once.
  await timed(uniqueEmail(), 'warm up password')
  const unknown: number[] = []
  const wrong: number[] = []
  const tooLong: number[] = []
  for (let i = 0; i < N; i++) {
    // Interleaved, so load on the machine hits both kinds alike.
    unknown.push(await timed(uniqueEmail('ghost'), `guess number ${i}`))
    wrong.push(await timed(users[i % 3]!.email, `guess number ${i}`))
    tooLong.push(await timed(uniqueEmail('long'), 'x'.repeat(300)))
  }
  const ratio = median(unknown) / median(wrong)
  t.comment(`median unknown ${median(unknown).toFixed(1)} ms, wrong ${median(wrong).toFixed(1)} ms, ratio ${ratio.toFixed(2)}`)
  t.ok(ratio > 0.5 && ratio < 2, `unknown/wrong ratio ${ratio.toFixed(2)} within 0.5–2`)
  // The measurement can tell hashing from not hashing: a password over 256 characters is
  // refused before any argon2 work, and that shows.
  const control = median(tooLong) / median(wrong)
  t.comment(`median over-long ${median(tooLong).toFixed(1)} ms, ratio ${control.toFixed(2)}`)
  t.ok(control < 0.5, `no-hash/wrong ratio ${control.toFixed(2)} is clearly below the band`)
})
