import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import createError from '@fastify/error'
import { createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { VerifiedTokenCache } from './verified-token-cache.js'

export interface AuthenticatedUser {
  id: string
  roles: string[]
  scope: string[]
  claims: JWTPayload
}

export type AuthHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

declare module 'fastify' {
  interface FastifyInstance {
    authenticate: AuthHook
    // Verify a token that did not come in the Authorization header (logout, revocation).
    verifyAccessToken(token: string): Promise<AuthenticatedUser | undefined>
    requireRole(...roles: string[]): AuthHook
    requireScope(...scopes: string[]): AuthHook
  }
  interface FastifyRequest {
    user: AuthenticatedUser | null
  }
}

export interface ResourceServerOptions {
  issuer: string
  audience: string | string[]
  jwksUrl?: string
  // Leeway for exp/nbf/iat, in seconds; capped at 60.
  clockTolerance?: number
  // Least time between two JWKS fetches caused by an unknown kid, in seconds (default 30):
  // a flood of tokens with made-up kids costs the issuer at most one request per period.
  jwksCooldown?: number
  // The clock checked against exp/nbf (Keysmith's tests inject one); defaults to Date.now.
  now?: () => number
  // Keysmith itself verifies over its in-memory key set instead of fetching its own JWKS.
  getKey?: JWTVerifyGetKey
  // Keysmith itself: a counter that changes whenever its key set does, so tokens verified
  // under a since-revoked key are verified afresh.
  keySetGeneration?: () => number
  // Keysmith itself refuses tokens whose jti was logged out.
  isRevoked?: (claims: JWTPayload) => Promise<boolean>
}

const InvalidToken = createError('KEYSMITH_ERR_INVALID_TOKEN', 'Missing or invalid access token', 401)
const InsufficientRole = createError('KEYSMITH_ERR_FORBIDDEN', 'Insufficient permissions', 403)
const InvalidOptions = createError('KEYSMITH_ERR_RESOURCE_SERVER_OPTIONS', 'resource-server: %s', 500)

const JWS_COMPACT = /^[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+$/

// The text after `Bearer` (any case, RFC 7235) and one or more spaces, trailing spaces
// dropped. Its characters are checked only on a cache miss (`verify`): a cache entry holds
// the exact text of a token that was checked, and a regular expression over a 700-character
// token costs as much as the rest of a cached request's authentication.
function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.charCodeAt(6) !== 32 || header.slice(0, 6).toLowerCase() !== 'bearer') return undefined
  let start = 7
  while (header.charCodeAt(start) === 32) start++
  let end = header.length
  while (end > start && header.charCodeAt(end - 1) === 32) end--
  return header.slice(start, end)
}

const plugin: FastifyPluginAsync<ResourceServerOptions> = async (app, opts) => {
  if (typeof opts.issuer !== 'string' || !/^https?:\/\//.test(opts.issuer)) throw new InvalidOptions('issuer must be an http(s) URL')
  if (!opts.audience || (Array.isArray(opts.audience) && opts.audience.length === 0)) throw new InvalidOptions('audience is required')
  const clockTolerance = Math.min(Math.max(opts.clockTolerance ?? 60, 0), 60)
  if (!Number.isFinite(clockTolerance)) throw new InvalidOptions('clockTolerance must be a number of seconds')
  const cooldown = opts.jwksCooldown ?? 30
  if (!Number.isFinite(cooldown) || cooldown < 0) throw new InvalidOptions('jwksCooldown must be a number of seconds, 0 or more')
  // jose's remote set caches keys, refetches on an unknown kid no more than once per
  // cooldown, and only ever uses kid/alg from the header: jku, x5u and jwk are ignored.
  const getKey = opts.getKey ?? createRemoteJWKSet(
    new URL(opts.jwksUrl ?? `${opts.issuer.replace(/\/+$/, '')}/.well-known/jwks.json`),
    { cooldownDuration: cooldown * 1000, cacheMaxAge: 300_000, timeoutDuration: 5000 }
  )
  const verifyOptions = {
    algorithms: ['RS256'],
    typ: 'at+jwt',
    issuer: opts.issuer,
    audience: opts.audience,
    clockTolerance,
    requiredClaims: ['exp', 'iat', 'sub']
  }

  function deny(reply: FastifyReply, status: 401 | 403, description: string): never {
    const error = status === 401 ? 'invalid_token' : 'insufficient_scope'
    reply.header('www-authenticate', `Bearer realm="${opts.issuer}", error="${error}", error_description="${description}"`)
    throw status === 401 ? new InvalidToken() : new InsufficientRole()
  }

  const cache = new VerifiedTokenCache<AuthenticatedUser>()
  const now = opts.now ?? Date.now
  const generation = opts.keySetGeneration ?? (() => 0)

  // The user, or the reason the token must be refused.
  async function verify(token: string): Promise<AuthenticatedUser | { refused: string }> {
    const at = now()
    let user = cache.get(token, at, generation())
    if (!user) {
      if (!JWS_COMPACT.test(token)) return { refused: 'malformed' }
      let claims: JWTPayload
      try {
        ;({ payload: claims } = await jwtVerify(token, getKey, { ...verifyOptions, currentDate: new Date(at) }))
      } catch (err) {
        return { refused: (err as { code?: string }).code ?? 'invalid' }
      }
      if (typeof claims.sub !== 'string') return { refused: 'no subject' }
      // Built once per token and shared by the requests that present it, hence frozen.
      user = Object.freeze({
        id: claims.sub,
        roles: Object.freeze(Array.isArray(claims.roles) ? claims.roles.filter((r): r is string => typeof r === 'string') : []) as string[],
        scope: Object.freeze(typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : []) as string[],
        claims: Object.freeze(claims)
      })
      cache.set(token, user, at, generation())
    }
    if (opts.isRevoked && (await opts.isRevoked(user.claims))) return { refused: 'revoked' }
    return user
  }

  const authenticate: AuthHook = async (request, reply) => {
    const token = bearerToken(request.headers.authorization)
    if (!token) deny(reply, 401, 'a Bearer access token is required')
    const result = await verify(token)
    if ('refused' in result) {
      request.log.debug({ reason: result.refused }, 'access token refused')
      deny(reply, 401, 'the access token is invalid, expired or revoked')
    }
    request.user = result
  }

  const requireAny = (pick: (u: AuthenticatedUser) => string[], wanted: string[], what: string): AuthHook => {
    if (wanted.length === 0) throw new InvalidOptions(`${what} needs at least one value`)
    return async (request, reply) => {
      if (!request.user) await authenticate(request, reply)
      const have = pick(request.user!)
      if (!wanted.some((w) => have.includes(w))) deny(reply, 403, `requires ${what} ${wanted.join(' or ')}`)
    }
  }

  app.decorateRequest('user', null)
  app.decorate('authenticate', authenticate)
  app.decorate('verifyAccessToken', async (token: string) => {
    const result = await verify(token)
    return 'refused' in result ? undefined : result
  })
  app.decorate('requireRole', (...roles: string[]) => requireAny((u) => u.roles, roles, 'role'))
  app.decorate('requireScope', (...scopes: string[]) => requireAny((u) => u.scope, scopes, 'scope'))
}

export const resourceServer = fp(plugin, { name: 'keysmith-resource-server', fastify: '5.x' })
export default resourceServer
