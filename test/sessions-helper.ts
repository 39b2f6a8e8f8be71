import { randomUUID } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import { build, type BuildTestOptions, type TestApp } from './helper.js'

type Test = Parameters<typeof build>[0]

// Shared steps of the session and OAuth tests: a user, a browser login, a refresh.
export const PASSWORD = 'correct horse battery staple'
export const COOKIE = 'keysmith_refresh'

// Many requests per test come from one address: lift the per-address request limit.
export function buildApp(t: Test, opts: BuildTestOptions = {}): Promise<TestApp> {
  return build(t, { ...opts, env: { RATE_LIMIT_MAX: '100000', ...opts.env } })
}

export async function register(app: TestApp, password = PASSWORD): Promise<{ id: string; email: string; password: string }> {
  const email = `${randomUUID()}@example.com`
  const res = await app.inject({ method: 'POST', url: '/auth/register', payload: { email, password } })
  if (res.statusCode !== 201) throw new Error(`register: ${res.statusCode} ${res.body}`)
  return { id: res.json<{ id: string }>().id, email, password }
}

export interface Session {
  res: LightMyRequestResponse
  access: string
  cookie: string
}

// The refresh cookie a response set, or undefined.
export function refreshCookieOf(res: LightMyRequestResponse) {
  return res.cookies.find((c) => c.name === COOKIE)
}

function session(res: LightMyRequestResponse): Session {
  const cookie = refreshCookieOf(res)?.value
  return { res, access: res.statusCode === 200 ? res.json<{ access_token: string }>().access_token : '', cookie: cookie ?? '' }
}

export async function login(app: TestApp, user: { email: string; password: string }, headers: Record<string, string> = {}): Promise<Session> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers, payload: { email: user.email, password: user.password } })
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return session(res)
}

export async function refresh(app: TestApp, cookie: string, headers: Record<string, string> = {}): Promise<Session> {
  return session(await app.inject({ method: 'POST', url: '/auth/refresh', headers, cookies: { [COOKIE]: cookie } }))
}

export function me(app: TestApp, access: string) {
  return app.inject({ method: 'GET', url: '/auth/me', headers: { authorization: `Bearer ${access}` } })
}

export async function auditTypes(app: TestApp, userId: string): Promise<string[]> {
  const rows = await app.db.selectFrom('audit_events').select('type')
    .where('user_id', '=', userId).orderBy('id').execute()
  return rows.map((r) => r.type)
}

export async function family(app: TestApp, familyId: string) {
  return app.db.selectFrom('refresh_families').selectAll().where('id', '=', familyId).executeTakeFirstOrThrow()
}

export async function familiesOf(app: TestApp, userId: string) {
  return app.db.selectFrom('refresh_families').selectAll().where('user_id', '=', userId).orderBy('created_at').execute()
}
