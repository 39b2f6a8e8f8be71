import { randomUUID, sign as signCb, type KeyObject } from 'node:crypto'
import { promisify } from 'node:util'
import type { Keyring } from './keyring.js'
import { errors } from '../errors.js'

// Async sign runs on libuv's thread pool, so RSA never blocks the event loop and both
// cores sign at once.
const sign = promisify(signCb) as (alg: string, data: Buffer, key: KeyObject) => Promise<Buffer>

export interface AccessTokenClaims {
  sub: string
  roles: string[]
  scope?: string
}

export interface MintedToken {
  token: string
  jti: string
  exp: number
  expiresIn: number
}

export interface TokenSignerOptions {
  issuer: string
  audience: string
  ttlSeconds: number
  now?: () => number
}

// RFC 9068 access tokens: header {alg: RS256, typ: at+jwt, kid}, no personal data.
export class TokenSigner {
  readonly #keyring: Keyring
  readonly #opts: TokenSignerOptions

  constructor(keyring: Keyring, opts: TokenSignerOptions) {
    this.#keyring = keyring
    this.#opts = opts
  }

  async mint(claims: AccessTokenClaims): Promise<MintedToken> {
    const key = this.#keyring.active
    if (!key) throw new errors.NoSigningKey()
    const iat = Math.floor((this.#opts.now?.() ?? Date.now()) / 1000)
    const exp = iat + this.#opts.ttlSeconds
    const jti = randomUUID()
    const payload = {
      iss: this.#opts.issuer,
      sub: claims.sub,
      aud: this.#opts.audience,
      exp,
      iat,
      jti,
      roles: claims.roles,
      ...(claims.scope ? { scope: claims.scope } : {})
    }
    const input = `${key.headerB64}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`
    const signature = await sign('sha256', Buffer.from(input), key.privateKey)
    return { token: `${input}.${signature.toString('base64url')}`, jti, exp, expiresIn: this.#opts.ttlSeconds }
  }
}
