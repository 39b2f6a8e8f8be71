import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { readFile } from 'node:fs/promises'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'

export interface OpenApiOptions {
  issuer: string
}

// The page's own bundle, styles and data: URI logo; it talks to this server only. No
// 'unsafe-inline': the only inline style is in the stock Swagger logo, which the plugin
// swaps for its own at once; its hash spares the console an error (a stale hash after an
// upgrade costs nothing more than that error).
const SWAGGER_LOGO_STYLE = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='"
const docsCsp = (issuer: string) => [
  "default-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  `connect-src 'self' ${new URL(issuer).origin}`, "img-src 'self' data:", "font-src 'self' data:",
  "script-src 'self'", `style-src 'self' ${SWAGGER_LOGO_STYLE}`
].join('; ')

// The OpenAPI 3.1 document is built from the route schemas, so it must be registered before
// any route: @fastify/swagger collects them through an onRoute hook.
const plugin: FastifyPluginAsync<OpenApiOptions> = async (app, opts) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Keysmith',
        version: await packageVersion(),
        description: 'RS256 identity provider: login, rotating refresh tokens, OAuth 2 token and revocation endpoints, JWKS.'
      },
      servers: [{ url: opts.issuer }],
      tags: [
        { name: 'keys', description: 'Public keys and discovery' },
        { name: 'accounts', description: 'Registration and the signed-in user' },
        { name: 'sessions', description: 'Browser login: refresh token in the keysmith_refresh cookie' },
        { name: 'oauth', description: 'RFC 6749 token and RFC 7009 revocation endpoints for native clients' },
        { name: 'admin', description: 'Administration; role admin required' },
        { name: 'health', description: 'Liveness and readiness' }
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'An access token from /auth/login, /auth/refresh or /oauth/token' },
          refreshCookie: { type: 'apiKey', in: 'cookie', name: 'keysmith_refresh', description: 'HttpOnly refresh cookie set by /auth/login (Path=/auth)' }
        }
      }
    }
  })
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: docsCsp(opts.issuer) })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}

// One level up from plugins/ in the source tree, two from dist/plugins/ once built.
async function packageVersion(): Promise<string> {
  for (const path of ['../package.json', '../../package.json']) {
    const pkg = await readFile(new URL(path, import.meta.url), 'utf8').then((s) => JSON.parse(s) as { name?: string; version?: string }, () => undefined)
    if (pkg?.name === 'keysmith' && pkg.version) return pkg.version
  }
  return '0.0.0'
}

export default fp(plugin, { name: 'keysmith-openapi', fastify: '5.x' })
