import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import argon2 from 'argon2'
import { loadConfig } from '../../src/config.js'

// Baselines, in a process of their own started with the server's environment, so that
// argon2 runs with the same parameters and the same UV_THREADPOOL_SIZE as the server's.
const config = loadConfig(process.env)
// `baseline.ts [rsa|argon2|all] [seconds]`
const which = process.argv[2] ?? 'all'
const seconds = Number(process.argv[3] ?? 2)
const WARM_UP_MS = 500
const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4)

const data = Buffer.from('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9')
let key: KeyObject | undefined
const signingKey = () => (key ??= generateKeyPairSync('rsa', { modulusLength: config.keySize }).privateKey)

function rsaSignPerSecond(): number {
  const privateKey = signingKey()
  for (let i = 0; i < 50; i++) sign('sha256', data, privateKey)
  let n = 0
  const end = performance.now() + seconds * 1000
  while (performance.now() < end) {
    for (let i = 0; i < 20; i++) sign('sha256', data, privateKey)
    n += 20
  }
  return n / seconds
}

// Completions per second of `job` kept running by `workers` callers at once, counted in the
// steady state: after a warm-up that fills the pipeline, and only those that end inside the
// window. Counting every job that started before the window closed would add the ones still
// in flight then (up to `workers`, ~4 % of a 2 s window of hashes) as if they had finished.
async function steadyRate(workers: number, job: () => Promise<unknown>): Promise<number> {
  const start = performance.now() + WARM_UP_MS
  const end = start + seconds * 1000
  let n = 0
  await Promise.all(Array.from({ length: workers }, async () => {
    for (;;) {
      await job()
      const t = performance.now()
      if (t >= end) return
      if (t >= start) n++
    }
  }))
  return n / seconds
}

// Not a goal's baseline, the context for one: every core signing through libuv's pool, as
// the server signs, with nothing else to do. Each signature then costs more CPU than on one
// core in a loop (the hand-off to and from the pool threads), and two vCPUs of a VM may not
// sign twice as fast as one.
async function rsaPoolSignPerSecond(): Promise<number> {
  const privateKey = signingKey()
  const signAsync = () => new Promise<void>((resolve, reject) => sign('sha256', data, privateKey, (err) => err ? reject(err) : resolve()))
  return steadyRate(threads * 2, signAsync)
}

// Every pool thread busy, with as many queued behind them, as in a login flood.
async function argon2VerifyPerSecond(): Promise<number> {
  const hash = await argon2.hash('correct horse battery staple', { type: argon2.argon2id, ...config.argon2 })
  return steadyRate(threads * 2, () => argon2.verify(hash, 'correct horse battery staple'))
}

process.stdout.write(JSON.stringify({
  ...(which !== 'argon2' ? { rsa_sign_per_s: rsaSignPerSecond(), rsa_pool_sign_per_s: await rsaPoolSignPerSecond() } : {}),
  ...(which !== 'rsa' ? { argon2_verify_per_s: await argon2VerifyPerSecond() } : {})
}) + '\n')
