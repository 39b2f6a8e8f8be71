import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import argon2 from 'argon2'
import { loadConfig } from '../../src/config.js'

// Baselines, in a process of their own started with the server's environment, so that
// argon2 runs with the same parameters and the same UV_THREADPOOL_SIZE as the server's.
const config = loadConfig(process.env)
// `baseline.ts [rsa|argon2|all] [seconds]`
const which = process.argv[2] ?? 'all'
const seconds = Number(process.argv[3] ?? 2)

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

// Not a goal's baseline, the context for one: every core signing through libuv's pool, as
// the server signs, with nothing else to do. Each signature then costs more CPU than on one
// core in a loop (the hand-off to and from the pool threads), and two vCPUs of a VM may not
// sign twice as fast as one.
async function rsaPoolSignPerSecond(): Promise<number> {
  const privateKey = signingKey()
  const signAsync = () => new Promise<void>((resolve, reject) => sign('sha256', data, privateKey, (err) => err ? reject(err) : resolve()))
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  let n = 0
  const end = performance.now() + seconds * 1000
  await Promise.all(Array.from({ length: threads * 2 }, async () => {
    while (performance.now() < end) {
      await signAsync()
      n++
    }
  }))
  return n / seconds
}

async function argon2VerifyPerSecond(): Promise<number> {
  const hash = await argon2.hash('correct horse battery staple', { type: argon2.argon2id, ...config.argon2 })
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  let n = 0
  const end = performance.now() + seconds * 1000
  // Keep every pool thread busy, as a login flood does.
  await Promise.all(Array.from({ length: threads * 2 }, async () => {
    while (performance.now() < end) {
      await argon2.verify(hash, 'correct horse battery staple')
      n++
    }
  }))
  return n / seconds
}

process.stdout.write(JSON.stringify({
  ...(which !== 'argon2' ? { rsa_sign_per_s: rsaSignPerSecond(), rsa_pool_sign_per_s: await rsaPoolSignPerSecond() } : {}),
  ...(which !== 'rsa' ? { argon2_verify_per_s: await argon2VerifyPerSecond() } : {})
}) + '\n')
