// Group commit for one statement shape: requests that arrive in the same turn of the event
// loop (or while earlier batches are in flight) run as one multi-row statement. Under load
// that costs the database a fraction of one statement per request, and costs nothing when
// idle: a lone request still leaves on the next turn.
export interface BatcherOptions<K> {
  maxBatch: number
  maxInFlight: number
  // Requests with the same key never share a batch, so each batch touches a row at most once.
  key: (request: K) => string
  // A batch failing with such an error (the database is away) fails every request queued
  // behind it at once: each would otherwise wait its turn only to fail the same way, and
  // under a frozen database every turn costs the whole query timeout.
  failsQueue?: (err: unknown) => boolean
}

interface Pending<Req, Res> {
  request: Req
  resolve: (result: Res) => void
  reject: (err: unknown) => void
}

export class Batcher<Req, Res> {
  readonly #run: (requests: Req[]) => Promise<Res[]>
  readonly #opts: BatcherOptions<Req>
  #queue: Pending<Req, Res>[] = []
  #scheduled = false
  #inFlight = 0

  // `run` answers the batch in order, one result per request.
  constructor(run: (requests: Req[]) => Promise<Res[]>, opts: BatcherOptions<Req>) {
    this.#run = run
    this.#opts = opts
  }

  submit(request: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      this.#queue.push({ request, resolve, reject })
      if (!this.#scheduled) {
        this.#scheduled = true
        setImmediate(() => {
          this.#scheduled = false
          this.#flush()
        })
      }
    })
  }

  #flush(): void {
    while (this.#queue.length > 0 && this.#inFlight < this.#opts.maxInFlight) {
      const batch = this.#take()
      this.#inFlight++
      this.#run(batch.map((p) => p.request)).then(
        (results) => batch.forEach((p, i) => p.resolve(results[i]!)),
        (err) => {
          const failed = this.#opts.failsQueue?.(err) ? [...batch, ...this.#queue.splice(0)] : batch
          failed.forEach((p) => p.reject(err))
        }
      ).finally(() => {
        this.#inFlight--
        this.#flush()
      })
    }
  }

  #take(): Pending<Req, Res>[] {
    const batch: Pending<Req, Res>[] = []
    const keys = new Set<string>()
    const rest: Pending<Req, Res>[] = []
    for (const p of this.#queue) {
      const key = this.#opts.key(p.request)
      if (batch.length < this.#opts.maxBatch && !keys.has(key)) {
        keys.add(key)
        batch.push(p)
      } else {
        rest.push(p)
      }
    }
    this.#queue = rest
    return batch
  }
}
