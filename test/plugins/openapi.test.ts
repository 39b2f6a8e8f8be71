import t from 'tap'
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { grantRole } from '../../src/accounts.js'
import { build } from '../helper.js'
import { PASSWORD } from '../accounts-helper.js'

// The OpenAPI document is generated from the route schemas. These tests hold it to what the
// server really does: every route is in it, and what a request gets back is documented.
const ISSUER = 'https://id.example.test'
const app = await build(t, { env: { ISSUER, RATE_LIMIT_MAX: '100000' } })

interface Schema { type?: string; required?: string[]; properties?: Record<string, Schema> }
interface Operation {
  summary?: string
  description?: string
  tags?: string[]
  security?: Record<string, string[]>[]
  requestBody?: unknown
  responses: Record<string, { description: string; content?: Record<string, { schema: Schema }> }>
}
interface Document {
  openapi: string
  info: { title: string; version: string }
  servers: { url: string }[]
  tags: { name: string }[]
  components: { securitySchemes: Record<string, Record<string, string>> }
  paths: Record<string, Record<string, Operation>>
}

const res = await app.inject('/openapi.json')
const doc = res.json<Document>()
const operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
  Object.entries(ops).map(([method, op]) => ({ method: method.toUpperCase(), path, op })))

// Fastify's own route table, so a route added later without documentation fails here.
function registeredRoutes(app: FastifyInstance): string[] {
  const routes: string[] = []
  const stack: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (.*?)(?: \(([^)]*)\))?$/.exec(line)
    if (!m) continue
    stack.length = m[1]!.length / 4
    stack.push(m[2]!)
    for (const method of m[3]?.split(', ') ?? []) routes.push(`${method} ${stack.join('')}`)
  }
  return routes
}
// Left out on purpose: HEAD twins of GET routes, the CORS preflight, the docs themselves.
const undocumented = (route: string) =>
  /^HEAD /.test(route) || route === 'OPTIONS *' || /^GET \/(docs(\/|$)|openapi\.json$)/.test(route)

t.test('/openapi.json is an OpenAPI 3 document for this server', async (t) => {
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  t.match(doc.openapi, /^3\.\d+\.\d+$/)
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  t.match(doc.info, { title: 'Keysmith', version: pkg.version })
  t.same(doc.servers, [{ url: ISSUER }])
  t.match(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
  t.match(doc.components.securitySchemes.refreshCookie, { type: 'apiKey', in: 'cookie', name: 'keysmith_refresh' })
})

t.test('every route the app serves is documented, and nothing else', async (t) => {
  const served = registeredRoutes(app).filter((r) => !undocumented(r))
  t.ok(served.length >= 20, `found the routes (${served.length})`)
  const documented = operations.map(({ method, path }) => `${method} ${path.replace(/\{(\w+)\}/g, ':$1')}`)
  t.same([...documented].sort(), [...served].sort())
})

t.test('every operation is described, tagged, and documents a success and its errors', async (t) => {
  const tagNames = new Set(doc.tags.map((tag) => tag.name))
  for (const { method, path, op } of operations) {
    const where = `${method} ${path}`
    t.ok(op.summary && op.description && op.description.length > 20, `${where}: summary and description`)
    t.ok(op.tags?.length && op.tags.every((tag) => tagNames.has(tag)), `${where}: declared tags`)
    const codes = Object.keys(op.responses)
    const success = codes.filter((c) => /^2\d\d$/.test(c))
    t.ok(success.length > 0, `${where}: a 2xx response`)
    for (const code of success) {
      if (code !== '204') t.ok(op.responses[code]!.content?.['application/json']?.schema, `${where} ${code}: a body schema`)
    }
    // /ready's 503 is its own readiness report, not an error.
    for (const code of codes.filter((c) => Number(c) >= 400 && where !== 'GET /ready')) {
      const schema = op.responses[code]!.content?.['application/json']?.schema
      const shape = path.startsWith('/oauth/') ? ['error'] : ['statusCode', 'error', 'message']
      t.same(schema?.required, shape, `${where} ${code}: the error shape`)
    }
    // Anything that reads a body, a token or a database can fail; only public documents can't.
    if (op.requestBody || op.security || !/^\/(\.well-known|health)/.test(path)) {
      t.ok(codes.some((c) => Number(c) >= 400), `${where}: documents its errors`)
    }
  }
})

// ---------- what the server answers must be what the document says ----------
async function adminToken(): Promise<string> {
  const email = `openapi-${randomUUID()}@example.com`
  const reg = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password: PASSWORD } })
  await grantRole(app.db, reg.json<{ id: string }>().id, 'admin')
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { email, password: PASSWORD } })
  return login.json<{ access_token: string }>().access_token
}

// The body matches the documented schema: required members present, nothing undocumented.
function conforms(body: unknown, schema: Schema | undefined): string | undefined {
  if (!schema) return body === undefined ? undefined : 'a body where none is documented'
  if (schema.type !== 'object') return undefined
  if (typeof body !== 'object' || body === null) return `not an object: ${JSON.stringify(body)}`
  const missing = (schema.required ?? []).filter((k) => !(k in body))
  const extra = Object.keys(body).filter((k) => !(k in (schema.properties ?? {})))
  return missing.length || extra.length ? `missing ${missing.join()} extra ${extra.join()}` : undefined
}

t.test('every answer to a probe is a documented status with the documented shape', async (t) => {
  const token = await adminToken()
  const auth = { authorization: `Bearer ${token}` }
  for (const { method, path, op } of operations) {
    const url = path.replace(/\{\w+\}/g, randomUUID())
    const probes: InjectOptions[] = [{ method: method as 'GET', url }]
    // Requests that are refused before any handler runs, so the probes change nothing.
    if (method !== 'GET') probes.push({ method: method as 'POST', url, headers: { ...auth, 'content-type': 'text/plain' }, payload: 'x' })
    else probes.push({ method: 'GET', url, headers: auth })
    if (path.includes('{')) probes.push({ method: method as 'POST', url: path.replace(/\{\w+\}/g, 'not-a-uuid'), headers: auth })
    for (const probe of probes) {
      const reply: LightMyRequestResponse = await app.inject(probe)
      const where = `${method} ${path} (${probe.headers ? 'authenticated' : 'anonymous'}, ${reply.statusCode})`
      const documented = op.responses[String(reply.statusCode)]
      if (!t.ok(documented, `${where}: status documented`)) continue
      const body = reply.body === '' ? undefined : reply.json()
      t.equal(conforms(body, documented.content?.['application/json']?.schema), undefined, `${where}: body as documented`)
    }
  }
})

t.test('operations that need a Bearer token say so, and the others do not', async (t) => {
  for (const { method, path, op } of operations) {
    const anonymous = await app.inject({ method: method as 'GET', url: path.replace(/\{\w+\}/g, randomUUID()) })
    const schemes = (op.security ?? []).map((s) => Object.keys(s).join('+'))
    const where = `${method} ${path}`
    if (anonymous.statusCode === 401) t.ok(schemes.length > 0 && !schemes.includes(''), `${where}: refused anonymously, so it declares security`)
    if (schemes.length === 1 && schemes[0] === 'bearerAuth') t.equal(anonymous.statusCode, 401, `${where}: declared Bearer, refused without`)
    if (schemes.length === 0) t.not(anonymous.statusCode, 401, `${where}: no security declared, none needed`)
  }
})

t.test('/docs serves the interactive page and everything it loads', async (t) => {
  const page = await app.inject('/docs')
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  const assets = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
  t.ok(assets.some((a) => a.endsWith('swagger-ui-bundle.js')) && assets.some((a) => a.endsWith('.css')), 'scripts and styles')
  for (const asset of assets) {
    const r = await app.inject(asset)
    t.equal(r.statusCode, 200, asset)
    t.ok(r.rawPayload.length > 0, `${asset} has content`)
  }
  // The page reads the document from its own json route: the same document.
  const json = await app.inject('/docs/json')
  t.same(json.json(), doc)
})

t.test('the JWKS is documented and still sent as its pre-serialized bytes', async (t) => {
  t.ok(doc.paths['/.well-known/jwks.json']?.get?.responses['200']?.content?.['application/json']?.schema, 'a documented schema')
  const jwks = await app.inject('/.well-known/jwks.json')
  t.equal(jwks.statusCode, 200)
  t.ok(jwks.rawPayload.equals(app.keyring.jwks.body), 'byte for byte what the keyring serialized')
  t.match(jwks.headers['content-type'], /^application\/json/)
  const again = await app.inject({ url: '/.well-known/jwks.json', headers: { 'if-none-match': app.keyring.jwks.etag } })
  t.equal(again.statusCode, 304)
  t.equal(again.body, '')
})
