import createError from '@fastify/error'

// Every error a client can see, declared once. Messages are deliberately generic: the
// detail that would help an attacker (which check failed) goes to the log, not the reply.
export const errors = {
  InvalidCredentials: createError('KEYSMITH_ERR_INVALID_CREDENTIALS', 'Invalid email or password', 401),
  AccountDisabled: createError('KEYSMITH_ERR_ACCOUNT_DISABLED', 'Account is disabled', 403),
  Throttled: createError('KEYSMITH_ERR_THROTTLED', 'Too many attempts, try again later', 429),
  EmailTaken: createError('KEYSMITH_ERR_EMAIL_TAKEN', 'Email is already registered', 409),
  WeakPassword: createError('KEYSMITH_ERR_WEAK_PASSWORD', '%s', 400),
  InvalidInput: createError('KEYSMITH_ERR_INVALID_INPUT', '%s', 400),
  Unauthorized: createError('KEYSMITH_ERR_UNAUTHORIZED', 'Missing or invalid access token', 401),
  Forbidden: createError('KEYSMITH_ERR_FORBIDDEN', 'Insufficient permissions', 403),
  NotFound: createError('KEYSMITH_ERR_NOT_FOUND', 'Not found', 404),
  UnsupportedCharset: createError('KEYSMITH_ERR_UNSUPPORTED_CHARSET', 'Unsupported Media Type: bodies must be UTF-8', 415),
  LastAdmin: createError('KEYSMITH_ERR_LAST_ADMIN', 'The last enabled admin cannot lose the admin role', 409),
  InvalidRefresh: createError('KEYSMITH_ERR_INVALID_REFRESH', 'Invalid or expired session', 401),
  RefreshRace: createError('KEYSMITH_ERR_REFRESH_RACE', 'Session was just refreshed, retry with the new cookie', 409),
  OriginNotAllowed: createError('KEYSMITH_ERR_ORIGIN', 'Origin not allowed', 403),
  Unavailable: createError('KEYSMITH_ERR_UNAVAILABLE', 'Service temporarily unavailable', 503),
  NoSigningKey: createError('KEYSMITH_ERR_NO_SIGNING_KEY', 'No signing key is loaded', 503)
} as const

export type KeysmithErrorCode = ReturnType<(typeof errors)[keyof typeof errors]>['code']
