import type { JWTPayload } from 'jose'

// Tokens that verified, keyed by their exact text, so a client presenting the same token
// again costs a map lookup instead of an RSA verification. Entries never outlive the
// token's exp, nor MAX_AGE_MS (so a key revoked at the issuer stops being honoured here
// as soon as the JWKS cache lets it), nor a change of the local key set (`generation`).
const MAX_AGE_MS = 60_000

interface Entry {
  claims: JWTPayload
  until: number
  generation: number
}

export class VerifiedTokenCache {
  readonly #entries = new Map<string, Entry>()
  readonly #max: number

  constructor(max = 10_000) {
    this.#max = max
  }

  get(token: string, now: number, generation: number): JWTPayload | undefined {
    const e = this.#entries.get(token)
    if (!e) return undefined
    if (e.until <= now || e.generation !== generation) {
      this.#entries.delete(token)
      return undefined
    }
    return e.claims
  }

  set(token: string, claims: JWTPayload, now: number, generation: number): void {
    if (typeof claims.exp !== 'number') return
    const until = Math.min(claims.exp * 1000, now + MAX_AGE_MS)
    if (until <= now) return
    // Oldest first out: Map iterates in insertion order.
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!)
    this.#entries.set(token, { claims, until, generation })
  }
}
