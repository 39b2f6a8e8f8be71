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
    app.close().then(() => process.exit(0), (err) => {
      app.log.error({ err }, 'error during shutdown')
      process.exit(1)
    })
  }
  process.once('SIGTERM', () => shutdown('SIGTERM'))
  process.once('SIGINT', () => shutdown('SIGINT'))
  await app.listen({ port: config.port, host: config.host })
  app.log.info({ issuer: config.issuer, database: app.database.mode, ms: Date.now() - started }, 'keysmith ready')
}

void main()
