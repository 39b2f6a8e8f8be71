import t from 'tap'
import { testClock } from '../helper.js'
import { COOKIE, auditTypes, buildApp, familiesOf, login, me, refresh, register, type Session } from '../sessions-helper.js'

const N = 50

type Outcome = { status: number; retryAfter: string | null; cookie: string | undefined; access: string | undefined }

function tally(outcomes: Outcome[]): Record<number, number> {
  const counts: Record<number, number> = {}
  for (const o of outcomes) counts[o.status] = (counts[o.status] ?? 0) + 1
  return counts
}

async function viaInject(app: Awaited<ReturnType<typeof buildApp>>, cookie: string): Promise<Outcome[]> {
  const all = await Promise.all(Array.from({ length: N }, () => refresh(app, cookie)))
  return all.map((s: Session) => ({
    status: s.res.statusCode,
    retryAfter: (s.res.headers['retry-after'] as string | undefined) ?? null,
    cookie: s.cookie || undefined,
    access: s.access || undefined
  }))
}

// Real sockets: every request on its own connection, parsed and scheduled by Node's HTTP
// server rather than by light-my-request.
async function viaSockets(app: Awaited<ReturnType<typeof buildApp>>, cookie: string): Promise<Outcome[]> {
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return Promise.all(Array.from({ length: N }, async () => {
    const res = await fetch(`${base}/auth/refresh`, { method: 'POST', headers: { cookie: `${COOKIE}=${cookie}`, connection: 'close' } })
    const body = await res.json() as { access_token?: string }
    const set = res.headers.getSetCookie().find((c) => c.startsWith(`${COOKIE}=`))
    return {
      status: res.status,
      retryAfter: res.headers.get('retry-after'),
      cookie: set ? set.slice(COOKIE.length + 1).split(';')[0] || undefined : undefined,
      access: body.access_token
    }
  }))
}

for (const [transport, run] of [['inject', viaInject], ['sockets', viaSockets]] as const) {
  t.test(`${transport}: ${N} concurrent refreshes of one cookie within the grace → one 200, ${N - 1} × 409`, async (t) => {
    const clock = testClock()
    const app = await buildApp(t, { now: clock.now, env: { REFRESH_REUSE_GRACE: '2' } })
    const user = await register(app)
    const { cookie } = await login(app, user)

    const outcomes = await run(app, cookie)
    t.same(tally(outcomes), { 200: 1, 409: N - 1 })
    t.ok(outcomes.filter((o) => o.status === 409).every((o) => o.retryAfter === '0'), 'every 409 says Retry-After: 0')
    const winner = outcomes.find((o) => o.status === 200)!

    const fams = await familiesOf(app, user.id)
    t.equal(fams.length, 1)
    t.equal(fams[0]!.revoked_at, null, 'nothing revoked')
    const tokens = await app.db.selectFrom('refresh_tokens').select(['used_at'])
      .where('family_id', '=', fams[0]!.id).execute()
    t.equal(tokens.length, 2, 'exactly one rotation: the login token and one child')
    t.equal(tokens.filter((r) => r.used_at === null).length, 1, 'one live token')
    t.equal((await auditTypes(app, user.id)).filter((e) => e === 'refresh.rotated').length, 1)

    t.equal((await me(app, winner.access!)).statusCode, 200)
    const next = await refresh(app, winner.cookie!)
    t.equal(next.res.statusCode, 200, 'the winner\'s new cookie works')
  })

  t.test(`${transport}: ${N} concurrent refreshes with REFRESH_REUSE_GRACE=0 → one 200, the rest 401, family revoked`, async (t) => {
    const clock = testClock()
    const app = await buildApp(t, { now: clock.now, env: { REFRESH_REUSE_GRACE: '0' } })
    const user = await register(app)
    const { cookie } = await login(app, user)

    const outcomes = await run(app, cookie)
    t.same(tally(outcomes), { 200: 1, 401: N - 1 })
    const winner = outcomes.find((o) => o.status === 200)!

    const fams = await familiesOf(app, user.id)
    t.equal(fams.length, 1)
    t.type(fams[0]!.revoked_at, Date, 'the family is revoked')
    const tokens = await app.db.selectFrom('refresh_tokens').select('used_at')
      .where('family_id', '=', fams[0]!.id).execute()
    t.equal(tokens.length, 2, 'exactly one rotation')
    t.equal((await auditTypes(app, user.id)).filter((e) => e === 'refresh.reuse_detected').length, 1, 'revoked once')
    t.equal((await refresh(app, winner.cookie!)).res.statusCode, 401, 'the family is over for everyone')
  })
}

// Each request reads the clock before it reaches the token's row, and the one that wins the
// row need not be the one that read the clock first (pool queues, other instances' clocks).
// Clock reads that run backwards make every loser's "now" earlier than the winner's rotation.
t.test('a rotation stamped later than the loser\'s clock read is still a race, not reuse', async (t) => {
  let reads = 0
  const start = Date.now()
  const app = await buildApp(t, { now: () => start - reads++, env: { REFRESH_REUSE_GRACE: '2' } })
  const user = await register(app)
  const { cookie } = await login(app, user)

  const outcomes = await viaInject(app, cookie)
  t.same(tally(outcomes), { 200: 1, 409: N - 1 })
  t.equal((await familiesOf(app, user.id))[0]!.revoked_at, null, 'nothing revoked')
  const winner = outcomes.find((o) => o.status === 200)!
  t.equal((await refresh(app, winner.cookie!)).res.statusCode, 200, 'the user stays logged in')
})
