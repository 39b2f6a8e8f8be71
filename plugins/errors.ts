import type { FastifyError, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { STATUS_CODES } from 'node:http'
import { isDatabaseUnavailable } from '../src/db/unavailable.js'

// One place decides what a client sees of an error: 4xx keep their message, every 5xx is
// generic (the detail goes to the log), and a database that is away is a 503 to retry.
const plugin: FastifyPluginAsync = async (app) => {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    let status = err.statusCode ?? 500
    if (err.validation) status = 400
    if (status >= 500 && isDatabaseUnavailable(err)) {
      request.log.warn({ err: { message: err.message, code: err.code } }, 'database unavailable')
      return reply.code(503).header('retry-after', '5').send({
        statusCode: 503, error: STATUS_CODES[503], message: 'Service temporarily unavailable'
      })
    }
    if (status < 400 || status > 599) status = 500
    if (status >= 500) request.log.error({ err }, 'request failed')
    else request.log.info({ code: err.code, message: err.message }, 'request refused')
    const message = status >= 500 && err.code !== 'KEYSMITH_ERR_UNAVAILABLE' && err.code !== 'KEYSMITH_ERR_NO_SIGNING_KEY'
      ? 'Internal Server Error'
      : err.message
    if (status === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', '5')
    return reply.code(status).send({ statusCode: status, error: STATUS_CODES[status], message })
  })
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `Route ${request.method} ${request.url.split('?')[0]!.slice(0, 200)} not found` }))
}

export default fp(plugin, { name: 'keysmith-errors', fastify: '5.x' })
