import { availableParallelism } from 'node:os'
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

// libuv's own reading of UV_THREADPOOL_SIZE: unset is 4; otherwise atoi's value within 1..1024.
export function threadPoolSize(value = process.env.UV_THREADPOOL_SIZE): number {
  if (value === undefined) return 4
  return Math.min(1024, Math.max(1, Number.parseInt(value, 10) || 0))
}

// How many hashes may run at once: one per core and one more, ready to take over a core as
// soon as a hash ends; and never every thread of libuv's pool, so that RSA signing (every
// token) and the pool's other users always find a thread free however many logins are
// queued. A hash holds its thread for its whole run (~25 ms).
export function hashingSlots(poolSize = threadPoolSize(), cores = availableParallelism()): number {
  return Math.max(1, Math.min(cores + 1, poolSize - 1))
}

// Hashes beyond the slots wait their turn here, in arrival order, instead of in libuv's queue
// where every signature queued after them would wait too.
class Slots {
  #free: number
  readonly #waiting: (() => void)[] = []

  constructor(size: number) {
    this.#free = size
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--
    else await new Promise<void>((resolve) => this.#waiting.push(resolve))
    try {
      return await work()
    } finally {
      const next = this.#waiting.shift()
      if (next) next()
      else this.#free++
    }
  }
}

export class PasswordHasher {
  readonly #params: Argon2Params
  readonly #slots: Slots
  #dummy: Promise<string> | undefined

  constructor(params: Argon2Params, slots = hashingSlots()) {
    this.#params = params
    this.#slots = new Slots(slots)
  }

  hash(password: string): Promise<string> {
    const normalized = normalizePassword(password)
    return this.#slots.run(() => argon2.hash(normalized, { type: argon2.argon2id, ...this.#params }))
  }

  // A malformed stored hash counts as a mismatch, never as an error the client sees.
  async verify(hash: string, password: string): Promise<boolean> {
    const normalized = normalizePassword(password)
    try {
      return await this.#slots.run(() => argon2.verify(hash, normalized))
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
