import { connect, type NetConnectOpts, type Socket } from 'node:net'

// A bare PostgreSQL wire-protocol client, for tests that must decide exactly when each
// message leaves (a driver writes a whole Parse/Bind/Execute/Sync batch at once). Trust
// authentication only, which is what the test servers use.

export interface WireMessage {
  type: string
  body: Buffer
}

const int16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b }
const int32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b }
const cstring = (s: string) => Buffer.from(`${s}\0`)
const message = (type: string, ...parts: Buffer[]) => {
  const body = Buffer.concat(parts)
  return Buffer.concat([Buffer.from(type), int32(body.length + 4), body])
}

export const wire = {
  parse: (sql: string) => message('P', cstring(''), cstring(sql), int16(0)),
  bind: (...values: string[]) => message('B', cstring(''), cstring(''), int16(0), int16(values.length),
    ...values.flatMap((v) => [int32(Buffer.byteLength(v)), Buffer.from(v)]), int16(0)),
  execute: () => message('E', cstring(''), int32(0)),
  flush: () => message('H'),
  sync: () => message('S')
}

export class WireClient {
  #socket: Socket
  #buffer = Buffer.alloc(0)
  #messages: WireMessage[] = []
  #waiters: (() => void)[] = []

  private constructor(socket: Socket) {
    this.#socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk])
      while (this.#buffer.length >= 5 && this.#buffer.length >= 1 + this.#buffer.readInt32BE(1)) {
        const length = this.#buffer.readInt32BE(1)
        this.#messages.push({ type: String.fromCharCode(this.#buffer[0]!), body: this.#buffer.subarray(5, 1 + length) })
        this.#buffer = this.#buffer.subarray(1 + length)
      }
      for (const wake of this.#waiters.splice(0)) wake()
    })
    socket.on('close', () => { for (const wake of this.#waiters.splice(0)) wake() })
  }

  static async open(target: NetConnectOpts, database: string): Promise<WireClient> {
    const socket = connect(target)
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    const client = new WireClient(socket)
    const params = Buffer.concat([cstring('user'), cstring('postgres'), cstring('database'), cstring(database), cstring('')])
    socket.write(Buffer.concat([int32(params.length + 8), int32(196608), params]))
    await client.until('Z')
    return client
  }

  send(...messages: Buffer[]): void {
    this.#socket.write(Buffer.concat(messages))
  }

  // Every message received up to and including the next one of `type` ('Z': ReadyForQuery).
  async until(type: string): Promise<WireMessage[]> {
    for (;;) {
      const at = this.#messages.findIndex((m) => m.type === type)
      if (at >= 0) return this.#messages.splice(0, at + 1)
      if (this.#socket.destroyed) throw new Error(`connection closed before a message of type ${type}`)
      await new Promise<void>((resolve) => this.#waiters.push(resolve))
    }
  }

  close(): void {
    this.#socket.end()
  }
}

// The first row's values of a query's answer, or its error message.
export function answer(messages: WireMessage[]): { values: string[] } | { error: string } {
  const error = messages.find((m) => m.type === 'E')
  if (error) {
    const fields = error.body.toString('utf8').split('\0')
    return { error: fields.find((f) => f.startsWith('M'))?.slice(1) ?? 'error' }
  }
  const values: string[] = []
  const row = messages.find((m) => m.type === 'D')
  if (row) {
    let at = 2
    for (let i = 0; i < row.body.readInt16BE(0); i++) {
      const length = row.body.readInt32BE(at)
      values.push(row.body.toString('utf8', at + 4, at + 4 + length))
      at += 4 + length
    }
  }
  return { values }
}
