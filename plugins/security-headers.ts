import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import helmet, { type HelmetOptions } from 'helmet'

declare module 'fastify' {
  interface FastifyContextConfig {
    // A public, cacheable document (JWKS, discovery) that any site may load.
    publicDocument?: boolean
  }
}

export interface SecurityHeadersOptions {
  issuer: string
}

// Headers for an API: its JSON is never a document to render, frame or embed.
// Cross-Origin-Resource-Policy only guards no-cors loads (<script>, <img>): CORS fetches,
// the way browser apps call Keysmith, are not subject to it, so same-origin costs them
// nothing and keeps token replies out of other sites' processes.
function apiPolicy(issuer: string): HelmetOptions {
  return {
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    xFrameOptions: { action: 'deny' },
    // Only where it means something: an https issuer (TLS possibly ended by a proxy). No
    // includeSubDomains: Keysmith cannot speak for other hosts under its name.
    strictTransportSecurity: new URL(issuer).protocol === 'https:' ? { maxAge: 31_536_000, includeSubDomains: false } : false
  }
}

// helmet decides the headers; they depend on the route, never on the request, so each set is
// worked out once here. (@fastify/helmet builds helmet's middleware again, CSP parsing
// included, on every request: that cost 60 % of a constant route's throughput.)
function headersOf(options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  const res = {
    setHeader: (name: string, value: unknown) => { headers[name.toLowerCase()] = String(value) },
    removeHeader: () => {}
  }
  helmet(options)({} as IncomingMessage, res as unknown as ServerResponse, (err?: unknown) => { if (err) throw err })
  return headers
}

// Registered before the routes (a root hook reaches only routes declared after it). /docs
// replaces the CSP with its own (see plugins/openapi.ts).
const plugin: FastifyPluginAsync<SecurityHeadersOptions> = async (app, opts) => {
  const api = headersOf(apiPolicy(opts.issuer))
  const publicDocument = headersOf({ ...apiPolicy(opts.issuer), crossOriginResourcePolicy: { policy: 'cross-origin' } })
  app.addHook('onRequest', (request, reply, done) => {
    reply.headers(request.routeOptions.config.publicDocument ? publicDocument : api)
    done()
  })
}

// Route options for public, cacheable documents (JWKS, discovery): any origin may load and
// read them, with CORS or without. `*` without credentials, as JWKS endpoints usually answer:
// the document is the same for everyone, and a public document has no use for cookies.
export const publicDocument = {
  config: { publicDocument: true, cors: { origin: '*', credentials: false } }
}

export default fp(plugin, { name: 'keysmith-security-headers', fastify: '5.x' })
