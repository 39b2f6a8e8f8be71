import t from 'tap'
import { build } from '../helper.js'

t.test('health and readiness', async (t) => {
  const app = await build(t)
  const health = await app.inject('/health')
  t.equal(health.statusCode, 200)
  t.same(health.json(), { status: 'ok' })
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 200)
  t.match(ready.json(), { status: 'ready', database: true, signing_key: true })
})

t.test('unknown routes are a JSON 404 without a stack trace', async (t) => {
  const app = await build(t)
  const res = await app.inject('/nope')
  t.equal(res.statusCode, 404)
  t.match(res.json(), { statusCode: 404, error: 'Not Found' })
  t.notMatch(res.body, /at .*\.ts:\d+/)
})
