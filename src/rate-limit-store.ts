import { createRequire } from 'node:module'
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { Redis } from 'ioredis'

// A store for @fastify/rate-limit that counts in Redis, so every instance shares one count,
// and in this instance's memory while Redis fails: an outage weakens the limit to
// per-instance counting, where `skipOnError` would drop it altogether. Each request tries
// Redis first (with the offline queue off, a down Redis fails at once), so counting is
// shared again as soon as Redis answers.

type Result = { current: number; ttl: number }
type Callback = (err: Error | null, result?: Result) => void
type RouteOptions = Parameters<FastifyRateLimitStore['child']>[0]

interface Store {
  incr(key: string, cb: Callback, timeWindow: number, max: number): void
  read?(key: string, cb: Callback, timeWindow: number, max: number): void
  child(routeOptions: RouteOptions): Store
}

// The plugin's own stores (same Lua script, same bounded LRU); the package exports no types
// for them, and has no `exports` map, so their files are reachable by path.
const require = createRequire(import.meta.url)
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as
  new (continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis, key?: string) => Store
const LocalStore = require('@fastify/rate-limit/store/LocalStore.js') as
  new (continueExceeding: boolean, exponentialBackoff: boolean, cache?: number) => Store

export interface Outage {
  // Redis failed (logs once per outage) / answered again.
  down(err: unknown): void
  up(): void
}

// The plugin constructs its store itself from its settings; this closes over what it does not pass.
export function redisWithFallback(redis: Redis, nameSpace: string, outage: Outage): FastifyRateLimitStoreCtor {
  class FallbackStore implements FastifyRateLimitStore {
    readonly primary: Store
    readonly fallback: Store

    // `settings`: the plugin's merged options (continueExceeding and exponentialBackoff matter here).
    constructor(settings: object, parents?: [Store, Store]) {
      const { continueExceeding = false, exponentialBackoff = false } = settings as { continueExceeding?: boolean; exponentialBackoff?: boolean }
      this.primary = parents?.[0] ?? new RedisStore(continueExceeding, exponentialBackoff, redis, nameSpace)
      this.fallback = parents?.[1] ?? new LocalStore(continueExceeding, exponentialBackoff)
    }

    incr(key: string, cb: Callback, timeWindow: number, max: number) {
      this.#either('incr', key, cb, timeWindow, max)
    }

    read(key: string, cb: Callback, timeWindow: number, max: number) {
      this.#either('read', key, cb, timeWindow, max)
    }

    #either(method: 'incr' | 'read', key: string, cb: Callback, timeWindow: number, max: number) {
      this.primary[method]!(key, (err, result) => {
        if (!err) return (outage.up(), cb(null, result))
        outage.down(err)
        this.fallback[method]!(key, cb, timeWindow, max)
      }, timeWindow, max)
    }

    child(routeOptions: RouteOptions) {
      return new FallbackStore(routeOptions, [this.primary.child(routeOptions), this.fallback.child(routeOptions)])
    }
  }
  return FallbackStore
}

// One warning when Redis starts failing, one line when it answers again, however many
// requests and reconnection attempts fall in between.
export function outageLog(log: { warn(obj: object, msg: string): void; info(msg: string): void }): Outage {
  let down = false
  return {
    down(err) {
      if (down) return
      down = true
      log.warn({ err: { message: (err as Error)?.message } }, 'redis unavailable: rate limits and login throttle count per instance until it returns')
    },
    up() {
      if (!down) return
      down = false
      log.info('redis is back: rate limits and login throttle are shared again')
    }
  }
}
