import { Type } from 'typebox'

// Shared request and reply shapes, so every route documents (and serializes) its answers
// the same way. A response schema also filters: a property missing here is dropped from
// the reply, so these list everything the handlers send.

const REASONS: Record<number, string> = {
  400: 'The request is malformed or fails validation (the message says why)',
  401: 'Missing, invalid, expired or revoked credentials',
  403: 'Not allowed: missing role, disabled account or foreign Origin',
  404: 'No such resource',
  409: 'Conflict',
  413: 'The body is larger than 64 KiB',
  415: 'Unsupported content type',
  429: 'Too many requests; retry after Retry-After seconds',
  503: 'Database or signing key unavailable; retry after Retry-After seconds'
}

// JSON is UTF-8 (RFC 8259) and forms are read as UTF-8: a body that declares another charset
// is refused (415) rather than decoded as something it says it is not.
export function declaresOtherCharset(contentType: string | undefined): boolean {
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(contentType ?? '')?.[1]
  return charset !== undefined && !/^utf-?8$/i.test(charset)
}

// The errors every body-accepting route can answer before its handler runs.
export const BODY_ERRORS = [400, 413, 415] as const

export const errorReply = (description: string) => Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String()
}, { description })

export const errorReplies = (...codes: number[]) =>
  Object.fromEntries(codes.map((c) => [c, errorReply(REASONS[c] ?? 'Error')]))

// RFC 6749 §5.2 errors, the /oauth/* endpoints' own shape.
export const oauthErrorReply = (description: string) => Type.Object({
  error: Type.String(),
  error_description: Type.Optional(Type.String())
}, { description })

const OAUTH_REASONS: Record<number, string> = {
  ...REASONS,
  400: '`invalid_request`, `invalid_grant` (bad credentials, a spent or unknown refresh token) or `unsupported_grant_type`'
}

export const oauthErrorReplies = (...codes: number[]) =>
  Object.fromEntries(codes.map((c) => [c, oauthErrorReply(OAUTH_REASONS[c] ?? 'Error')]))

export const NoContent = (description: string) => Type.Null({ description })

export const TokenReply = Type.Object({
  access_token: Type.String({ description: 'RFC 9068 JWT (RS256, typ at+jwt)' }),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer({ description: 'seconds' })
}, { description: 'An access token; the refresh token is in the keysmith_refresh cookie. Cache-Control: no-store' })

export const Credentials = Type.Object({
  email: Type.String({ minLength: 1, maxLength: 320 }),
  // The policy (8–256 after NFKC) is checked in code with a clear message; this only caps
  // what we are willing to read at all.
  password: Type.String({ minLength: 1, maxLength: 1024 })
})

export const Uuid = Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' })

// Names of the security schemes declared in plugins/openapi.ts.
export const BEARER_AUTH = [{ bearerAuth: [] }]
export const COOKIE_AUTH = [{ refreshCookie: [] }]

export const Jwks = Type.Object({
  keys: Type.Array(Type.Object({
    kty: Type.Literal('RSA'),
    use: Type.Literal('sig'),
    alg: Type.Literal('RS256'),
    kid: Type.String({ description: 'RFC 7638 thumbprint' }),
    n: Type.String(),
    e: Type.String()
  }))
}, { description: 'JSON Web Key Set (RFC 7517), public members only' })

export const Discovery = Type.Object({
  issuer: Type.String(),
  jwks_uri: Type.String(),
  token_endpoint: Type.String(),
  revocation_endpoint: Type.String(),
  grant_types_supported: Type.Array(Type.String()),
  response_types_supported: Type.Array(Type.String()),
  token_endpoint_auth_methods_supported: Type.Array(Type.String()),
  revocation_endpoint_auth_methods_supported: Type.Array(Type.String()),
  id_token_signing_alg_values_supported: Type.Array(Type.String()),
  token_endpoint_auth_signing_alg_values_supported: Type.Array(Type.String()),
  subject_types_supported: Type.Array(Type.String()),
  scopes_supported: Type.Array(Type.String())
}, { description: 'Server metadata' })
