import Fastify, { type FastifyInstance } from 'fastify'
import type { Config } from './config.js'
import type { DatabaseHandle } from './db/connect.js'
import { errors } from './errors.js'
import { declaresOtherCharset } from '../plugins/schemas.js'
import database from '../plugins/database.js'
import errorHandling from '../plugins/errors.js'
import securityHeaders from '../plugins/security-headers.js'
import openapi from '../plugins/openapi.js'
import metrics from '../plugins/metrics.js'
import keys from '../plugins/keys.js'
import health from '../plugins/health.js'
import localAuth from '../plugins/local-auth.js'
import rateLimit from '../plugins/rate-limit.js'
import authCore from '../plugins/auth-core.js'
import accounts from '../plugins/accounts.js'
import sessions from '../plugins/sessions.js'
import oauth from '../plugins/oauth.js'
import admin from '../plugins/admin.js'
import cookie from '@fastify/cookie'
import cors from '@fastify/cors'

export interface BuildOptions {
  // Tests inject a clock so expiry is tested without sleeping.
  now?: () => number
  // Tests share one database connection between app instances.
  database?: DatabaseHandle
  logger?: boolean
}

export const REDACT = [
  'req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]',
  '*.password', '*.new_password', '*.current_password', '*.refresh_token', '*.access_token', '*.token'
]

export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger === false ? false : {
      level: config.logLevel,
      redact: { paths: REDACT, censor: '[redacted]' }
    },
    bodyLimit: 64 * 1024,
    trustProxy: parseTrustProxy(config.trustProxy) as boolean | string[] | undefined,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // A first start initialises the embedded database, which can take many seconds.
    pluginTimeout: 120_000,
    ajv: { customOptions: { removeAdditional: true, coerceTypes: 'array', allErrors: false } }
  })

  // JSON only, unless a route family (OAuth) adds form bodies: anything else is a 415.
  app.removeContentTypeParser('text/plain')
  // Browsers often send `content-type: application/json` with no body to the cookie
  // endpoints (refresh, logout): an empty body is "no body", not malformed JSON. Everything
  // else goes to Fastify's own parser, with its prototype-poisoning protection.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (declaresOtherCharset(request.headers['content-type'])) return done(new errors.UnsupportedCharset(), undefined)
    if (body === '') return done(null, undefined)
    return parseJson(request, body as string, done)
  })

  try {
    await registerPlugins(app, config, options)
  } catch (err) {
    // A plugin that failed (a wrong key secret, say) must not leave the pool, or the
    // embedded database and its lock, open behind the caller's back.
    await app.close().catch(() => {})
    throw err
  }
  return app
}

async function registerPlugins(app: FastifyInstance, config: Config, options: BuildOptions): Promise<void> {
  // First: its request hook must reach every route, and auth-core counts into it.
  await app.register(metrics, { defaultMetrics: config.metrics.port !== undefined })
  await app.register(errorHandling)
  // Before every route: both attach to routes through onRoute hooks.
  await app.register(securityHeaders, { issuer: config.issuer })
  await app.register(openapi, { issuer: config.issuer })
  await app.register(database, { databaseUrl: config.databaseUrl, dataDir: config.dataDir, handle: options.database })
  await app.register(keys, {
    issuer: config.issuer,
    audience: config.audience,
    accessTokenTtl: config.accessTokenTtl,
    keyEncryptionSecrets: config.keyEncryptionSecrets,
    keysDir: config.keysDir,
    keySize: config.keySize,
    keyRefreshInterval: config.keyRefreshInterval,
    keyRotationInterval: config.keyRotationInterval,
    now: options.now
  })
  await app.register(localAuth, { issuer: config.issuer, audience: config.audience, now: options.now })
  await app.register(health)

  // Browser origins that may call with credentials: the configured ones and our own.
  const allowedOrigins = new Set([...config.corsOrigins, new URL(config.issuer).origin])
  await app.register(cors, {
    origin: (origin, cb) => cb(null, origin !== undefined && allowedOrigins.has(origin)),
    credentials: true,
    methods: ['GET', 'POST', 'PUT', 'DELETE'],
    // Pages must see when to retry (the two-tab 409, a 429) and why a Bearer token failed.
    exposedHeaders: ['Retry-After', 'WWW-Authenticate'],
    maxAge: 600
  })
  await app.register(cookie)
  await app.register(rateLimit, {
    redisUrl: config.redisUrl,
    max: config.rateLimit.max,
    windowSeconds: config.rateLimit.windowSeconds,
    now: options.now
  })
  await app.register(authCore, {
    argon2: config.argon2,
    refreshTokenTtl: config.refreshTokenTtl,
    sessionMaxAge: config.sessionMaxAge,
    now: options.now
  })
  await app.register(accounts, { allowedOrigins })
  await app.register(sessions, { allowedOrigins, reuseGraceSeconds: config.refreshReuseGrace, now: options.now })
  await app.register(oauth)
  await app.register(admin)
}

function parseTrustProxy(value: string | undefined): boolean | number | string[] | undefined {
  if (value === undefined) return undefined
  if (value === 'true') return true
  if (value === 'false') return false
  if (/^\d+$/.test(value)) return Number(value)
  return value.split(',').map((s) => s.trim()).filter(Boolean)
}
