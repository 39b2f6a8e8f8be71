import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT, THREADPOOL } from '../support.js'

// src/threadpool.cjs, preloaded before anything uses libuv's pool, decides its size. A child
// reports UV_THREADPOOL_SIZE and its threads once a pool job has run; less those of a child
// whose pool has one thread, that leaves the pool's threads beyond the first (whatever other
// threads the test runner's hooks start in children are in both counts).
const probe = `
  require('node:crypto').pbkdf2('a', 'b', 1, 32, 'sha256', () => {
    const threads = require('node:fs').readdirSync('/proc/self/task').length
    console.log(JSON.stringify({ size: process.env.UV_THREADPOOL_SIZE, threads }))
  })`

// A machine with more cores than this one: a preload ahead of src/threadpool.cjs says so.
async function cores(t: Test, n: number): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'keysmith-cores-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'cores.cjs')
  await writeFile(file, `require('node:os').availableParallelism = () => ${n}\n`)
  return ['--require', file]
}

async function run(env: Record<string, string | undefined>, preload: string[] = []): Promise<{ size?: string; threads: number }> {
  const childEnv = { ...process.env, ...env }
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k]
  const child = spawn(process.execPath, [...preload, '--require', THREADPOOL, '-e', probe], { env: childEnv, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
  await new Promise((resolve) => child.on('close', resolve))
  return JSON.parse(out)
}

async function poolOf(env: Record<string, string | undefined>, preload: string[] = []): Promise<{ size?: string; threads: number }> {
  const [one, subject] = await Promise.all([run({ UV_THREADPOOL_SIZE: '1' }), run(env, preload)])
  return { size: subject.size, threads: subject.threads - one.threads + 1 }
}

t.test('unset: a thread per core and two more', async (t) => {
  t.same(await poolOf({ UV_THREADPOOL_SIZE: undefined }, await cores(t, 8)), { size: '10', threads: 10 })
  t.same(await poolOf({ UV_THREADPOOL_SIZE: '' }, await cores(t, 12)), { size: '14', threads: 14 }, 'empty is unset')
})

t.test("never fewer than Node's 4", async (t) => {
  t.same(await poolOf({ UV_THREADPOOL_SIZE: undefined }, await cores(t, 1)), { size: '4', threads: 4 })
  const here = Math.max(4, availableParallelism() + 2)
  t.same(await poolOf({ UV_THREADPOOL_SIZE: undefined }), { size: String(here), threads: here }, 'and on this machine')
})

t.test("an operator's value stands", async (t) => {
  t.same(await poolOf({ UV_THREADPOOL_SIZE: '6' }, await cores(t, 8)), { size: '6', threads: 6 })
})

t.test('npm start and the container image preload it', async (t) => {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts.start, /^tsx --require \.\/src\/threadpool\.cjs src\/server\.ts$/)
  t.match(await readFile(join(ROOT, 'Dockerfile'), 'utf8'), /CMD \["node", "--require", "\.\/dist\/src\/threadpool\.cjs", "dist\/src\/server\.js"\]/)
})
