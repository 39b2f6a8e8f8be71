import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { sql } from 'kysely'
import { Type } from 'typebox'

const Readiness = (description: string) => Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
  database: Type.Boolean(),
  signing_key: Type.Boolean()
}, { description })

const plugin: FastifyPluginAsync = async (app) => {
  app.get('/health', {
    schema: {
      tags: ['health'],
      summary: 'Liveness',
      description: 'Answers while the process serves requests; checks nothing else.',
      response: { 200: Type.Object({ status: Type.Literal('ok') }, { description: 'Alive' }) }
    }
  }, async () => ({ status: 'ok' }))

  app.get('/ready', {
    schema: {
      tags: ['health'],
      summary: 'Readiness',
      description: 'Ready when the database answers (within 2 s) and a signing key is loaded; `503` otherwise, with the same body saying which is missing.',
      response: { 200: Readiness('Ready'), 503: Readiness('Not ready') }
    }
  }, async (_request, reply) => {
    const database = await Promise.race([
      sql`select 1`.execute(app.db).then(() => true, () => false),
      new Promise<boolean>((resolve) => setTimeout(resolve, 2000, false).unref())
    ])
    const signingKey = app.keyring.active !== undefined
    const ok = database && signingKey
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'unavailable', database, signing_key: signingKey })
  })
}

export default fp(plugin, { name: 'keysmith-health', fastify: '5.x', dependencies: ['keysmith-keys'] })
