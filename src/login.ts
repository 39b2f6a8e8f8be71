import type { Kysely } from 'kysely'
import type { Database } from './db/schema.js'
import { audit, type AuditEvent } from './audit.js'
import { errors } from './errors.js'
import { findUserByEmail, findUserWithRoles, normalizeEmail, setPasswordHash } from './accounts.js'
import { MAX_LENGTH, normalizePassword, type PasswordHasher } from './passwords.js'
import type { LoginThrottle } from './throttle.js'

export interface LoginRequest {
  email: string
  password: string
  ip: string
  userAgent?: string
}

export interface LoginDeps {
  db: Kysely<Database>
  passwords: PasswordHasher
  throttle: LoginThrottle
}

export class ThrottledError extends errors.Throttled {
  constructor(readonly retryAfter: number) {
    super()
  }
}

// Password login shared by /auth/login and the OAuth password grant. Every failure looks
// the same to the client; which check failed is only in the audit log. Success is recorded
// by the session it starts (SessionEngine.start), in the same statement.
export async function passwordLogin(deps: LoginDeps, req: LoginRequest): Promise<{ userId: string; roles: string[] }> {
  // The throttle's key; the database folds case itself when it looks the user up.
  const email = normalizeEmail(req.email).toLowerCase()
  return deps.throttle.admit(email, req.ip, () => attempt(deps, req, email))
}

async function attempt(deps: LoginDeps, req: LoginRequest, email: string): Promise<{ userId: string; roles: string[] }> {
  const meta: Pick<AuditEvent, 'ip' | 'userAgent'> = { ip: req.ip, userAgent: req.userAgent }
  const wait = await deps.throttle.retryAfter(email, req.ip)
  if (wait > 0) {
    const user = await findUserByEmail(deps.db, req.email)
    await audit(deps.db, { type: 'login.throttled', userId: user?.id, ...meta, details: { retry_after: wait } })
    throw new ThrottledError(wait)
  }
  const fail = async (userId: string | undefined, reason: string) => {
    await deps.throttle.failure(email, req.ip)
    await audit(deps.db, { type: 'login.failure', userId, ...meta, details: { reason } })
    return new errors.InvalidCredentials()
  }
  // Refused before hashing: an attacker must not make us hash megabytes.
  if ([...normalizePassword(req.password)].length > MAX_LENGTH) throw await fail(undefined, 'password_too_long')
  const user = await findUserWithRoles(deps.db, req.email)
  if (!user) {
    await deps.passwords.verifyDummy(req.password)
    throw await fail(undefined, 'unknown_email')
  }
  if (!(await deps.passwords.verify(user.password_hash, req.password))) throw await fail(user.id, 'wrong_password')
  // Only now, with the password proven, may the client learn the account is disabled.
  if (user.disabled) {
    await audit(deps.db, { type: 'login.failure', userId: user.id, ...meta, details: { reason: 'disabled' } })
    throw new errors.AccountDisabled()
  }
  if (deps.passwords.needsRehash(user.password_hash)) {
    await setPasswordHash(deps.db, user.id, await deps.passwords.hash(req.password), false)
  }
  await deps.throttle.success(email, req.ip)
  return { userId: user.id, roles: user.roles }
}
