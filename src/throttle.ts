import type { Redis } from 'ioredis'

// Failed-login throttle with exponential back-off. Two counters per attempt:
// - account + address: strict (5 free failures, then 1 s, 2 s, 4 s … up to 15 min);
// - account alone, across addresses: looser (20 free, then back-off capped at 60 s), so a
//   distributed guesser is slowed, while an attacker elsewhere can delay the real user by
//   at most a minute per attempt and never lock them out for good.
// Counters forget after an idle hour.
export interface ThrottleRule {
  free: number
  capMs: number
}

export const RULES = {
  accountAddress: { free: 5, capMs: 15 * 60_000 },
  account: { free: 20, capMs: 60_000 }
} as const satisfies Record<string, ThrottleRule>

const IDLE_TTL_SECONDS = 3600

export interface ThrottleState {
  failures: number
  lockedUntil: number
}

export interface ThrottleStore {
  get(key: string): Promise<ThrottleState | undefined>
  fail(key: string, rule: ThrottleRule, now: number): Promise<ThrottleState>
  reset(key: string): Promise<void>
}

// The lock a failure starts. The failure that uses up the free ones starts the first lock,
// so the attempt after `free` failures is already refused: `free` guesses, not `free + 1`.
export function lockFor(failures: number, rule: ThrottleRule): number {
  if (failures < rule.free) return 0
  return Math.min(rule.capMs, 1000 * 2 ** Math.min(failures - rule.free, 30))
}

export class MemoryThrottleStore implements ThrottleStore {
  readonly #entries = new Map<string, ThrottleState & { expires: number }>()
  readonly #now: () => number

  constructor(now: () => number = Date.now) {
    this.#now = now
  }

  async get(key: string) {
    return this.#read(key)
  }

  // Read and write in one turn of the event loop: concurrent failures all count.
  async fail(key: string, rule: ThrottleRule, now: number) {
    const failures = (this.#read(key)?.failures ?? 0) + 1
    const lock = lockFor(failures, rule)
    const state = { failures, lockedUntil: lock ? now + lock : 0 }
    this.#entries.set(key, { ...state, expires: now + IDLE_TTL_SECONDS * 1000 })
    if (this.#entries.size > 100_000) this.#sweep()
    return state
  }

  async reset(key: string) {
    this.#entries.delete(key)
  }

  #read(key: string): ThrottleState | undefined {
    const e = this.#entries.get(key)
    if (!e) return undefined
    if (e.expires <= this.#now()) {
      this.#entries.delete(key)
      return undefined
    }
    return { failures: e.failures, lockedUntil: e.lockedUntil }
  }

  #sweep() {
    const now = this.#now()
    for (const [k, e] of this.#entries) if (e.expires <= now) this.#entries.delete(k)
  }
}

// Atomic in Redis, so failures spread over instances count as one.
const FAIL_SCRIPT = `
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local free = tonumber(ARGV[2])
local lock = 0
if n >= free then
  lock = tonumber(ARGV[1]) + math.min(tonumber(ARGV[3]), 1000 * 2 ^ math.min(n - free, 30))
end
redis.call('HSET', KEYS[1], 'until', lock)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {n, lock}
`

export class RedisThrottleStore implements ThrottleStore {
  readonly #redis: Redis
  readonly #prefix: string

  constructor(redis: Redis, prefix = 'keysmith:throttle:') {
    this.#redis = redis
    this.#prefix = prefix
  }

  async get(key: string) {
    const [n, until] = await this.#redis.hmget(this.#prefix + key, 'n', 'until')
    if (n === null || n === undefined) return undefined
    return { failures: Number(n), lockedUntil: Number(until ?? 0) }
  }

  async fail(key: string, rule: ThrottleRule, now: number) {
    const [n, until] = await this.#redis.eval(FAIL_SCRIPT, 1, this.#prefix + key,
      now, rule.free, rule.capMs, IDLE_TTL_SECONDS) as [number, number]
    return { failures: Number(n), lockedUntil: Number(until) }
  }

  async reset(key: string) {
    await this.#redis.del(this.#prefix + key)
  }
}

// Redis when it answers, this instance's memory when it does not: an outage weakens the
// throttle to per-instance counting but never fails a login.
export class FallbackThrottleStore implements ThrottleStore {
  readonly #primary: ThrottleStore
  readonly #fallback: ThrottleStore
  readonly #onError: (err: unknown) => void

  constructor(primary: ThrottleStore, fallback: ThrottleStore, onError: (err: unknown) => void) {
    this.#primary = primary
    this.#fallback = fallback
    this.#onError = onError
  }

  get(key: string) {
    return this.#primary.get(key).catch((err) => (this.#onError(err), this.#fallback.get(key)))
  }

  fail(key: string, rule: ThrottleRule, now: number) {
    return this.#primary.fail(key, rule, now).catch((err) => (this.#onError(err), this.#fallback.fail(key, rule, now)))
  }

  reset(key: string) {
    return Promise.all([
      this.#primary.reset(key).catch(this.#onError),
      this.#fallback.reset(key)
    ]).then(() => undefined)
  }
}

export class LoginThrottle {
  readonly #store: ThrottleStore
  readonly #now: () => number
  // Attempts in flight on this instance, per account+address and per account (see `admit`).
  readonly #lanes = new Map<string, Lane>()

  constructor(store: ThrottleStore, now: () => number = Date.now) {
    this.#store = store
    this.#now = now
  }

  // The two kinds never share a key: an email may hold '|' (a@b.c|10.0.0.1), an address never
  // does. Had an account's key been able to equal another's account+address key, failures
  // of a made-up email would count against that account from that address, under the
  // stricter rule.
  #keys(email: string, ip: string) {
    return { pair: `p:${ip}|${email}`, account: `a:${email}` }
  }

  // Runs `attempt` (check, verify, record) once the guesses in flight on this instance, with
  // the failures already counted, leave room for one more free failure, under both rules:
  // per account+address, and per account across addresses; past the free ones, one at a
  // time. Checked and recorded apart, a burst of guesses sent at once (from one address or
  // from many) would all pass the check before the first failure was counted. Honest logins
  // that arrive together run side by side (up to the free count) and otherwise queue for a
  // moment. Across instances a burst gains at most the attempts in flight on the others.
  async admit<T>(email: string, ip: string, attempt: () => Promise<T>): Promise<T> {
    const { pair, account } = this.#keys(email, ip)
    const keys = [[pair, RULES.accountAddress], [account, RULES.account]] as const
    // Looked up afresh after every wait: a lane that went idle meanwhile left the map, and
    // counting on the old one would split its key's limit in two.
    for (;;) {
      const lanes = keys.map(([key, rule]) => this.#lane(key, rule))
      const full = lanes.find(isFull)
      if (!full) break
      await new Promise<void>((resolve) => full.waiting.push(resolve))
    }
    for (const [key] of keys) this.#lanes.get(key)!.inFlight++
    try {
      return await attempt()
    } finally {
      for (const [key] of keys) {
        const lane = this.#lanes.get(key)!
        lane.inFlight--
        if (lane.inFlight === 0 && lane.waiting.length === 0) this.#lanes.delete(key)
        else wake(lane)
      }
    }
  }

  #lane(key: string, rule: ThrottleRule): Lane {
    let lane = this.#lanes.get(key)
    if (!lane) this.#lanes.set(key, lane = { free: rule.free, failures: undefined, inFlight: 0, waiting: [] })
    return lane
  }

  // What this instance knows of a key's failures, for `admit`. Only a success lowers it: a
  // read that set out before a failure was recorded may come back after it.
  #counted(key: string, failures: number, reset = false) {
    const lane = this.#lanes.get(key)
    if (!lane) return
    lane.failures = reset || lane.failures === undefined ? failures : Math.max(lane.failures, failures)
    wake(lane)
  }

  // Seconds to wait before another attempt, or 0.
  async retryAfter(email: string, ip: string): Promise<number> {
    const { pair, account } = this.#keys(email, ip)
    const [a, b] = await Promise.all([this.#store.get(pair), this.#store.get(account)])
    this.#counted(pair, a?.failures ?? 0)
    this.#counted(account, b?.failures ?? 0)
    const until = Math.max(a?.lockedUntil ?? 0, b?.lockedUntil ?? 0)
    const wait = until - this.#now()
    return wait > 0 ? Math.ceil(wait / 1000) : 0
  }

  async failure(email: string, ip: string): Promise<void> {
    const { pair, account } = this.#keys(email, ip)
    const now = this.#now()
    const [pairState, accountState] = await Promise.all([
      this.#store.fail(pair, RULES.accountAddress, now),
      this.#store.fail(account, RULES.account, now)
    ])
    this.#counted(pair, pairState.failures)
    this.#counted(account, accountState.failures)
  }

  async success(email: string, ip: string): Promise<void> {
    const { pair } = this.#keys(email, ip)
    await this.#store.reset(pair)
    this.#counted(pair, 0, true)
  }
}

interface Lane {
  free: number
  failures: number | undefined
  inFlight: number
  waiting: (() => void)[]
}

// Until the first check has read the count, one at a time.
function isFull(lane: Lane): boolean {
  return lane.inFlight > 0 && (lane.failures ?? lane.free) + lane.inFlight >= lane.free
}

// Every waiter checks again whether there is room for it.
function wake(lane: Lane): void {
  for (const resolve of lane.waiting.splice(0)) resolve()
}
