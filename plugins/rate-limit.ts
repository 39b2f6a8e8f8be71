import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import { FallbackThrottleStore, LoginThrottle, MemoryThrottleStore, RedisThrottleStore } from '../src/throttle.js'
import { outageLog, redisWithFallback } from '../src/rate-limit-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    loginThrottle: LoginThrottle
    redis: Redis | null
  }
}

export interface RateLimitOptions {
  redisUrl: string | undefined
  max: number
  windowSeconds: number
  now?: () => number
}

// Per-address request limits (opt-in per route through `config.rateLimit`) and the
// failed-login throttle. With REDIS_URL both count across every instance, and fall back to
// counting per instance while Redis is away: an outage weakens the limits, never removes them
// and never fails a request.
// Registered before any route: @fastify/rate-limit attaches through an onRoute hook.
const plugin: FastifyPluginAsync<RateLimitOptions> = async (app, opts) => {
  const redis = opts.redisUrl
    ? new Redis(opts.redisUrl, {
      // Fail fast while Redis is away: callers fall back instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      commandTimeout: 1000,
      lazyConnect: true
    })
    : null
  const outage = outageLog(app.log)
  if (redis) {
    redis.on('error', (err) => outage.down(err))
    redis.on('ready', () => outage.up())
    await redis.connect().catch((err) => outage.down(err))
    app.addHook('onClose', async () => { redis.disconnect() })
  }

  await app.register(rateLimit, {
    global: false,
    max: opts.max,
    timeWindow: opts.windowSeconds * 1000,
    ...(redis ? { store: redisWithFallback(redis, 'keysmith:rl:', outage) } : {})
  })

  const memory = new MemoryThrottleStore(opts.now)
  const store = redis ? new FallbackThrottleStore(new RedisThrottleStore(redis), memory, (err) => outage.down(err)) : memory
  app.decorate('redis', redis)
  app.decorate('loginThrottle', new LoginThrottle(store, opts.now))
}

export default fp(plugin, { name: 'keysmith-rate-limit', fastify: '5.x' })
