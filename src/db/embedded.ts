import { mkdir, open, readFile, rm } from 'node:fs/promises'
import { resolve, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'

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

export async function openEmbedded(dataDir: string, log: (msg: string) => void): Promise<EmbeddedHandle> {
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
    const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket')
    const started = Date.now()
    const db = await PGlite.create(join(dir, 'pgdata'))
    await rm(join(dir, SOCKET_NAME), { force: true })
    // More than one connection: a pg.Pool needs it, and the socket server keeps a
    // transaction's statements together per connection.
    const server = new PGLiteSocketServer({ db, path: join(dir, SOCKET_NAME), maxConnections: 32 })
    await server.start()
    log(`embedded PostgreSQL ready in ${Date.now() - started} ms (${dir})`)
    return {
      socketDir: dir,
      owner: true,
      async close() {
        await server.stop()
        await db.close()
        await rm(join(dir, SOCKET_NAME), { force: true })
        await rm(lockPath, { force: true })
      }
    }
  } catch (err) {
    await rm(lockPath, { force: true })
    throw err
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
  try {
    const fh = await open(lockPath, 'wx', 0o600)
    await fh.writeFile(String(process.pid))
    await fh.close()
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
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
