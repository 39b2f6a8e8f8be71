import t from 'tap'
import { connect as tcpConnect, createServer, type Socket } from 'node:net'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { freshDatabase, REAL_POSTGRES, type TestEnv } from './helper.js'
import { childEnv, connectOutcome, eventually, freePort, lines, run, startServer } from './support.js'

// src/server.ts as an operator runs it: its own process, its own port, its own database.

const LOCK = 'embedded.lock'
const SOCKET = '.s.PGSQL.5432'

function serverEnv(db: TestEnv, port: number) {
  return childEnv({ ...db, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' })
}


t.test('SIGTERM finishes the request in flight, exits 0 and releases port and database', async (t) => {
  const db = await freshDatabase(t)
  const port = await freePort()
  const server = await startServer(t, serverEnv(db, port), port)
  const ready = await fetch(`http://127.0.0.1:${port}/ready`)
  t.equal(ready.status, 200)
  if (!REAL_POSTGRES) {
    t.ok(existsSync(join(db.DATA_DIR, LOCK)), 'the running server holds the embedded lock')
    t.ok(existsSync(join(db.DATA_DIR, SOCKET)), 'and serves the embedded socket')
  }

  // A request whose body is still arriving when the signal comes.
  const client: Socket = tcpConnect(port, '127.0.0.1')
  let response = ''
  client.setEncoding('utf8').on('data', (d: string) => { response += d })
  const clientClosed = new Promise<void>((resolve) => client.on('close', () => resolve()))
  await new Promise<void>((resolve) => client.on('connect', () => resolve()))
  client.write('POST /in-flight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"slow"')
  t.ok(await eventually(() => /"incoming request".*\/in-flight|\/in-flight.*"incoming request"/.test(server.output().stdout), 10_000),
    'the server has the request')

  server.child.kill('SIGTERM')
  t.ok(await eventually(() => server.output().stdout.includes('shutting down'), 10_000), 'the server logged the shutdown')
  client.write(':true}')
  // The connection stays open on the client side: the server must answer and hang up itself.
  await clientClosed

  t.match(response, /^HTTP\/1\.1 404 /, 'the in-flight request got its complete answer')
  t.match(response, /"statusCode":404/)
  const result = await server.exited
  t.equal(result.code, 0, 'exit code 0')
  t.equal(result.signal, null)
  t.equal(await connectOutcome(port), 'ECONNREFUSED', 'the port no longer accepts connections')
  t.notOk(existsSync(join(db.DATA_DIR, LOCK)), 'the embedded lock is removed')
  t.notOk(existsSync(join(db.DATA_DIR, SOCKET)), 'the embedded socket is removed')
})

t.test('a port already in use stops the server with one line naming PORT', async (t) => {
  const db = await freshDatabase(t)
  const blocker = createServer()
  const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)))
  t.teardown(() => new Promise((resolve) => blocker.close(resolve)))
  const result = await run('src/server.ts', [], serverEnv(db, port), { timeoutMs: 90_000 })
  t.not(result.code, 0)
  const stderr = lines(result.stderr)
  t.equal(stderr.length, 1, 'one line on stderr')
  t.match(stderr[0], /PORT/)
  t.match(stderr[0], /EADDRINUSE/)
  t.notOk(existsSync(join(db.DATA_DIR, LOCK)), 'the embedded lock is removed')
  t.notOk(existsSync(join(db.DATA_DIR, SOCKET)), 'the embedded socket is removed')
})

t.test('a database that does not answer stops the server with one line', async (t) => {
  const db = await freshDatabase(t)
  const dead = await freePort()
  const result = await run('src/server.ts', [], childEnv({
    ...db, DATABASE_URL: `postgres://postgres@127.0.0.1:${dead}/keysmith`, PORT: String(await freePort()), LOG_LEVEL: 'silent'
  }))
  t.not(result.code, 0)
  const stderr = lines(result.stderr)
  t.equal(stderr.length, 1, 'one line on stderr')
  t.match(stderr[0], /ECONNREFUSED/)
})
