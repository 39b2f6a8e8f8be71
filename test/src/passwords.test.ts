import t from 'tap'
import { generateKeyPairSync, sign } from 'node:crypto'
import { PasswordHasher, hashingSlots, threadPoolSize } from '../../src/passwords.js'

// Hashing and libuv's thread pool: hashes never take every thread, so a signature (every
// token a login or refresh returns) does not queue behind a flood of logins.
const params = { memoryCost: 19456, timeCost: 2, parallelism: 1 }
const password = 'correct horse battery staple'

t.test('hashingSlots: a hash per core and one more, always a thread left over, at least one', async (t) => {
  t.equal(hashingSlots(4, 2), 3, "Node's 4 threads on 2 cores: 3 hash, 1 is left")
  t.equal(hashingSlots(10, 8), 9, 'the pool src/threadpool.cjs sizes for 8 cores')
  t.equal(hashingSlots(4, 16), 3, 'a pool smaller than the cores: all threads but one')
  t.equal(hashingSlots(2, 2), 1)
  t.equal(hashingSlots(1, 2), 1, 'a pool of one thread still hashes')
})

t.test("threadPoolSize reads UV_THREADPOOL_SIZE as libuv does", async (t) => {
  t.equal(threadPoolSize(undefined), 4)
  t.equal(threadPoolSize('9'), 9)
  t.equal(threadPoolSize(''), 1, 'set but empty: one thread')
  t.equal(threadPoolSize('lots'), 1)
  t.equal(threadPoolSize('0'), 1)
  t.equal(threadPoolSize('5000'), 1024)
})

t.test('a signature does not wait behind queued hashes', async (t) => {
  const hasher = new PasswordHasher(params)
  const hash = await hasher.hash(password)
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const done: string[] = []
  // More hashes than the pool has threads (this process has Node's 4), all asked for first.
  const verifies = Array.from({ length: 8 }, (_, i) =>
    hasher.verify(hash, password).then((ok) => { done.push(`verify ${i}`); return ok }))
  const signed = new Promise<void>((resolve, reject) => sign('sha256', Buffer.from('token'), privateKey, (err) => {
    done.push('sign')
    return err ? reject(err) : resolve()
  }))
  const [results] = await Promise.all([Promise.all(verifies), signed])
  t.same(results, Array(8).fill(true), 'every queued hash ran, and matched')
  t.equal(done[0], 'sign', `the signature finished first: ${done.join(', ')}`)
})

t.test('a hash that fails frees its slot', async (t) => {
  const hasher = new PasswordHasher(params, 1)
  const hash = await hasher.hash(password)
  t.same(await Promise.all(['not a hash', '$argon2id$v=19$m=x', hash].map((h) => hasher.verify(h, password))), [false, false, true])
  t.equal(await hasher.verify(hash, 'wrong password'), false)
  t.equal(await hasher.verify(hash, password), true, 'the one slot is free again')
})
