import { spawn, type ChildProcess } from 'node:child_process'
import { connect, createServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import type { TestEnv } from './helper.js'

// Helpers for tests that run Keysmith's own entry points (server, scripts) as child
// processes, the way an operator does.

export const ROOT = fileURLToPath(new URL('..', import.meta.url))

// Variables of CONTRACT.md section 2 that the machine running the tests may have set; a
// child sees only what the test hands it.
const INHERITED_CONFIG = ['NODE_ENV', 'PORT', 'HOST', 'DATABASE_URL', 'TEST_DATABASE_URL', 'DATA_DIR', 'KEYS_DIR',
  'ISSUER', 'AUDIENCE', 'KEY_ENCRYPTION_SECRET', 'REDIS_URL', 'LOG_LEVEL', 'KEY_REFRESH_INTERVAL', 'METRICS_PORT', 'METRICS_HOST']

// A test database's environment (TestEnv), with or without more variables.
export type Vars = Partial<TestEnv> | Record<string, string | undefined>

export function childEnv(env: Vars): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env }
  for (const name of INHERITED_CONFIG) delete out[name]
  for (const [name, value] of Object.entries(env)) if (value !== undefined) out[name] = value
  return out
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface Child {
  child: ChildProcess
  output(): { stdout: string; stderr: string }
  exited: Promise<RunResult>
}

export interface StartOptions {
  // `node --import tsx <file>` by default: one process, so signals reach Keysmith itself.
  // 'tsx-cli' runs the file the way `npm start` and `npm run keys` do. Both size the thread
  // pool as `npm start` does.
  via?: 'node' | 'tsx-cli'
}

export const THREADPOOL = join(ROOT, 'src/threadpool.cjs')

export function start(file: string, args: string[], env: NodeJS.ProcessEnv, opts: StartOptions = {}): Child {
  const argv = opts.via === 'tsx-cli'
    ? [join(ROOT, 'node_modules/tsx/dist/cli.mjs'), '--require', THREADPOOL, file, ...args]
    : ['--require', THREADPOOL, '--import', 'tsx', file, ...args]
  const child = spawn(process.execPath, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const exited = new Promise<RunResult>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
  return { child, output: () => ({ stdout, stderr }), exited }
}

// Run to completion; a child that outlives `timeoutMs` is killed, so a hang fails the test
// instead of stalling the suite.
export async function run(file: string, args: string[], env: NodeJS.ProcessEnv,
  opts: StartOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  const c = start(file, args, env, opts)
  const timer = setTimeout(() => c.child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
  try {
    return await c.exited
  } finally {
    clearTimeout(timer)
  }
}

// `npm run keys -- <args>` with a test database's environment.
export function keysScript(env: Vars, ...args: string[]): Promise<RunResult> {
  return run('scripts/keys.ts', args, childEnv({ LOG_LEVEL: 'silent', ...env }))
}

export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '')
}

export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

// Poll `probe` until it returns something truthy, for at most `ms` (the contract's 5 s for
// key adoption by default); returns the last result, so the caller asserts on it.
export async function eventually<T>(probe: () => Promise<T> | T, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await probe()
    if (value || Date.now() >= deadline) return value
    await sleep(100)
  }
}

// `src/server.ts` as a child process, up once /health answers on `port`; killed at teardown.
export async function startServer(t: Test, env: NodeJS.ProcessEnv, port: number): Promise<Child> {
  const server = start('src/server.ts', [], env)
  t.teardown(() => { if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL') })
  let exited = false
  void server.exited.then(() => { exited = true })
  // Opening a fresh embedded database, migrating and making two RSA keys take seconds.
  const up = await eventually(async () => exited || (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false)), 90_000)
  if (exited || !up) throw new Error(`server did not come up: ${server.output().stderr}`)
  return server
}

// What a TCP connect to `port` on loopback meets: 'connected', or the error code (ECONNREFUSED).
export function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.on('connect', () => { socket.destroy(); resolve('connected') })
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
  })
}
