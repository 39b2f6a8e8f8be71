import { mkdir, readFile, rm } from 'node:fs/promises'
import { resolve, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { createExclusive } from '../exclusive-file.js'
import { serveEmbedded } from './embedded-server.js'

// The embedded database is PGlite, which lives inside one process. The process that opens
// it also serves it over the PostgreSQL wire protocol on a unix socket inside DATA_DIR, so
// that admin scripts (and psql) reach the same database while the server runs, through the
// very same `pg` driver and SQL as a real server. A unix socket, not TCP: only local users
// with access to DATA_DIR can connect, and no port can clash.
export interface EmbeddedHandle {
  socketDir: string
  owner: boolean
  close(): Promise<void>
}

const SOCKET_NAME = '.s.PGSQL.5432'
// PGlite runs no autovacuum, so the process that owns the database vacuums and analyses it
// itself. Without that the planner keeps the statistics of a young database for good (each
// new session's foreign-key check then reads the whole sessions table, say) and dead row
// versions are never reclaimed. Every 10 minutes; on a large database a pass holds the one session
// for a second or so.
export const MAINTENANCE_INTERVAL_MS = 10 * 60_000
// Lock files this process holds or is taking, so that two opens in one process wait for
// each other instead of both opening the same data directory.
const held = new Set<string>()

export async function openEmbedded(dataDir: string, log: (msg: string) => void,
  maintenanceIntervalMs = MAINTENANCE_INTERVAL_MS): Promise<EmbeddedHandle> {
  const dir = resolve(dataDir)
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const lockPath = join(dir, 'embedded.lock')
  const deadline = Date.now() + 60_000
  for (;;) {
    if (await answers(dir)) return { socketDir: dir, owner: false, close: async () => {} }
    if (await takeLock(lockPath)) break
    // Someone else owns (or is opening) the database: wait for its socket.
    if (Date.now() > deadline) throw new Error(`embedded database in ${dir} is locked by another process`)
    await sleep(200)
  }
  try {
    const { PGlite } = await import('@electric-sql/pglite')
    const started = Date.now()
    const db = await PGlite.create(join(dir, 'pgdata'))
    await rm(join(dir, SOCKET_NAME), { force: true })
    const server = await serveEmbedded(db, join(dir, SOCKET_NAME))
    log(`embedded PostgreSQL ready in ${Date.now() - started} ms (${dir})`)
    let maintaining: Promise<void> | undefined
    const timer = setInterval(() => {
      maintaining ??= maintain(dir, log).finally(() => { maintaining = undefined })
    }, maintenanceIntervalMs).unref()
    return {
      socketDir: dir,
      owner: true,
      async close() {
        clearInterval(timer)
        await maintaining
        await server.close()
        await db.close()
        await rm(join(dir, SOCKET_NAME), { force: true })
        await rm(lockPath, { force: true })
        held.delete(lockPath)
      }
    }
  } catch (err) {
    await rm(lockPath, { force: true })
    held.delete(lockPath)
    throw err
  }
}

// Through the socket, like any client: it takes its turn, never inside another connection's
// transaction.
async function maintain(socketDir: string, log: (msg: string) => void): Promise<void> {
  const client = new pg.Client({ host: socketDir, user: 'postgres', database: 'postgres' })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('vacuum (analyze)')
  } catch (err) {
    log(`embedded database maintenance failed: ${(err as Error).message}`)
  } finally {
    await client.end().catch(() => {})
  }
}

async function answers(socketDir: string): Promise<boolean> {
  const client = new pg.Client({ host: socketDir, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('select 1')
    return true
  } catch {
    return false
  } finally {
    await client.end().catch(() => {})
  }
}

async function takeLock(lockPath: string): Promise<boolean> {
  // Another open in this process holds the lock or is taking it: wait for its socket.
  if (held.has(lockPath)) return false
  held.add(lockPath)
  let taken = false
  try {
    taken = await createExclusive(lockPath, String(process.pid), 0o600)
  } finally {
    if (!taken) held.delete(lockPath)
  }
  if (taken) return true
  // Our own pid here is stale too (no open in this process holds it): containers reuse pids.
  const pid = Number(await readFile(lockPath, 'utf8').catch(() => ''))
  if (pid && pid !== process.pid && isAlive(pid)) return false
  // The owner died without cleaning up: take over its stale lock.
  await rm(lockPath, { force: true })
  return false
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
