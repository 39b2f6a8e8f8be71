export { buildApp, type BuildOptions } from './app.js'
export { loadConfig, ConfigError, type Config } from './config.js'
export { errors } from './errors.js'
export { resourceServer, type ResourceServerOptions, type AuthenticatedUser } from '../plugins/resource-server.js'
