import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sql } from 'kysely'
import { errors } from '../src/errors.js'
import { audit } from '../src/audit.js'
import { ROLE, grantRoleIn, revokeRoleIn, rolesOf } from '../src/accounts.js'
import { listKeys, rotateKeys } from '../src/signing/key-store.js'
import { BEARER_AUTH, BODY_ERRORS, Uuid, errorReplies } from './schemas.js'

const User = Type.Object({
  id: Type.String(),
  email: Type.String(),
  disabled: Type.Boolean(),
  roles: Type.Array(Type.String()),
  created_at: Type.String()
}, { description: 'The user' })

const AUDIT_TYPES = [
  'user.registered', 'login.success', 'login.failure', 'login.throttled', 'refresh.rotated',
  'refresh.reuse_detected', 'logout', 'session.revoked', 'password.changed', 'role.granted',
  'role.revoked', 'user.disabled', 'user.enabled', 'key.rotated', 'key.revoked'
]

// Every route here is admin-only and audited; the role check runs in onRequest, before
// the body is even parsed.
const plugin: FastifyPluginAsyncTypebox = async (app) => {
  // The token says admin; the database must still agree. Tokens live up to an hour, and a
  // disabled or demoted admin must lose this API at once, not when the token expires.
  const stillAdmin = async (request: FastifyRequest) => {
    const row = await app.db.selectFrom('users')
      .select((eb) => ['disabled', eb.exists(eb.selectFrom('user_roles').select('role')
        .whereRef('user_roles.user_id', '=', 'users.id').where('role', '=', 'admin')).as('admin')])
      .where('id', '=', request.user!.id).executeTakeFirst()
    if (!row || row.disabled) throw new errors.Unauthorized()
    if (!row.admin) throw new errors.Forbidden()
  }
  const admin = [app.requireRole('admin'), stillAdmin]
  const actor = (request: { ip: string; headers: Record<string, unknown>; user: { id: string } | null }) =>
    ({ actorId: request.user!.id, ip: request.ip, userAgent: request.headers['user-agent'] as string | undefined })
  const toUser = async (u: { id: string; email: string; disabled: boolean; created_at: Date }) =>
    ({ id: u.id, email: u.email, disabled: u.disabled, created_at: u.created_at.toISOString(), roles: await rolesOf(app.db, u.id) })
  const loadUser = async (id: string) => {
    const u = await app.db.selectFrom('users').select(['id', 'email', 'disabled', 'created_at']).where('id', '=', id).executeTakeFirst()
    if (!u) throw new errors.NotFound()
    return u
  }
  const UserParams = Type.Object({ id: Uuid })
  // Every admin answer can be one of these; a user route adds 404, a body route BODY_ERRORS.
  const doc = (summary: string, description: string) =>
    ({ tags: ['admin'], summary, description, security: BEARER_AUTH })
  const ADMIN_ERRORS = [401, 403, 503]

  app.get('/admin/users', {
    onRequest: admin,
    schema: {
      ...doc('List users', 'Ordered by id, `limit` per page; pass the previous page\'s `next_cursor` as `cursor` for the next one. `email` filters by substring, case-insensitively.'),
      querystring: Type.Object({
        limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
        // Keyset pagination: the id of the last user of the previous page.
        cursor: Type.Optional(Uuid),
        // No control characters: a NUL is an error in PostgreSQL, not a miss.
        email: Type.Optional(Type.String({ maxLength: 320, pattern: '^[^\\u0000-\\u001f]*$' }))
      }),
      response: {
        200: Type.Object({ users: Type.Array(User), next_cursor: Type.Union([Type.String(), Type.Null()]) }, { description: 'A page of users' }),
        ...errorReplies(400, ...ADMIN_ERRORS)
      }
    }
  }, async (request) => {
    const { limit, cursor, email } = request.query
    const rows = await app.db.selectFrom('users').select(['id', 'email', 'disabled', 'created_at'])
      .$if(cursor !== undefined, (q) => q.where('id', '>', cursor!))
      .$if(email !== undefined, (q) => q.where(sql<boolean>`lower(email) like ${'%' + email!.toLowerCase().replace(/[\\%_]/g, '\\$&') + '%'}`))
      .orderBy('id').limit(limit + 1).execute()
    const page = rows.slice(0, limit)
    return { users: await Promise.all(page.map(toUser)), next_cursor: rows.length > limit ? page.at(-1)!.id : null }
  })

  app.get('/admin/users/:id', {
    onRequest: admin,
    schema: {
      ...doc('Get a user', 'One user with roles and state.'),
      params: UserParams,
      response: { 200: User, ...errorReplies(400, 404, ...ADMIN_ERRORS) }
    }
  }, async (request) => toUser(await loadUser(request.params.id)))

  app.put('/admin/users/:id/roles', {
    onRequest: admin,
    schema: {
      ...doc('Set a user\'s roles', 'Replaces the user\'s roles with the list (`user` is always kept), all or nothing; each grant and revocation is audited. Takes effect in tokens issued from now on. `409` if it would take the admin role from the last enabled admin.'),
      params: UserParams,
      body: Type.Object({ roles: Type.Array(Type.String({ pattern: ROLE.source }), { maxItems: 50, uniqueItems: true }) }),
      response: { 200: User, ...errorReplies(...BODY_ERRORS, 404, 409, ...ADMIN_ERRORS) }
    }
  }, async (request) => {
    const user = await loadUser(request.params.id)
    // Everyone keeps the default role; the list sets the others.
    const wanted = new Set([...request.body.roles, 'user'])
    await app.db.transaction().execute(async (trx) => {
      // One role change at a time: two admins demoting each other at once must not both
      // see the other as the admin who remains.
      await sql`select pg_advisory_xact_lock(hashtext('keysmith:user_roles'))`.execute(trx)
      const current = new Set(await rolesOf(trx, user.id))
      if (current.has('admin') && !wanted.has('admin')) {
        const others = await trx.selectFrom('user_roles').innerJoin('users', 'users.id', 'user_roles.user_id')
          .select('users.id').where('role', '=', 'admin').where('users.id', '!=', user.id).where('users.disabled', '=', false)
          .limit(1).executeTakeFirst()
        if (!others) throw new errors.LastAdmin()
      }
      for (const role of wanted) if (!current.has(role)) await grantRoleIn(trx, user.id, role, actor(request))
      for (const role of current) if (!wanted.has(role)) await revokeRoleIn(trx, user.id, role, actor(request))
    })
    return toUser(user)
  })

  for (const action of ['disable', 'enable'] as const) {
    app.post(`/admin/users/:id/${action}`, {
      onRequest: admin,
      schema: {
        ...(action === 'disable'
          ? doc('Disable a user', 'The user can no longer log in, and every session of theirs is revoked.')
          : doc('Enable a user', 'Lets a disabled user log in again.')),
        params: UserParams,
        response: { 200: User, ...errorReplies(...BODY_ERRORS, 404, ...ADMIN_ERRORS) }
      }
    }, async (request) => {
      const user = await loadUser(request.params.id)
      await app.db.transaction().execute(async (trx) => {
        await trx.updateTable('users').set({ disabled: action === 'disable', updated_at: sql`now()` }).where('id', '=', user.id).execute()
        await audit(trx, { type: action === 'disable' ? 'user.disabled' : 'user.enabled', userId: user.id, ...actor(request) })
      })
      // A disabled account's sessions end with it.
      if (action === 'disable') await app.sessions.revokeAllForUser(user.id, 'user_disabled')
      return toUser({ ...user, disabled: action === 'disable' })
    })
  }

  app.post('/admin/users/:id/revoke-sessions', {
    onRequest: admin,
    schema: {
      ...doc('Revoke a user\'s sessions', 'Every refresh token of the user stops working; access tokens already issued live until they expire.'),
      params: UserParams,
      response: { 200: Type.Object({ revoked: Type.Integer() }, { description: 'How many sessions were revoked' }), ...errorReplies(...BODY_ERRORS, 404, ...ADMIN_ERRORS) }
    }
  }, async (request) => {
    const user = await loadUser(request.params.id)
    const revoked = await app.sessions.revokeAllForUser(user.id, 'admin_revoked')
    await audit(app.db, { type: 'session.revoked', userId: user.id, ...actor(request), details: { count: revoked, by: 'admin' } })
    return { revoked }
  })

  const Key = Type.Object({
    kid: Type.String(),
    state: Type.String(),
    created_at: Type.String(),
    activated_at: Type.Union([Type.String(), Type.Null()]),
    retired_at: Type.Union([Type.String(), Type.Null()]),
    revoked_at: Type.Union([Type.String(), Type.Null()])
  })
  const iso = (d: Date | null) => d?.toISOString() ?? null

  app.get('/admin/keys', {
    onRequest: admin,
    schema: {
      ...doc('List signing keys', 'Every key with its state (`next`, `active`, `retired`, `revoked`) and dates; never private material.'),
      response: { 200: Type.Object({ keys: Type.Array(Key) }, { description: 'Signing keys' }), ...errorReplies(...ADMIN_ERRORS) }
    }
  }, async () => ({
    keys: (await listKeys(app.db)).map((k) => ({
      kid: k.kid, state: k.state, created_at: k.created_at.toISOString(),
      activated_at: iso(k.activated_at), retired_at: iso(k.retired_at), revoked_at: iso(k.revoked_at)
    }))
  }))

  app.post('/admin/keys/rotate', {
    onRequest: admin,
    schema: {
      ...doc('Rotate signing keys', '`next` becomes `active`, `active` becomes `retired`, and a new `next` is created, in one transaction. Returns the new active kid.'),
      response: { 200: Type.Object({ kid: Type.String() }, { description: 'The new active kid' }), ...errorReplies(...BODY_ERRORS, ...ADMIN_ERRORS) }
    }
  }, async (request) => {
    const kid = await rotateKeys(app.db, app.keyStore, actor(request))
    await app.keyring.refresh(true)
    return { kid }
  })

  const AuditEvent = Type.Object({
    id: Type.String(),
    type: Type.String(),
    user_id: Type.Union([Type.String(), Type.Null()]),
    actor_id: Type.Union([Type.String(), Type.Null()]),
    ip: Type.Union([Type.String(), Type.Null()]),
    user_agent: Type.Union([Type.String(), Type.Null()]),
    details: Type.Record(Type.String(), Type.Unknown()),
    created_at: Type.String()
  })

  app.get('/admin/audit', {
    onRequest: admin,
    schema: {
      ...doc('Audit events', 'Newest first, optionally filtered by `type` and `user_id`; pass the last `id` of a page as `before` for the next one.'),
      querystring: Type.Object({
        type: Type.Optional(Type.Enum(AUDIT_TYPES)),
        user_id: Type.Optional(Uuid),
        limit: Type.Integer({ minimum: 1, maximum: 500, default: 100 }),
        // Events older than this id (the last id of the previous page).
        before: Type.Optional(Type.String({ pattern: '^[0-9]{1,18}$' }))
      }),
      response: { 200: Type.Object({ events: Type.Array(AuditEvent) }, { description: 'Audit events' }), ...errorReplies(400, ...ADMIN_ERRORS) }
    }
  }, async (request) => {
    const { type, user_id: userId, limit, before } = request.query
    const rows = await app.db.selectFrom('audit_events').selectAll()
      .$if(type !== undefined, (q) => q.where('type', '=', type!))
      .$if(userId !== undefined, (q) => q.where('user_id', '=', userId!))
      .$if(before !== undefined, (q) => q.where('id', '<', before!))
      .orderBy('id', 'desc').limit(limit).execute()
    return { events: rows.map((r) => ({ ...r, id: String(r.id), created_at: r.created_at.toISOString() })) }
  })
}

export default fp(plugin, {
  name: 'keysmith-admin',
  fastify: '5.x',
  dependencies: ['keysmith-auth-core', 'keysmith-local-auth']
})
