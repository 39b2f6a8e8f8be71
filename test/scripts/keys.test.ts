import t from 'tap'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import type { Kysely } from 'kysely'
import type { Database } from '../../src/db/schema.js'
import { connect } from '../../src/db/connect.js'
import { build, freshDatabase } from '../helper.js'
import { freePort, keysScript, lines } from '../support.js'

// `npm run keys -- …` as an operator runs it, next to a running app on the same database.

const snapshot = (db: Kysely<Database>) => db.selectFrom('signing_keys').selectAll().orderBy('kid').execute()
const ISO = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z'

t.test('list prints one line per key: kid, state, created, activated, retired', async (t) => {
  const app = await build(t)
  const rows = await app.db.selectFrom('signing_keys').select(['kid', 'state']).orderBy('created_at').orderBy('kid').execute()
  const result = await keysScript(app.testEnv, 'list')
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stderr, '')
  const out = lines(result.stdout)
  t.equal(out.length, rows.length)
  rows.forEach((row, i) => {
    t.match(out[i], new RegExp(`^${row.kid}\\s+${row.state}\\s+created=${ISO}\\s+activated=(${ISO}|-)\\s+retired=(${ISO}|-)$`))
  })
})

t.test('revoking the next key replaces it', async (t) => {
  const app = await build(t)
  const next = await app.db.selectFrom('signing_keys').select('kid').where('state', '=', 'next').executeTakeFirstOrThrow()
  const result = await keysScript(app.testEnv, 'revoke', next.kid)
  t.equal(result.code, 0, result.stderr)
  const rows = await app.db.selectFrom('signing_keys').select(['kid', 'state']).execute()
  t.equal(rows.find((r) => r.kid === next.kid)?.state, 'revoked')
  t.equal(rows.filter((r) => r.state === 'next').length, 1, 'a new next key is published')
  t.equal(rows.filter((r) => r.state === 'active').length, 1)
})

t.test('bad arguments exit non-zero with one line on stderr and change nothing', async (t) => {
  const app = await build(t)
  const before = await snapshot(app.db)
  // The test above left a revoked key.
  const revoked = await app.db.selectFrom('signing_keys').select('kid').where('state', '=', 'revoked').executeTakeFirstOrThrow()
  const cases: [string[], RegExp, Record<string, string>?][] = [
    [[], /command is required/],
    [['bogus'], /unknown command "bogus"/],
    [['list', 'extra'], /list takes no arguments/],
    [['rotate', 'now'], /rotate takes no arguments/],
    [['revoke'], /exactly one kid/],
    [['revoke', 'a', 'b'], /exactly one kid/],
    [['revoke', 'not a kid!'], /exactly one kid/],
    [['revoke', 'no-such-kid'], /no key with kid no-such-kid/],
    [['reencrypt', 'extra'], /reencrypt takes no arguments/],
    [['revoke', revoked.kid], /already revoked/],
    [['list'], /^error: KEY_SIZE: /, { KEY_SIZE: '1024' }]
  ]
  const results = await Promise.all(cases.map(([args, , env]) => keysScript({ ...app.testEnv, ...env }, ...args)))
  cases.forEach(([args, reason], i) => {
    const { code, stdout, stderr } = results[i]!
    const name = `keys ${args.join(' ')}`
    t.not(code, 0, `${name}: exit code is not 0`)
    t.equal(lines(stderr).length, 1, `${name}: one line on stderr`)
    t.match(stderr, reason, `${name}: says why (${stderr.trim()})`)
    t.equal(stdout, '', `${name}: nothing on stdout`)
  })
  t.same(await snapshot(app.db), before, 'the key set is unchanged')
})

t.test('bad arguments are refused before any database is opened', async (t) => {
  const dataDir = join(tmpdir(), `keysmith-none-${randomBytes(6).toString('hex')}`)
  const results = await Promise.all([
    keysScript({ DATA_DIR: dataDir }, 'rotat'),
    keysScript({ DATABASE_URL: `postgres://postgres@127.0.0.1:${await freePort()}/none` }, 'revoke')
  ])
  for (const { code, stdout, stderr } of results) {
    t.equal(code, 2)
    t.equal(lines(stderr).length, 1)
    t.match(stderr, /^error: .* \(usage: npm run keys -- /)
    t.equal(stdout, '')
  }
  t.notOk(existsSync(dataDir), 'no embedded database was created')
})

t.test('the scripts work with no server running', async (t) => {
  const db = await freshDatabase(t)
  const rotate = await keysScript(db, 'rotate')
  t.equal(rotate.code, 0, rotate.stderr)
  const active = rotate.stdout.trim()
  const list = await keysScript(db, 'list')
  t.equal(list.code, 0, list.stderr)
  const out = lines(list.stdout)
  t.equal(out.length, 2, 'an active and a next key')
  t.ok(out.some((l) => l.startsWith(`${active} `) && / active /.test(l)))
  t.notOk(existsSync(join(db.DATA_DIR, 'embedded.lock')), 'an embedded database the script opened is closed again')
})

t.test('reencrypt re-seals the keys under the first of several secrets', async (t) => {
  const db = await freshDatabase(t)
  const handle = await connect({ databaseUrl: db.DATABASE_URL, dataDir: db.DATA_DIR })
  t.teardown(() => handle.close())
  const oldSecret = db.KEY_ENCRYPTION_SECRET
  const newSecret = randomBytes(24).toString('base64url')
  const both = { ...db, KEY_ENCRYPTION_SECRET: `${newSecret},${oldSecret}` }

  const first = await build(t, { db, database: handle })
  const active = first.keyring.active?.kid
  await t.test('the old secret still opens the keys while it is listed second', async (t) => {
    const app = await build(t, { db: both, database: handle })
    t.equal(app.keyring.active?.kid, active)
  })
  const result = await keysScript(both, 'reencrypt')
  t.equal(result.code, 0, result.stderr)
  t.equal(result.stdout, 're-encrypted 2 key(s) under the first KEY_ENCRYPTION_SECRET\n')

  const rotated = await build(t, { db: { ...db, KEY_ENCRYPTION_SECRET: newSecret }, database: handle })
  t.equal(rotated.keyring.active?.kid, active, 'the new secret alone opens them')
  await t.rejects(build(t, { db, database: handle }), { message: /KEY_ENCRYPTION_SECRET/ }, 'the old one no longer does')
})
