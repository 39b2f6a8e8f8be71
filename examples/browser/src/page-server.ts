import { createServer, type Server, type ServerResponse } from 'node:http'
import { readFile } from 'node:fs/promises'

export interface PageServerOptions {
  // Where the page finds Keysmith and the resource server. Both go into the page (as
  // <meta> tags) and into its CSP's connect-src, so the page can talk to nothing else.
  keysmithUrl: string
  apiUrl: string
}

// The whole site: an allow-list, not a directory, so no path can reach another file.
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' }
}
const PUBLIC = new URL('../public/', import.meta.url)

const escapeAttribute = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

// A static server for the single-page app, on an origin of its own (not Keysmith's).
export function createPageServer(opts: PageServerOptions): Server {
  // Origins only: a path or a stray character here would widen or break the CSP.
  const keysmith = new URL(opts.keysmithUrl).origin
  const api = new URL(opts.apiUrl).origin
  const csp = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    `connect-src ${keysmith} ${api}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    // The page writes text only (textContent), never markup: DOM XSS sinks are closed.
    "require-trusted-types-for 'script'",
    "trusted-types 'none'"
  ].join('; ')

  return createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://page').pathname
    const entry = FILES[path === '/index.html' ? '/' : path]
    if (request.method !== 'GET' && request.method !== 'HEAD') return send(response, 405, { allow: 'GET, HEAD' })
    if (!entry) return send(response, 404)
    readFile(new URL(entry.file, PUBLIC), 'utf8').then((text) => {
      const body = entry.file === 'index.html'
        ? text.replaceAll('{{KEYSMITH_URL}}', escapeAttribute(keysmith)).replaceAll('{{API_URL}}', escapeAttribute(api))
        : text
      send(response, 200, { 'content-type': entry.type }, request.method === 'HEAD' ? undefined : body)
    }, () => send(response, 500))
  })

  function send(response: ServerResponse, status: number, headers: Record<string, string> = {}, body?: string) {
    response.writeHead(status, {
      'content-security-policy': csp,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-resource-policy': 'same-origin',
      // The page is tiny and changes with the configuration: always revalidate.
      'cache-control': 'no-cache',
      ...(body === undefined && status !== 200 ? { 'content-type': 'text/plain; charset=utf-8' } : {}),
      ...headers
    })
    response.end(body ?? (status === 200 ? undefined : `${status}\n`))
  }
}
