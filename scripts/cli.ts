import { loadConfig, type Config } from '../src/config.js'
import { connect, type DatabaseHandle } from '../src/db/connect.js'
import { migrateToLatest } from '../src/db/migrate.js'

export class UsageError extends Error {}

// Admin scripts: same config and database code as the server. In embedded mode they go
// through the running server's socket, or open the database themselves when none runs.
// `checkArgs` refuses bad arguments before any database is opened: a typo must not wait
// for (or, embedded with no server running, create) a database just to print the usage.
export async function runCli(usage: string, main: (ctx: { config: Config; handle: DatabaseHandle; args: string[] }) => Promise<void>, checkArgs?: (args: string[]) => void): Promise<void> {
  const args = process.argv.slice(2)
  let handle: DatabaseHandle | undefined
  try {
    checkArgs?.(args)
    const config = loadConfig(process.env)
    handle = await connect({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: 2 })
    await migrateToLatest(handle.db)
    await main({ config, handle, args })
  } catch (err) {
    const message = err instanceof UsageError ? `${err.message} (usage: ${usage})` : (err as Error).message
    process.stderr.write(`error: ${message}\n`)
    process.exitCode = err instanceof UsageError ? 2 : 1
  } finally {
    await handle?.close().catch(() => {})
  }
}
