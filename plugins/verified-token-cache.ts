import type { JWTPayload } from 'jose'

// Tokens that verified, found by their exact text, so a client presenting the same token
// again costs a map lookup instead of an RSA verification. Entries never outlive the
// token's exp, nor MAX_AGE_MS (so a key revoked at the issuer stops being honoured here
// as soon as the JWKS cache lets it), nor a change of the local key set (`generation`).
const MAX_AGE_MS = 60_000
// Entries are keyed by the token's last characters (the tail of its signature), not by the
// whole token: a Map hashes every character of a key it looks up, and a header's token is a
// new string of ~700 characters on every request. An entry holds the whole token, and only
// that exact text is a hit: another token with the same tail (a tampered payload under a
// copied signature) misses and is verified.
const KEY_LENGTH = 32

interface Entry<T> {
  token: string
  value: T
  until: number
  generation: number
}

export class VerifiedTokenCache<T extends { claims: JWTPayload }> {
  readonly #entries = new Map<string, Entry<T>>()
  readonly #max: number

  constructor(max = 10_000) {
    this.#max = max
  }

  get(token: string, now: number, generation: number): T | undefined {
    const key = token.slice(-KEY_LENGTH)
    const e = this.#entries.get(key)
    if (!e || e.token !== token) return undefined
    if (e.until <= now || e.generation !== generation) {
      this.#entries.delete(key)
      return undefined
    }
    return e.value
  }

  set(token: string, value: T, now: number, generation: number): void {
    const { exp } = value.claims
    if (typeof exp !== 'number') return
    const until = Math.min(exp * 1000, now + MAX_AGE_MS)
    if (until <= now) return
    // Oldest first out: Map iterates in insertion order.
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!)
    this.#entries.set(token.slice(-KEY_LENGTH), { token, value, until, generation })
  }
}
