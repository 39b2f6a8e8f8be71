import { Type, type Static } from 'typebox'
import { Value } from 'typebox/value'

const Int = (min: number, max: number, dflt: number) =>
  Type.Integer({ minimum: min, maximum: max, default: dflt })

// Every variable of CONTRACT.md section 2, plus the tuning knobs the issues name.
const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Int(0, 65535, 3000),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATA_DIR: Type.String({ default: './data', minLength: 1 }),
  ISSUER: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
  AUDIENCE: Type.Optional(Type.String({ minLength: 1 })),
  ACCESS_TOKEN_TTL: Int(30, 3600, 900),
  REFRESH_TOKEN_TTL: Int(60, 31_536_000, 604_800),
  REFRESH_REUSE_GRACE: Int(0, 60, 2),
  SESSION_MAX_AGE: Int(60, 31_536_000, 2_592_000),
  KEY_ENCRYPTION_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  KEYS_DIR: Type.String({ default: './keys', minLength: 1 }),
  KEY_SIZE: Int(2048, 8192, 2048),
  KEY_ROTATION_INTERVAL: Int(0, 31_536_000, 0),
  KEY_REFRESH_INTERVAL: Int(1, 5, 2),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  CORS_ORIGINS: Type.Optional(Type.String()),
  TRUST_PROXY: Type.Optional(Type.String()),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
  ARGON2_MEMORY_KIB: Int(19_456, 4_194_304, 19_456),
  ARGON2_TIME_COST: Int(2, 20, 2),
  ARGON2_PARALLELISM: Int(1, 16, 1),
  RATE_LIMIT_MAX: Int(1, 1_000_000, 30),
  RATE_LIMIT_WINDOW: Int(1, 86_400, 60),
  // Unset: no metrics listener. Never the public port: the metrics stay off the internet.
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  METRICS_HOST: Type.String({ default: '127.0.0.1', minLength: 1 })
})
type Env = Static<typeof EnvSchema>

export interface Config {
  env: string
  port: number
  host: string
  databaseUrl: string | undefined
  dataDir: string
  issuer: string
  audience: string
  accessTokenTtl: number
  refreshTokenTtl: number
  refreshReuseGrace: number
  sessionMaxAge: number
  keyEncryptionSecrets: string[] | undefined
  keysDir: string
  keySize: number
  keyRotationInterval: number
  keyRefreshInterval: number
  redisUrl: string | undefined
  corsOrigins: string[]
  trustProxy: string | undefined
  logLevel: string
  argon2: { memoryCost: number; timeCost: number; parallelism: number }
  rateLimit: { max: number; windowSeconds: number }
  metrics: { port: number | undefined; host: string }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const NUMERIC = new Set(
  Object.entries(EnvSchema.properties).filter(([, s]) => (s as { type?: string }).type === 'integer').map(([k]) => k)
)

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = env[key]
    if (value === undefined || value === '') continue
    // Only digits count as a number: "15m" or "1e3" must be refused, not coerced.
    raw[key] = NUMERIC.has(key) && /^\d+$/.test(value.trim()) ? Number(value) : value
  }
  const withDefaults = Value.Default(EnvSchema, raw)
  const [error] = Value.Errors(EnvSchema, withDefaults)
  if (error) {
    const name = error.instancePath.split('/')[1] ?? Object.keys(raw)[0] ?? 'environment'
    const allowed = (error.params as { allowedValues?: unknown[] }).allowedValues
    const reason = allowed ? `must be one of ${allowed.join(', ')}` : error.message
    throw new ConfigError(`${name}: ${describe(name, env[name])} (${reason})`)
  }
  const e = withDefaults as Env
  const keyEncryptionSecrets = e.KEY_ENCRYPTION_SECRET?.split(',').map((s) => s.trim()).filter(Boolean)
  // "," or " " would otherwise fall back to the generated secret file, even in production.
  if (keyEncryptionSecrets?.length === 0) {
    throw new ConfigError('KEY_ENCRYPTION_SECRET: contains no secret (comma-separated, the first one encrypts)')
  }
  if (e.NODE_ENV === 'production' && !keyEncryptionSecrets) {
    throw new ConfigError('KEY_ENCRYPTION_SECRET: required when NODE_ENV=production')
  }
  if (e.METRICS_PORT !== undefined && e.METRICS_PORT === e.PORT) {
    throw new ConfigError(`METRICS_PORT: invalid value "${e.METRICS_PORT}" (must differ from PORT)`)
  }
  const issuer = (e.ISSUER ?? `http://localhost:${e.PORT}`).replace(/\/+$/, '')
  return {
    env: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: e.DATA_DIR,
    issuer,
    audience: e.AUDIENCE ?? issuer,
    accessTokenTtl: e.ACCESS_TOKEN_TTL,
    refreshTokenTtl: e.REFRESH_TOKEN_TTL,
    refreshReuseGrace: e.REFRESH_REUSE_GRACE,
    sessionMaxAge: e.SESSION_MAX_AGE,
    keyEncryptionSecrets,
    keysDir: e.KEYS_DIR,
    keySize: e.KEY_SIZE,
    keyRotationInterval: e.KEY_ROTATION_INTERVAL,
    keyRefreshInterval: e.KEY_REFRESH_INTERVAL,
    redisUrl: e.REDIS_URL,
    corsOrigins: (e.CORS_ORIGINS ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    trustProxy: e.TRUST_PROXY,
    logLevel: e.LOG_LEVEL,
    argon2: {
      memoryCost: e.ARGON2_MEMORY_KIB,
      timeCost: e.ARGON2_TIME_COST,
      parallelism: e.ARGON2_PARALLELISM
    },
    rateLimit: { max: e.RATE_LIMIT_MAX, windowSeconds: e.RATE_LIMIT_WINDOW },
    metrics: { port: e.METRICS_PORT, host: e.METRICS_HOST }
  }
}

// Never echo secrets or URLs with credentials back into logs.
function describe(name: string, value: string | undefined): string {
  if (value === undefined) return 'invalid'
  if (/SECRET|URL/.test(name)) return 'invalid value'
  return `invalid value ${JSON.stringify(value.slice(0, 40))}`
}
