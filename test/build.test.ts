import { spawn } from 'node:child_process'
import { access, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { sharedDatabase } from './helper.js'

// `npm run build` and the package as another project sees it: `keysmith` and
// `keysmith/resource-server` resolved through package.json `exports` to dist/, under plain
// node (no tsx) and under tsc (the .d.ts typings).

const ROOT = fileURLToPath(new URL('..', import.meta.url))

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }) {
  // A plain child: no tsx or coverage loader inherited through NODE_OPTIONS.
  const env = { ...process.env, ...opts.env }
  delete env.NODE_OPTIONS
  const child = spawn(cmd, args, { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

const exists = (p: string) => access(p).then(() => true, () => false)

const build = await run('npm', ['run', 'build'], { cwd: ROOT })

t.test('npm run build compiles to dist/ with typings for every export', async (t) => {
  t.equal(build.code, 0, `tsc succeeded${build.code === 0 ? '' : `:\n${build.stdout}${build.stderr}`}`)
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, { types: string; default: string }> }
  t.same(Object.keys(pkg.exports).sort(), ['.', './resource-server'])
  for (const [name, target] of Object.entries(pkg.exports)) {
    t.ok(target.types.endsWith('.d.ts') && (await exists(join(ROOT, target.types))), `${name}: ${target.types}`)
    t.ok(await exists(join(ROOT, target.default)), `${name}: ${target.default}`)
  }
  t.ok(await exists(join(ROOT, 'dist/migrations')), 'the migrations are compiled beside the code that runs them')
  t.ok(await exists(join(ROOT, 'dist/src/threadpool.cjs')), 'and the thread-pool preload the image starts with')

  // What `npm pack` / `npm publish` would ship: dist/ is git-ignored, so without `files`
  // the package would hold none of what `exports` points at.
  const pack = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT })
  t.equal(pack.code, 0, pack.stderr)
  const packed = new Set((JSON.parse(pack.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path))
  for (const target of Object.values(pkg.exports).flatMap((e) => [e.types, e.default])) {
    t.ok(packed.has(target.replace(/^\.\//, '')), `the package ships ${target}`)
  }
  t.ok([...packed].some((p) => /^dist\/migrations\/[^/]+\.js$/.test(p)), 'and the migrations')
  t.ok(packed.has('dist/src/threadpool.cjs'), 'and the thread-pool preload')
  t.notOk([...packed].some((p) => p.startsWith('test/') || p.startsWith('keys/') || p.startsWith('data/')), 'but no tests, keys or data')
})

t.test('another project imports both entry points', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'keysmith-consumer-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await mkdir(join(dir, 'node_modules'))
  await symlink(ROOT, join(dir, 'node_modules', 'keysmith'), 'dir')
  await symlink(join(ROOT, 'node_modules', 'fastify'), join(dir, 'node_modules', 'fastify'), 'dir')
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', type: 'module', private: true }))

  await writeFile(join(dir, 'check.mjs'), `
    import Fastify from 'fastify'
    import { resourceServer } from 'keysmith/resource-server'
    import { buildApp, loadConfig, resourceServer as again } from 'keysmith'
    const out = { resourceServer: typeof resourceServer, buildApp: typeof buildApp, same: resourceServer === again }
    // The plugin works from dist: a route behind authenticate refuses a missing token.
    const rs = Fastify()
    await rs.register(resourceServer, { issuer: 'http://127.0.0.1:9', audience: 'http://127.0.0.1:9' })
    rs.get('/', { onRequest: rs.authenticate }, async () => 'ok')
    out.unauthenticated = (await rs.inject('/')).statusCode
    // So does Keysmith itself, migrations included, on the test's database.
    const app = await buildApp(loadConfig(process.env), { logger: false })
    out.ready = (await app.inject('/ready')).statusCode
    await app.close()
    console.log(JSON.stringify(out))
  `)
  await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'ES2022', strict: true, noEmit: true, skipLibCheck: true, types: [] },
    files: ['consumer.ts']
  }))
  await writeFile(join(dir, 'consumer.ts'), `
    import Fastify from 'fastify'
    import { resourceServer, type AuthenticatedUser } from 'keysmith/resource-server'
    import { buildApp, type Config } from 'keysmith'

    const app = Fastify()
    await app.register(resourceServer, { issuer: 'https://id.example', audience: 'https://api.example' })
    // @ts-expect-error the audience is required
    await app.register(resourceServer, { issuer: 'https://id.example' })
    app.get('/me', { onRequest: app.authenticate }, async (request) => {
      const user: AuthenticatedUser | null = request.user
      return { id: user?.id, roles: user?.roles.join(' ') }
    })
    app.get('/admin', { onRequest: app.requireRole('admin') }, async () => 'ok')
    app.get('/read', { onRequest: app.requireScope('read') }, async () => 'ok')
    // @ts-expect-error roles are strings
    app.requireRole(42)
    export const start = (config: Config) => buildApp(config)
  `)

  const { env } = await sharedDatabase()
  // Both at once: each is a process of its own.
  const [node, tsc] = await Promise.all([
    run(process.execPath, ['check.mjs'], {
      cwd: dir,
      env: { ...env, LOG_LEVEL: 'silent', ISSUER: undefined, AUDIENCE: undefined, PORT: undefined }
    }),
    run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: dir })
  ])
  t.equal(node.code, 0, `plain node ran the compiled JavaScript ${node.stderr}`)
  t.same(JSON.parse(node.stdout.trim().split('\n').at(-1) ?? '{}'), {
    resourceServer: 'function', buildApp: 'function', same: true, unauthenticated: 401, ready: 200
  })
  t.equal(tsc.code, 0, `tsc type-checked a consumer against the .d.ts files ${tsc.stdout}${tsc.stderr}`)
})
