/**
 * An in-memory, full-duplex flow pair with backpressure and half-close, and an
 * in-process listener that makes pipes a transport for `resolve()`.
 *
 * Pipes behave like a `Deno.Conn` without a socket: short reads, `null` at end
 * of flow, `closeWrite` for half-close, and typed errors (`BadResource` for
 * using a closed flow, `BrokenPipe` for writing to a peer that is gone,
 * `ConnectionRefused` for connecting to a closed listener). They are meant for
 * tests, and for composing protocols in-process (e.g. TLS over a pipe).
 *
 * @example A pipe pair
 * ```ts
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * await a.write(new TextEncoder().encode("ping"));
 * await a.closeWrite();
 * const text = await new Response(b.readable).text();
 * assert.equal(text, "ping");
 * b.close();
 * ```
 *
 * @example Pipes as a transport for `resolve()`
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { listenPipe, pipeProtocol } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * using listener = listenPipe();
 * const ctx = empty.add(pipeProtocol.endpoint, listener);
 * const client = await resolve(ctx);
 * const server = await listener.accept();
 * assert.ok(pipeProtocol.is(client));
 * client.close();
 * server.close();
 * ```
 *
 * @module
 */

import { type Protocol, register, type Value } from "../mod.ts";
import type { Flow } from "./flow.ts";
import { readableFromFlow, writableFromFlow } from "./_streams.ts";
import { errors } from "./errors.ts";

export type { Flow, Protocol, Value };

/**
 * The default {@linkcode PipeOptions.highWaterMark}: 64 KiB.
 *
 * @example
 * ```ts
 * import { DEFAULT_HIGH_WATER_MARK, pipe } from "@mimic/mimic/pipe";
 *
 * const [a, b] = pipe({ highWaterMark: 4 * DEFAULT_HIGH_WATER_MARK });
 * a.close();
 * b.close();
 * ```
 */
export const DEFAULT_HIGH_WATER_MARK = 64 * 1024;

/**
 * Options for {@linkcode pipe}.
 *
 * @example A pipe without backpressure
 * ```ts
 * import { pipe, type PipeOptions } from "@mimic/mimic/pipe";
 *
 * const options: PipeOptions = { highWaterMark: Infinity };
 * const [a, b] = pipe(options);
 * await a.write(new Uint8Array(1 << 20)); // resolves without a reader
 * a.close();
 * b.close();
 * ```
 */
export interface PipeOptions {
  /**
   * How many bytes each direction buffers before a writer waits for the
   * reader: a non-negative integer, or `Infinity` for no backpressure. With
   * `0`, every write waits until a reader takes its bytes (a rendezvous).
   *
   * @default {65536}
   */
  highWaterMark?: number;
}

/**
 * One end of a {@linkcode pipe}: a {@linkcode Flow} that also implements
 * `Symbol.asyncDispose` (which closes it).
 *
 * Semantics, as a `Deno.Conn`:
 *
 * - `read(p)` resolves as soon as any byte is buffered, with up to `p.length`
 *   bytes (short reads happen); with `null` once the peer has called
 *   `closeWrite()` or `close()` and every byte written before is read. After
 *   this end's own `close()`, `read` rejects with `Deno.errors.BadResource`
 *   (reads pending at that moment too). After the readable was cancelled,
 *   `read` resolves to `null`.
 * - `write(p)` resolves to `p.length` once every byte of `p` is accepted into
 *   the buffer: it never writes short. While the buffer holds
 *   `highWaterMark` bytes the write waits (backpressure); a write larger than
 *   the free room is accepted piecewise as the reader drains, so the buffer
 *   never holds more than `highWaterMark` bytes. Bytes are copied once, when
 *   accepted (or straight into a waiting reader's buffer), so `p` may be
 *   reused as soon as the write resolves, but must not be changed before.
 *   Concurrent writes are accepted in call order.
 * - Writing after this end's `closeWrite()` or `close()` rejects with
 *   `Deno.errors.BadResource` ("Cannot write to pipe flow: it is closed");
 *   writing to a peer that closed (or cancelled its readable) rejects with
 *   `Deno.errors.BrokenPipe`, and so do writes pending at that moment: bytes
 *   are never dropped silently.
 * - `closeWrite()` is idempotent, and harmless after `close()`; writes
 *   already pending are still delivered before the peer reads `null`.
 * - `close()` is idempotent: the peer reads what was accepted, then `null`;
 *   this end's pending writes reject with `BadResource`; whatever the peer
 *   wrote and this end did not read is discarded.
 * - `readable` and `writable` are made on first use: closing `writable` is
 *   `closeWrite()`, aborting it is `close()`; cancelling `readable` closes
 *   the read side only (buffered bytes are discarded, the peer's writes fail
 *   with `BrokenPipe`, this end can still write).
 *
 * @example Half-close
 * ```ts
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * await a.closeWrite();
 * assert.equal(await b.read(new Uint8Array(1)), null);
 * await b.write(new Uint8Array([42])); // b can still write to a
 * const buf = new Uint8Array(1);
 * assert.equal(await a.read(buf), 1);
 * assert.equal(buf[0], 42);
 * a.close();
 * b.close();
 * ```
 */
export interface PipeFlow extends Flow, AsyncDisposable {}

/**
 * Makes a connected pair of in-memory flows: what one end writes, the other
 * reads. See {@linkcode PipeFlow} for the exact semantics.
 *
 * @param options The buffer size per direction.
 * @returns The two ends.
 * @throws {RangeError} If `highWaterMark` is negative or not an integer.
 *
 * @example Both directions at once
 * ```ts
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe({ highWaterMark: 1024 });
 * await Promise.all([a.write(new Uint8Array([1])), b.write(new Uint8Array([2]))]);
 * const buf = new Uint8Array(8);
 * assert.equal(await b.read(buf), 1);
 * assert.equal(buf[0], 1);
 * assert.equal(await a.read(buf), 1);
 * assert.equal(buf[0], 2);
 * a.close();
 * b.close();
 * ```
 */
export function pipe(options: PipeOptions = {}): [PipeFlow, PipeFlow] {
  const highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  if (
    !(highWaterMark >= 0) ||
    !(Number.isInteger(highWaterMark) || highWaterMark === Infinity)
  ) {
    throw new RangeError(
      `Cannot make a pipe: highWaterMark must be a non-negative integer, got ${highWaterMark}`,
    );
  }
  const aToB = new Channel(highWaterMark);
  const bToA = new Channel(highWaterMark);
  return [new PipeEnd(bToA, aToB), new PipeEnd(aToB, bToA)];
}

interface PendingWrite {
  readonly data: Uint8Array;
  offset: number;
  resolve(n: number): void;
  reject(error: unknown): void;
}

interface PendingRead {
  readonly buf: Uint8Array;
  resolve(n: number | null): void;
  reject(error: unknown): void;
}

function brokenPipe(): Error {
  return new errors.BrokenPipe(
    "Cannot write to pipe flow: the peer closed it",
  );
}

/**
 * One direction of a pipe: accepted chunks (copies), the writes still
 * waiting for room (not copied yet) and the reads waiting for bytes.
 * Invariants: reads wait only while nothing is buffered and no write waits;
 * writes wait only while the buffer is full.
 */
class Channel {
  readonly #highWaterMark: number;
  #queue: (Uint8Array | undefined)[] = [];
  #head = 0;
  #buffered = 0;
  #writes: PendingWrite[] = [];
  #reads: PendingRead[] = [];
  /** The writer closed its side: end of flow once drained. */
  #ended = false;
  /** The reader closed its side: writes fail, nothing is kept. */
  #broken = false;

  constructor(highWaterMark: number) {
    this.#highWaterMark = highWaterMark;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#broken) return Promise.reject(brokenPipe());
    if (p.length === 0) return Promise.resolve(0);
    let offset = 0;
    if (this.#writes.length === 0) {
      offset = this.#accept(p);
      if (offset === p.length) return Promise.resolve(p.length);
    }
    return new Promise((resolve, reject) => {
      this.#writes.push({ data: p, offset, resolve, reject });
    });
  }

  /** Hands `data` to waiting reads, then buffers what fits; returns the count taken. */
  #accept(data: Uint8Array): number {
    let offset = 0;
    while (offset < data.length && this.#reads.length > 0) {
      const read = this.#reads.shift()!;
      const n = Math.min(read.buf.length, data.length - offset);
      read.buf.set(data.subarray(offset, offset + n));
      offset += n;
      read.resolve(n);
    }
    const room = this.#highWaterMark - this.#buffered;
    if (offset < data.length && room > 0) {
      const n = Math.min(room, data.length - offset);
      this.#queue.push(data.slice(offset, offset + n));
      this.#buffered += n;
      offset += n;
    }
    return offset;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#broken) return Promise.resolve(null);
    if (p.length === 0) return Promise.resolve(0);
    let n = 0;
    // What is buffered comes first...
    const queue = this.#queue;
    while (n < p.length && this.#head < queue.length) {
      const chunk = queue[this.#head]!;
      const k = Math.min(chunk.length, p.length - n);
      if (k === chunk.length) {
        p.set(chunk, n);
        queue[this.#head++] = undefined;
      } else {
        p.set(chunk.subarray(0, k), n);
        queue[this.#head] = chunk.subarray(k);
      }
      n += k;
    }
    this.#buffered -= n;
    if (this.#head === queue.length) {
      queue.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
    // ...then the waiting writes, copied straight into p...
    const writes = this.#writes;
    while (n < p.length && writes.length > 0) {
      const write = writes[0];
      const k = Math.min(write.data.length - write.offset, p.length - n);
      p.set(write.data.subarray(write.offset, write.offset + k), n);
      write.offset += k;
      n += k;
      if (write.offset === write.data.length) {
        writes.shift();
        write.resolve(write.data.length);
      }
    }
    // ...and the rest of the waiting writes fill the room made.
    while (writes.length > 0 && this.#buffered < this.#highWaterMark) {
      const write = writes[0];
      const k = Math.min(
        write.data.length - write.offset,
        this.#highWaterMark - this.#buffered,
      );
      this.#queue.push(write.data.slice(write.offset, write.offset + k));
      this.#buffered += k;
      write.offset += k;
      if (write.offset === write.data.length) {
        writes.shift();
        write.resolve(write.data.length);
      }
    }
    if (n > 0) return Promise.resolve(n);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#reads.push({ buf: p, resolve, reject });
    });
  }

  /** The writer will write no more: readers get `null` once drained. */
  end(): void {
    this.#ended = true;
    // Reads wait only when nothing is buffered or pending: wake them all.
    const reads = this.#reads;
    this.#reads = [];
    for (const read of reads) read.resolve(null);
  }

  /** The writer closed: its pending writes fail, then end of flow. */
  abortWrites(error: Error): void {
    const writes = this.#writes;
    this.#writes = [];
    for (const write of writes) write.reject(error);
    this.end();
  }

  /**
   * The reader closed: drop what is buffered, fail the writer's writes, and
   * settle pending reads with `error` (or `null` without one).
   */
  closeRead(error?: Error): void {
    this.#broken = true;
    this.#queue = [];
    this.#head = 0;
    this.#buffered = 0;
    const writes = this.#writes;
    this.#writes = [];
    for (const write of writes) write.reject(brokenPipe());
    const reads = this.#reads;
    this.#reads = [];
    for (const read of reads) {
      if (error) read.reject(error);
      else read.resolve(null);
    }
  }
}

/** One end of a pipe: reads from `#in`, writes to `#out`. */
class PipeEnd implements PipeFlow {
  readonly #in: Channel;
  readonly #out: Channel;
  #writeClosed = false;
  #closed = false;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  constructor(incoming: Channel, outgoing: Channel) {
    this.#in = incoming;
    this.#out = outgoing;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) {
      return Promise.reject(
        new errors.BadResource(
          "Cannot read from pipe flow: it is closed",
        ),
      );
    }
    return this.#in.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#writeClosed) {
      return Promise.reject(
        new errors.BadResource(
          this.#closed
            ? "Cannot write to pipe flow: it is closed"
            : "Cannot write to pipe flow: it is closed for writing",
        ),
      );
    }
    return this.#out.write(p);
  }

  closeWrite(): Promise<void> {
    if (!this.#writeClosed) {
      this.#writeClosed = true;
      this.#out.end();
    }
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writeClosed = true;
    this.#out.abortWrites(
      new errors.BadResource(
        "Cannot write to pipe flow: it is closed",
      ),
    );
    this.#in.closeRead(
      new errors.BadResource("Cannot read from pipe flow: it is closed"),
    );
  }

  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFromFlow(
      (p) => this.read(p),
      () => this.#in.closeRead(),
    );
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Options for {@linkcode listenPipe}.
 *
 * @example
 * ```ts
 * import { listenPipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * using listener = listenPipe({ name: "backend", highWaterMark: 1024 });
 * listener.close();
 * assert.throws(() => listener.connect(), /pipe listener backend/);
 * ```
 */
export interface PipeListenerOptions {
  /** A name for the listener, used in error messages. Default: `"pipe-N"`. */
  name?: string;
  /** The buffer size per direction of each pipe it makes; see {@linkcode PipeOptions}. */
  highWaterMark?: number;
}

let listenerCount = 0;

/**
 * An in-process listener of {@linkcode PipeFlow}s, the pipe counterpart of a
 * `Deno.Listener`: {@linkcode PipeListener.connect} makes a pipe, queues one
 * end to be accepted and returns the other. Iterating it accepts until it is
 * closed; {@linkcode pipeProtocol} connects to it through `resolve()`.
 *
 * @example Accepting with `for await`
 * ```ts
 * import { listenPipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * using listener = listenPipe();
 * const client = listener.connect();
 * for await (const server of listener) {
 *   await server.write(new Uint8Array([7]));
 *   server.close();
 *   break;
 * }
 * const buf = new Uint8Array(1);
 * assert.equal(await client.read(buf), 1);
 * assert.equal(await client.read(buf), null);
 * client.close();
 * ```
 */
export class PipeListener
  implements AsyncIterable<PipeFlow>, AsyncDisposable, Disposable {
  /** The listener's name, as in error messages. */
  readonly name: string;
  readonly #highWaterMark: number | undefined;
  #backlog: PipeFlow[] = [];
  #accepts: { resolve(flow: PipeFlow): void; reject(error: unknown): void }[] =
    [];
  #closed = false;

  /**
   * Makes an open listener; {@linkcode listenPipe} does the same.
   *
   * @param options A name, and the buffer size of the pipes it makes.
   */
  constructor(options: PipeListenerOptions = {}) {
    this.name = options.name ?? `pipe-${++listenerCount}`;
    this.#highWaterMark = options.highWaterMark;
    if (this.#highWaterMark !== undefined) {
      pipe({ highWaterMark: this.#highWaterMark }); // validates it early
    }
  }

  /**
   * Whether {@linkcode PipeListener.close} was called.
   *
   * @returns `true` once closed.
   */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Connects: makes a pipe, hands one end to a pending or future
   * {@linkcode PipeListener.accept}, and returns the other.
   *
   * @returns The client end.
   * @throws {Deno.errors.ConnectionRefused} If the listener is closed.
   */
  connect(): PipeFlow {
    if (this.#closed) {
      throw new errors.ConnectionRefused(
        `Cannot connect to pipe listener ${this.name}: it is closed`,
      );
    }
    const [client, server] = pipe({ highWaterMark: this.#highWaterMark });
    const accept = this.#accepts.shift();
    if (accept) accept.resolve(server);
    else this.#backlog.push(server);
    return client;
  }

  /**
   * Waits for the next connection.
   *
   * @returns The server end of the next pipe connected.
   * @throws {Deno.errors.BadResource} If the listener is (or gets) closed.
   */
  accept(): Promise<PipeFlow> {
    const flow = this.#backlog.shift();
    if (flow) return Promise.resolve(flow);
    if (this.#closed) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => {
      this.#accepts.push({ resolve, reject });
    });
  }

  /**
   * Closes the listener: further connects are refused, pending accepts
   * reject with `BadResource`, connections not yet accepted are closed (their
   * clients read end of flow), iteration ends. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const accepts = this.#accepts;
    this.#accepts = [];
    for (const accept of accepts) accept.reject(this.#closedError());
    const backlog = this.#backlog;
    this.#backlog = [];
    for (const flow of backlog) flow.close();
  }

  /**
   * Accepts connections until the listener is closed.
   *
   * @returns An iterator of server ends.
   */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<PipeFlow> {
    while (true) {
      let flow: PipeFlow;
      try {
        flow = await this.accept();
      } catch (error) {
        if (this.#closed) return;
        throw error;
      }
      yield flow;
    }
  }

  /** Closes the listener. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the listener.
   *
   * @returns A resolved promise.
   */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #closedError(): Error {
    return new errors.BadResource(
      `Cannot accept on pipe listener ${this.name}: it is closed`,
    );
  }
}

/**
 * Makes an in-process listener for {@linkcode pipeProtocol}.
 *
 * @param options A name, and the buffer size of the pipes it makes.
 * @returns An open listener.
 *
 * @example
 * ```ts
 * import { listenPipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * using listener = listenPipe({ name: "backend" });
 * const client = listener.connect();
 * const server = await listener.accept();
 * await client.write(new Uint8Array([1, 2]));
 * assert.equal(await server.read(new Uint8Array(4)), 2);
 * client.close();
 * server.close();
 * ```
 */
export function listenPipe(options: PipeListenerOptions = {}): PipeListener {
  return new PipeListener(options);
}

/**
 * The `"pipe"` protocol: its endpoint is a {@linkcode PipeListener}, and
 * connecting calls {@linkcode PipeListener.connect} (rejecting with
 * `Deno.errors.ConnectionRefused` when the listener is closed, or with the
 * signal's reason when it is aborted). Exported as `pipeProtocol` since
 * `pipe` is the function making a pair.
 *
 * @example
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { listenPipe, pipeProtocol } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * using listener = listenPipe();
 * const flow = await resolve(empty.add(pipeProtocol.endpoint, listener));
 * const server = await listener.accept();
 * await flow.write(new Uint8Array([9]));
 * const buf = new Uint8Array(1);
 * assert.equal(await server.read(buf), 1);
 * flow.close();
 * server.close();
 * ```
 */
export const pipeProtocol: Protocol<PipeListener, PipeFlow> = register<
  PipeListener,
  PipeFlow
>(
  "pipe",
  (listener, signal) =>
    new Promise<PipeFlow>((resolve) => {
      signal.throwIfAborted();
      resolve(listener.connect());
    }),
);
