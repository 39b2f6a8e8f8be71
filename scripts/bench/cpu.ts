import { readFile, readdir } from 'node:fs/promises'

// Where the CPU of a load window went, from /proc (Linux; elsewhere there is no breakdown):
// the server's event loop, its other threads (libuv's pool, where signatures and hashes run,
// and V8's helpers), PostgreSQL's processes when they run on this machine (the embedded
// database runs on the server's event loop), this process (the load generator), and what
// the machine left idle. /proc counts in clock ticks of 1/100 s (USER_HZ on Linux).
const TICK_SECONDS = 0.01

// Per thread or process, so that one ending inside the window (the pool closes idle
// connections after 10 s) takes only its own share of the window along, not its whole life.
type Ticks = Map<string, number>

export interface CpuSnapshot {
  eventLoop: number
  serverThreads: Ticks
  postgres: Ticks
  loadGenerator: number
  idle: number
}

const ticksOf = (stat: string) => {
  // Fields after the command name, which may itself hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])
}
const read = (path: string) => readFile(path, 'utf8').catch(() => '')

async function postgresTicks(): Promise<Ticks> {
  const ticks: Ticks = new Map()
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    const stat = await read(`/proc/${pid}/stat`)
    if (stat.includes(' (postgres) ')) ticks.set(pid, ticksOf(stat))
  }
  return ticks
}

export async function cpuSnapshot(serverPid: number): Promise<CpuSnapshot | undefined> {
  const machine = (await read('/proc/stat')).split('\n')[0]!.split(/\s+/)
  if (machine[0] !== 'cpu') return undefined
  let eventLoop = 0
  const serverThreads: Ticks = new Map()
  for (const tid of await readdir(`/proc/${serverPid}/task`)) {
    const ticks = ticksOf(await read(`/proc/${serverPid}/task/${tid}/stat`))
    if (Number.isNaN(ticks)) continue
    if (tid === String(serverPid)) eventLoop = ticks
    else serverThreads.set(tid, ticks)
  }
  const self = process.cpuUsage()
  return {
    eventLoop,
    serverThreads,
    postgres: await postgresTicks(),
    loadGenerator: (self.user + self.system) / 1e6,
    // idle and iowait
    idle: Number(machine[4]) + Number(machine[5])
  }
}

// What the threads or processes alive at the end spent since the start (or since they began).
const grown = (before: Ticks, after: Ticks) =>
  [...after].reduce((sum, [id, ticks]) => sum + ticks - (before.get(id) ?? 0), 0)

// Microseconds of each per request answered between the two snapshots.
export function cpuPerRequest(before: CpuSnapshot, after: CpuSnapshot, requests: number): Record<string, number> {
  const us = (seconds: number) => seconds * 1e6 / requests
  return {
    event_loop: us((after.eventLoop - before.eventLoop) * TICK_SECONDS),
    server_threads: us(grown(before.serverThreads, after.serverThreads) * TICK_SECONDS),
    postgres: us(grown(before.postgres, after.postgres) * TICK_SECONDS),
    load_generator: us(after.loadGenerator - before.loadGenerator),
    idle: us((after.idle - before.idle) * TICK_SECONDS)
  }
}
