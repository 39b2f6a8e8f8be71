import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'

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
    app.close().then(() => process.exit(0), (err) => {
      app.log.error({ err }, 'error during shutdown')
      process.exit(1)
    })
  }
  process.once('SIGTERM', () => shutdown('SIGTERM'))
  process.once('SIGINT', () => shutdown('SIGINT'))
  try {
    await app.listen({ port: config.port, host: config.host })
  } catch (err) {
    // Port taken or privileged, or HOST not an address of this machine: one line naming
    // the variable, and the database (the embedded one's lock and socket) closed cleanly.
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    const name = code === 'EADDRINUSE' || code === 'EACCES' ? 'PORT' : 'HOST'
    process.stderr.write(`keysmith: configuration error: ${name}: cannot listen on ${config.host}:${config.port} (${code})\n`)
    await app.close().catch(() => {})
    process.exit(78)
  }
  app.log.info({ issuer: config.issuer, database: app.database.mode, ms: Date.now() - started }, 'keysmith ready')
}

void main()
