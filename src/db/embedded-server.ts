import { createServer, type Socket } from 'node:net'
import type { PGlite } from '@electric-sql/pglite'

// Serves a PGlite database over the PostgreSQL wire protocol on a unix socket.
//
// PGlite is one PostgreSQL session, shared by every connection, so connections take turns
// on it: a connection holds the session from its first message until the backend says it
// is idle again (ReadyForQuery with status I, which ends the answer to a Sync or a simple
// Query outside a transaction block). A Parse/Bind/Execute/Sync batch or a transaction is
// never interleaved with another connection's messages. @electric-sql/pglite-socket 0.2
// takes turns per message, so one connection's Bind could run another's statement:
// electric-sql/pglite#1046.

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const STARTUP = 'startup'
const SYNC = new Uint8Array([0x53, 0, 0, 0, 4])
// Messages whose answer may end in ReadyForQuery: Sync, Query, and the start-up exchange.
const ENDS_TURN = new Set(['S', 'Q', 'p', STARTUP])
const READY_IDLE = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]) // 'Z', length 5, status 'I'

export interface EmbeddedServer {
  close(): Promise<void>
}

export async function serveEmbedded(db: PGlite, path: string): Promise<EmbeddedServer> {
  let holder: Socket | undefined
  const waiting: (() => void)[] = []
  // Every connection, with the tail of its chain of messages to run.
  const work = new Map<Socket, Promise<void>>()
  // Settles once a connection has closed and its last message has run.
  const connections = new Set<Promise<void>>()

  async function take(socket: Socket) {
    while (holder !== undefined && holder !== socket) await new Promise<void>((resolve) => waiting.push(resolve))
    holder = socket
  }
  function release(socket: Socket) {
    if (holder !== socket) return
    holder = undefined
    for (const wake of waiting.splice(0)) wake()
  }

  async function run(socket: Socket, type: string, message: Buffer) {
    if (type === 'X') return void socket.end()
    if (socket.destroyed) return
    await take(socket)
    if (socket.destroyed) return // hangUp, queued behind this, ends the turn
    let tail = Buffer.alloc(0)
    await db.runExclusive(() => db.execProtocolRawStream(new Uint8Array(message), {
      onRawData: (data) => {
        const chunk = Buffer.from(data) // a copy: data may be a view of PGlite's memory
        tail = Buffer.concat([tail, chunk]).subarray(-READY_IDLE.length)
        if (socket.writable) socket.write(chunk)
      }
    }))
    if (ENDS_TURN.has(type) && tail.equals(READY_IDLE)) release(socket)
  }

  // A connection that leaves mid-batch or mid-transaction: end both, as a server would.
  async function hangUp(socket: Socket) {
    if (holder !== socket) return
    try {
      await db.runExclusive(() => db.execProtocolRaw(SYNC))
      if (db.isInTransaction()) await db.exec('rollback')
    } finally {
      release(socket)
    }
  }

  const server = createServer((socket) => {
    let buffer = Buffer.alloc(0)
    let started = false
    work.set(socket, Promise.resolve())
    const queue = (step: () => Promise<void>) => {
      work.set(socket, work.get(socket)!.then(step).catch(() => { socket.destroy() }))
    }
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk])
      for (;;) {
        // Before startup a packet is length + code; after it, type byte + length.
        const head = started ? 1 : 0
        if (buffer.length < head + 4) return
        const length = buffer.readInt32BE(head)
        if (length < 4 || (!started && length < 8)) return void socket.destroy()
        if (buffer.length < head + length) return
        const message = buffer.subarray(0, head + length)
        buffer = buffer.subarray(head + length)
        const code = started ? 0 : message.readInt32BE(4)
        if (started) {
          queue(() => run(socket, String.fromCharCode(message[0]!), message))
        } else if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          socket.write('N') // no encryption on a local socket
        } else if (code === CANCEL_REQUEST) {
          return void socket.end() // not supported
        } else {
          started = true
          queue(() => run(socket, STARTUP, message))
        }
      }
    })
    socket.on('error', () => {})
    const finished = new Promise<void>((resolve) => socket.on('close', () => {
      queue(() => hangUp(socket))
      void work.get(socket)!.then(() => {
        work.delete(socket)
        connections.delete(finished)
        resolve()
      })
    }))
    connections.add(finished)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => resolve())
  })

  return {
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const socket of work.keys()) socket.destroy()
      await Promise.all([...connections])
      await closed
    }
  }
}
