import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import helmet from '@fastify/helmet'

export interface SecurityHeadersOptions {
  issuer: string
}

// Headers for an API: its JSON is never a document to render, frame or embed. Registered
// before the routes, because route-level `helmet` options are read by an onRoute hook.
// Cross-Origin-Resource-Policy only guards no-cors loads (<script>, <img>): CORS fetches,
// the way browser apps call Keysmith, are not subject to it, so same-origin costs them
// nothing and keeps token replies out of other sites' processes.
const plugin: FastifyPluginAsync<SecurityHeadersOptions> = async (app, opts) => {
  await app.register(helmet, {
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    xFrameOptions: { action: 'deny' },
    // Only where it means something: an https issuer (TLS possibly ended by a proxy). No
    // includeSubDomains: Keysmith cannot speak for other hosts under its name.
    strictTransportSecurity: new URL(opts.issuer).protocol === 'https:' ? { maxAge: 31_536_000, includeSubDomains: false } : false
  })
}

// Route options for public, cacheable documents (JWKS, discovery): any origin may load and
// read them, with CORS or without. `*` without credentials, as JWKS endpoints usually answer:
// the document is the same for everyone, and a public document has no use for cookies.
export const publicDocument = {
  helmet: { crossOriginResourcePolicy: { policy: 'cross-origin' as const } },
  config: { cors: { origin: '*', credentials: false } }
}

export default fp(plugin, { name: 'keysmith-security-headers', fastify: '5.x' })
