import fp from 'fastify-plugin'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errors } from '../src/errors.js'
import { audit } from '../src/audit.js'
import { ThrottledError } from '../src/login.js'
import { denyAccessToken } from '../src/sessions/deny-list.js'
import { BEARER_AUTH, BODY_ERRORS, COOKIE_AUTH, Credentials, NoContent, TokenReply, Uuid, errorReplies, errorReply } from './schemas.js'
import { checkOrigin, clearRefreshCookie, refreshCookie, setRefreshCookie } from './refresh-cookie.js'

export interface SessionsOptions {
  allowedOrigins: ReadonlySet<string>
  reuseGraceSeconds: number
  now?: () => number
}

// The browser surface: the refresh token lives in an HttpOnly cookie scoped to /auth.
const plugin: FastifyPluginAsyncTypebox<SessionsOptions> = async (app, opts) => {
  const now = opts.now ?? Date.now
  const meta = (request: { ip: string; headers: Record<string, unknown> }) =>
    ({ ip: request.ip, userAgent: request.headers['user-agent'] as string | undefined })

  app.post('/auth/login', {
    config: { rateLimit: {} },
    schema: {
      tags: ['sessions'],
      summary: 'Log in (browser)',
      description: 'Checks the password and starts a session: an access token in the body, the refresh token in the `keysmith_refresh` cookie (`HttpOnly; Secure; SameSite=Strict; Path=/auth`). `401` for any bad credential; `403` for a disabled account (only after the right password) or a foreign `Origin`; failed logins are throttled (`429` with `Retry-After`).',
      body: Credentials,
      response: { 200: TokenReply, ...errorReplies(...BODY_ERRORS, 401, 403, 429, 503) }
    }
  }, async (request, reply) => {
    checkOrigin(request, opts.allowedOrigins)
    let user
    try {
      user = await app.login(request, request.body.email, request.body.password)
    } catch (err) {
      if (err instanceof ThrottledError) reply.header('retry-after', String(err.retryAfter))
      throw err
    }
    const session = await app.sessions.start(user.userId, 'browser', meta(request))
    setRefreshCookie(reply, session.refreshToken, session.expiresAt, now())
    return app.issueAccessToken(reply, user.userId, user.roles)
  })

  app.post('/auth/refresh', {
    config: { rateLimit: {} },
    schema: {
      tags: ['sessions'],
      summary: 'Refresh (browser)',
      description: 'Spends the refresh cookie and sets its successor, with a new access token. A cookie that was already spent revokes its whole session (`401`), except within `REFRESH_REUSE_GRACE` seconds of its rotation (two tabs): `409` with `Retry-After: 0`, and the retry carries the new cookie.',
      security: COOKIE_AUTH,
      response: {
        200: TokenReply,
        ...errorReplies(...BODY_ERRORS, 401, 403, 429, 503),
        409: errorReply('Just rotated by another request; retry (Retry-After: 0) with the cookie it set')
      }
    }
  }, async (request, reply) => {
    checkOrigin(request, opts.allowedOrigins)
    const token = refreshCookie(request)
    if (!token) throw new errors.InvalidRefresh()
    const result = await app.sessions.rotate(token, 'browser', opts.reuseGraceSeconds, meta(request))
    if (!result.ok) {
      if (result.reason === 'race') {
        // Another tab just rotated this cookie; the jar already holds the new one.
        reply.header('retry-after', '0')
        throw new errors.RefreshRace()
      }
      clearRefreshCookie(reply)
      throw new errors.InvalidRefresh()
    }
    setRefreshCookie(reply, result.refreshToken, result.expiresAt, now())
    return app.issueAccessToken(reply, result.userId, result.roles)
  })

  app.post('/auth/logout', {
    schema: {
      tags: ['sessions'],
      summary: 'Log out',
      description: 'Revokes the session of the refresh cookie, clears the cookie and, when a Bearer access token comes along, refuses that token until it expires. Succeeds with neither.',
      security: [...COOKIE_AUTH, ...BEARER_AUTH, {}],
      response: { 204: NoContent('Logged out'), ...errorReplies(...BODY_ERRORS, 403, 503) }
    }
  }, async (request, reply) => {
    checkOrigin(request, opts.allowedOrigins)
    const token = refreshCookie(request)
    const family = token ? await app.sessions.familyOf(token) : undefined
    if (family) await app.sessions.revokeFamily(family.familyId, 'logout', { ...meta(request), auditAs: 'logout' })
    // A presented access token is refused by our own endpoints until it expires. Logout
    // works even when that token is already invalid: there is then nothing to refuse.
    const bearer = /^Bearer +(\S+)$/i.exec(request.headers.authorization ?? '')?.[1]
    const user = bearer ? await app.verifyAccessToken(bearer) : undefined
    if (user) {
      await denyAccessToken(app.db, user.claims, new Date(now()))
      if (!family) await audit(app.db, { type: 'logout', userId: user.id, ...meta(request), details: { jti: user.claims.jti } })
    }
    clearRefreshCookie(reply)
    return reply.code(204).send(null)
  })

  const Session = Type.Object({
    id: Type.String(),
    client: Type.String(),
    created_at: Type.String(),
    last_used_at: Type.String(),
    expires_at: Type.String(),
    ip: Type.Union([Type.String(), Type.Null()]),
    user_agent: Type.Union([Type.String(), Type.Null()]),
    current: Type.Boolean()
  })

  app.get('/auth/sessions', {
    onRequest: app.authenticate,
    schema: {
      tags: ['sessions'],
      summary: 'List my sessions',
      description: 'The caller\'s active sessions (refresh families), browser and OAuth; `current` marks the one whose refresh cookie came with the request.',
      security: BEARER_AUTH,
      response: { 200: Type.Object({ sessions: Type.Array(Session) }, { description: 'Active sessions' }), ...errorReplies(401, 503) }
    }
  }, async (request) => {
    const token = refreshCookie(request)
    const current = token ? (await app.sessions.familyOf(token))?.familyId : undefined
    const rows = await app.sessions.listActive(request.user!.id)
    return {
      sessions: rows.map((r) => ({
        ...r,
        created_at: r.created_at.toISOString(),
        last_used_at: r.last_used_at.toISOString(),
        expires_at: r.expires_at.toISOString(),
        current: r.id === current
      }))
    }
  })

  app.delete('/auth/sessions/:id', {
    onRequest: app.authenticate,
    schema: {
      tags: ['sessions'],
      summary: 'Revoke one of my sessions',
      description: 'Ends the session: its refresh token stops working. Another user\'s session is `404`, like an unknown id.',
      security: BEARER_AUTH,
      params: Type.Object({ id: Uuid }),
      response: { 204: NoContent('Revoked'), ...errorReplies(...BODY_ERRORS, 401, 404, 503) }
    }
  }, async (request, reply) => {
    const revoked = await app.sessions.revokeFamily(request.params.id, 'user_revoked',
      { ...meta(request), userId: request.user!.id, actorId: request.user!.id, auditAs: 'session.revoked' })
    // Someone else's session and an unknown id look the same.
    if (!revoked) throw new errors.NotFound()
    return reply.code(204).send(null)
  })
}

export default fp(plugin, {
  name: 'keysmith-sessions',
  fastify: '5.x',
  dependencies: ['keysmith-auth-core', 'keysmith-local-auth']
})
