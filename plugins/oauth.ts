import type { FastifyError } from 'fastify'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ThrottledError } from '../src/login.js'
import { errors } from '../src/errors.js'
import { isDatabaseUnavailable } from '../src/db/unavailable.js'
import { denyAccessToken } from '../src/sessions/deny-list.js'
import { BODY_ERRORS, declaresOtherCharset, oauthErrorReplies } from './schemas.js'

class OAuthError extends Error {
  constructor(readonly status: number, readonly error: string, readonly description: string) {
    super(description)
  }
}

// Native clients and services: RFC 6749 token endpoint (password and refresh_token grants)
// and RFC 7009 revocation, on the same family engine as the cookie surface but with no
// reuse grace: a replayed refresh token revokes its family at once.
// Not wrapped in fastify-plugin on purpose: the form parser and the RFC 6749 error shape
// stay inside this scope.
const oauth: FastifyPluginAsyncTypebox = async (app) => {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (request, body, done) => {
    if (declaresOtherCharset(request.headers['content-type'])) return done(new errors.UnsupportedCharset(), undefined)
    const params = new URLSearchParams(body as string)
    // RFC 6749 §3.2: parameters must not repeat. A Set, not `k in {}`: names such as
    // `constructor` are unrecognized parameters to ignore, not repeats.
    const seen = new Set<string>()
    for (const k of params.keys()) {
      if (seen.has(k)) return done(new OAuthError(400, 'invalid_request', `parameter ${k} is repeated`), undefined)
      seen.add(k)
    }
    // fromEntries defines own properties: a `__proto__` parameter cannot touch the prototype.
    done(null, Object.fromEntries(params))
  })

  app.setErrorHandler((err: FastifyError | OAuthError, request, reply) => {
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    if (err instanceof OAuthError) return reply.code(err.status).send({ error: err.error, error_description: err.description })
    if ('validation' in err && err.validation) {
      return reply.code(400).send({ error: 'invalid_request', error_description: err.message })
    }
    if (err instanceof ThrottledError) {
      return reply.code(429).header('retry-after', String(err.retryAfter))
        .send({ error: 'temporarily_unavailable', error_description: err.message })
    }
    const status = (err as FastifyError).statusCode ?? 500
    if (status === 401 || status === 403) {
      return reply.code(400).send({ error: 'invalid_grant', error_description: err.message })
    }
    if (status < 500) return reply.code(status).send({ error: status === 429 ? 'temporarily_unavailable' : 'invalid_request', error_description: err.message })
    if (isDatabaseUnavailable(err) || status === 503) {
      return reply.code(503).header('retry-after', '5').send({ error: 'temporarily_unavailable', error_description: 'Service temporarily unavailable' })
    }
    request.log.error({ err }, 'oauth request failed')
    return reply.code(500).send({ error: 'server_error', error_description: 'Internal Server Error' })
  })

  const meta = (request: { ip: string; headers: Record<string, unknown> }) =>
    ({ ip: request.ip, userAgent: request.headers['user-agent'] as string | undefined })

  app.post('/oauth/token', {
    config: { rateLimit: {} },
    schema: {
      tags: ['oauth'],
      summary: 'Token endpoint (RFC 6749)',
      description: '`grant_type=password` (`username`, `password`) or `grant_type=refresh_token` (`refresh_token`), as a form or JSON. The refresh token comes back in the body and is spent by its next use; a replayed one is `invalid_grant` and revokes its whole session. Bad credentials are `400 invalid_grant`. `Cache-Control: no-store`.',
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      body: Type.Object({
        grant_type: Type.String({ maxLength: 64 }),
        username: Type.Optional(Type.String({ maxLength: 320 })),
        password: Type.Optional(Type.String({ maxLength: 1024 })),
        refresh_token: Type.Optional(Type.String({ maxLength: 512 })),
        scope: Type.Optional(Type.String({ maxLength: 1024 }))
      }),
      response: {
        200: Type.Object({
          access_token: Type.String(),
          token_type: Type.Literal('Bearer'),
          expires_in: Type.Integer(),
          refresh_token: Type.String()
        }, { description: 'Tokens' }),
        ...oauthErrorReplies(...BODY_ERRORS, 429, 503)
      }
    }
  }, async (request, reply) => {
    const body = request.body
    if (body.grant_type === 'password') {
      if (!body.username || !body.password) throw new OAuthError(400, 'invalid_request', 'username and password are required')
      const user = await app.login(request, body.username, body.password)
      const session = await app.sessions.start(user.userId, 'oauth', meta(request))
      return { ...(await app.issueAccessToken(reply, user.userId, user.roles)), refresh_token: session.refreshToken }
    }
    if (body.grant_type === 'refresh_token') {
      if (!body.refresh_token) throw new OAuthError(400, 'invalid_request', 'refresh_token is required')
      const result = await app.sessions.rotate(body.refresh_token, 'oauth', 0, meta(request))
      if (!result.ok) throw new OAuthError(400, 'invalid_grant', 'the refresh token is invalid, expired or revoked')
      return { ...(await app.issueAccessToken(reply, result.userId, result.roles)), refresh_token: result.refreshToken }
    }
    throw new OAuthError(400, 'unsupported_grant_type', 'grant_type must be password or refresh_token')
  })

  app.post('/oauth/revoke', {
    config: { rateLimit: {} },
    schema: {
      tags: ['oauth'],
      summary: 'Revocation endpoint (RFC 7009)',
      description: 'A refresh token revokes its whole session; an access token is refused until it expires. `200` for unknown tokens too, as RFC 7009 asks.',
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      body: Type.Object({
        token: Type.String({ maxLength: 4096 }),
        token_type_hint: Type.Optional(Type.String({ maxLength: 64 }))
      }),
      response: { 200: Type.Object({}, { description: 'Revoked, or nothing to revoke' }), ...oauthErrorReplies(...BODY_ERRORS, 429, 503) }
    }
  }, async (request, reply) => {
    const { token } = request.body
    reply.header('cache-control', 'no-store')
    const family = await app.sessions.familyOf(token)
    if (family) {
      await app.sessions.revokeFamily(family.familyId, 'revoked', { ...meta(request), auditAs: 'session.revoked' })
      return {}
    }
    // An access token of ours: refuse its jti until it expires. Anything else: RFC 7009
    // says answer 200 all the same.
    const user = await app.verifyAccessToken(token)
    if (user) await denyAccessToken(app.db, user.claims)
    return {}
  })
}

export default oauth
