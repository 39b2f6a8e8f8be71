import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { build, type TestApp } from '../helper.js'
import { PASSWORD, accessToken, decodeJwt, loginRes, register, uniqueEmail, UUID } from '../accounts-helper.js'

// `npm run users -- create <email>` (password on stdin), `grant`/`revoke <email> <role>`,
// run as the real script against the test's database while an app instance serves it.
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

interface Run { code: number | null; stdout: string; stderr: string }

// The script with only the test database's settings: nothing leaks in from this process.
function users(a: TestApp, args: string[], stdin = ''): Promise<Run> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent' }
  for (const [k, v] of Object.entries(a.testEnv)) if (v !== undefined) env[k] = v
  return new Promise((resolve, reject) => {
    // What `npm run users --` runs (tsx), as one process: node with tsx's loader.
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/users.ts', ...args], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(stdin)
  })
}

const oneLine = (s: string) => s.split('\n').filter(Boolean)

t.test('create: the password comes from stdin; the user can log in with the default role', async (t) => {
  const a = await build(t)
  const email = uniqueEmail('Script')
  // A Windows line end is stripped too (the weak-password test below relies on a bare \n).
  const run = await users(a, ['create', `  ${email} `], 'from stdin, not argv\r\n')
  t.equal(run.code, 0, run.stderr)
  t.equal(run.stderr, '')
  t.match(run.stdout, /^[0-9a-f-]{36}\n$/)
  const id = run.stdout.trim()
  t.match(id, UUID)
  const row = await a.db.selectFrom('users').select(['email', 'password_hash']).where('id', '=', id).executeTakeFirstOrThrow()
  t.equal(row.email, email)
  t.match(row.password_hash, /^\$argon2id\$v=19\$m=19456,p=1,t=2\$/)
  t.same((await a.db.selectFrom('user_roles').select('role').where('user_id', '=', id).execute()).map((r) => r.role), ['user'])
  t.match(await a.db.selectFrom('audit_events').select(['type', 'user_agent']).where('user_id', '=', id).execute(),
    [{ type: 'user.registered', user_agent: 'keysmith/users-script' }])
  t.equal((await loginRes(a, email, 'from stdin, not argv')).statusCode, 200)
})

t.test('create refuses a weak password and a taken email, with one line and a non-zero exit', async (t) => {
  const a = await build(t)
  const weakEmail = uniqueEmail()
  // Common once its line end is stripped.
  const weak = await users(a, ['create', weakEmail], 'password1\n')
  t.equal(weak.code, 1)
  t.same(oneLine(weak.stderr), ['error: Password is too common, choose another'])
  t.equal(weak.stdout, '')
  t.equal(await a.db.selectFrom('users').select('id').where('email', '=', weakEmail).executeTakeFirst(), undefined)

  const taken = await register(a, uniqueEmail('Taken'))
  const run = await users(a, ['create', taken.email.toUpperCase()], 'another good password\n')
  t.equal(run.code, 1)
  t.same(oneLine(run.stderr), ['error: Email is already registered'])
})

t.test('grant and revoke roles; the next login carries them', async (t) => {
  const a = await build(t)
  const user = await register(a, uniqueEmail('Roles'))
  const roles = async () => decodeJwt(await accessToken(a, user.email, PASSWORD)).claims.roles

  const grant = await users(a, ['grant', user.email.toUpperCase(), 'admin'])
  t.equal(grant.code, 0, grant.stderr)
  t.equal(grant.stdout, `granted admin for ${user.email}\n`)
  t.same(await roles(), ['admin', 'user'])

  const revoke = await users(a, ['revoke', user.email, 'admin'])
  t.equal(revoke.code, 0, revoke.stderr)
  t.equal(revoke.stdout, `revoked admin for ${user.email}\n`)
  t.same(await roles(), ['user'])
  t.same((await a.db.selectFrom('audit_events').select('type').where('user_id', '=', user.id)
    .where('type', 'in', ['role.granted', 'role.revoked']).orderBy('id').execute()).map((r) => r.type), ['role.granted', 'role.revoked'])
})

t.test('bad arguments exit non-zero with a one-line reason', async (t) => {
  const a = await build(t)
  const user = await register(a)
  const check = (run: Run, args: string[], code: number, message: RegExp) => {
    const why = JSON.stringify(args)
    t.equal(run.code, code, why)
    t.equal(oneLine(run.stderr).length, 1, `${why}: one line`)
    t.match(run.stderr, message, why)
    t.equal(run.stdout, '', why)
  }
  // Refused before any database is opened, so these can run at once.
  const early: [string[], number, RegExp][] = [
    [[], 2, /^error: a command is required \(usage: /],
    [['frobnicate', user.email], 2, /^error: unknown command "frobnicate"/],
    [['create'], 2, /^error: create needs an email/],
    [['create', uniqueEmail(), 'hunter2hunter2'], 2, /^error: create takes only an email; the password is read from stdin/],
    [['grant', user.email], 2, /^error: grant takes an email and a role/],
    [['grant', user.email, 'Not A Role!'], 2, /^error: role must match/],
    [['create', 'not-an-email'], 1, /^error: email must be a valid email address\n$/]
  ]
  const runs = await Promise.all(early.map(([args]) => users(a, args, 'a fine password\n')))
  early.forEach(([args, code, message], i) => check(runs[i]!, args, code, message))
  const nobody = ['grant', uniqueEmail('nobody'), 'admin']
  check(await users(a, nobody), nobody, 1, /^error: no user with email /)
  t.same((await a.db.selectFrom('user_roles').select('role').where('user_id', '=', user.id).execute()).map((r) => r.role), ['user'], 'nothing changed')
})
