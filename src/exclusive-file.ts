import { randomBytes } from 'node:crypto'
import { link, rm, writeFile } from 'node:fs/promises'

// Create `path` holding `content`, or return false when it already exists. Other processes
// never see the file empty: the content goes to a temporary file first, which is then
// hard-linked into place (link, unlike rename, never replaces an existing file).
export async function createExclusive(path: string, content: string, mode: number): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(tmp, content, { mode, flag: 'wx' })
  try {
    await link(tmp, path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  } finally {
    await rm(tmp, { force: true })
  }
}
