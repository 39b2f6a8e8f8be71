import t from 'tap'
import { decodeJwt, PASSWORD, uniqueEmail, uniqueIp } from '../accounts-helper.js'
import { forgetInRedis, REDIS_URL } from '../redis-helper.js'
import { keysScript } from '../support.js'
import { startInstances } from './instances.js'
import { call, jwksKids, login, me, oauthToken, refresh, register } from './http.js'

// Three Keysmith processes, A, B and C, on one database and one Redis, as behind a load
// balancer: whatever one instance knows or counts, the others must know and count too.
// REFRESH_REUSE_GRACE=0 so a replayed cookie is reuse at once, without waiting out the grace.
const RATE_LIMIT_MAX = 6
const cluster = await startInstances(t, { count: 3, env: { RATE_LIMIT_MAX: String(RATE_LIMIT_MAX), REFRESH_REUSE_GRACE: '0' } })
const [A, B, C] = cluster.urls as [string, string, string]
const names = new Map([[A, 'A'], [B, 'B'], [C, 'C']])

const forget: string[] = []
t.teardown(() => forgetInRedis(REDIS_URL, forget))

t.test('a cookie session started on A rotates on B, then C; replaying a spent cookie anywhere revokes the family', async (t) => {
  const user = await register(A)
  const started = await login(A, user.email)
  t.equal(started.status, 200)
  t.ok(started.cookie, 'A set the refresh cookie')

  const onB = await refresh(B, started.cookie!)
  t.equal(onB.status, 200, 'B rotates the cookie A issued')
  const onC = await refresh(C, onB.cookie!)
  t.equal(onC.status, 200, 'C rotates the cookie B issued')
  const cookies = [started.cookie, onB.cookie, onC.cookie]
  t.equal(new Set(cookies).size, 3, 'every rotation yields a new refresh token')
  const tokens = [started, onB, onC].map((r) => r.body.access_token as string)
  t.equal(new Set(tokens).size, 3, 'and a new access token')

  for (const [token, minter] of [[tokens[0], A], [tokens[1], B], [tokens[2], C]] as const) {
    for (const verifier of [A, B, C].filter((u) => u !== minter)) {
      const res = await me(verifier, token)
      t.equal(res.status, 200, `${names.get(verifier)} accepts an access token minted by ${names.get(minter)}`)
      t.same(res.body, { id: user.id, email: user.email, roles: ['user'] })
    }
  }

  const replay = await refresh(A, onB.cookie!)
  t.equal(replay.status, 401, 'A refuses the cookie C already rotated away')
  for (const base of [A, B, C]) {
    t.equal((await refresh(base, onC.cookie!)).status, 401, `the newest cookie is revoked on ${names.get(base)} too`)
  }
})

t.test('an OAuth session started on A rotates on B, then C; a replay on A revokes the family everywhere', async (t) => {
  const user = await register(B)
  const grant = await oauthToken(A, { grant_type: 'password', username: user.email, password: PASSWORD })
  t.equal(grant.status, 200)
  const r1 = await oauthToken(B, { grant_type: 'refresh_token', refresh_token: grant.body.refresh_token })
  t.equal(r1.status, 200, 'B rotates the token A issued')
  const r2 = await oauthToken(C, { grant_type: 'refresh_token', refresh_token: r1.body.refresh_token })
  t.equal(r2.status, 200, 'C rotates the token B issued')
  t.equal(new Set([grant, r1, r2].map((r) => r.body.refresh_token)).size, 3, 'every rotation yields a new refresh token')
  t.equal((await me(B, grant.body.access_token)).status, 200, 'B accepts the access token A minted')

  const replay = await oauthToken(A, { grant_type: 'refresh_token', refresh_token: grant.body.refresh_token })
  t.same([replay.status, replay.body.error], [400, 'invalid_grant'], 'A detects the replay of a token B spent')
  for (const base of [A, B, C]) {
    const res = await oauthToken(base, { grant_type: 'refresh_token', refresh_token: r2.body.refresh_token })
    t.same([res.status, res.body.error], [400, 'invalid_grant'], `the newest token is revoked on ${names.get(base)}`)
  }
})

t.test('`npm run keys -- rotate` reaches all three instances within 5 s', async (t) => {
  const user = await register(C)
  const kidOf = async (base: string) => decodeJwt((await login(base, user.email)).body.access_token).header.kid as string
  const before = await jwksKids(A)
  const oldKid = await kidOf(A)

  // The rotation also makes a fresh `next` key: an instance whose JWKS shows it has adopted
  // the new key set. Watch all three from before the command starts.
  const seen = Promise.all([A, B, C].map(async (base) => {
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      if ((await jwksKids(base)).some((k) => !before.includes(k))) return Date.now()
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return Infinity
  }))
  const rotated = await keysScript(cluster.env, 'rotate')
  t.equal(rotated.code, 0, rotated.stderr)
  const newKid = rotated.stdout.trim()
  t.not(newKid, oldKid)
  t.ok(before.includes(newKid), 'the new active key was published before it signed anything')

  // Measured from the rotation's own timestamp (its transaction's start, so never late).
  const listed = await keysScript(cluster.env, 'list')
  const activated = Date.parse(/activated=(\S+)/.exec(listed.stdout.split('\n').find((l) => l.startsWith(newKid)) ?? '')?.[1] ?? '')
  t.ok(Number.isFinite(activated), `keys list shows when ${newKid} became active`)
  const delays = (await seen).map((at) => at - activated)
  const slowest = Math.max(...delays)
  t.comment(`rotation adopted after ${delays.map((ms) => `${ms} ms`).join(', ')} (A, B, C)`)
  t.ok(slowest < 5000, `every instance adopted the rotation within 5 s (slowest: ${slowest} ms)`)

  for (const base of [A, B, C]) {
    t.equal(await kidOf(base), newKid, `${names.get(base)} signs with the new active key`)
    t.ok((await jwksKids(base)).includes(oldKid), `${names.get(base)} still publishes the retired key`)
  }
})

t.test('failed logins spread over the instances are throttled as one', async (t) => {
  const user = await register(A)
  const ip = uniqueIp()
  forget.push(user.email, ip)
  // 5 free failures per account and address (src/throttle.ts): two on A, two on B, one on C.
  for (const base of [A, B, C, A, B]) {
    t.equal((await login(base, user.email, 'wrong password', { ip })).status, 401, `a wrong password on ${names.get(base)}`)
  }
  const sixth = await login(C, user.email, 'wrong password', { ip })
  t.equal(sixth.status, 429, 'the 6th attempt is throttled, though C saw only one before it')
  t.match(sixth.headers.get('retry-after'), /^[1-9]\d*$/)
  t.equal(sixth.body.message, 'Too many attempts, try again later', 'by the login throttle, not the request limit')
  // The password grant shares the throttle: even the right password waits, on A and B.
  for (const base of [A, B]) {
    const res = await oauthToken(base, { grant_type: 'password', username: user.email, password: PASSWORD }, { ip })
    t.same([res.status, res.body.error], [429, 'temporarily_unavailable'], `the right password waits on ${names.get(base)}`)
    t.match(res.headers.get('retry-after'), /^[1-9]\d*$/)
  }
  t.equal((await login(B, user.email, PASSWORD)).status, 200, 'the account still logs in from another address')
})

t.test('the per-address request limit counts requests on every instance together', async (t) => {
  const ip = uniqueIp()
  const tag = `cluster-rl-${ip}`
  forget.push(ip, tag)
  const attempt = (base: string, from = ip) => login(base, uniqueEmail(tag), 'wrong password', { ip: from })
  const bases = [A, B, C, A, B, C]
  for (const [i, base] of bases.entries()) t.equal((await attempt(base)).status, 401, `request ${i + 1} on ${names.get(base)}`)
  for (const base of [A, B, C]) {
    const res = await attempt(base)
    t.equal(res.status, 429, `over RATE_LIMIT_MAX (${RATE_LIMIT_MAX}) in total: refused on ${names.get(base)}, which saw 2`)
    t.match(res.headers.get('retry-after'), /^[1-9]\d*$/)
    t.match(res.body.message, /^Rate limit exceeded/)
  }
  t.equal((await attempt(A, uniqueIp())).status, 401, 'another address is not limited')
  t.equal((await call(A, '/auth/register', { ip, json: { email: uniqueEmail(tag), password: PASSWORD } })).status, 201,
    'each route keeps its own count')
})
