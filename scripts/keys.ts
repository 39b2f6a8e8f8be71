import { runCli, UsageError } from './cli.js'
import { SealedBox } from '../src/signing/sealed-box.js'
import { resolveSecrets } from '../src/signing/secrets.js'
import { listKeys, resealKeys, revokeKey, rotateKeys } from '../src/signing/key-store.js'

const USAGE = 'npm run keys -- list | rotate | revoke <kid> | reencrypt'
const actor = { userAgent: 'keysmith/keys-script' }

// Everything about the arguments that needs no database, checked before one is opened.
function checkArgs([command, ...rest]: string[]): void {
  switch (command) {
    case 'list':
    case 'rotate':
    case 'reencrypt':
      if (rest.length) throw new UsageError(`${command} takes no arguments`)
      return
    case 'revoke':
      if (rest.length !== 1 || !/^[A-Za-z0-9_-]{1,128}$/.test(rest[0]!)) throw new UsageError('revoke takes exactly one kid')
      return
    default:
      throw new UsageError(command ? `unknown command ${JSON.stringify(command)}` : 'a command is required')
  }
}

await runCli(USAGE, async ({ config, handle, args: [command, kid] }) => {
  const iso = (d: Date | null) => d ? d.toISOString() : '-'
  const store = async () => ({
    box: new SealedBox(await resolveSecrets(config.keyEncryptionSecrets, config.keysDir)),
    keySize: config.keySize
  })
  switch (command) {
    case 'list': {
      for (const k of await listKeys(handle.db)) {
        process.stdout.write(`${k.kid}  ${k.state.padEnd(7)}  created=${iso(k.created_at)}  activated=${iso(k.activated_at)}  retired=${iso(k.retired_at ?? k.revoked_at)}\n`)
      }
      return
    }
    case 'rotate': {
      process.stdout.write(`${await rotateKeys(handle.db, await store(), actor)}\n`)
      return
    }
    case 'revoke': {
      await revokeKey(handle.db, await store(), kid!, actor)
      process.stdout.write(`revoked ${kid}\n`)
      return
    }
    case 'reencrypt': {
      const changed = await resealKeys(handle.db, (await store()).box)
      process.stdout.write(`re-encrypted ${changed} key(s) under the first KEY_ENCRYPTION_SECRET\n`)
    }
  }
}, checkArgs)
