import { randomBytes } from 'node:crypto'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createExclusive } from '../exclusive-file.js'

// Secrets come from KEY_ENCRYPTION_SECRET (comma-separated, first one seals). Outside
// production, when it is unset, a secret is generated once into keys/ with mode 0600.
export async function resolveSecrets(configured: string[] | undefined, keysDir: string): Promise<string[]> {
  if (configured && configured.length > 0) return configured
  const file = join(keysDir, 'encryption-secret')
  await mkdir(keysDir, { recursive: true, mode: 0o700 })
  await createExclusive(file, randomBytes(32).toString('base64url') + '\n', 0o600)
  // Read back rather than trust what we made: another process may have won the race.
  const secret = (await readFile(file, 'utf8')).trim()
  if (!secret) throw new Error(`${file} is empty`)
  return [secret]
}
