import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { createServer } from 'node:net'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import pg from 'pg'
import type autocannon from 'autocannon'

// What `npm run bench` and `npm run load` share: a free loopback port, a child process
// running a TypeScript script, its first JSON line, a scratch database, and a client with
// a user and refresh chains to load the server with.
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    }).on('error', reject)
  })
}

// With the thread pool sized as `npm start` sizes it (src/threadpool.cjs), so that the server
// and the baselines measured beside it have the same threads.
export function runNode(script: string, args: string[], env: NodeJS.ProcessEnv, nodeArgs: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, '--require', './src/threadpool.cjs', '--import', 'tsx', script, ...args], { env, stdio: ['ignore', 'pipe', 'inherit'] })
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

export type Json = (path: string, body?: unknown, headers?: Record<string, string>) =>
  Promise<{ status: number; body: Record<string, unknown> }>

export function jsonClient(base: string): Json {
  return async (path, body, headers = {}) => {
    const res = await fetch(base + path, body === undefined
      ? { headers }
      : { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, unknown> }
  }
}

// One registered, logged-in user to drive the load with, and a pool of refresh chains:
// every answer hands back the next token of its family, and the shared pool carries it to
// whichever connection sends next (autocannon resets per-connection context after each pass
// over `requests`). Mint more families than refreshes can be in flight, so no request
// ever goes out without a token.
export async function loadUser(json: Json, prefix: string) {
  const password = 'correct horse battery staple'
  const email = `${prefix}-${randomUUID()}@example.com`
  const registered = await json('/auth/register', { email, password })
  if (registered.status !== 201) throw new Error(`register failed: ${JSON.stringify(registered)}`)
  const login = await json('/auth/login', { email, password })
  const accessToken = login.body.access_token as string
  if (!accessToken) throw new Error(`login failed: ${JSON.stringify(login)}`)
  const tokens: string[] = []
  const mintFamilies = async (n: number) => {
    for (let i = 0; i < n; i += 4) {
      await Promise.all(Array.from({ length: Math.min(4, n - i) }, async () => {
        const r = await json('/oauth/token', { grant_type: 'password', username: email, password })
        if (r.status !== 200) throw new Error(`token failed: ${JSON.stringify(r)}`)
        tokens.push(r.body.refresh_token as string)
      }))
    }
  }
  // The load generator shares the machine with the server, so it does no more than it must:
  // a template body and a regular expression rather than JSON both ways.
  const refreshToken = /"refresh_token":"([^"]+)"/
  const refreshRequest = {
    method: 'POST' as const,
    path: '/oauth/token',
    headers: { 'content-type': 'application/json' },
    setupRequest: (req: autocannon.Request) => {
      req.body = `{"grant_type":"refresh_token","refresh_token":"${tokens.shift()}"}`
      return req
    },
    onResponse: (status: number, body: string) => {
      const token = status === 200 ? refreshToken.exec(body)?.[1] : undefined
      if (token) tokens.push(token)
    }
  }
  return { email, accessToken, loginBody: JSON.stringify({ email, password }), tokens, mintFamilies, refreshRequest }
}
