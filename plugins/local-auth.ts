import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { errors as joseErrors, type JWTVerifyGetKey } from 'jose'
import { resourceServer } from './resource-server.js'
import { isDenied } from '../src/sessions/deny-list.js'

export interface LocalAuthOptions {
  issuer: string
  audience: string
  now?: () => number
}

// Keysmith's own protected routes use the very decorators resource servers use, over the
// in-memory key set (no HTTP round trip) and with the logout deny list.
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
    isRevoked: (claims) => isDenied(app.db, claims)
  })
}

export default fp(plugin, { name: 'keysmith-local-auth', fastify: '5.x', dependencies: ['keysmith-keys'] })
