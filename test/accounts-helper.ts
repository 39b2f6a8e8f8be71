import { randomInt, randomUUID } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import type { TestApp } from './helper.js'

// Shared steps of the account, login and throttle tests. Every test makes its own users
// and, where counters are per address, its own address: the failed-login throttle is keyed
// by email (+ address) and the request limit by address, so nothing collides between tests,
// parallel files, or two runs sharing one Redis.
export const PASSWORD = 'correct horse battery staple'

export const uniqueEmail = (tag = 'user') => `${tag}-${randomUUID()}@example.com`

// An address from 10/8 nobody else uses; inject's remoteAddress becomes request.ip.
export const uniqueIp = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`

export interface Caller {
  ip?: string
  userAgent?: string
  headers?: Record<string, string>
}

const headersOf = (c: Caller) => ({ ...(c.userAgent ? { 'user-agent': c.userAgent } : {}), ...c.headers })

export function registerRes(app: TestApp, body: unknown, caller: Caller = {}) {
  return app.inject({ method: 'POST', url: '/auth/register', payload: body as object, remoteAddress: caller.ip, headers: headersOf(caller) })
}

export async function register(app: TestApp, email = uniqueEmail(), password = PASSWORD, caller: Caller = {}): Promise<{ id: string; email: string; password: string }> {
  const res = await registerRes(app, { email, password }, caller)
  if (res.statusCode !== 201) throw new Error(`register: ${res.statusCode} ${res.body}`)
  return { id: res.json<{ id: string }>().id, email, password }
}

export function loginRes(app: TestApp, email: string, password: string, caller: Caller = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/login', payload: { email, password }, remoteAddress: caller.ip, headers: headersOf(caller) })
}

export async function accessToken(app: TestApp, email: string, password: string, caller: Caller = {}): Promise<string> {
  const res = await loginRes(app, email, password, caller)
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return res.json<{ access_token: string }>().access_token
}

// Header and claims of a compact JWS, without verifying it (the tests verify separately).
export function decodeJwt(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [h, c] = token.split('.')
  const part = (s: string | undefined) => JSON.parse(Buffer.from(s ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
  return { header: part(h), claims: part(c) }
}

export async function auditOf(app: TestApp, where: { userId?: string; userAgent?: string }) {
  let q = app.db.selectFrom('audit_events').select(['type', 'user_id', 'ip', 'user_agent', 'details']).orderBy('id')
  if (where.userId) q = q.where('user_id', '=', where.userId)
  if (where.userAgent) q = q.where('user_agent', '=', where.userAgent)
  return q.execute()
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
