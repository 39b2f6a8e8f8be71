import { sql, type Kysely, type Transaction } from 'kysely'
import type { Database } from './db/schema.js'
import { audit, type AuditEvent } from './audit.js'
import { errors } from './errors.js'

export type Meta = Pick<AuditEvent, 'ip' | 'userAgent' | 'actorId'>

export const DEFAULT_ROLE = 'user'
// No whitespace or control characters (PostgreSQL text cannot even hold NUL).
const EMAIL = /^[^\s@\p{Cc}]+@[^\s@\p{Cc}]+\.[^\s@\p{Cc}]+$/u

export function normalizeEmail(email: string): string {
  return email.trim()
}

export function checkEmail(email: string): string {
  const e = normalizeEmail(email)
  if (e.length > 254 || !EMAIL.test(e)) throw new errors.InvalidInput('email must be a valid email address')
  return e
}

export interface UserRecord {
  id: string
  email: string
  password_hash: string
  disabled: boolean
}

// Both sides folded by the database, as the unique index on lower(email) folds: JavaScript's
// toLowerCase differs from PostgreSQL's lower() for some letters ('İ'), which would lock
// such users out of their own account.
const byEmail = (email: string) => sql<boolean>`lower(email) = lower(${normalizeEmail(email)})`

// No stored email holds NUL, and PostgreSQL refuses it as a parameter: no such user.
const userByEmail = (db: Kysely<Database>, email: string) => email.includes('\0')
  ? undefined
  : db.selectFrom('users').select(['id', 'email', 'password_hash', 'disabled']).where(byEmail(email))

export async function findUserByEmail(db: Kysely<Database>, email: string): Promise<UserRecord | undefined> {
  return userByEmail(db, email)?.executeTakeFirst()
}

// What a login needs, in one round trip: the user and its roles.
export async function findUserWithRoles(db: Kysely<Database>, email: string): Promise<(UserRecord & { roles: string[] }) | undefined> {
  return userByEmail(db, email)
    ?.select(sql<string[]>`array(select role from user_roles where user_id = users.id order by role)`.as('roles'))
    .executeTakeFirst()
}

export async function findUserById(db: Kysely<Database>, id: string): Promise<UserRecord | undefined> {
  return db.selectFrom('users').select(['id', 'email', 'password_hash', 'disabled'])
    .where('id', '=', id).executeTakeFirst()
}

export async function rolesOf(db: Kysely<Database>, userId: string): Promise<string[]> {
  const rows = await db.selectFrom('user_roles').select('role').where('user_id', '=', userId).orderBy('role').execute()
  return rows.map((r) => r.role)
}

// The user, its default role and the audit event commit together or not at all.
export async function createUser(db: Kysely<Database>, email: string, passwordHash: string, meta: Meta = {}): Promise<{ id: string; email: string }> {
  try {
    return await db.transaction().execute(async (trx) => {
      const user = await trx.insertInto('users')
        .values({ email: normalizeEmail(email), password_hash: passwordHash, updated_at: sql`now()`, password_changed_at: sql`now()` })
        .returning(['id', 'email']).executeTakeFirstOrThrow()
      await trx.insertInto('user_roles').values({ user_id: user.id, role: DEFAULT_ROLE }).execute()
      await audit(trx, { type: 'user.registered', userId: user.id, ...meta })
      return user
    })
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw new errors.EmailTaken()
    throw err
  }
}

export async function setPasswordHash(db: Kysely<Database>, userId: string, hash: string, changed: boolean): Promise<void> {
  await db.updateTable('users')
    .set(changed ? { password_hash: hash, updated_at: sql`now()`, password_changed_at: sql`now()` } : { password_hash: hash })
    .where('id', '=', userId).execute()
}

export const ROLE = /^[a-z][a-z0-9_.:-]{0,63}$/

export async function grantRole(db: Kysely<Database>, userId: string, role: string, meta: Meta = {}): Promise<boolean> {
  return db.transaction().execute((trx) => grantRoleIn(trx, userId, role, meta))
}

export async function revokeRole(db: Kysely<Database>, userId: string, role: string, meta: Meta = {}): Promise<boolean> {
  return db.transaction().execute((trx) => revokeRoleIn(trx, userId, role, meta))
}

// The change and its audit event, inside the caller's transaction.
export async function grantRoleIn(trx: Transaction<Database>, userId: string, role: string, meta: Meta = {}): Promise<boolean> {
  const added = await trx.insertInto('user_roles').values({ user_id: userId, role })
    .onConflict((oc) => oc.doNothing()).returning('role').executeTakeFirst()
  if (added) await audit(trx, { type: 'role.granted', userId, ...meta, details: { role } })
  return added !== undefined
}

export async function revokeRoleIn(trx: Transaction<Database>, userId: string, role: string, meta: Meta = {}): Promise<boolean> {
  const removed = await trx.deleteFrom('user_roles').where('user_id', '=', userId).where('role', '=', role)
    .returning('role').executeTakeFirst()
  if (removed) await audit(trx, { type: 'role.revoked', userId, ...meta, details: { role } })
  return removed !== undefined
}
