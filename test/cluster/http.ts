import { PASSWORD, uniqueEmail, uniqueIp } from '../accounts-helper.js'

// What a client of a Keysmith cluster does, over real sockets. Each call may name the
// client's address (sent as X-Forwarded-For: the instances trust 127.0.0.1 as their proxy);
// without one it gets an address of its own, so per-address limits stay out of the way.
export interface Reply {
  status: number
  headers: Headers
  body: any
  cookie: string | undefined
}

export interface CallOptions {
  json?: unknown
  form?: Record<string, string>
  ip?: string
  cookie?: string
  bearer?: string
  method?: string
  timeoutMs?: number
}

export async function call(base: string, path: string, o: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { 'x-forwarded-for': o.ip ?? uniqueIp() }
  let body: string | undefined
  if (o.json !== undefined) { headers['content-type'] = 'application/json'; body = JSON.stringify(o.json) }
  if (o.form) { headers['content-type'] = 'application/x-www-form-urlencoded'; body = new URLSearchParams(o.form).toString() }
  if (o.cookie) headers.cookie = `keysmith_refresh=${o.cookie}`
  if (o.bearer) headers.authorization = `Bearer ${o.bearer}`
  const res = await fetch(base + path, {
    method: o.method ?? (body === undefined && !o.cookie ? 'GET' : 'POST'),
    headers,
    body,
    signal: AbortSignal.timeout(o.timeoutMs ?? 30_000)
  })
  const text = await res.text()
  const cookie = res.headers.getSetCookie().map((c) => /^keysmith_refresh=([^;]*)/.exec(c)?.[1]).find((v) => v !== undefined)
  return { status: res.status, headers: res.headers, body: text && /json/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : text, cookie }
}

export const login = (base: string, email: string, password = PASSWORD, o: CallOptions = {}) =>
  call(base, '/auth/login', { ...o, json: { email, password } })

export const refresh = (base: string, cookie: string, o: CallOptions = {}) =>
  call(base, '/auth/refresh', { ...o, cookie, method: 'POST' })

export const me = (base: string, bearer: string, o: CallOptions = {}) => call(base, '/auth/me', { ...o, bearer })

export const oauthToken = (base: string, form: Record<string, string>, o: CallOptions = {}) =>
  call(base, '/oauth/token', { ...o, form })

export async function register(base: string, email = uniqueEmail('cluster'), o: CallOptions = {}) {
  const res = await call(base, '/auth/register', { ...o, json: { email, password: PASSWORD } })
  if (res.status !== 201) throw new Error(`register: ${res.status} ${JSON.stringify(res.body)}`)
  return { id: res.body.id as string, email }
}

export async function jwksKids(base: string, o: CallOptions = {}): Promise<string[]> {
  const res = await call(base, '/.well-known/jwks.json', o)
  return (res.body.keys as { kid: string }[]).map((k) => k.kid)
}
