import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.js'
import { childEnv, lines, run } from '../support.js'

t.test('an empty environment gives the documented defaults', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    port: 3000,
    host: '127.0.0.1',
    databaseUrl: undefined,
    dataDir: './data',
    issuer: 'http://localhost:3000',
    audience: 'http://localhost:3000',
    accessTokenTtl: 900,
    refreshTokenTtl: 604_800,
    refreshReuseGrace: 2,
    sessionMaxAge: 2_592_000,
    keyEncryptionSecrets: undefined,
    redisUrl: undefined,
    corsOrigins: [],
    trustProxy: undefined,
    logLevel: 'info'
  })
})

t.test('good values are taken as given', async (t) => {
  const config = loadConfig({
    NODE_ENV: 'production',
    PORT: '8080',
    ISSUER: 'https://id.example.com/',
    ACCESS_TOKEN_TTL: '3600',
    DATABASE_URL: 'postgresql://keysmith@db:5432/keysmith',
    KEY_ENCRYPTION_SECRET: 'new-secret, old-secret',
    CORS_ORIGINS: 'https://a.example, https://b.example',
    LOG_LEVEL: 'warn'
  })
  t.match(config, {
    port: 8080,
    issuer: 'https://id.example.com',
    audience: 'https://id.example.com',
    accessTokenTtl: 3600,
    databaseUrl: 'postgresql://keysmith@db:5432/keysmith',
    keyEncryptionSecrets: ['new-secret', 'old-secret'],
    corsOrigins: ['https://a.example', 'https://b.example'],
    logLevel: 'warn'
  })
})

// [variable named in the error, environment]
const BAD: [string, Record<string, string>][] = [
  ['PORT', { PORT: 'abc' }],
  ['PORT', { PORT: '70000' }],
  ['ACCESS_TOKEN_TTL', { ACCESS_TOKEN_TTL: '7200' }],
  ['ACCESS_TOKEN_TTL', { ACCESS_TOKEN_TTL: '15m' }],
  ['KEY_ENCRYPTION_SECRET', { NODE_ENV: 'production' }],
  ['KEY_ENCRYPTION_SECRET', { NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: ' , ' }],
  ['DATABASE_URL', { DATABASE_URL: 'mysql://root:hunter2@db/keysmith' }],
  ['LOG_LEVEL', { LOG_LEVEL: 'loud' }],
  ['ISSUER', { ISSUER: 'idp.example.com' }],
  ['REDIS_URL', { REDIS_URL: 'http://cache:6379' }],
  ['METRICS_PORT', { METRICS_PORT: '9464x' }],
  ['METRICS_PORT', { METRICS_PORT: '0' }],
  ['METRICS_PORT', { METRICS_PORT: '70000' }],
  ['METRICS_PORT', { PORT: '8080', METRICS_PORT: '8080' }]
]

t.test('each bad variable is refused with a ConfigError naming it', async (t) => {
  for (const [name, env] of BAD) {
    let error: unknown
    try {
      loadConfig(env)
    } catch (err) {
      error = err
    }
    t.type(error, ConfigError, `${JSON.stringify(env)} is refused`)
    t.match((error as Error | undefined)?.message, new RegExp(`^${name}: `), `and the message starts with ${name}`)
  }
})

t.test('metrics are off unless METRICS_PORT is set, and then on loopback by default', async (t) => {
  t.same(loadConfig({}).metrics, { port: undefined, host: '127.0.0.1' })
  t.same(loadConfig({ METRICS_PORT: '9464' }).metrics, { port: 9464, host: '127.0.0.1' })
  t.same(loadConfig({ METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0' }).metrics, { port: 9464, host: '0.0.0.0' })
})

t.test('the error is useful without leaking secrets', async (t) => {
  t.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), { message: /fatal, error, warn, info, debug, trace, silent/ },
    'a bad LOG_LEVEL lists the levels')
  t.throws(() => loadConfig({ ACCESS_TOKEN_TTL: '7200' }), { message: /3600/ }, 'a long TTL names the limit')
  let message = ''
  try {
    loadConfig({ DATABASE_URL: 'mysql://root:hunter2@db/keysmith' })
  } catch (err) {
    message = (err as Error).message
  }
  t.match(message, /^DATABASE_URL: /)
  t.notMatch(message, /hunter2/, 'a bad URL is not echoed with its password')
})

t.test('`tsx src/server.ts` refuses a bad environment with one line naming the variable', async (t) => {
  const cases: [string, Record<string, string>][] = [
    ['PORT', { PORT: 'abc' }],
    ['ACCESS_TOKEN_TTL', { ACCESS_TOKEN_TTL: '7200' }],
    ['KEY_ENCRYPTION_SECRET', { NODE_ENV: 'production' }],
    ['DATABASE_URL', { DATABASE_URL: 'mysql://db/keysmith' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'loud' }]
  ]
  const results = await Promise.all(cases.map(([, env]) =>
    run('src/server.ts', [], childEnv({ DATA_DIR: '/nonexistent/keysmith-data', ...env }), { via: 'tsx-cli' })))
  cases.forEach(([name], i) => {
    const { code, stdout, stderr } = results[i]!
    t.not(code, 0, `${name}: exit code is not 0`)
    t.equal(lines(stderr).length, 1, `${name}: one line on stderr`)
    t.match(stderr, new RegExp(`\\b${name}\\b`), `${name}: the line names the variable`)
    t.equal(stdout, '', `${name}: nothing else`)
  })
})
