import { buildService } from './app.js'

// KEYSMITH_ISSUER must equal Keysmith's ISSUER exactly (it is compared with the tokens'
// `iss`); Keysmith's default is http://localhost:3000. The audience is Keysmith's
// AUDIENCE, which defaults to its issuer.
const issuer = (process.env.KEYSMITH_ISSUER ?? 'http://localhost:3000').replace(/\/+$/, '')
const audience = process.env.KEYSMITH_AUDIENCE ?? issuer
const port = Number(process.env.PORT ?? 4000)
const host = process.env.HOST ?? '127.0.0.1'
// Comma-separated browser origins allowed to call the service (the browser example's page).
const corsOrigins = (process.env.CORS_ORIGINS ?? '').split(',').map((s) => s.trim()).filter(Boolean)

const app = await buildService({ issuer, audience, corsOrigins, logger: true })
await app.listen({ port, host })

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void app.close().then(() => process.exit(0)))
}
