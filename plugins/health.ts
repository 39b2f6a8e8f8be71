import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { sql } from 'kysely'

const plugin: FastifyPluginAsync = async (app) => {
  app.get('/health',
    async () => ({ status: 'ok' }))

  app.get('/ready',
    async (_request, reply) => {
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
