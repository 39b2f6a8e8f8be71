import Fastify, { type FastifyInstance } from 'fastify'
import cors from '@fastify/cors'
import { resourceServer } from 'keysmith/resource-server'

export interface ServiceOptions {
  // Keysmith's issuer URL: tokens must carry it as `iss`, and its JWKS is fetched from
  // `${issuer}/.well-known/jwks.json`.
  issuer: string
  // The `aud` Keysmith puts in its tokens (its AUDIENCE, by default the issuer).
  audience: string
  // Browser origins whose pages may call this service (examples/browser). Tokens travel in
  // the Authorization header, never in cookies, so no credentialed CORS is needed.
  corsOrigins?: string[]
  logger?: boolean
}

// The service, ready to listen: one public route, one for any signed-in user, one for
// admins. The routes never see a token; they see request.user.
export async function buildService(opts: ServiceOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: opts.logger ?? false })
  if (opts.corsOrigins?.length) {
    await app.register(cors, {
      origin: opts.corsOrigins,
      methods: ['GET'],
      allowedHeaders: ['authorization'],
      // Lets the page read why a token was refused (RFC 6750 error="invalid_token").
      exposedHeaders: ['www-authenticate'],
      maxAge: 600
    })
  }
  await app.register(resourceServer, { issuer: opts.issuer, audience: opts.audience })

  app.get('/public', async () => ({ message: 'anyone may read this' }))

  app.get('/me', { onRequest: app.authenticate }, async (request) => {
    const user = request.user!
    return { id: user.id, roles: user.roles }
  })

  app.get('/admin', { onRequest: app.requireRole('admin') }, async (request) => ({
    message: 'admins only',
    admin: request.user!.id
  }))

  return app
}
