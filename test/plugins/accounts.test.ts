import t from 'tap'
import { build } from '../helper.js'
import { PASSWORD, UUID, auditOf, register, registerRes, uniqueEmail, uniqueIp } from '../accounts-helper.js'

// POST /auth/register and GET /auth/me (CONTRACT.md sections 4 and 6). The password change
// is in password.test.ts, login in login.test.ts.
type Test = Parameters<typeof build>[0]
// Many requests per test come from one address: lift the per-address request limit.
const app = (t: Test) => build(t, { env: { RATE_LIMIT_MAX: '100000' } })

t.test('register: 201 {id, email}, the user stored with an argon2id hash, the default role and an audit event', async (t) => {
  const a = await app(t)
  const email = uniqueEmail('Reg')
  const ip = uniqueIp()
  const res = await registerRes(a, { email: `  ${email}\t`, password: PASSWORD }, { ip, userAgent: 'register-test/1.0' })
  t.equal(res.statusCode, 201)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['email', 'id'])
  t.match(body.id, UUID)
  t.equal(body.email, email, 'trimmed, case kept')

  const row = await a.db.selectFrom('users').selectAll().where('id', '=', body.id).executeTakeFirstOrThrow()
  t.equal(row.email, email)
  t.equal(row.disabled, false)
  t.match(row.password_hash, /^\$argon2id\$v=19\$/)
  t.notMatch(row.password_hash, PASSWORD)
  const roles = await a.db.selectFrom('user_roles').select('role').where('user_id', '=', body.id).execute()
  t.same(roles.map((r) => r.role), ['user'])
  t.match(await auditOf(a, { userId: body.id }), [{ type: 'user.registered', ip, user_agent: 'register-test/1.0' }])
})

t.test('register: 400 for an invalid email, with a message saying so', async (t) => {
  const a = await app(t)
  for (const email of ['plainaddress', 'no-domain@', '@no-local.io', 'a@nodot', 'two words@example.com',
    'a@exa mple.com', 'a@@example.com', 'tab\t@example.com', 'nul\u0000@example.com', 'bell\u0007@example.com',
    `${'x'.repeat(250)}@example.com`, '   ']) {
    const res = await registerRes(a, { email, password: PASSWORD })
    t.equal(res.statusCode, 400, JSON.stringify(email))
    t.same(res.json(), { statusCode: 400, error: 'Bad Request', message: 'email must be a valid email address' })
  }
})

t.test('register: 400 for a weak password, and the message says why', async (t) => {
  const a = await app(t)
  const cases: [string, string, RegExp][] = [
    ['too short', 'Ab1!xyz', /at least 8 characters/],
    ['empty (a schema violation)', '', /password/],
    ['too long', 'x'.repeat(257), /at most 256 characters/],
    // U+FB00 (ﬀ) is one character that NFKC turns into two: 129 of them are 258.
    ['too long only after NFKC', '\uFB00'.repeat(129), /at most 256 characters/],
    ['common', 'password1', /too common/],
    ['common, any case', 'PassWord1', /too common/],
    ['common', 'iloveyou', /too common/]
  ]
  for (const [why, password, message] of cases) {
    const email = uniqueEmail()
    const res = await registerRes(a, { email, password })
    t.equal(res.statusCode, 400, why)
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message }, why)
    const stored = await a.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst()
    t.equal(stored, undefined, `${why}: no user created`)
  }
  // The bounds themselves are fine: 8 characters, and 256 after NFKC.
  t.equal((await registerRes(a, { email: uniqueEmail(), password: 'Zq8#mw2!' })).statusCode, 201)
  t.equal((await registerRes(a, { email: uniqueEmail(), password: '\uFB00'.repeat(128) })).statusCode, 201)
})

t.test('register: 409 when the email is taken, whatever its case or surrounding whitespace', async (t) => {
  const a = await app(t)
  const email = uniqueEmail('Taken.Case')
  await register(a, email)
  for (const variant of [email, email.toLowerCase(), email.toUpperCase(), `  ${email.toLowerCase()} `, `\n${email}`]) {
    const res = await registerRes(a, { email: variant, password: PASSWORD })
    t.equal(res.statusCode, 409, JSON.stringify(variant))
    t.same(res.json(), { statusCode: 409, error: 'Conflict', message: 'Email is already registered' })
  }
  // Case folding is not only ASCII.
  const umlaut = `Ärger-${uniqueEmail()}`
  await register(a, umlaut)
  t.equal((await registerRes(a, { email: umlaut.replace('Ä', 'ä'), password: PASSWORD })).statusCode, 409)
  const count = await a.db.selectFrom('users').select((eb) => eb.fn.countAll<string>().as('n'))
    .where((eb) => eb(eb.fn('lower', ['email']), '=', email.toLowerCase())).executeTakeFirstOrThrow()
  t.equal(Number(count.n), 1)
})

t.test('register and login: 413 above 64 KiB, 415 for anything but JSON, 400 for malformed JSON or schema violations', async (t) => {
  const a = await app(t)
  const json = { 'content-type': 'application/json' }
  for (const url of ['/auth/register', '/auth/login']) {
    const big = await a.inject({ method: 'POST', url, headers: json, payload: JSON.stringify({ email: uniqueEmail(), password: 'x'.repeat(65 * 1024) }) })
    t.equal(big.statusCode, 413, `${url} big body`)
    t.match(big.json(), { statusCode: 413, error: 'Payload Too Large' })

    for (const [type, payload] of [['text/plain', 'hello'], ['application/x-www-form-urlencoded', 'email=a%40b.co&password=x'],
      ['multipart/form-data; boundary=x', '--x--'], ['application/xml', '<a/>'], ['application/jsonx', '{}']]) {
      const res = await a.inject({ method: 'POST', url, headers: { 'content-type': type! }, payload })
      t.equal(res.statusCode, 415, `${url} ${type}`)
      t.same(res.json(), { statusCode: 415, error: 'Unsupported Media Type', message: 'Unsupported Media Type' })
    }
    t.equal((await a.inject({ method: 'POST', url, payload: '{"email":"a@b.co","password":"x"}' })).statusCode, 415, `${url} no content type`)
    for (const type of ['application/json; charset=utf-16', 'application/json;charset="ISO-8859-1"']) {
      const res = await a.inject({ method: 'POST', url, headers: { 'content-type': type }, payload: '\uFEFF{"email":"a@b.co","password":"x"}' })
      t.equal(res.statusCode, 415, `${url} ${type}`)
      t.same(res.json(), { statusCode: 415, error: 'Unsupported Media Type', message: 'Unsupported Media Type: bodies must be UTF-8' })
    }

    for (const payload of ['{"email":', '', 'null', '[]', '"a@b.co"', '42', '{"email":"a@b.co"}', '{"password":"correct horse"}',
      '{"email":{"$ne":null},"password":"x"}', '{"email":"a@b.co","password":{"x":1}}', '{"email":"","password":"correct horse"}',
      `{"email":"${'a'.repeat(321)}","password":"correct horse"}`, `{"email":"a@b.co","password":"${'x'.repeat(1025)}"}`,
      '{"__proto__":{"admin":true},"email":"a@b.co","password":"correct horse"}',
      '{"constructor":{"prototype":{"admin":true}},"email":"a@b.co","password":"correct horse"}']) {
      const res = await a.inject({ method: 'POST', url, headers: json, payload })
      t.equal(res.statusCode, 400, `${url} ${payload.slice(0, 60)}`)
      t.match(res.json(), { statusCode: 400, error: 'Bad Request', message: String })
      t.notMatch(res.body, /\bat .*:\d+:\d+/, 'no stack trace')
    }
  }
})

t.test('GET /auth/me: 200 {id, email, roles} from the database for a valid token', async (t) => {
  const a = await app(t)
  const user = await register(a, uniqueEmail('Me'))
  const login = await a.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: PASSWORD } })
  const token = login.json().access_token as string
  const res = await a.inject({ method: 'GET', url: '/auth/me', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { id: user.id, email: user.email, roles: ['user'] })
  // Roles are read from the database, not from the token.
  await a.db.insertInto('user_roles').values({ user_id: user.id, role: 'auditor' }).execute()
  const again = await a.inject({ method: 'GET', url: '/auth/me', headers: { authorization: `Bearer ${token}` } })
  t.same(again.json(), { id: user.id, email: user.email, roles: ['auditor', 'user'] })
})

t.test('GET /auth/me: 401 without a valid token, and for a disabled user', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const token = (await a.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: PASSWORD } })).json().access_token as string
  const [h, c, s] = token.split('.') as [string, string, string]
  const tampered = JSON.parse(Buffer.from(c, 'base64url').toString())
  tampered.roles = ['admin']
  const none = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')
  for (const authorization of [undefined, '', 'Bearer', 'Bearer ', `Basic ${Buffer.from('a:b').toString('base64')}`, 'Bearer a.b.c',
    `Bearer ${h}.${Buffer.from(JSON.stringify(tampered)).toString('base64url')}.${s}`, `Bearer ${none}.${c}.`,
    `Bearer ${h}.${c}`, `Bearer ${h}.${c}.${s}x`, `Token ${token}`, `Bearer ${'a'.repeat(5000)}.b.c`]) {
    const res = await a.inject({ method: 'GET', url: '/auth/me', headers: authorization === undefined ? {} : { authorization } })
    t.equal(res.statusCode, 401, String(authorization).slice(0, 40))
    t.same(res.json(), { statusCode: 401, error: 'Unauthorized', message: 'Missing or invalid access token' })
    t.match(res.headers['www-authenticate'], /^Bearer /)
  }
  t.equal((await a.inject({ method: 'GET', url: '/auth/me', headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
  await a.db.updateTable('users').set({ disabled: true }).where('id', '=', user.id).execute()
  const disabled = await a.inject({ method: 'GET', url: '/auth/me', headers: { authorization: `Bearer ${token}` } })
  t.equal(disabled.statusCode, 401, 'a disabled user\'s token no longer reaches /auth/me')
})

t.test('no input yields a 500 on register, login, me or password', async (t) => {
  const a = await app(t)
  const user = await register(a)
  const token = (await a.inject({ method: 'POST', url: '/auth/login', payload: { email: user.email, password: PASSWORD } })).json().access_token as string
  const strings = ['', ' ', '\u0000', 'a\u0000b@example.com', '\ud800', '\udfff@\ud800.io', '%00', '${jndi:ldap://x}', "' or 1=1 --",
    'İ@example.com', '\u202e@example.com', 'a'.repeat(320), 'é'.repeat(1024), '\uFB00'.repeat(1024), user.email, `${user.email}\u0000`]
  const bodies: unknown[] = []
  for (const s of strings) {
    bodies.push({ email: s, password: PASSWORD }, { email: user.email, password: s }, { email: s, password: s })
  }
  bodies.push({ email: 1, password: 2 }, { email: true, password: null }, { email: [user.email], password: [PASSWORD] }, {})
  const routes = [
    { url: '/auth/register', auth: false }, { url: '/auth/login', auth: false }, { url: '/auth/password', auth: true }
  ]
  for (const { url, auth } of routes) {
    for (const body of bodies) {
      const payload = url === '/auth/password'
        ? { current_password: (body as { email?: unknown }).email, new_password: (body as { password?: unknown }).password }
        : body
      const res = await a.inject({ method: 'POST', url, payload: payload as object, headers: auth ? { authorization: `Bearer ${token}` } : {} })
      t.ok(res.statusCode < 500, `${url} ${JSON.stringify(payload).slice(0, 80)} → ${res.statusCode}`)
    }
  }
  for (const headers of [{ 'content-type': 'application/json; charset=utf-16' }, { 'content-type': 'application/json; charset=latin1' },
    { 'content-type': 'application/json', 'content-encoding': 'gzip' }, { 'content-type': ';;;' }, { 'content-type': 'application/json', origin: 'null' }]) {
    const res = await a.inject({ method: 'POST', url: '/auth/login', headers, payload: JSON.stringify({ email: user.email, password: 'nope nope' }) })
    t.ok(res.statusCode < 500, `${JSON.stringify(headers)} → ${res.statusCode}`)
  }
  const me = await a.inject({ method: 'GET', url: '/auth/me?x=%00', headers: { authorization: `Bearer ${token}` } })
  t.equal(me.statusCode, 200)
})
