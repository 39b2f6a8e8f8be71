import type { Kysely } from 'kysely'
import type { Database } from './db/schema.js'

export type AuditType =
  | 'user.registered' | 'login.success' | 'login.failure' | 'login.throttled'
  | 'refresh.rotated' | 'refresh.reuse_detected' | 'logout' | 'session.revoked'
  | 'password.changed' | 'role.granted' | 'role.revoked' | 'user.disabled' | 'user.enabled'
  | 'key.rotated' | 'key.revoked'

export interface AuditEvent {
  type: AuditType
  userId?: string | null
  actorId?: string | null
  ip?: string | null
  userAgent?: string | null
  details?: Record<string, unknown>
}

// Takes a transaction as well as the database, so an event commits with what it records.
export async function audit(db: Kysely<Database>, event: AuditEvent): Promise<void> {
  await db.insertInto('audit_events').values({
    type: event.type,
    user_id: event.userId ?? null,
    actor_id: event.actorId ?? null,
    ip: event.ip ?? null,
    user_agent: event.userAgent?.slice(0, 512) ?? null,
    details: JSON.stringify(event.details ?? {})
  }).execute()
}
