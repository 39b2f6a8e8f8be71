// The browser side of Keysmith's cookie surface, with no framework and no build step.
//
// The access token lives in this module's memory only: never in localStorage,
// sessionStorage or a cookie, where any script on the origin (or an XSS) could read it
// later. A reload forgets it; the HttpOnly refresh cookie, which JavaScript cannot read,
// gets a new one from POST /auth/refresh.

const KEYSMITH = document.querySelector('meta[name="keysmith-url"]').content
const API = document.querySelector('meta[name="api-url"]').content
// Refresh this long before the access token expires (at most a third of its life), so a
// call never leaves with a token that dies in flight.
const REFRESH_LEAD_SECONDS = 60

let accessToken = null
let refreshTimer
let refreshes = 0
// One refresh at a time per tab: two in flight would present the same cookie and the
// loser would get 409 from our own tab.
let refreshing = null

const $ = (id) => document.getElementById(id)

function say(text, kind = 'info') {
  $('message').textContent = text
  $('message').dataset.kind = kind
}

function showSignedIn(user) {
  $('status').dataset.state = 'signed-in'
  $('status').textContent = 'Signed in.'
  $('user').textContent = user.email
  $('user').dataset.userId = user.id
  $('call-api').disabled = false
  $('logout').disabled = false
}

function showSignedOut() {
  $('status').dataset.state = 'signed-out'
  $('status').textContent = 'Signed out.'
  $('user').textContent = ''
  delete $('user').dataset.userId
  $('token').textContent = 'No access token in memory.'
  $('call-api').disabled = true
  $('logout').disabled = true
  $('api-result').textContent = ''
}

// Every call to Keysmith's /auth routes carries the cookie: credentials 'include' because
// Keysmith is another origin (same site) than this page.
function keysmith(path, init = {}) {
  return fetch(`${KEYSMITH}${path}`, { ...init, credentials: 'include', cache: 'no-store' })
}

function json(body) {
  return { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
}

// A fetch that never got an answer the page may read: Keysmith is down, or it refused
// this page's origin (CORS hides the 403 from us).
function unreachable(err) {
  say(`Keysmith could not be reached, or does not allow this page's origin (${location.origin}): ${err.message}`, 'error')
}

async function problem(res) {
  const body = await res.json().catch(() => ({}))
  return `${res.status} ${body.message ?? body.error ?? res.statusText}`
}

function forget() {
  accessToken = null
  clearTimeout(refreshTimer)
  showSignedOut()
}

async function adopt(res) {
  const body = await res.json()
  accessToken = body.access_token
  const lead = Math.min(REFRESH_LEAD_SECONDS, body.expires_in / 3)
  clearTimeout(refreshTimer)
  refreshTimer = setTimeout(() => void scheduledRefresh(), (body.expires_in - lead) * 1000)
  const expires = new Date(Date.now() + body.expires_in * 1000)
  $('token').textContent = `Access token in memory, expires at ${expires.toLocaleTimeString()}; refreshed ${refreshes} times.`
  $('token').dataset.refreshes = String(refreshes)
  const me = await fetch(`${KEYSMITH}/auth/me`, { headers: { authorization: `Bearer ${accessToken}` } })
  if (!me.ok) throw new Error(`GET /auth/me: ${await problem(me)}`)
  showSignedIn(await me.json())
}

// true: a fresh access token is in memory; false: there is no session.
function refresh() {
  refreshing ??= (async () => {
    const post = () => keysmith('/auth/refresh', { method: 'POST' })
    let res = await post()
    if (res.status === 409) {
      // Another tab rotated the shared cookie a moment ago and the jar now holds the new
      // one: retry once, after Retry-After (0), which Keysmith exposes to other origins.
      const wait = Number(res.headers.get('retry-after') ?? 0)
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait * 1000))
      res = await post()
    }
    if (res.status !== 200) {
      forget()
      return false
    }
    refreshes += 1
    await adopt(res)
    return true
  })().finally(() => { refreshing = null })
  return refreshing
}

async function scheduledRefresh() {
  try {
    if (!(await refresh())) say('Your session has ended; please log in again.', 'error')
  } catch (err) {
    unreachable(err)
  }
}

async function register(email, password) {
  const res = await keysmith('/auth/register', json({ email, password }))
  if (res.status === 201) say(`Registered ${(await res.json()).email}; now log in.`)
  else say(`Registration failed: ${await problem(res)}`, 'error')
}

async function login(email, password) {
  const res = await keysmith('/auth/login', json({ email, password }))
  if (res.status !== 200) {
    say(`Login failed: ${await problem(res)}`, 'error')
    return
  }
  await adopt(res)
  $('password').value = ''
  say('Logged in.')
}

async function callApi(retried = false) {
  const res = await fetch(`${API}/me`, { headers: { authorization: `Bearer ${accessToken}` } })
  if (res.status === 401 && !retried && (await refresh())) return callApi(true)
  $('api-result').dataset.status = String(res.status)
  $('api-result').textContent = `GET ${API}/me → ${res.status}\n${JSON.stringify(await res.json(), null, 2)}`
}

async function logout() {
  // The Bearer token lets Keysmith deny it at once, not only end the refresh family.
  const headers = accessToken ? { authorization: `Bearer ${accessToken}` } : {}
  try {
    const res = await keysmith('/auth/logout', { method: 'POST', headers })
    say(res.status === 204 ? 'Logged out.' : `Logout: ${await problem(res)}`, res.status === 204 ? 'info' : 'error')
  } finally {
    // Whatever Keysmith said, this tab holds no token any more.
    forget()
  }
}

function guarded(action) {
  return (...args) => action(...args).catch(unreachable)
}

$('credentials').addEventListener('submit', (event) => {
  event.preventDefault()
  const email = $('email').value
  const password = $('password').value
  void guarded(event.submitter?.value === 'register' ? register : login)(email, password)
})
$('call-api').addEventListener('click', () => void guarded(callApi)())
$('logout').addEventListener('click', () => void guarded(logout)())

// Silent restore on load: a session survives reloads and new tabs through the cookie.
void refresh().catch((err) => {
  forget()
  unreachable(err)
})
