import { promises as fs } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FileMigrationProvider, Migrator, type Kysely, type MigrationResult } from 'kysely'

// src/db → ../../migrations, and the same from dist/src/db → dist/migrations.
const MIGRATIONS = fileURLToPath(new URL('../../migrations', import.meta.url))

// kysely's Postgres adapter takes an advisory lock around the run, so instances starting at
// once apply each migration exactly once.
export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResult[]> {
  const migrator = new Migrator({
    db,
    provider: new FileMigrationProvider({ fs, path, migrationFolder: MIGRATIONS })
  })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error) throw error instanceof Error ? error : new Error(String(error))
  return results
}
