import type {} from '@fastify/cookie'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { errors } from '../src/errors.js'

// The browser's refresh token only ever travels in this cookie, never in a body.
export const REFRESH_COOKIE = 'keysmith_refresh'
const BASE = { path: '/auth', httpOnly: true, secure: true, sameSite: 'strict' } as const

export function setRefreshCookie(reply: FastifyReply, token: string, expiresAt: Date, now: number): void {
  const maxAge = Math.max(0, Math.floor((expiresAt.getTime() - now) / 1000))
  reply.setCookie(REFRESH_COOKIE, token, { ...BASE, maxAge })
}

export function clearRefreshCookie(reply: FastifyReply): void {
  reply.clearCookie(REFRESH_COOKIE, BASE)
}

export function refreshCookie(request: FastifyRequest): string | undefined {
  return request.cookies[REFRESH_COOKIE]
}

// Cookie endpoints refuse a present Origin that is neither ours nor allowed, on top of
// SameSite=Strict: defence in depth against cross-site requests.
export function checkOrigin(request: FastifyRequest, allowed: ReadonlySet<string>): void {
  const origin = request.headers.origin
  if (origin !== undefined && !allowed.has(origin)) throw new errors.OriginNotAllowed()
}
