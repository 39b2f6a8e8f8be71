import t, { type Test } from 'tap'
import pg from 'pg'
import { createHash } from 'node:crypto'
import { serverLog, startPostgres } from './postgres.js'
import { startInstances } from './instances.js'
import { call, login, oauthToken, refresh, register, type Reply } from './http.js'
import { PASSWORD } from '../accounts-helper.js'
import { eventually } from '../support.js'

// kill -9 in the middle of logins and refreshes, of Keysmith and then of PostgreSQL. What a
// 200 acknowledged is never lost; a request whose answer never came (or came as 503) may
// or may not have happened, and either way its owner meets documented behaviour, never a
// 500, and can log in again. Keysmith and PostgreSQL both run as real processes.

const db = await startPostgres(t)
const ks = await startInstances(t, {
  count: 1,
  env: { DATABASE_URL: db.url, REDIS_URL: undefined, RATE_LIMIT_MAX: '1000000' }
})
const base = ks.urls[0]!

async function sql<T>(text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  try {
    return (await client.query(text, values)).rows as T[]
  } finally {
    await client.end()
  }
}
const hash = (token: string) => createHash('sha256').update(token).digest()

// One client refreshing its own chain, one request at a time, as long as it gets 200s.
interface Chain {
  email: string
  surface: 'oauth' | 'cookie'
  acked: string[] // every refresh token a 200 handed out, oldest first
  ended?: string // why the loop stopped: 'done', a status, or the network error
  statuses: number[]
}

const newToken = (surface: Chain['surface'], reply: Reply): string | undefined =>
  surface === 'oauth' ? reply.body?.refresh_token : reply.cookie

async function startChain(surface: Chain['surface']): Promise<Chain> {
  const { email } = await register(base)
  const reply = surface === 'oauth'
    ? await oauthToken(base, { grant_type: 'password', username: email, password: PASSWORD })
    : await login(base, email)
  const token = newToken(surface, reply)
  if (reply.status !== 200 || !token) throw new Error(`login: ${reply.status}`)
  return { email, surface, acked: [token], statuses: [] }
}

async function drive(chain: Chain, max = Infinity): Promise<void> {
  for (let i = 0; i < max; i++) {
    const last = chain.acked.at(-1)!
    let reply: Reply
    try {
      reply = chain.surface === 'oauth'
        ? await oauthToken(base, { grant_type: 'refresh_token', refresh_token: last })
        : await refresh(base, last)
    } catch (err) {
      chain.ended = String((err as { cause?: { code?: string } }).cause?.code ?? err)
      return
    }
    chain.statuses.push(reply.status)
    const token = newToken(chain.surface, reply)
    if (reply.status !== 200 || !token) {
      chain.ended = String(reply.status)
      return
    }
    chain.acked.push(token)
  }
  chain.ended = 'done'
}

// Fresh logins, each a new family; every acknowledged one keeps its (never used) cookie.
interface Logins { email: string; acked: string[]; statuses: number[]; ended?: string }
async function loginLoop(logins: Logins): Promise<void> {
  for (;;) {
    let reply: Reply
    try {
      reply = await login(base, logins.email)
    } catch (err) {
      logins.ended = String((err as { cause?: { code?: string } }).cause?.code ?? err)
      return
    }
    logins.statuses.push(reply.status)
    if (reply.status !== 200 || !reply.cookie) {
      logins.ended = String(reply.status)
      return
    }
    logins.acked.push(reply.cookie)
  }
}

// The load, and the crash once it is well under way: `crash` must end every loop (Keysmith
// gone, or answering 503 without its database). Quiet chains finish before the crash, so
// their newest token was certainly not in flight.
async function loadAndCrash(t: Test, crash: () => Promise<void>, ending: RegExp) {
  const busy = await Promise.all(['oauth', 'oauth', 'oauth', 'cookie', 'cookie'].map((s) => startChain(s as Chain['surface'])))
  const quiet = await Promise.all(['oauth', 'cookie'].map((s) => startChain(s as Chain['surface'])))
  const logins: Logins = { email: (await register(base)).email, acked: [], statuses: [] }
  const loops = [...busy.map((c) => drive(c)), ...quiet.map((c) => drive(c, 15)), loginLoop(logins)]
  const started = performance.now()
  const underWay = await eventually(() => quiet.every((c) => c.ended) &&
    busy.every((c) => c.acked.length > 60) && logins.acked.length >= 5, 30_000)
  t.ok(underWay, 'the load got under way')
  t.comment(`crash after ${Math.round(performance.now() - started)} ms of load`)
  await crash()
  await Promise.all(loops)
  const refreshes = [...busy, ...quiet].reduce((n, c) => n + c.acked.length - 1, 0)
  t.comment(`acknowledged before the crash: ${refreshes} refreshes, ${logins.acked.length} logins`)
  for (const c of quiet) t.equal(c.ended, 'done', 'a quiet chain finished before the crash')
  for (const c of [...busy, logins]) {
    t.notOk(c.statuses.some((s) => s !== 200 && s !== 503), 'no answer but 200 or 503')
    t.match(c.ended, ending, `the crash ended the loop (${c.ended})`)
  }
  return { busy, quiet, logins }
}

// The database after the crash, before anyone presents a token.
async function checkDatabase(t: Test, chains: Chain[], logins: Logins) {
  const acked = [...chains.flatMap((c) => c.acked), ...logins.acked]
  const rows = await sql<{ h: string; spent: boolean; revoked: boolean }>(
    `select encode(t.token_hash, 'hex') as h, t.used_at is not null as spent, f.revoked_at is not null as revoked
     from refresh_tokens t join refresh_families f on f.id = t.family_id where t.token_hash = any($1)`, [acked.map(hash)])
  const byHash = new Map(rows.map((r) => [r.h, r]))
  t.equal(rows.length, acked.length, `all ${acked.length} acknowledged refresh tokens are stored`)
  t.notOk(rows.some((r) => r.revoked), 'no acknowledged token\'s family is revoked')
  for (const c of chains) {
    const spent = c.acked.map((token) => byHash.get(hash(token).toString('hex'))?.spent)
    t.ok(spent.slice(0, -1).every(Boolean), 'every acknowledged token but the newest was spent')
    if (c.ended === 'done') t.equal(spent.at(-1), false, 'a quiet chain\'s newest token is unspent')
  }
  t.notOk(logins.acked.some((token) => byHash.get(hash(token).toString('hex'))?.spent), 'logins\' tokens are unspent')
  // The engine's invariants: a family always has exactly one unspent token (rotation spends
  // one and issues one in a single statement), and every spend has its audit event.
  t.same(await sql(`select family_id from refresh_tokens group by family_id
    having count(*) filter (where used_at is null) <> 1`), [], 'every family has exactly one unspent token')
  t.same(await sql(`select f.id from refresh_families f
    where (select count(*) from refresh_tokens t where t.family_id = f.id and t.used_at is not null)
       <> (select count(*) from audit_events a where a.type = 'refresh.rotated' and a.details->>'family_id' = f.id::text)`),
  [], 'every rotation committed with its audit event')
  return byHash
}

// Each owner presents the newest token it has: it rotates, unless the request lost in the
// crash had already spent it; then it is a replay, answered as documented.
async function checkOwners(t: Test, chains: Chain[], logins: Logins, byHash: Map<string, { spent: boolean }>) {
  let replays = 0
  for (const c of chains) {
    const last = c.acked.at(-1)!
    const stored = byHash.get(hash(last).toString('hex'))
    if (!stored) {
      t.fail(`${c.surface}: the newest acknowledged token was lost`)
      continue
    }
    const spent = stored.spent
    const reply = c.surface === 'oauth'
      ? await oauthToken(base, { grant_type: 'refresh_token', refresh_token: last })
      : await refresh(base, last)
    if (!spent) {
      t.equal(reply.status, 200, `${c.surface}: the newest acknowledged token rotates`)
      continue
    }
    replays++
    if (c.surface === 'oauth') {
      t.same([reply.status, reply.body.error], [400, 'invalid_grant'], 'oauth: its parent is a replay, invalid_grant')
    } else {
      t.ok(reply.status === 409 || reply.status === 401, `cookie: its parent is 409 within the grace or 401 (got ${reply.status})`)
    }
    const [family] = await sql<{ reason: string | null }>(`select f.revoked_reason as reason from refresh_tokens t
      join refresh_families f on f.id = t.family_id where t.token_hash = $1`, [hash(last)])
    if (reply.status === 409) t.equal(family?.reason, null, 'within the grace nothing is revoked')
    else t.equal(family?.reason, 'reuse_detected', 'and the family is revoked as reuse')
  }
  t.comment(`${replays} of ${chains.length} chains had their last refresh applied without an answer`)
  const again = await Promise.all(logins.acked.map((cookie) => refresh(base, cookie)))
  t.same(again.map((r) => r.status), logins.acked.map(() => 200), 'every acknowledged login\'s token rotates')
  for (const email of [...chains.map((c) => c.email), logins.email]) {
    const fresh = await login(base, email)
    t.equal(fresh.status, 200, 'the user logs in again')
    t.equal((await refresh(base, fresh.cookie!)).status, 200, 'and refreshes')
  }
}

t.test('Keysmith is killed (SIGKILL) under load', async (t) => {
  const { busy, quiet, logins } = await loadAndCrash(t, async () => {
    const result = await ks.kill(0)
    t.equal(result.signal, 'SIGKILL', 'Keysmith died of SIGKILL')
  }, /^(ECONNRESET|ECONNREFUSED|EPIPE|UND_ERR_SOCKET)$/)
  const byHash = await checkDatabase(t, [...busy, ...quiet], logins)
  const restarted = performance.now()
  await ks.restart(0)
  t.comment(`Keysmith ready again after ${Math.round(performance.now() - restarted)} ms`)
  await checkOwners(t, [...busy, ...quiet], logins, byHash)
})

t.test('PostgreSQL is killed (SIGKILL) under load and recovers', async (t) => {
  const server = ks.procs[0]!
  const { busy, quiet, logins } = await loadAndCrash(t, () => db.kill(), /^503$/)
  const restarted = performance.now()
  await db.start()
  const ready = await eventually(async () => (await call(base, '/ready')).status === 200, 20_000)
  t.ok(ready, 'Keysmith is ready again without a restart')
  t.match(await serverLog(db), /not properly shut down; automatic recovery in progress/, 'PostgreSQL recovered from a crash')
  t.comment(`PostgreSQL recovered and Keysmith ready after ${Math.round(performance.now() - restarted)} ms`)
  t.equal(server.child.exitCode, null, 'the same Keysmith process')
  const byHash = await checkDatabase(t, [...busy, ...quiet], logins)
  await checkOwners(t, [...busy, ...quiet], logins, byHash)
})
