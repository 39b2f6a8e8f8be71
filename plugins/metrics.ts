import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Registry } from 'prom-client'
import { Metrics } from '../src/metrics.js'
import type { Keyring } from '../src/signing/keyring.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

export interface MetricsPluginOptions {
  defaultMetrics: boolean
}

// Collects request durations and decorates `app.metrics` for the services to count
// outcomes. It serves nothing on the public port: src/server.ts exposes the registry on a
// listener of its own (METRICS_PORT), built by metricsServer below.
// Registered before every other plugin: a root hook only reaches routes declared after it.
const plugin: FastifyPluginAsync<MetricsPluginOptions> = async (app, opts) => {
  const metrics = new Metrics({
    defaultMetrics: opts.defaultMetrics,
    // Read at scrape time: the keys plugin registers after this one, and rotations move on.
    keys: () => (app as { keyring?: Keyring }).keyring
  })
  app.decorate('metrics', metrics)
  // Callback style: no promise per request on the hottest paths (JWKS, discovery).
  app.addHook('onResponse', (request, reply, done) => {
    // The route pattern, never the raw URL, so ids and probes cannot multiply the series.
    const route = request.is404 ? 'unmatched' : request.routeOptions.url ?? 'unmatched'
    try {
      metrics.request(request.method, route, reply.statusCode, reply.elapsedTime / 1000)
    } catch (err) {
      // A metric must never cost a request anything, not even a logged error per request.
      request.log.debug({ err }, 'metrics: observation failed')
    }
    done()
  })
}

// The metrics listener: GET /metrics in the Prometheus text format and nothing else.
// Request logging is off, or every scrape would write a line.
export function metricsServer(registry: Registry, log: FastifyBaseLogger): FastifyInstance {
  const server = Fastify({
    loggerInstance: log.child({ listener: 'metrics' }),
    logController: new LogController({ disableRequestLogging: true }),
    // A scrape cut short by shutdown costs nothing; waiting on a keep-alive scraper would.
    forceCloseConnections: true
  })
  server.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()))
  return server
}

export default fp(plugin, { name: 'keysmith-metrics', fastify: '5.x' })
