import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import pg from 'pg'

// What `npm run bench` and `npm run load` share: a free loopback port, a child process
// running a TypeScript script, its first JSON line, and a scratch database.
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    }).on('error', reject)
  })
}

export function runNode(script: string, args: string[], env: NodeJS.ProcessEnv, nodeArgs: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, '--import', 'tsx', script, ...args], { env, stdio: ['ignore', 'pipe', 'inherit'] })
}

export async function firstJsonLine(child: ChildProcess): Promise<Record<string, number>> {
  const rl = createInterface({ input: child.stdout! })
  for await (const line of rl) {
    if (line.startsWith('{')) return JSON.parse(line) as Record<string, number>
  }
  throw new Error('the process ended without a result')
}

// A database of the run's own on a real server, dropped at the end.
export async function scratchDatabase(serverUrl: string, prefix: string) {
  const name = `keysmith_${prefix}_${randomBytes(6).toString('hex')}`
  const admin = async (statement: string) => {
    const client = new pg.Client({ connectionString: serverUrl })
    await client.connect()
    try {
      await client.query(statement)
    } finally {
      await client.end()
    }
  }
  await admin(`create database ${name}`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return { url: url.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) }
}

// The server's environment for a run: loopback, quiet logs, its own data and key directories,
// the run's database (or the embedded one), and abuse limits out of the way of the load.
export function serverEnv(port: number, dir: string, databaseUrl: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    ISSUER: `http://127.0.0.1:${port}`,
    LOG_LEVEL: 'warn',
    DATA_DIR: join(dir, 'data'),
    KEYS_DIR: join(dir, 'keys'),
    KEY_ENCRYPTION_SECRET: process.env.KEY_ENCRYPTION_SECRET ?? randomBytes(32).toString('base64url'),
    RATE_LIMIT_MAX: '1000000'
  }
  if (databaseUrl) env.DATABASE_URL = databaseUrl
  else delete env.DATABASE_URL
  return env
}
