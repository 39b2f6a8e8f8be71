import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { errors } from './errors.js'
import { ThrottledError } from './login.js'
import type { Client, RotateResult } from './sessions/engine.js'

// Prometheus metrics, one Registry per app (not prom-client's global one) so several apps
// in one process never clash. Every label takes its value from a fixed list: the number
// of series stays bounded whatever clients send.

export const LOGIN_RESULTS = ['success', 'failure', 'disabled', 'throttled', 'error'] as const
export const REFRESH_RESULTS = ['rotated', 'invalid', 'race', 'reuse_detected', 'error'] as const
export const KEY_STATES = ['next', 'active', 'retired'] as const
export type LoginResult = (typeof LOGIN_RESULTS)[number]
export type RefreshResult = (typeof REFRESH_RESULTS)[number]

// What the gauges read from the keyring at scrape time (src/signing/keyring.ts fits it).
export interface KeyView {
  readonly active: { readonly activatedAt: Date } | undefined
  readonly states: Readonly<Partial<Record<string, number>>>
}

export interface MetricsOptions {
  // Process metrics (CPU, memory, event loop, GC). prom-client's collectors start an event
  // loop monitor and a GC observer that are never stopped: only worth it where scraped.
  defaultMetrics: boolean
  keys: () => KeyView | undefined
}

// Sub-millisecond buckets too: the JWKS and discovery are served from memory.
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const SURFACES: Client[] = ['browser', 'oauth']

export class Metrics {
  readonly registry = new Registry()
  readonly #duration: Histogram<'method' | 'route' | 'status_code'>
  readonly #logins: Counter<'surface' | 'result'>
  readonly #refreshes: Counter<'surface' | 'result'>

  constructor(opts: MetricsOptions) {
    const registers = [this.registry]
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry })
    this.#duration = new Histogram({
      name: 'keysmith_http_request_duration_seconds',
      help: 'HTTP request duration by method, route pattern and status code.',
      labelNames: ['method', 'route', 'status_code'],
      buckets: DURATION_BUCKETS,
      registers
    })
    this.#logins = new Counter({
      name: 'keysmith_logins_total',
      help: 'Password logins by surface (browser, oauth) and result.',
      labelNames: ['surface', 'result'],
      registers
    })
    this.#refreshes = new Counter({
      name: 'keysmith_refreshes_total',
      help: 'Refresh token presentations by surface and result; reuse_detected revoked a family.',
      labelNames: ['surface', 'result'],
      registers
    })
    // Zero series from the start, so rate() and alerts see an increase from the first event.
    for (const surface of SURFACES) {
      for (const result of LOGIN_RESULTS) this.#logins.inc({ surface, result }, 0)
      for (const result of REFRESH_RESULTS) this.#refreshes.inc({ surface, result }, 0)
    }
    new Gauge({
      name: 'keysmith_signing_key_age_seconds',
      help: 'Seconds since the signing key in use became active.',
      registers,
      collect() {
        const since = opts.keys()?.active?.activatedAt
        // No sample rather than a misleading 0 while no key is loaded.
        if (since) this.set(Math.max(0, (Date.now() - since.getTime()) / 1000))
        else this.reset()
      }
    })
    new Gauge({
      name: 'keysmith_signing_keys',
      help: 'Keys this instance publishes in its JWKS, by state.',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = opts.keys()?.states ?? {}
        for (const state of KEY_STATES) this.set({ state }, counts[state] ?? 0)
      }
    })
  }

  request(method: string, route: string, statusCode: number, seconds: number): void {
    this.#duration.observe({ method, route, status_code: String(statusCode) }, seconds)
  }

  login(surface: Client, result: LoginResult): void {
    this.#logins.inc({ surface, result })
  }

  refresh(surface: Client, result: RefreshResult): void {
    this.#refreshes.inc({ surface, result })
  }
}

export function loginResultOf(err: unknown): LoginResult {
  if (err instanceof ThrottledError) return 'throttled'
  if (err instanceof errors.InvalidCredentials) return 'failure'
  if (err instanceof errors.AccountDisabled) return 'disabled'
  return 'error'
}

export function refreshResultOf(result: RotateResult): RefreshResult {
  if (result.ok) return 'rotated'
  return result.reason === 'reuse' ? 'reuse_detected' : result.reason
}
