import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'
import { metricsServer } from '../plugins/metrics.js'

// The only place that reads process.env and listens; everything else takes a Config.
async function main() {
  const started = Date.now()
  let config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keysmith: configuration error: ${err.message}\n`)
      process.exit(78)
    }
    throw err
  }
  let app
  try {
    app = await buildApp(config)
  } catch (err) {
    process.stderr.write(`keysmith: failed to start: ${(err as Error).message}\n`)
    process.exit(1)
  }
  // A listener of its own, so the public port never serves /metrics.
  const { port: metricsPort, host: metricsHost } = config.metrics
  const metrics = metricsPort === undefined ? undefined : metricsServer(app.metrics.registry, app.log)
  let closing = false
  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    app.log.info({ signal }, 'shutting down: no new connections, finishing in-flight requests')
    const force = setTimeout(() => {
      app.log.error('shutdown took longer than 10 s, exiting')
      process.exit(1)
    }, 10_000)
    force.unref()
    // Fastify closes idle keep-alive connections once, as closing starts. A connection whose
    // request was in flight then stays open for keep-alive after its answer, and the close
    // would wait for the client to hang up: close such connections as soon as they go idle.
    setInterval(() => app.server.closeIdleConnections(), 100).unref()
    Promise.all([app.close(), metrics?.close()]).then(() => process.exit(0), (err) => {
      app.log.error({ err }, 'error during shutdown')
      process.exit(1)
    })
  }
  process.once('SIGTERM', () => shutdown('SIGTERM'))
  process.once('SIGINT', () => shutdown('SIGINT'))
  // Port taken or privileged, or host not an address of this machine: one line naming the
  // variable, and the database (the embedded one's lock and socket) closed cleanly.
  const listen = async (server: typeof app, port: number, host: string, prefix: '' | 'METRICS_') => {
    try {
      await server.listen({ port, host })
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
      const name = code === 'EADDRINUSE' || code === 'EACCES' ? 'PORT' : 'HOST'
      process.stderr.write(`keysmith: configuration error: ${prefix}${name}: cannot listen on ${host}:${port} (${code})\n`)
      await Promise.all([app.close(), metrics?.close()]).catch(() => {})
      process.exit(78)
    }
  }
  // Metrics first: if their port is taken, the public port never took a request.
  if (metrics && metricsPort !== undefined) await listen(metrics, metricsPort, metricsHost, 'METRICS_')
  await listen(app, config.port, config.host, '')
  app.log.info({
    issuer: config.issuer, database: app.database.mode, metrics: metrics ? `${metricsHost}:${metricsPort}` : 'off', ms: Date.now() - started
  }, 'keysmith ready')
}

void main()
