import type { Kysely } from 'kysely'
import type { JWTPayload } from 'jose'
import type { Database } from '../db/schema.js'

// Access tokens are stateless; the only way to end one early (logout, RFC 7009) is to
// refuse its jti until it would have expired anyway. Kept in PostgreSQL so that every
// instance refuses it.
export async function denyAccessToken(db: Kysely<Database>, claims: JWTPayload, now = new Date()): Promise<void> {
  if (typeof claims.jti !== 'string' || typeof claims.exp !== 'number') return
  await db.insertInto('denied_tokens').values({ jti: claims.jti, expires_at: new Date(claims.exp * 1000) })
    .onConflict((oc) => oc.doNothing()).execute()
  // Rows past their token's expiry protect nothing; sweeping here keeps the table small.
  await db.deleteFrom('denied_tokens').where('expires_at', '<', now).execute()
}

// A token without a jti cannot be revoked, so it is not accepted either.
export async function isDenied(db: Kysely<Database>, claims: JWTPayload): Promise<boolean> {
  if (typeof claims.jti !== 'string') return true
  const row = await db.selectFrom('denied_tokens').select('jti').where('jti', '=', claims.jti).executeTakeFirst()
  return row !== undefined
}
