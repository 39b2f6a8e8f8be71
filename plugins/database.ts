import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import type { Database } from '../src/db/schema.js'
import { connect, type DatabaseHandle } from '../src/db/connect.js'
import { migrateToLatest } from '../src/db/migrate.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
    database: DatabaseHandle
  }
}

// The pool's connection timeout (src/db/connect.ts) again: whether the database refuses
// connections, freezes or drops off the network, a request waits about this long for it.
const QUERY_TIMEOUT_MS = 3000

export interface DatabaseOptions {
  databaseUrl: string | undefined
  dataDir: string
  // Tests hand in a shared handle; the plugin then leaves closing it to them.
  handle?: DatabaseHandle
}

const plugin: FastifyPluginAsync<DatabaseOptions> = async (app, opts) => {
  const handle = opts.handle ?? await connect({
    databaseUrl: opts.databaseUrl,
    dataDir: opts.dataDir,
    log: (msg) => app.log.info(msg)
  })
  try {
    const applied = await migrateToLatest(handle.db)
    for (const m of applied) app.log.info({ migration: m.migrationName, status: m.status }, 'migration')
  } catch (err) {
    if (!opts.handle) await handle.close()
    throw err
  }
  app.decorate('db', handle.db)
  app.decorate('database', handle)
  if (opts.handle) return
  // Bounded once serving (a stopped database already fails fast, a frozen one would hang
  // requests); not before: migrations and key creation may wait on another instance's lock.
  app.addHook('onReady', async () => handle.setQueryTimeout(QUERY_TIMEOUT_MS))
  app.addHook('onClose', async () => handle.close())
}

export default fp(plugin, { name: 'keysmith-database', fastify: '5.x' })
