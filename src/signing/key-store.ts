import { generateKeyPair as generateKeyPairCb } from 'node:crypto'
import { promisify } from 'node:util'
import { calculateJwkThumbprint } from 'jose'
import { sql, type Kysely, type Transaction } from 'kysely'
import type { Database, PublicJwk, SigningKeyRow } from '../db/schema.js'
import { audit } from '../audit.js'
import type { SealedBox } from './sealed-box.js'

const generateKeyPair = promisify(generateKeyPairCb)

// A retired key stays published for the longest access-token lifetime any instance may
// use (ACCESS_TOKEN_TTL is capped at 3600 s) plus the 60 s verification leeway.
export const RETIRED_KEY_PUBLISH_SECONDS = 3600 + 60
// All key-set changes serialize on this advisory lock (transaction-scoped).
const KEY_LOCK = 7_306_841
export const KEY_CHANNEL = 'keysmith_keys'

export class KeyError extends Error {
  override name = 'KeyError'
}

export interface KeyStoreOptions {
  box: SealedBox
  keySize: number
}

export interface KeyChangeActor {
  actorId?: string | null
  ip?: string | null
  userAgent?: string | null
}

export async function newKeyRow(box: SealedBox, keySize: number) {
  const { publicKey, privateKey } = await generateKeyPair('rsa', { modulusLength: keySize })
  const jwk = publicKey.export({ format: 'jwk' })
  const publicJwk: PublicJwk = { kty: 'RSA', n: jwk.n!, e: jwk.e! }
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256')
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
  return { kid, public_jwk: JSON.stringify(publicJwk), private_key: box.seal(pem, kid), alg: 'RS256' as const }
}

// Serialize key-set changes, and tell listening instances on commit (real PostgreSQL
// delivers it at once; every instance also polls keySetVersion as the fallback).
async function lock(trx: Transaction<Database>) {
  await sql`select pg_advisory_xact_lock(${KEY_LOCK})`.execute(trx)
  await sql`select pg_notify(${KEY_CHANNEL}, '')`.execute(trx)
}

async function insertKey(trx: Transaction<Database>, opts: KeyStoreOptions, state: 'active' | 'next') {
  const row = await newKeyRow(opts.box, opts.keySize)
  await trx.insertInto('signing_keys').values({
    ...row,
    state,
    activated_at: state === 'active' ? sql<Date>`now()` as never : null,
    updated_at: sql<Date>`now()` as never
  }).execute()
  return row.kid
}

async function keyByState(trx: Transaction<Database>, state: 'active' | 'next') {
  return trx.selectFrom('signing_keys').select('kid').where('state', '=', state).executeTakeFirst()
}

// Make sure an active and a pre-published next key exist. Safe for instances starting at
// once: the advisory lock lets one create them and the others find them.
export async function ensureKeys(db: Kysely<Database>, opts: KeyStoreOptions): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await lock(trx)
    if (!(await keyByState(trx, 'active'))) {
      const next = await keyByState(trx, 'next')
      if (next) await promote(trx, next.kid)
      else await insertKey(trx, opts, 'active')
    }
    if (!(await keyByState(trx, 'next'))) await insertKey(trx, opts, 'next')
  })
}

async function promote(trx: Transaction<Database>, kid: string) {
  await trx.updateTable('signing_keys')
    .set({ state: 'active', activated_at: sql`now()`, updated_at: sql`now()` })
    .where('kid', '=', kid).execute()
}

async function rotateIn(trx: Transaction<Database>, opts: KeyStoreOptions): Promise<{ activeKid: string; retiredKid: string | undefined }> {
  const active = await keyByState(trx, 'active')
  if (active) {
    await trx.updateTable('signing_keys').set({
      state: 'retired',
      retired_at: sql`now()`,
      publish_until: sql`now() + make_interval(secs => ${RETIRED_KEY_PUBLISH_SECONDS})`,
      updated_at: sql`now()`
    }).where('kid', '=', active.kid).execute()
  }
  const next = await keyByState(trx, 'next')
  let activeKid: string
  if (next) {
    await promote(trx, next.kid)
    activeKid = next.kid
  } else {
    activeKid = await insertKey(trx, opts, 'active')
  }
  await insertKey(trx, opts, 'next')
  return { activeKid, retiredKid: active?.kid }
}

// next → active, active → retired, and a new next; one transaction, so a crash part-way
// leaves the previous key set exactly as it was.
export async function rotateKeys(db: Kysely<Database>, opts: KeyStoreOptions, actor: KeyChangeActor = {}): Promise<string> {
  return db.transaction().execute(async (trx) => {
    await lock(trx)
    const { activeKid, retiredKid } = await rotateIn(trx, opts)
    await audit(trx, { type: 'key.rotated', ...actor, details: { kid: activeKid, retired: retiredKid ?? null } })
    return activeKid
  })
}

export async function revokeKey(db: Kysely<Database>, opts: KeyStoreOptions, kid: string, actor: KeyChangeActor = {}): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await lock(trx)
    const row = await trx.selectFrom('signing_keys').select(['kid', 'state']).where('kid', '=', kid).executeTakeFirst()
    if (!row) throw new KeyError(`no key with kid ${kid}`)
    if (row.state === 'revoked') throw new KeyError(`key ${kid} is already revoked`)
    if (row.state === 'active') {
      const { activeKid } = await rotateIn(trx, opts)
      await audit(trx, { type: 'key.rotated', ...actor, details: { kid: activeKid, retired: kid } })
    }
    await trx.updateTable('signing_keys')
      .set({ state: 'revoked', revoked_at: sql`now()`, publish_until: null, updated_at: sql`now()` })
      .where('kid', '=', kid).execute()
    if (row.state === 'next') await insertKey(trx, opts, 'next')
    await audit(trx, { type: 'key.revoked', ...actor, details: { kid, was: row.state } })
  })
}

export async function listKeys(db: Kysely<Database>): Promise<Omit<SigningKeyRow, 'private_key'>[]> {
  return db.selectFrom('signing_keys')
    .select(['kid', 'state', 'alg', 'public_jwk', 'created_at', 'activated_at', 'retired_at', 'revoked_at', 'publish_until', 'updated_at'])
    .orderBy('created_at').orderBy('kid').execute()
}

// The keys that verify tokens and appear in the JWKS: next, active, and retired keys whose
// tokens may still be alive. Never a revoked key.
export async function publishedKeys(db: Kysely<Database>): Promise<SigningKeyRow[]> {
  return db.selectFrom('signing_keys').selectAll()
    .where((eb) => eb.or([
      eb('state', 'in', ['next', 'active']),
      eb.and([eb('state', '=', 'retired'), eb('publish_until', '>', sql<Date>`now()`)])
    ]))
    .orderBy('created_at').orderBy('kid').execute()
}

// A cheap fingerprint of the key set, polled by every instance to adopt changes. It covers
// every key's state rather than max(updated_at): now() is a transaction's start time, so a
// change committed after a later-started one would not move the maximum.
export async function keySetVersion(db: Kysely<Database>): Promise<string> {
  const r = await sql<{ v: string }>`select count(*)::text || ':' || coalesce(md5(string_agg(kid || '=' || state, ',' order by kid)), '') as v from signing_keys`.execute(db)
  return r.rows[0]!.v
}

// Re-seal every private key under the first configured secret (after a secret rotation).
export async function resealKeys(db: Kysely<Database>, box: SealedBox): Promise<number> {
  return db.transaction().execute(async (trx) => {
    await lock(trx)
    const rows = await trx.selectFrom('signing_keys').select(['kid', 'private_key']).where('state', '!=', 'revoked').execute()
    let changed = 0
    for (const row of rows) {
      if (box.sealedWith(row.private_key) === box.sealingSecretId) continue
      const sealed = box.seal(box.open(row.private_key, row.kid), row.kid)
      await trx.updateTable('signing_keys').set({ private_key: sealed }).where('kid', '=', row.kid).execute()
      changed++
    }
    return changed
  })
}
