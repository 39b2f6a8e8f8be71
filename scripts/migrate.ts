import { runCli } from './cli.js'

// runCli already migrates to the latest version; this script only reports it.
await runCli('npm run migrate', async ({ handle }) => {
  const rows = await handle.db.selectFrom('kysely_migration' as never).select('name' as never).execute()
  process.stdout.write(`migrations applied: ${rows.length} (${handle.mode} database)\n`)
})
