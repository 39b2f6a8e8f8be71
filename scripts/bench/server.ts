import { monitorEventLoopDelay } from 'node:perf_hooks'
import Fastify from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { resourceServer } from '../../plugins/resource-server.js'

// The server side of `npm run bench`, in its own process: Keysmith exactly as `npm start`
// builds it plus a hello route for the baseline, and a resource server (the published
// plugin over the remote, cached JWKS) with the same route with and without authenticate.
const config = loadConfig(process.env)
const app = await buildApp(config)
// Samples every 10 ms: every 1 ms cost the server 3 % of a core.
const ELD_RESOLUTION_MS = 10
const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS })
eld.enable()
app.get('/bench/hello', async () => ({ hello: 'world' }))
// `?gc=1`: memory after a full collection (the server runs with --expose-gc), so that a
// comparison of two readings shows what is retained, not how far V8 let the heap grow lazily.
const gc = (globalThis as { gc?: () => void }).gc
app.get<{ Querystring: { gc?: string } }>('/bench/stats', async (request) => {
  if (request.query.gc === '1') gc?.()
  const memory = process.memoryUsage()
  return {
    rss: memory.rss,
    heap_used: memory.heapUsed,
    // The histogram holds the intervals between its timer's runs, resolution included.
    eld_p99_ms: Math.max(0, eld.percentile(99) / 1e6 - ELD_RESOLUTION_MS),
    eld_max_ms: Math.max(0, eld.max / 1e6 - ELD_RESOLUTION_MS)
  }
})
app.post('/bench/eld-reset', async () => {
  eld.reset()
  return {}
})
await app.listen({ port: config.port, host: '127.0.0.1' })

const rs = Fastify({ logger: false })
await rs.register(resourceServer, { issuer: config.issuer, audience: config.audience })
const payload = { ok: true, items: [1, 2, 3] }
rs.get('/unprotected', async () => payload)
rs.get('/protected', { onRequest: rs.authenticate }, async () => payload)
await rs.listen({ port: 0, host: '127.0.0.1' })
const address = rs.server.address()
process.stdout.write(JSON.stringify({ ready: true, rsPort: typeof address === 'object' && address ? address.port : 0 }) + '\n')

const stop = async () => {
  await rs.close()
  await app.close()
  process.exit(0)
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
