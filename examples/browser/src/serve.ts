import { createPageServer } from './page-server.js'

// KEYSMITH_URL is where the browser reaches Keysmith; keep its host `localhost` like the
// page's, so the two are the same site and the SameSite=Strict refresh cookie is sent.
const keysmithUrl = process.env.KEYSMITH_URL ?? 'http://localhost:3000'
const apiUrl = process.env.API_URL ?? 'http://localhost:4000'
const port = Number(process.env.PORT ?? 5173)
const host = process.env.HOST ?? '127.0.0.1'

const server = createPageServer({ keysmithUrl, apiUrl })
server.listen(port, host, () => {
  console.log(`page on http://localhost:${port} (Keysmith ${keysmithUrl}, API ${apiUrl})`)
})

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => server.close(() => process.exit(0)))
}
