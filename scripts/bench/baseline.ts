import { generateKeyPairSync, sign } from 'node:crypto'
import argon2 from 'argon2'
import { loadConfig } from '../../src/config.js'

// Baselines, in a process of their own started with the server's environment, so that
// argon2 runs with the same parameters and the same UV_THREADPOOL_SIZE as the server's.
const config = loadConfig(process.env)
// `baseline.ts [rsa|argon2|all] [seconds]`
const which = process.argv[2] ?? 'all'
const seconds = Number(process.argv[3] ?? 2)

function rsaSignPerSecond(): number {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: config.keySize })
  const data = Buffer.from('eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9')
  for (let i = 0; i < 50; i++) sign('sha256', data, privateKey)
  let n = 0
  const end = performance.now() + seconds * 1000
  while (performance.now() < end) {
    for (let i = 0; i < 20; i++) sign('sha256', data, privateKey)
    n += 20
  }
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
  ...(which !== 'argon2' ? { rsa_sign_per_s: rsaSignPerSecond() } : {}),
  ...(which !== 'rsa' ? { argon2_verify_per_s: await argon2VerifyPerSecond() } : {})
}) + '\n')
