import { Redis } from 'ioredis'

// The tests that exercise REDIS_URL use the local Redis (CONTRACT.md section 2); point
// TEST_REDIS_URL elsewhere if it lives elsewhere. Keys are made unique per test (emails,
// addresses), and removed afterwards so runs leave nothing behind.
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

// Delete every keysmith:* key containing one of `needles` (a test's emails and addresses).
export async function forgetInRedis(url: string, needles: string[]): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await redis.connect()
    for (const needle of needles) {
      const keys = await redis.keys(`keysmith:*${needle.replace(/[*?[\]\\]/g, '\\$&')}*`)
      if (keys.length) await redis.del(...keys)
    }
  } finally {
    redis.disconnect()
  }
}
