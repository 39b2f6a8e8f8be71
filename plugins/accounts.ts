import fp from 'fastify-plugin'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errors } from '../src/errors.js'
import { checkEmail, createUser, findUserById, normalizeEmail, rolesOf, setPasswordHash } from '../src/accounts.js'
import { ThrottledError } from '../src/login.js'
import { checkPasswordPolicy } from '../src/passwords.js'
import { audit } from '../src/audit.js'
import { BEARER_AUTH, BODY_ERRORS, Credentials, NoContent, errorReplies, errorReply } from './schemas.js'
import { checkOrigin, refreshCookie } from './refresh-cookie.js'

export interface AccountsOptions {
  allowedOrigins: ReadonlySet<string>
}

const plugin: FastifyPluginAsyncTypebox<AccountsOptions> = async (app, opts) => {
  const meta = (request: { ip: string; headers: Record<string, unknown> }) =>
    ({ ip: request.ip, userAgent: request.headers['user-agent'] as string | undefined })

  app.post('/auth/register', {
    config: { rateLimit: {} },
    schema: {
      tags: ['accounts'],
      summary: 'Create an account',
      description: 'Creates a user with role `user`. The password must be 8–256 characters after NFKC and not a common password; a `400` says which rule failed. Returns no tokens: log in next.',
      body: Credentials,
      response: {
        201: Type.Object({ id: Type.String(), email: Type.String() }, { description: 'Created' }),
        ...errorReplies(...BODY_ERRORS, 429, 503),
        409: errorReply('Email is already registered')
      }
    }
  }, async (request, reply) => {
    const email = checkEmail(request.body.email)
    const password = checkPasswordPolicy(request.body.password)
    const user = await createUser(app.db, email, await app.passwords.hash(password), meta(request))
    return reply.code(201).send(user)
  })

  app.get('/auth/me', {
    onRequest: app.authenticate,
    schema: {
      tags: ['accounts'],
      summary: 'The signed-in user',
      description: 'The user the Bearer access token was issued to, with roles as the database has them now.',
      security: BEARER_AUTH,
      response: {
        200: Type.Object({ id: Type.String(), email: Type.String(), roles: Type.Array(Type.String()) }, { description: 'The user' }),
        ...errorReplies(401, 503)
      }
    }
  }, async (request) => {
    const user = await findUserById(app.db, request.user!.id)
    if (!user || user.disabled) throw new errors.Unauthorized()
    return { id: user.id, email: user.email, roles: await rolesOf(app.db, user.id) }
  })

  app.post('/auth/password', {
    onRequest: app.authenticate,
    config: { rateLimit: {} },
    schema: {
      tags: ['accounts'],
      summary: 'Change the password',
      description: 'Needs the current password (wrong guesses are throttled like failed logins). Every other session of the user is revoked; the one whose refresh cookie comes with the request survives.',
      security: BEARER_AUTH,
      body: Type.Object({
        current_password: Type.String({ minLength: 1, maxLength: 1024 }),
        new_password: Type.String({ minLength: 1, maxLength: 1024 })
      }),
      response: {
        204: NoContent('Changed'),
        ...errorReplies(...BODY_ERRORS, 401, 403, 429, 503)
      }
    }
  }, async (request, reply) => {
    checkOrigin(request, opts.allowedOrigins)
    const user = await findUserById(app.db, request.user!.id)
    if (!user || user.disabled) throw new errors.Unauthorized()
    // Guesses at the current password count, and are throttled, as failed logins are: a
    // stolen access token must not become an unthrottled password oracle.
    const throttleKey = normalizeEmail(user.email).toLowerCase()
    await app.loginThrottle.admit(throttleKey, request.ip, async () => {
      const wait = await app.loginThrottle.retryAfter(throttleKey, request.ip)
      if (wait > 0) {
        reply.header('retry-after', String(wait))
        throw new ThrottledError(wait)
      }
      if (!(await app.passwords.verify(user.password_hash, request.body.current_password))) {
        await app.loginThrottle.failure(throttleKey, request.ip)
        throw new errors.InvalidCredentials()
      }
    })
    const password = checkPasswordPolicy(request.body.new_password)
    await setPasswordHash(app.db, user.id, await app.passwords.hash(password), true)
    // The session doing the change survives (when we can tell which it is); all others end.
    const current = refreshCookie(request)
    const family = current ? await app.sessions.familyOf(current) : undefined
    const keep = family?.userId === user.id ? family.familyId : undefined
    const revoked = await app.sessions.revokeAllForUser(user.id, 'password_changed', keep)
    await audit(app.db, { type: 'password.changed', userId: user.id, ...meta(request), details: { sessions_revoked: revoked } })
    return reply.code(204).send(null)
  })
}

export default fp(plugin, {
  name: 'keysmith-accounts',
  fastify: '5.x',
  dependencies: ['keysmith-auth-core', 'keysmith-local-auth']
})
