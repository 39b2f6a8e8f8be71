import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { PasswordHasher, type Argon2Params } from '../src/passwords.js'
import { ROTATION_LANE, SessionEngine } from '../src/sessions/engine.js'
import { passwordLogin } from '../src/login.js'
import { loginResultOf, refreshResultOf, type Metrics } from '../src/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    passwords: PasswordHasher
    sessions: SessionEngine
    login(request: FastifyRequest, email: string, password: string): Promise<{ userId: string; roles: string[] }>
    issueAccessToken(reply: FastifyReply, sub: string, roles: string[]): Promise<{ access_token: string; token_type: 'Bearer'; expires_in: number }>
  }
}

export interface AuthCoreOptions {
  argon2: Argon2Params
  refreshTokenTtl: number
  sessionMaxAge: number
  now?: () => number
}

// The services behind every login surface (browser cookie and OAuth): password hashing,
// the refresh-family engine, password login with throttling, and token responses.
const plugin: FastifyPluginAsync<AuthCoreOptions> = async (app, opts) => {
  const passwords = new PasswordHasher(opts.argon2)
  app.decorate('passwords', passwords)
  app.decorate('sessions', new CountedSessionEngine(app.metrics, app.db, {
    refreshTtlSeconds: opts.refreshTokenTtl,
    maxAgeSeconds: opts.sessionMaxAge,
    now: opts.now,
    rotationPool: app.database.lane('rotation', ROTATION_LANE)
  }))
  app.decorate('login', async (request: FastifyRequest, email: string, password: string) => {
    // Both surfaces call this; the route tells them apart without changing their code.
    const surface = request.routeOptions.url?.startsWith('/oauth/') ? 'oauth' : 'browser'
    try {
      const user = await passwordLogin(
        { db: app.db, passwords, throttle: app.loginThrottle },
        { email, password, ip: request.ip, userAgent: request.headers['user-agent'] }
      )
      app.metrics.login(surface, 'success')
      return user
    } catch (err) {
      app.metrics.login(surface, loginResultOf(err))
      throw err
    }
  })
  app.decorate('issueAccessToken', async (reply: FastifyReply, sub: string, roles: string[]) => {
    const minted = await app.signer.mint({ sub, roles })
    // RFC 6749 §5.1: responses carrying tokens must not be cached.
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    return { access_token: minted.token, token_type: 'Bearer' as const, expires_in: minted.expiresIn }
  })
}

// Counts every rotation outcome, whichever surface asked: the engine stays free of metrics.
class CountedSessionEngine extends SessionEngine {
  readonly #metrics: Metrics

  constructor(metrics: Metrics, ...args: ConstructorParameters<typeof SessionEngine>) {
    super(...args)
    this.#metrics = metrics
  }

  override async rotate(...args: Parameters<SessionEngine['rotate']>) {
    try {
      const result = await super.rotate(...args)
      this.#metrics.refresh(args[1], refreshResultOf(result))
      return result
    } catch (err) {
      this.#metrics.refresh(args[1], 'error')
      throw err
    }
  }
}

export default fp(plugin, {
  name: 'keysmith-auth-core',
  fastify: '5.x',
  dependencies: ['keysmith-database', 'keysmith-keys', 'keysmith-rate-limit', 'keysmith-metrics']
})
