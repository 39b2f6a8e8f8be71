import type { ColumnType, Generated, Insertable, Selectable } from 'kysely'

type CreatedAt = ColumnType<Date, Date | string | undefined, never>
type Timestamp = ColumnType<Date, Date | string, Date | string>
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>

export type KeyState = 'next' | 'active' | 'retired' | 'revoked'

export interface SigningKeyTable {
  kid: string
  state: KeyState
  alg: 'RS256'
  public_jwk: ColumnType<PublicJwk, string, string>
  private_key: string // sealed: see src/signing/sealed-box.ts
  created_at: CreatedAt
  activated_at: NullableTimestamp
  retired_at: NullableTimestamp
  revoked_at: NullableTimestamp
  // A retired key stays in the JWKS until every token it signed has expired.
  publish_until: NullableTimestamp
  updated_at: Timestamp
}

export interface PublicJwk {
  kty: 'RSA'
  n: string
  e: string
}

export interface UserTable {
  id: Generated<string>
  email: string
  password_hash: string
  disabled: Generated<boolean>
  created_at: CreatedAt
  updated_at: Timestamp
  password_changed_at: Timestamp
}

export interface UserRoleTable {
  user_id: string
  role: string
  granted_at: CreatedAt
}

export interface RefreshFamilyTable {
  id: Generated<string>
  user_id: string
  client: 'browser' | 'oauth'
  created_at: CreatedAt
  expires_at: Timestamp
  last_used_at: Timestamp
  revoked_at: NullableTimestamp
  revoked_reason: string | null
  ip: string | null
  user_agent: string | null
}

export interface RefreshTokenTable {
  token_hash: Buffer
  family_id: string
  created_at: CreatedAt
  expires_at: Timestamp
  used_at: NullableTimestamp
}

export interface DeniedTokenTable {
  jti: string
  expires_at: Timestamp
}

export interface AuditEventTable {
  id: Generated<string>
  type: string
  user_id: string | null
  actor_id: string | null
  ip: string | null
  user_agent: string | null
  details: ColumnType<Record<string, unknown>, string | undefined, never>
  created_at: CreatedAt
}

export interface Database {
  signing_keys: SigningKeyTable
  users: UserTable
  user_roles: UserRoleTable
  refresh_families: RefreshFamilyTable
  refresh_tokens: RefreshTokenTable
  denied_tokens: DeniedTokenTable
  audit_events: AuditEventTable
}

export type SigningKeyRow = Selectable<SigningKeyTable>
export type UserRow = Selectable<UserTable>
export type NewAuditEvent = Insertable<AuditEventTable>
