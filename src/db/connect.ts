import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Database } from './schema.js'
import { openEmbedded } from './embedded.js'

export interface DatabaseHandle {
  db: Kysely<Database>
  pool: pg.Pool
  mode: 'embedded' | 'postgres'
  close(): Promise<void>
}

export interface ConnectOptions {
  databaseUrl: string | undefined
  dataDir: string
  poolSize?: number
  log?: (msg: string) => void
}

// One code path for both modes: kysely's PostgresDialect over a pg.Pool. Only where the pool
// points differs: a real server, or the embedded server's unix socket in DATA_DIR.
export async function connect(opts: ConnectOptions): Promise<DatabaseHandle> {
  const log = opts.log ?? (() => {})
  const embedded = opts.databaseUrl ? undefined : await openEmbedded(opts.dataDir, log)
  const pool = new pg.Pool({
    ...(embedded
      ? { host: embedded.socketDir, user: 'postgres', database: 'postgres' }
      : { connectionString: opts.databaseUrl }),
    max: opts.poolSize ?? 10,
    // Fail fast when the database is away, so callers answer 503 instead of hanging.
    connectionTimeoutMillis: 3000,
    idleTimeoutMillis: 30_000
  })
  // A client losing its connection must not crash the process; the next query retries. The
  // pool reports idle clients; a checked-out client's query fails with the error, but pg
  // also emits it on the client, where nobody else listens: an unhandled 'error' event.
  pool.on('error', (err) => log(`database pool error: ${err.message}`))
  pool.on('connect', (client) => client.on('error', () => {}))
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  return {
    db,
    pool,
    mode: embedded ? 'embedded' : 'postgres',
    async close() {
      await db.destroy()
      await embedded?.close()
    }
  }
}
