import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { errors as joseErrors, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { resourceServer } from './resource-server.js'
import { isDenied } from '../src/sessions/deny-list.js'

export interface LocalAuthOptions {
  issuer: string
  audience: string
  now?: () => number
}

// Keysmith's own protected routes use the very decorators resource servers use, over the
// in-memory key set (no HTTP round trip) and with the logout deny list.
// Keysmith mints sub and jti as UUIDs. Claims of any other shape never came from it (only a
// leaked key could sign them), and must be refused before they reach a uuid column or a
// query (a NUL in a jti is an error in PostgreSQL, not a miss).
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const mintedHere = (claims: JWTPayload) =>
  typeof claims.sub === 'string' && UUID.test(claims.sub) && typeof claims.jti === 'string' && UUID.test(claims.jti)

const plugin: FastifyPluginAsync<LocalAuthOptions> = async (app, opts) => {
  const getKey: JWTVerifyGetKey = (header) => {
    const key = header.kid ? app.keyring.verificationKey(header.kid) : undefined
    if (!key) throw new joseErrors.JWKSNoMatchingKey()
    return key as never
  }
  await app.register(resourceServer, {
    issuer: opts.issuer,
    audience: opts.audience,
    getKey,
    now: opts.now,
    keySetGeneration: () => app.keyring.generation,
    isRevoked: async (claims) => !mintedHere(claims) || isDenied(app.db, claims)
  })
}

export default fp(plugin, { name: 'keysmith-local-auth', fastify: '5.x', dependencies: ['keysmith-keys'] })
