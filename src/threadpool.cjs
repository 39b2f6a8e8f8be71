'use strict'
// Sizes libuv's thread pool. Preloaded (`node --require`, see package.json `start` and the
// Dockerfile) because the pool is created on first use and reads UV_THREADPOOL_SIZE only
// then: an ES module's body runs too late, loading the modules has used the pool already.
// A password hash holds a thread for its whole run, so Node's default of 4 threads would
// keep a machine with more cores from hashing on all of them. Hashing takes a thread per
// core and one more (src/passwords.ts); one more again is left to signatures; never fewer
// than Node's 4. A value the operator set stands.
const { availableParallelism } = require('node:os')

process.env.UV_THREADPOOL_SIZE ||= String(Math.max(4, availableParallelism() + 2))
