import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import type { Kysely } from 'kysely'
import type pg from 'pg'
import type { Database, SigningKeyRow } from '../db/schema.js'
import type { SealedBox } from './sealed-box.js'
import { KEY_CHANNEL, keySetVersion, publishedKeys } from './key-store.js'

export interface ActiveKey {
  kid: string
  privateKey: KeyObject
  // base64url of the JOSE header, computed once per key rather than per token.
  headerB64: string
  activatedAt: Date
}

export interface Jwks {
  body: Buffer
  etag: string
}

export interface KeyringOptions {
  db: Kysely<Database>
  box: SealedBox
  refreshIntervalMs: number
  // Real PostgreSQL only: a pool to hold a LISTEN connection on, for instant adoption.
  listenPool?: pg.Pool
  onError?: (err: unknown) => void
}

// The instance's in-memory view of the key set: what signs, what verifies, and the JWKS
// bytes. Requests never touch the database for keys; a timer (and NOTIFY) keeps it fresh.
export class Keyring {
  #active: ActiveKey | undefined
  #verify = new Map<string, KeyObject>()
  #jwks: Jwks = serializeJwks([])
  #version = ''
  #nextExpiry = Infinity
  #timer: NodeJS.Timeout | undefined
  #listener: pg.PoolClient | undefined
  #listening: Promise<void> | undefined
  #stopped = false
  #refreshing: Promise<void> | undefined
  #lastLoadOk = false
  #generation = 0
  #states: Record<string, number> = {}
  readonly #opts: KeyringOptions

  constructor(opts: KeyringOptions) {
    this.#opts = opts
  }

  get active(): ActiveKey | undefined {
    return this.#active
  }

  get jwks(): Jwks {
    return this.#jwks
  }

  // How many published keys are in each state (next, active, retired), for metrics.
  get states(): Readonly<Record<string, number>> {
    return this.#states
  }

  // Changes whenever the set of verification keys does.
  get generation(): number {
    return this.#generation
  }

  get ready(): boolean {
    return this.#active !== undefined && this.#lastLoadOk
  }

  verificationKey(kid: string): KeyObject | undefined {
    return this.#verify.get(kid)
  }

  // Throws on a wrong encryption secret, so start-up fails loudly instead of minting keys.
  async start(): Promise<void> {
    await this.refresh(true)
    this.#timer = setInterval(() => this.#tick(), this.#opts.refreshIntervalMs)
    this.#timer.unref()
    await this.#relisten()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    clearInterval(this.#timer)
    // A LISTEN connection still being opened must be back in the pool before it closes.
    await this.#listening
    const listener = this.#listener
    this.#listener = undefined
    if (listener) {
      listener.removeAllListeners('notification')
      listener.release(true)
    }
  }

  #tick() {
    void this.refresh().catch(this.#onError)
    // The LISTEN connection dies with the database; listen again once it answers, and
    // reload, since changes made meanwhile were announced to nobody.
    if (!this.#listener && this.#opts.listenPool) {
      void this.#relisten().then(() => this.#listener && this.refresh()).catch(this.#onError)
    }
  }

  #relisten(): Promise<void> {
    const pool = this.#opts.listenPool
    if (!pool || this.#stopped) return Promise.resolve()
    this.#listening ??= this.#listen(pool).catch(this.#onError).finally(() => { this.#listening = undefined })
    return this.#listening
  }

  refresh(force = false): Promise<void> {
    // Coalesce: a NOTIFY and a timer tick arriving together do one load.
    this.#refreshing ??= this.#load(force).finally(() => { this.#refreshing = undefined })
    return this.#refreshing
  }

  async #load(force: boolean): Promise<void> {
    try {
      const version = await keySetVersion(this.#opts.db)
      if (!force && version === this.#version && Date.now() < this.#nextExpiry) {
        this.#lastLoadOk = true
        return
      }
      const rows = await publishedKeys(this.#opts.db)
      this.#apply(rows)
      this.#version = version
      this.#lastLoadOk = true
    } catch (err) {
      this.#lastLoadOk = false
      throw err
    }
  }

  #apply(rows: SigningKeyRow[]) {
    const verify = new Map<string, KeyObject>()
    let active: ActiveKey | undefined
    let nextExpiry = Infinity
    const states: Record<string, number> = {}
    for (const row of rows) {
      states[row.state] = (states[row.state] ?? 0) + 1
      // Open every published private key: a wrong secret must surface now, not at rotation.
      const pem = this.#opts.box.open(row.private_key, row.kid)
      const reuse = this.#active?.kid === row.kid ? this.#active : undefined
      verify.set(row.kid, this.#verify.get(row.kid) ?? createPublicKey({ key: row.public_jwk as never, format: 'jwk' }))
      if (row.state === 'active') {
        active = reuse ?? {
          kid: row.kid,
          privateKey: createPrivateKey(pem),
          headerB64: Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: row.kid })).toString('base64url'),
          activatedAt: row.activated_at ?? row.created_at
        }
      }
      if (row.publish_until) nextExpiry = Math.min(nextExpiry, row.publish_until.getTime())
    }
    this.#verify = verify
    this.#active = active
    this.#nextExpiry = nextExpiry
    this.#states = states
    this.#jwks = serializeJwks(rows)
    this.#generation++
  }

  async #listen(pool: pg.Pool) {
    const client = await pool.connect()
    client.on('notification', () => void this.refresh().catch(this.#onError))
    // A lost LISTEN connection is not fatal: polling adopts changes within seconds until
    // the next tick listens again. The broken client goes back to the pool, which drops it:
    // pool.end() waits for every checked-out client, so keeping it would hang shutdown.
    client.on('error', (err) => {
      this.#onError(err)
      if (this.#listener !== client) return
      this.#listener = undefined
      client.release(err)
    })
    try {
      await client.query(`listen ${KEY_CHANNEL}`)
    } catch (err) {
      client.release(err as Error)
      throw err
    }
    this.#listener = client
  }

  #onError = (err: unknown) => this.#opts.onError?.(err)
}

// An explicit list of public members: nothing private can leak into the JWKS by accident.
function serializeJwks(rows: SigningKeyRow[]): Jwks {
  const keys = rows.map((r) => ({ kty: 'RSA', use: 'sig', alg: 'RS256', kid: r.kid, n: r.public_jwk.n, e: r.public_jwk.e }))
  const body = Buffer.from(JSON.stringify({ keys }))
  return { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` }
}
