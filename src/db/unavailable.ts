// Errors meaning "the database cannot be reached right now", as opposed to a bug or bad SQL.
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EPIPE', 'ENOENT', 'EHOSTUNREACH'])
// PostgreSQL SQLSTATE classes 08 (connection exception) and 57P (operator intervention).
const SQLSTATE = /^(08|57P0[1-3]|53300)/

export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err as { code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && (NETWORK_CODES.has(e.code) || SQLSTATE.test(e.code))) return true
    if (typeof e.message === 'string' && /timeout exceeded when trying to connect|Query read timeout|Connection terminated|connection .*(closed|ended)|Client has encountered a connection error/i.test(e.message)) return true
  }
  return false
}
