import argon2 from 'argon2'
import { dictionary } from '@zxcvbn-ts/language-common'
import { errors } from './errors.js'

export interface Argon2Params {
  memoryCost: number // KiB
  timeCost: number
  parallelism: number
}

// Argon2 1.3 (0x13), the version argon2.hash writes.
const ARGON2_VERSION = 0x13

export const MIN_LENGTH = 8
export const MAX_LENGTH = 256

// ~49,000 common passwords from zxcvbn-ts (lower-case); compared case-insensitively.
let common: Set<string> | undefined
function commonPasswords(): Set<string> {
  common ??= new Set(dictionary['passwords-common'] as string[])
  return common
}

export function normalizePassword(password: string): string {
  return password.normalize('NFKC')
}

// Length and common-list checks only: NIST 800-63B advises against composition rules.
// The length is counted in code points after NFKC, as the contract says.
export function checkPasswordPolicy(password: string): string {
  const normalized = normalizePassword(password)
  const length = [...normalized].length
  if (length < MIN_LENGTH) throw new errors.WeakPassword(`Password must be at least ${MIN_LENGTH} characters`)
  if (length > MAX_LENGTH) throw new errors.WeakPassword(`Password must be at most ${MAX_LENGTH} characters`)
  if (commonPasswords().has(normalized.toLowerCase())) {
    throw new errors.WeakPassword('Password is too common, choose another')
  }
  return normalized
}

export class PasswordHasher {
  readonly #params: Argon2Params
  #dummy: Promise<string> | undefined

  constructor(params: Argon2Params) {
    this.#params = params
  }

  hash(password: string): Promise<string> {
    return argon2.hash(normalizePassword(password), { type: argon2.argon2id, ...this.#params })
  }

  // A malformed stored hash counts as a mismatch, never as an error the client sees.
  async verify(hash: string, password: string): Promise<boolean> {
    try {
      return await argon2.verify(hash, normalizePassword(password))
    } catch {
      return false
    }
  }

  // Only upwards: a stored hash that is not argon2id, or weaker than the configured
  // parameters, is replaced; one that is stronger is kept. Otherwise lowering the settings
  // would silently weaken stored hashes, and two instances with different settings (a
  // rolling upgrade) would re-hash the same user back and forth on every login.
  needsRehash(hash: string): boolean {
    // PHC string: $argon2id$v=19$m=19456,p=1,t=2$salt$hash (parameters in any order).
    const [, id, version, params] = hash.split('$')
    if (id !== 'argon2id' || !version || !params) return true
    const n = new Map([version, ...params.split(',')].map((kv) => kv.split('=') as [string, string]))
    // A missing or malformed value is NaN, which is never at least anything: re-hash.
    const atLeast = (key: string, min: number) => Number(n.get(key)) >= min
    const { memoryCost, timeCost, parallelism } = this.#params
    return !(atLeast('v', ARGON2_VERSION) && atLeast('m', memoryCost) && atLeast('t', timeCost) && atLeast('p', parallelism))
  }

  // Unknown emails verify against this hash, so they cost exactly what a wrong password does.
  async verifyDummy(password: string): Promise<false> {
    this.#dummy ??= this.hash('keysmith-dummy-password-for-timing')
    await this.verify(await this.#dummy, password)
    return false
  }
}
