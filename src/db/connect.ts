import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Database } from './schema.js'
import { openEmbedded } from './embedded.js'

export interface DatabaseHandle {
  db: Kysely<Database>
  pool: pg.Pool
  mode: 'embedded' | 'postgres'
  // From now on, fail a query the server has not answered within `ms` (0: wait forever).
  // Real PostgreSQL only: a frozen or unreachable server then costs a request seconds, not
  // a hang. The embedded database lives in this process and cannot go away.
  setQueryTimeout(ms: number): void
  // Real PostgreSQL only (undefined when embedded): a small pool of its own for one hot
  // statement, whose connections start with `settings` (server parameters). One per name,
  // closed with the handle.
  lane(name: string, opts: { max: number; settings: Record<string, string> }): pg.Pool | undefined
  close(): Promise<void>
}

export interface ConnectOptions {
  databaseUrl: string | undefined
  dataDir: string
  poolSize?: number
  log?: (msg: string) => void
  // Embedded only: how often the owner vacuums and analyses (default MAINTENANCE_INTERVAL_MS).
  maintenanceIntervalMs?: number
}

// One code path for both modes: kysely's PostgresDialect over a pg.Pool. Only where the pool
// points differs: a real server, or the embedded server's unix socket in DATA_DIR.
export async function connect(opts: ConnectOptions): Promise<DatabaseHandle> {
  const log = opts.log ?? (() => {})
  const embedded = opts.databaseUrl ? undefined : await openEmbedded(opts.dataDir, log, opts.maintenanceIntervalMs)
  const limit = { ms: 0 }
  const newPool = (max: number, settings: Record<string, string> = {}) => {
    const pool = new pg.Pool({
      Client: embedded ? pg.Client : boundedClient(limit),
      ...(embedded
        ? { host: embedded.socketDir, user: 'postgres', database: 'postgres' }
        : { connectionString: withSettings(opts.databaseUrl!, settings) }),
      max,
      // Fail fast when the database is away, so callers answer 503 instead of hanging.
      connectionTimeoutMillis: 3000,
      idleTimeoutMillis: 30_000
    })
    // A client losing its connection must not crash the process; the next query retries. The
    // pool reports idle clients; a checked-out client's query fails with the error, but pg
    // also emits it on the client, where nobody else listens: an unhandled 'error' event.
    pool.on('error', (err) => log(`database pool error: ${err.message}`))
    pool.on('connect', (client) => client.on('error', () => {}))
    return pool
  }
  const pool = newPool(opts.poolSize ?? 10)
  const lanes = new Map<string, pg.Pool>()
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  return {
    db,
    pool,
    mode: embedded ? 'embedded' : 'postgres',
    setQueryTimeout(ms) {
      limit.ms = ms
    },
    lane(name, { max, settings }) {
      if (embedded) return undefined
      let lane = lanes.get(name)
      if (!lane) lanes.set(name, lane = newPool(max, settings))
      return lane
    },
    async close() {
      await Promise.all([...lanes.values()].map((lane) => lane.end()))
      await db.destroy()
      await embedded?.close()
    }
  }
}

// Server parameters for every connection, as the startup packet's `options` (no extra round
// trip), added to any the URL already sets. pg lets the URL's `options` win over its config's.
function withSettings(databaseUrl: string, settings: Record<string, string>): string {
  const entries = Object.entries(settings)
  if (entries.length === 0) return databaseUrl
  const url = new URL(databaseUrl)
  const own = entries.map(([k, v]) => `-c ${k}=${v}`).join(' ')
  url.searchParams.set('options', [url.searchParams.get('options'), own].filter(Boolean).join(' '))
  return url.toString()
}

// A client that gives each query the handle's current time limit (pg lets a query's own
// query_timeout override the connection's). A connection whose query timed out is ended
// rather than pooled again: stuck behind the unanswered query, it would cost the next
// request the whole timeout as well.
function boundedClient(limit: { ms: number }): typeof pg.Client {
  return class BoundedClient extends pg.Client {
    override query(...args: any[]): any {
      const [config, ...rest] = args
      const own = typeof config === 'object' && config !== null && (typeof config.submit === 'function' || config.query_timeout)
      if (!limit.ms || own) return Reflect.apply(super.query, this, args)
      const bounded = typeof config === 'string' ? { text: config, query_timeout: limit.ms } : { ...config, query_timeout: limit.ms }
      const result = Reflect.apply(super.query, this, [bounded, ...rest])
      if (result instanceof Promise) {
        result.catch((err: Error) => { if (err.message === 'Query read timeout') void this.end().catch(() => {}) })
      }
      return result
    }
  }
}
