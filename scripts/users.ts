import { runCli, UsageError } from './cli.js'
import { checkEmail, createUser, findUserByEmail, grantRole, revokeRole, ROLE } from '../src/accounts.js'
import { PasswordHasher, checkPasswordPolicy } from '../src/passwords.js'

const USAGE = 'npm run users -- create <email> (password on stdin) | grant <email> <role> | revoke <email> <role>'
const meta = { userAgent: 'keysmith/users-script' }

// The password comes from stdin, never argv: argv is visible to every local user (ps).
async function readPassword(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('password: ')
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

// Everything about the arguments that needs no database, checked before one is opened.
function checkArgs([command, email, role, ...rest]: string[]): void {
  if (!command) throw new UsageError('a command is required')
  if (!['create', 'grant', 'revoke'].includes(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  if (!email) throw new UsageError(`${command} needs an email`)
  if (command === 'create') {
    if (role !== undefined) throw new UsageError('create takes only an email; the password is read from stdin')
    checkEmail(email)
  } else {
    if (!role || rest.length) throw new UsageError(`${command} takes an email and a role`)
    if (!ROLE.test(role)) throw new UsageError(`role must match ${ROLE}`)
  }
}

await runCli(USAGE, async ({ config, handle, args }) => {
  const [command, email, role] = args as [string, string, string]
  if (command === 'create') {
    const password = checkPasswordPolicy(await readPassword())
    const user = await createUser(handle.db, checkEmail(email), await new PasswordHasher(config.argon2).hash(password), meta)
    process.stdout.write(`${user.id}\n`)
    return
  }
  const user = await findUserByEmail(handle.db, email)
  if (!user) throw new Error(`no user with email ${email}`)
  const changed = command === 'grant' ? await grantRole(handle.db, user.id, role, meta) : await revokeRole(handle.db, user.id, role, meta)
  process.stdout.write(`${command === 'grant' ? 'granted' : 'revoked'} ${role} ${changed ? '' : '(no change) '}for ${user.email}\n`)
}, checkArgs)
