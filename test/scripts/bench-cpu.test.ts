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

// Arithmetic between clock reads, so the spin itself leaves V8's helper threads (the
// collector above all) little to do.
function spinMainThread(cpuSeconds: number) {
  const start = process.cpuUsage()
  const spent = () => { const u = process.cpuUsage(start); return (u.user + u.system) / 1e6 }
  let x = 0
  while (spent() < cpuSeconds) for (let i = 0; i < 100_000; i++) x = (x + i) % 7919
  return x
}

const perSecond = (before: CpuSnapshot, after: CpuSnapshot) => {
  const per = cpuPerRequest(before, after, 1)
  return Object.fromEntries(Object.entries(per).map(([k, us]) => [k, us / 1e6]))
}

t.test('CPU on the main thread is the event loop\'s', async (t) => {
  const before = await snapshot()
  spinMainThread(0.6)
  const spent = perSecond(before, await snapshot())
  t.ok(spent.event_loop! >= 0.5, `event loop ${spent.event_loop} s`)
  // V8's and tap's own threads run beside the spin on a busy machine; the main thread's
  // CPU counted among them as well would put at least the whole spin here.
  t.ok(spent.server_threads! < 0.3, `other threads ${spent.server_threads} s`)
  // This process stands for the load generator too: process-wide, every thread.
  t.ok(spent.load_generator! >= 0.6, `load generator ${spent.load_generator} s`)
})

t.test('CPU on another thread is the server threads\'', async (t) => {
  const before = await snapshot()
  const worker = new Worker(`
    // Until this thread has spent 0.4 s of CPU (its own ticks), however busy the machine.
    const { parentPort } = require('node:worker_threads')
    const { readFileSync } = require('node:fs')
    const ticks = () => {
      const fields = readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1].split(' ')
      return Number(fields[11]) + Number(fields[12])
    }
    const start = ticks()
    let x = 0
    while (ticks() - start < 40) for (let i = 0; i < 100000; i++) x = (x + i) % 7919
    parentPort.postMessage(x)
    setInterval(() => {}, 1000)`, { eval: true })
  t.teardown(() => worker.terminate())
  await new Promise((resolve) => worker.once('message', resolve))
  const spent = perSecond(before, await snapshot())
  t.ok(spent.server_threads! >= 0.4, `other threads ${spent.server_threads} s`)
  // Starting the worker costs the main thread some; the worker's spin counted there as
  // well would put at least 0.4 s more.
  t.ok(spent.event_loop! < spent.server_threads! / 2, `event loop ${spent.event_loop} s`)
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
