import argon2 from 'argon2'
import { dictionary } from '@zxcvbn-ts/language-common'
import { errors } from './errors.js'

export interface Argon2Params {
  memoryCost: number // KiB
  timeCost: number
  parallelism: number
}

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

  needsRehash(hash: string): boolean {
    try {
      return argon2.needsRehash(hash, { ...this.#params })
    } catch {
      return true
    }
  }

  // Unknown emails verify against this hash, so they cost exactly what a wrong password does.
  async verifyDummy(password: string): Promise<false> {
    this.#dummy ??= this.hash('keysmith-dummy-password-for-timing')
    await this.verify(await this.#dummy, password)
    return false
  }
}
