import t from 'tap'
import { Batcher } from '../../src/sessions/batcher.js'

// The group-commit batcher behind refresh rotation, on its own. Over the database it is
// exercised by every refresh test (test/plugins/sessions-*.test.ts).
interface Req { key: string; value: number }

function recording(opts: { maxBatch?: number; maxInFlight?: number; fail?: (batch: Req[]) => boolean; failsQueue?: (err: unknown) => boolean } = {}) {
  const batches: Req[][] = []
  let inFlight = 0
  let maxSeen = 0
  const releases: (() => void)[] = []
  const batcher = new Batcher<Req, string>(async (requests) => {
    batches.push(requests)
    inFlight++
    maxSeen = Math.max(maxSeen, inFlight)
    // Every batch waits until the test lets it go, so batches can pile up in flight.
    await new Promise<void>((resolve) => releases.push(resolve))
    inFlight--
    if (opts.fail?.(requests)) throw new Error('statement failed')
    return requests.map((r) => `${r.key}:${r.value * 2}`)
  }, { maxBatch: opts.maxBatch ?? 64, maxInFlight: opts.maxInFlight ?? 4, key: (r) => r.key, failsQueue: opts.failsQueue })
  // Lets every batch go, turn after turn, until the given answers have all settled.
  const releaseAll = async (answers: Promise<unknown>) => {
    let settled = false
    void answers.finally(() => { settled = true }).catch(() => {})
    while (!settled) {
      await new Promise((resolve) => setImmediate(resolve))
      releases.splice(0).forEach((release) => release())
    }
  }
  return { batcher, batches, releaseAll, maxInFlight: () => maxSeen }
}

t.test('requests of one turn share a batch and each gets its own answer', async (t) => {
  const { batcher, batches, releaseAll } = recording()
  const answers = Promise.all([1, 2, 3].map((v) => batcher.submit({ key: `k${v}`, value: v })))
  await releaseAll(answers)
  t.same(await answers, ['k1:2', 'k2:4', 'k3:6'])
  t.equal(batches.length, 1)
})

t.test('a lone request runs without waiting for company', async (t) => {
  const { batcher, batches, releaseAll } = recording()
  const answer = batcher.submit({ key: 'solo', value: 21 })
  await releaseAll(answer)
  t.equal(await answer, 'solo:42')
  t.same(batches.map((b) => b.length), [1])
})

t.test('one key never appears twice in a batch', async (t) => {
  const { batcher, batches, releaseAll } = recording()
  const answers = Promise.all([
    batcher.submit({ key: 'same', value: 1 }),
    batcher.submit({ key: 'other', value: 2 }),
    batcher.submit({ key: 'same', value: 3 })
  ])
  await releaseAll(answers)
  t.same(await answers, ['same:2', 'other:4', 'same:6'])
  for (const batch of batches) {
    t.equal(new Set(batch.map((r) => r.key)).size, batch.length, 'keys in a batch are distinct')
  }
  t.equal(batches.length, 2)
})

t.test('batches are capped in size and in how many run at once', async (t) => {
  const { batcher, batches, releaseAll, maxInFlight } = recording({ maxBatch: 3, maxInFlight: 2 })
  const answers = Promise.all(Array.from({ length: 10 }, (_, i) => batcher.submit({ key: `k${i}`, value: i })))
  await releaseAll(answers)
  t.same(await answers, Array.from({ length: 10 }, (_, i) => `k${i}:${i * 2}`))
  t.ok(batches.every((b) => b.length <= 3), 'no batch above maxBatch')
  t.equal(batches.flat().length, 10, 'every request ran exactly once')
  t.equal(maxInFlight(), 2, 'never more than maxInFlight batches at once')
})

t.test('a failed statement fails its own batch only', async (t) => {
  const { batcher, releaseAll } = recording({ maxBatch: 2, fail: (batch) => batch.some((r) => r.key === 'bad') })
  const results = Promise.allSettled([
    batcher.submit({ key: 'bad', value: 1 }),
    batcher.submit({ key: 'a', value: 2 }),
    batcher.submit({ key: 'b', value: 3 })
  ])
  await releaseAll(results)
  const settled = await results
  t.same(settled.map((s) => s.status), ['rejected', 'rejected', 'fulfilled'])
  t.match((settled[0] as PromiseRejectedResult).reason, { message: 'statement failed' })
})

t.test('a batch failing because the database is away fails the queue behind it at once', async (t) => {
  const { batcher, batches, releaseAll } = recording({
    maxInFlight: 1, fail: () => true, failsQueue: (err) => (err as Error).message === 'statement failed'
  })
  // One key presented three times: three batches, of which only the first runs.
  const results = Promise.allSettled([1, 2, 3].map((v) => batcher.submit({ key: 'same', value: v })))
  await releaseAll(results)
  t.same((await results).map((s) => s.status), ['rejected', 'rejected', 'rejected'])
  t.equal(batches.length, 1, 'the queued requests never ran')
  const later = batcher.submit({ key: 'same', value: 4 })
  await releaseAll(later.catch(() => {}))
  t.equal(batches.length, 2, 'a request arriving afterwards runs again')
})
