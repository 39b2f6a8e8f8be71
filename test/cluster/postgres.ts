// A throwaway PostgreSQL server of the test's own (initdb in a temporary directory, a free
// loopback port, trust auth), so a test may stop, crash or freeze it without disturbing
// anyone else's database.
//
//   const pg = await startPostgres(t)
//   pg.url            postgres://postgres@127.0.0.1:<port>/postgres
//   await pg.stop()   fast shutdown (clients are disconnected, the port closes)
//   await pg.kill()   SIGKILL to the postmaster and every backend: a crash, recovery on start
//   await pg.start()  start again on the same data directory and port
//   await pg.pause()  SIGSTOP everything: connections open but nothing answers (a black hole)
//   await pg.resume()
//
// PostgreSQL refuses to run as root: as root (CI), its commands run as the `postgres` user,
// which owns the directory. Teardown (registered on `t`) stops it and removes the directory.
import { execFile } from 'node:child_process'
import { appendFile, chown, mkdtemp, readFile, rm } from 'node:fs/promises'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { eventually, freePort } from '../support.js'

type Test = { teardown(fn: () => unknown): void }

export interface Postgres {
  url: string
  port: number
  dir: string
  start(): Promise<void>
  stop(): Promise<void>
  kill(): Promise<void>
  pause(): Promise<void>
  resume(): Promise<void>
}

const exec = promisify(execFile)

// The newest installed server (Debian's layout), else whatever is on PATH.
function binDir(): string {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a))
    : []
  return versions[0] ? join(root, versions[0], 'bin') : ''
}

export async function startPostgres(t: Test): Promise<Postgres> {
  const bin = binDir()
  const asRoot = process.getuid?.() === 0
  const dir = await mkdtemp(join(tmpdir(), 'keysmith-pg-'))
  const data = join(dir, 'data')
  const port = await freePort()
  const cmd = async (name: string, args: string[], timeout = 60_000) => {
    const file = bin ? join(bin, name) : name
    const [f, a] = asRoot ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args]
    try {
      return await exec(f, a, { cwd: dir, timeout })
    } catch (err) {
      const e = err as { code?: unknown; stderr?: string; message: string }
      const hint = e.code === 'ENOENT' ? ' (the PostgreSQL server binaries are needed: apt-get install postgresql)' : ''
      const log = (await readFile(join(dir, 'server.log'), 'utf8').catch(() => '')).slice(-1500)
      throw new Error(`${name} failed${hint}: ${e.stderr || e.message}${log && `\nserver log:\n${log}`}`)
    }
  }
  if (asRoot) {
    const id = async (flag: string) => Number((await exec('id', [flag, 'postgres']).catch(() => {
      throw new Error('running as root needs a postgres user (apt-get install postgresql creates it)')
    })).stdout.trim())
    await chown(dir, await id('-u'), await id('-g'))
  }
  let state: 'stopped' | 'running' | 'paused' = 'stopped'
  t.teardown(async () => {
    if (state === 'paused') await signalAll('SIGCONT')
    if (state !== 'stopped') await pg.stop().catch(() => pg.kill())
    process.removeListener('exit', killSync)
    await rm(dir, { recursive: true, force: true })
  })

  // initdb's own final sync only protects against power loss during the test's set-up.
  await cmd('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync', '--no-instructions'])
  await appendFile(join(data, 'postgresql.conf'), [
    '',
    `port = ${port}`,
    `listen_addresses = '127.0.0.1'`,
    `unix_socket_directories = '${dir}'`,
    // Durability is what the crash tests check: keep every safeguard on, explicitly.
    'fsync = on', 'synchronous_commit = on', 'full_page_writes = on',
    'max_connections = 60', 'shared_buffers = 16MB', 'logging_collector = off'
  ].join('\n') + '\n')

  // The postmaster and its children: each child is its own session leader, so no process
  // group holds them all; /proc does.
  const pids = (): number[] => {
    let main: number
    try {
      main = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0])
    } catch {
      return []
    }
    const children = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === main
      } catch {
        return false
      }
    }).map(Number)
    return [main, ...children]
  }
  async function signalAll(signal: NodeJS.Signals) {
    for (const pid of pids()) {
      try { process.kill(pid, signal) } catch { /* already gone */ }
    }
  }
  // If the test process dies before teardown, do not leave a server behind.
  function killSync() {
    for (const pid of pids()) {
      try { process.kill(pid, 'SIGCONT'); process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    }
  }
  process.on('exit', killSync)

  const pg: Postgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    async start() {
      await cmd('pg_ctl', ['start', '-D', data, '-w', '-t', '60', '-l', join(dir, 'server.log')], 90_000)
      state = 'running'
    },
    async stop() {
      await cmd('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w', '-t', '30'])
      state = 'stopped'
    },
    async kill() {
      const all = pids()
      for (const pid of all) {
        try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
      }
      // A new postmaster refuses to start while the old one's pid exists, even as a zombie:
      // wait until whoever adopted the processes has reaped them (about a second here).
      const gone = await eventually(() => all.every((pid) => !existsSync(`/proc/${pid}`)), 15_000)
      if (!gone) throw new Error(`PostgreSQL processes survived SIGKILL: ${all.join(' ')}`)
      state = 'stopped'
    },
    async pause() {
      await signalAll('SIGSTOP')
      state = 'paused'
    },
    async resume() {
      await signalAll('SIGCONT')
      state = 'running'
    }
  }
  await pg.start()
  return pg
}

// The server's log so far (it says, for one, whether a start had to recover from a crash).
export async function serverLog(pg: Postgres): Promise<string> {
  return readFile(join(pg.dir, 'server.log'), 'utf8').catch(() => '')
}
