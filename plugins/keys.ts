import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { Keyring } from '../src/signing/keyring.js'
import { SealedBox } from '../src/signing/sealed-box.js'
import { resolveSecrets } from '../src/signing/secrets.js'
import { ensureKeys, rotateKeys, type KeyStoreOptions } from '../src/signing/key-store.js'
import { TokenSigner } from '../src/signing/access-token.js'
import { Discovery, Jwks, NoContent } from './schemas.js'
import { publicDocument } from './security-headers.js'

declare module 'fastify' {
  interface FastifyInstance {
    keyring: Keyring
    signer: TokenSigner
    keyStore: KeyStoreOptions
  }
}

export interface KeysOptions {
  issuer: string
  audience: string
  accessTokenTtl: number
  keyEncryptionSecrets: string[] | undefined
  keysDir: string
  keySize: number
  keyRefreshInterval: number
  keyRotationInterval: number
  now?: () => number
}

const JWKS_CACHE_CONTROL = 'public, max-age=300, must-revalidate'

const plugin: FastifyPluginAsync<KeysOptions> = async (app, opts) => {
  const box = new SealedBox(await resolveSecrets(opts.keyEncryptionSecrets, opts.keysDir))
  const keyStore = { box, keySize: opts.keySize }
  const keyring = new Keyring({
    db: app.db,
    box,
    refreshIntervalMs: opts.keyRefreshInterval * 1000,
    listenPool: app.database.mode === 'postgres' ? app.database.pool : undefined,
    onError: (err) => app.log.warn({ err }, 'signing keys: refresh failed, serving the last known set')
  })
  // Open (and so authenticate) the stored keys before creating any: a wrong secret must
  // stop the server, never lead it to mint a fresh key set beside the old one.
  await keyring.refresh(true)
  await ensureKeys(app.db, keyStore)
  await keyring.start()
  app.addHook('onClose', async () => keyring.stop())

  if (opts.keyRotationInterval > 0) {
    const timer = setInterval(() => void autoRotate().catch((err) => app.log.error({ err }, 'automatic key rotation failed')),
      Math.min(opts.keyRotationInterval * 1000, 60_000))
    timer.unref()
    app.addHook('onClose', async () => clearInterval(timer))
  }
  // Every instance runs the check; the database decides, so a rotation happens once.
  async function autoRotate() {
    const active = await app.db.selectFrom('signing_keys').select('activated_at')
      .where('state', '=', 'active').executeTakeFirst()
    const age = active?.activated_at ? Date.now() - active.activated_at.getTime() : 0
    if (age < opts.keyRotationInterval * 1000) return
    const kid = await rotateKeys(app.db, keyStore, { userAgent: 'keysmith/auto-rotation' })
    app.log.info({ kid }, 'signing keys rotated on schedule')
    await keyring.refresh(true)
  }

  app.decorate('keyring', keyring)
  app.decorate('keyStore', keyStore)
  app.decorate('signer', new TokenSigner(keyring, {
    issuer: opts.issuer, audience: opts.audience, ttlSeconds: opts.accessTokenTtl, now: opts.now
  }))

  // The reply is pre-serialized bytes: Fastify sends a Buffer as is, so the response
  // schema documents it and never runs on it. A synchronous handler: the hottest route has
  // nothing to await, so it costs no promise per request.
  app.get('/.well-known/jwks.json', {
    ...publicDocument,
    schema: {
      tags: ['keys'],
      summary: 'Public signing keys (JWKS)',
      description: 'The `next`, `active` and not yet expired `retired` RS256 public keys. Cacheable (`Cache-Control: public, max-age=300`), with an `ETag`: `If-None-Match` gives `304`. Readable from any origin.',
      response: { 200: Jwks, 304: NoContent('Not Modified: the If-None-Match ETag still matches') }
    }
  }, (request, reply) => {
    const { body, etag } = keyring.jwks
    reply.header('cache-control', JWKS_CACHE_CONTROL).header('etag', etag)
    if (matchesEtag(request.headers['if-none-match'], etag)) reply.code(304).send()
    else reply.type('application/json').send(body)
  })

  const discovery = Buffer.from(JSON.stringify({
    issuer: opts.issuer,
    jwks_uri: `${opts.issuer}/.well-known/jwks.json`,
    token_endpoint: `${opts.issuer}/oauth/token`,
    revocation_endpoint: `${opts.issuer}/oauth/revoke`,
    grant_types_supported: ['password', 'refresh_token'],
    response_types_supported: [],
    token_endpoint_auth_methods_supported: ['none'],
    revocation_endpoint_auth_methods_supported: ['none'],
    id_token_signing_alg_values_supported: ['RS256'],
    token_endpoint_auth_signing_alg_values_supported: ['RS256'],
    subject_types_supported: ['public'],
    scopes_supported: []
  }))
  for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    app.get(path, {
      ...publicDocument,
      schema: {
        tags: ['keys'],
        summary: path.endsWith('openid-configuration') ? 'OpenID Connect discovery' : 'OAuth 2 authorization server metadata (RFC 8414)',
        description: 'Where the JWKS, token and revocation endpoints are, and what they support. Readable from any origin.',
        response: { 200: Discovery }
      }
    }, (_request, reply) => {
      reply.header('cache-control', 'public, max-age=3600').type('application/json').send(discovery)
    })
  }
}

// If-None-Match is a list and uses the weak comparison (RFC 9110 13.1.2): a cache or
// proxy that weakened the ETag (W/"…") still gets its 304.
function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false
  return header.split(',').some((tag) => {
    const t = tag.trim()
    return t === '*' || t.replace(/^W\//, '') === etag
  })
}

export default fp(plugin, { name: 'keysmith-keys', fastify: '5.x', dependencies: ['keysmith-database'] })
