import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { firstJsonLine, freePort, jsonClient, loadUser, runNode, scratchDatabase, serverEnv } from './bench/harness.js'

// `npm run load`: a bounded mixed load test. Starts Keysmith on loopback in its own process
// (scripts/bench/server.ts, as `npm run bench` does), then drives login, the OAuth refresh
// grant, GET /auth/me and the JWKS at once for LOAD_SECONDS (default 30, at most 60), and
// reports per endpoint throughput, latency p50/p90/p99, errors and non-2xx answers, and the
// server's RSS before and after. Any error, timeout or non-2xx answer is a failure: exit 1.
// With DATABASE_URL (or LOAD_DATABASE_URL) the server works in a scratch database on that
// server, dropped at the end; otherwise in a fresh embedded one.
const MAX_SECONDS = 60
const SECONDS = parseSeconds(process.env.LOAD_SECONDS)
const WARMUP_SECONDS = 2
// Connections per endpoint: login is argon2-bound, so few; the rest share the event loop.
const CONNECTIONS = { login: 2, refresh: 8, me: 8, jwks: 4 } as const

function parseSeconds(value: string | undefined): number {
  if (value === undefined || value === '') return 30
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`LOAD_SECONDS must be a positive number of seconds, not ${JSON.stringify(value)}`)
  if (n > MAX_SECONDS) throw new Error(`LOAD_SECONDS must be at most ${MAX_SECONDS}`)
  return n
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const round = (x: number, digits = 1) => Number(x.toFixed(digits))

function assertLoopback(url: string): void {
  const host = new URL(url).hostname
  if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host)) throw new Error(`load targets loopback only, not ${host}`)
}

interface EndpointReport {
  endpoint: string
  connections: number
  requests: number
  rps: number
  p50_ms: number
  p90_ms: number
  p99_ms: number
  errors: number
  timeouts: number
  non2xx: number
}

function report(endpoint: string, connections: number, r: autocannon.Result): EndpointReport {
  return {
    endpoint,
    connections,
    requests: r.requests.total,
    rps: round(r.requests.average),
    p50_ms: round(r.latency.p50, 2),
    p90_ms: round(r.latency.p90, 2),
    p99_ms: round(r.latency.p99, 2),
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx
  }
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'keysmith-load-'))
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  assertLoopback(base)
  const serverUrl = process.env.LOAD_DATABASE_URL ?? process.env.DATABASE_URL
  const scratch = serverUrl ? await scratchDatabase(serverUrl, 'load') : undefined
  const env = serverEnv(port, dir, scratch?.url)

  const server = runNode('scripts/bench/server.ts', [], env, ['--expose-gc'])
  let failed = false
  try {
    await firstJsonLine(server)
    const json = jsonClient(base)
    const rss = async () => (await json('/bench/stats?gc=1')).body.rss as number
    const { accessToken, loginBody, mintFamilies, refreshRequest } = await loadUser(json, 'load')
    await mintFamilies(CONNECTIONS.refresh + 8)

    const mixed = (seconds: number) => Promise.all([
      autocannon({ title: 'login', url: `${base}/auth/login`, method: 'POST', headers: { 'content-type': 'application/json' }, body: loginBody, connections: CONNECTIONS.login, duration: seconds }),
      autocannon({ title: 'refresh', url: base, requests: [refreshRequest], connections: CONNECTIONS.refresh, duration: seconds }),
      autocannon({ title: 'me', url: `${base}/auth/me`, headers: { authorization: `Bearer ${accessToken}` }, connections: CONNECTIONS.me, duration: seconds }),
      autocannon({ title: 'jwks', url: `${base}/.well-known/jwks.json`, connections: CONNECTIONS.jwks, duration: seconds })
    ])
    const toReports = (results: autocannon.Result[]) => [
      report('POST /auth/login', CONNECTIONS.login, results[0]!),
      report('POST /oauth/token (refresh)', CONNECTIONS.refresh, results[1]!),
      report('GET /auth/me', CONNECTIONS.me, results[2]!),
      report('GET /.well-known/jwks.json', CONNECTIONS.jwks, results[3]!)
    ]
    const bad = (rs: EndpointReport[]) => rs.reduce((n, r) => n + r.errors + r.timeouts + r.non2xx, 0)

    // Warm-up (JIT, pools), then RSS, the measured run, and RSS again once it settles.
    const warm = toReports(await mixed(WARMUP_SECONDS))
    await sleep(500)
    const rssBefore = await rss()
    const started = Date.now()
    const reports = toReports(await mixed(SECONDS))
    const elapsed = (Date.now() - started) / 1000
    await sleep(1000)
    const rssAfter = await rss()

    const failures = bad(reports) + bad(warm)
    failed = failures > 0
    const result = {
      database: scratch ? 'postgres' : 'embedded',
      seconds: SECONDS,
      elapsed_seconds: round(elapsed, 1),
      endpoints: reports,
      total_requests: reports.reduce((n, r) => n + r.requests, 0),
      total_rps: round(reports.reduce((n, r) => n + r.rps, 0)),
      warmup_failures: bad(warm),
      failures,
      rss_before_mb: round(rssBefore / 2 ** 20),
      rss_after_mb: round(rssAfter / 2 ** 20),
      rss_growth: round(rssAfter / rssBefore - 1, 3),
      ok: !failed
    }
    printTable(result)
    process.stdout.write(JSON.stringify(result) + '\n')
  } finally {
    server.kill('SIGTERM')
    if (server.exitCode === null && server.signalCode === null) await new Promise((r) => server.once('exit', r))
    await rm(dir, { recursive: true, force: true })
    await scratch?.drop()
  }
  if (failed) {
    process.stderr.write('load: FAILED: errors, timeouts or non-2xx answers under load\n')
    process.exitCode = 1
  }
}

function printTable(r: { database: string; seconds: number; endpoints: EndpointReport[]; total_rps: number; failures: number; rss_before_mb: number; rss_after_mb: number; rss_growth: number }) {
  const cols: [string, number][] = [['endpoint', 30], ['conns', 6], ['requests', 9], ['req/s', 9], ['p50 ms', 8], ['p90 ms', 8], ['p99 ms', 8], ['errors', 7], ['timeouts', 9], ['non-2xx', 8]]
  const row = (cells: (string | number)[]) => '  ' + cells.map((c, i) => i === 0 ? String(c).padEnd(cols[i]![1]) : String(c).padStart(cols[i]![1])).join(' ')
  const lines = [`Keysmith load: ${r.seconds} s, ${r.database} database, loopback`, '', row(cols.map(([c]) => c))]
  for (const e of r.endpoints) lines.push(row([e.endpoint, e.connections, e.requests, e.rps, e.p50_ms, e.p90_ms, e.p99_ms, e.errors, e.timeouts, e.non2xx]))
  lines.push('', `  total ${r.total_rps} req/s; errors + timeouts + non-2xx: ${r.failures} ${r.failures === 0 ? '(ok)' : '(FAILED)'}`)
  lines.push(`  server RSS ${r.rss_before_mb} MiB before, ${r.rss_after_mb} MiB after (${r.rss_growth >= 0 ? '+' : ''}${round(r.rss_growth * 100)} %)`)
  process.stdout.write(lines.join('\n') + '\n\n')
}

await main()
