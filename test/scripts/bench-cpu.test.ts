import t from 'tap'
import { Worker } from 'node:worker_threads'
import { cpuPerRequest, cpuSnapshot, type CpuSnapshot } from '../../scripts/bench/cpu.js'

// The bench's CPU breakdown of a refresh window (scripts/bench/cpu.ts), with this process in
// the server's place: CPU spent on its main thread counts as the event loop's, CPU spent on
// another of its threads as the server's other threads'.
async function snapshot(): Promise<CpuSnapshot> {
  const s = await cpuSnapshot(process.pid)
  if (!s) throw new Error('no /proc here')
  return s
}

function spinMainThread(cpuSeconds: number) {
  const start = process.cpuUsage()
  while ((process.cpuUsage(start).user + process.cpuUsage(start).system) / 1e6 < cpuSeconds);
}

const perSecond = (before: CpuSnapshot, after: CpuSnapshot) => {
  const per = cpuPerRequest(before, after, 1)
  return Object.fromEntries(Object.entries(per).map(([k, us]) => [k, us / 1e6]))
}

t.test('CPU on the main thread is the event loop\'s', async (t) => {
  const before = await snapshot()
  spinMainThread(0.4)
  const spent = perSecond(before, await snapshot())
  t.ok(spent.event_loop! >= 0.3, `event loop ${spent.event_loop} s`)
  t.ok(spent.server_threads! < 0.1, `other threads ${spent.server_threads} s`)
  // This process stands for the load generator too: process-wide, every thread.
  t.ok(spent.load_generator! >= 0.4, `load generator ${spent.load_generator} s`)
})

t.test('CPU on another thread is the server threads\'', async (t) => {
  const before = await snapshot()
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads')
    const end = Date.now() + 400
    while (Date.now() < end);
    parentPort.postMessage('spun')
    setInterval(() => {}, 1000)`, { eval: true })
  t.teardown(() => worker.terminate())
  await new Promise((resolve) => worker.once('message', resolve))
  const spent = perSecond(before, await snapshot())
  t.ok(spent.server_threads! >= 0.2, `other threads ${spent.server_threads} s`)
  t.ok(spent.event_loop! < 0.1, `event loop ${spent.event_loop} s`)
})

t.test('each part per request, in microseconds', async (t) => {
  const before: CpuSnapshot = { eventLoop: 1000, serverThreads: new Map([['11', 2000]]), postgres: new Map([['7', 500]]), loadGenerator: 1, idle: 10_000 }
  const after: CpuSnapshot = { eventLoop: 1030, serverThreads: new Map([['11', 2060]]), postgres: new Map([['7', 515]]), loadGenerator: 1.25, idle: 10_010 }
  t.same(cpuPerRequest(before, after, 2000), { event_loop: 150, server_threads: 300, postgres: 75, load_generator: 125, idle: 50 })
})

t.test('a process that ends inside the window takes only its own share along', async (t) => {
  // Backend 7 ran 5 s before the window and ended in it; 9 began in it and spent 0.2 s.
  const base = { eventLoop: 0, serverThreads: new Map(), loadGenerator: 0, idle: 0 }
  const before: CpuSnapshot = { ...base, postgres: new Map([['7', 500], ['8', 100]]) }
  const after: CpuSnapshot = { ...base, postgres: new Map([['8', 130], ['9', 20]]) }
  t.equal(cpuPerRequest(before, after, 1).postgres, 500_000)
})
