/**
 * The byte stream every transport hands back (mimic's `Mirage_flow.S`), and
 * the helpers that make a contract-keeping one from a reader/writer pair
 * ({@linkcode flowFromReader}) or from a pair of web streams
 * ({@linkcode flowFromStreams}).
 *
 * @module
 */

import { errors } from "./errors.ts";
import { readableFromFlow, Unread, writableFromFlow } from "./_streams.ts";
import { closeQuietly } from "./_util.ts";

/**
 * A full-duplex byte stream. A `Deno.TcpConn`, `Deno.UnixConn` and
 * `Deno.TlsConn` are flows as they are; every flow this package makes keeps
 * the Flow contract (rules 1-9 of the package's API: call-ordered reads and
 * writes, half-close, typed errors, `Symbol.dispose`/`Symbol.asyncDispose`).
 *
 * @example Echo one chunk back
 * ```ts
 * import type { Flow } from "@mimic/mimic";
 *
 * async function echoOnce(flow: Flow): Promise<void> {
 *   const buf = new Uint8Array(1024);
 *   const n = await flow.read(buf);
 *   if (n !== null) await flow.write(buf.subarray(0, n));
 *   await flow.closeWrite();
 * }
 * ```
 */
export interface Flow {
  /** Reads into `p`; resolves to the number of bytes read, or `null` at end of flow. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from `p`; resolves to the number of bytes written (may be fewer than `p.length`). */
  write(p: Uint8Array): Promise<number>;
  /** Half-closes: no more writes; the peer reads end of flow (TLS: close_notify). */
  closeWrite(): Promise<void>;
  /** Releases the flow and what it wraps. Idempotent. */
  close(): void;
  /** The bytes read, as a stream. */
  readonly readable: ReadableStream<Uint8Array>;
  /** The bytes to write, as a stream. */
  readonly writable: WritableStream<Uint8Array>;
}

/**
 * An address, in the shapes of `Deno.Addr` (so a `Deno.Conn`'s `localAddr`
 * fits), usable on every runtime.
 */
export type Addr =
  | { transport: "tcp" | "udp"; hostname: string; port: number }
  | { transport: "unix" | "unixpacket"; path: string };

/**
 * What {@linkcode flowFromReader} makes a flow of: a reader and a writer,
 * nothing more. The flow adds everything else the contract asks for.
 *
 * The source's `read` and `write` are never called concurrently (the flow
 * queues calls in order), never with an empty buffer, and never after
 * `close`. `read` may resolve 0 (it is called again, up to 64 times in a
 * row, then the read rejects with `InvalidData`); `write` may write short
 * (it is called again with the rest; 0 rejects with `WriteZero`).
 */
export interface FlowSource {
  /** Reads into `p` (non-empty): the count read, or `null` at end of flow. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes from `p` (non-empty): the count written. */
  write(p: Uint8Array): Promise<number>;
  /** Half-closes (the peer reads end of flow); called once, after every write. Default: nothing. */
  closeWrite?(): Promise<void> | void;
  /** Releases the resource; called once. Default: nothing. Errors it throws are ignored. */
  close?(): void;
}

/** Options of {@linkcode flowFromReader} and {@linkcode flowFromStreams}. */
export interface SourceFlowOptions {
  /**
   * Names the flow in error messages ("Cannot read from tcp 127.0.0.1:80:
   * the flow is closed").
   *
   * @default {"flow"}
   */
  name?: string;
  /** The local address, exposed as `localAddr`. */
  localAddr?: Addr;
  /** The peer's address, exposed as `remoteAddr`. */
  remoteAddr?: Addr;
  /**
   * The source settles its pending `read`/`write` by itself when closed (as
   * a `Deno.Conn` does, with `Interrupted`): the flow then skips its own
   * wrapper promise per call. Only an optimisation; leave it off when unsure.
   *
   * @default {false}
   */
  settlesOnClose?: boolean;
  /** Awaited by `Symbol.asyncDispose` after `close()` (e.g. a process's exit). */
  disposed?: () => Promise<void>;
}

const noop = (): void => {};

/** How many 0-byte reads in a row a source may return before it is an error. */
const MAX_ZERO_READS = 64;

/**
 * A flow made from a {@linkcode FlowSource}, keeping the Flow contract:
 *
 * 1. `read(p)` resolves 1..`p.length` bytes or `null` (then `null` forever);
 *    an empty `p` resolves 0; concurrent reads are served in call order.
 * 2. `write(p)` writes every byte of `p` before it resolves to `p.length`;
 *    concurrent writes go out in call order, never interleaved.
 * 3. `closeWrite()` half-closes after the pending writes (without waiting
 *    for them when there are some); idempotent; a later `write` rejects
 *    with `BrokenPipe`.
 * 4. `close()` is idempotent; pending reads and writes reject with
 *    `Interrupted`; later `read`, `write` and `closeWrite` with
 *    `BadResource`.
 * 5. `readable` shares `read`'s position; cancelling it only stops the
 *    stream (a later `read` gets the next bytes, even those a cancelled pull
 *    had read); `writable.close()` is `closeWrite()`, `writable.abort()` is
 *    `close()`.
 * 6. The source's own errors (`ConnectionReset`, ...) pass through.
 * 8. `Symbol.dispose` and `Symbol.asyncDispose` close it; `localAddr` and
 *    `remoteAddr` are the options'.
 *
 * Transports subclass it (the `tcp` and `unix` flows do) or hold one.
 *
 * @example A flow over an in-memory source
 * ```ts
 * import { SourceFlow } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const flow = new SourceFlow({
 *   read: () => Promise.resolve(null),
 *   write: (p) => Promise.resolve(p.length),
 * });
 * assert.equal(await flow.read(new Uint8Array(8)), null);
 * flow.close();
 * await assert.rejects(flow.write(new Uint8Array(1)), { name: "BadResource" });
 * ```
 */
export class SourceFlow implements Flow, Disposable, AsyncDisposable {
  /** The local address, when the transport has one. */
  readonly localAddr?: Addr;
  /** The peer's address, when the transport has one. */
  readonly remoteAddr?: Addr;

  #source: FlowSource;
  #name: string;
  #settles: boolean;
  #disposed: (() => Promise<void>) | undefined;
  #closed = false;
  #writeClosed = false;
  #eof = false;
  readonly #unread = new Unread();
  #reading = 0;
  #readTail: Promise<number | null> | undefined;
  #readReject: ((error: unknown) => void) | undefined;
  #writing = 0;
  #writeTail: Promise<number> | undefined;
  #writeReject: ((error: unknown) => void) | undefined;
  #closeWrite: Promise<void> | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  /**
   * Makes the flow; {@linkcode flowFromReader} does the same.
   *
   * @param source The reader and writer.
   * @param options A name for errors, addresses, and hooks.
   */
  constructor(source: FlowSource, options: SourceFlowOptions = {}) {
    this.#source = source;
    this.#name = options.name ?? "flow";
    this.#settles = options.settlesOnClose ?? false;
    this.#disposed = options.disposed;
    if (options.localAddr !== undefined) this.localAddr = options.localAddr;
    if (options.remoteAddr !== undefined) this.remoteAddr = options.remoteAddr;
  }

  #closedError(action: string): Error {
    return new errors.BadResource(
      `Cannot ${action} ${this.#name}: it is closed`,
    );
  }

  #interrupted(action: string, cause?: unknown): Error {
    return new errors.Interrupted(
      `Cannot ${action} ${this.#name}: the flow was closed meanwhile`,
      cause === undefined ? undefined : { cause },
    );
  }

  /**
   * Reads into `p`.
   *
   * @param p The buffer to fill.
   * @returns The number of bytes read (at least 1 for a non-empty `p`), or
   * `null` at end of flow.
   */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(this.#closedError("read from"));
    if (p.length === 0) return Promise.resolve(0);
    let op: Promise<number | null>;
    if (this.#reading++ === 0) op = this.#read(p);
    else {
      const run = () => this.#read(p);
      op = this.#readTail!.then(run, run);
    }
    this.#readTail = op;
    return op;
  }

  #read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) {
      this.#reading--;
      return Promise.reject(this.#interrupted("read from"));
    }
    if (this.#unread.size > 0) {
      this.#reading--;
      return Promise.resolve(this.#unread.take(p));
    }
    if (this.#eof) {
      this.#reading--;
      return Promise.resolve(null);
    }
    if (this.#settles) return this.#pull(p);
    return new Promise((ok, ko) => {
      this.#readReject = ko;
      this.#pull(p).then(ok, ko);
    });
  }

  #pull(p: Uint8Array, zeros = 0): Promise<number | null> {
    let call: Promise<number | null>;
    try {
      call = this.#source.read(p);
    } catch (error) {
      call = Promise.reject(error);
    }
    return call.then((n) => {
      if (n === 0 && !this.#closed && zeros < MAX_ZERO_READS) {
        return this.#pull(p, zeros + 1);
      }
      this.#reading--;
      this.#readReject = undefined;
      if (this.#closed) throw this.#interrupted("read from");
      if (n === 0) {
        throw new errors.InvalidData(
          `Cannot read from ${this.#name}: the source read 0 bytes ${MAX_ZERO_READS} times in a row`,
        );
      }
      if (n === null) this.#eof = true;
      else if (!(n > 0 && n <= p.length)) {
        throw new RangeError(
          `Cannot read from ${this.#name}: the source read ${n} bytes into ${p.length}`,
        );
      }
      return n;
    }, (error) => {
      this.#reading--;
      this.#readReject = undefined;
      if (this.#closed) throw this.#interrupted("read from", error);
      throw error;
    });
  }

  /** Puts bytes a cancelled readable had read back in front. */
  #unshift(bytes: Uint8Array): void {
    if (!this.#closed) this.#unread.unshift(bytes);
  }

  /**
   * Writes every byte of `p`.
   *
   * @param p The bytes to write.
   * @returns `p.length`, once every byte is handed to the transport.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closedError("write to"));
    if (this.#writeClosed) {
      return Promise.reject(
        new errors.BrokenPipe(
          `Cannot write to ${this.#name}: it is closed for writing`,
        ),
      );
    }
    if (p.length === 0) return Promise.resolve(0);
    let op: Promise<number>;
    if (this.#writing++ === 0) op = this.#write(p);
    else {
      const run = () => this.#write(p);
      op = this.#writeTail!.then(run, run);
    }
    this.#writeTail = op;
    return op;
  }

  #write(p: Uint8Array): Promise<number> {
    if (this.#closed) {
      this.#writing--;
      return Promise.reject(this.#interrupted("write to"));
    }
    if (this.#settles) return this.#push(p, 0);
    return new Promise((ok, ko) => {
      this.#writeReject = ko;
      this.#push(p, 0).then(ok, ko);
    });
  }

  #push(p: Uint8Array, offset: number): Promise<number> {
    let call: Promise<number>;
    try {
      call = this.#source.write(offset === 0 ? p : p.subarray(offset));
    } catch (error) {
      call = Promise.reject(error);
    }
    return call.then((n) => {
      if (!this.#closed && n > 0 && offset + n < p.length) {
        return this.#push(p, offset + n);
      }
      this.#writing--;
      this.#writeReject = undefined;
      if (this.#closed) throw this.#interrupted("write to");
      if (!(n > 0)) {
        throw new errors.WriteZero(
          `Cannot write to ${this.#name}: it accepted zero bytes`,
        );
      }
      return p.length;
    }, (error) => {
      this.#writing--;
      this.#writeReject = undefined;
      if (this.#closed) throw this.#interrupted("write to", error);
      throw error;
    });
  }

  /**
   * Half-closes once the pending writes are done: the peer reads end of
   * flow; this side keeps reading. Idempotent. With writes pending it
   * resolves at once (the half-close follows them).
   *
   * @returns A promise settled once half-closed.
   */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError("close"));
    if (this.#closeWrite !== undefined) return this.#closeWrite;
    this.#writeClosed = true;
    const run = async (): Promise<void> => {
      if (this.#closed) return;
      await this.#source.closeWrite?.();
    };
    if (this.#writing === 0) return this.#closeWrite = run();
    // Writes are pending: the half-close follows them, but does not wait for
    // them (a pending write may wait for the peer to read, and the peer may
    // wait for this call), as a socket's shutdown does not.
    this.#writeTail!.then(run, run).catch(noop);
    return this.#closeWrite = Promise.resolve();
  }

  /**
   * Closes the flow and the source: pending reads and writes reject with
   * `Interrupted`. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writeClosed = true;
    this.#unread.clear();
    this.#readReject?.(this.#interrupted("read from"));
    this.#writeReject?.(this.#interrupted("write to"));
    if (this.#source.close !== undefined) {
      closeQuietly(this.#source as { close(): void });
    }
  }

  /** The bytes read, as a stream sharing `read`'s position. */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFromFlow((p) => this.read(p), noop, {
      unread: (bytes) => this.#unshift(bytes),
    });
  }

  /** The bytes to write, as a stream: closing it is `closeWrite()`. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  /** Closes the flow. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the flow (and waits for what the `disposed` option waits for).
   *
   * @returns A promise settled once disposed.
   */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return this.#disposed?.() ?? Promise.resolve();
  }
}

/**
 * Makes a contract-keeping flow from a reader/writer pair: the queueing,
 * half-close, close, streams, dispose and error names come for free (see
 * {@linkcode SourceFlow} for the exact semantics).
 *
 * @example A custom transport in a few lines
 * ```ts
 * import { flowFromReader } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * // A source that yields "hi" once, and counts what is written.
 * let sent = false;
 * let written = 0;
 * await using flow = flowFromReader({
 *   read(p) {
 *     if (sent) return Promise.resolve(null);
 *     sent = true;
 *     p.set([104, 105]);
 *     return Promise.resolve(2);
 *   },
 *   write(p) {
 *     written += p.length;
 *     return Promise.resolve(p.length);
 *   },
 * }, { name: "greeter" });
 * assert.equal(await new Response(flow.readable).text(), "hi");
 * await flow.write(new Uint8Array(3));
 * await flow.closeWrite();
 * await assert.rejects(flow.write(new Uint8Array(1)), { name: "BrokenPipe" });
 * assert.equal(written, 3);
 * ```
 *
 * @param source The reader and writer.
 * @param options A name for errors, addresses, and hooks.
 * @returns The flow.
 */
export function flowFromReader(
  source: FlowSource,
  options?: SourceFlowOptions,
): SourceFlow {
  return new SourceFlow(source, options);
}

/** Options of {@linkcode flowFromStreams}. */
export interface StreamsFlowOptions extends SourceFlowOptions {
  /** Called once by `close()`, after the streams are cancelled and aborted. */
  close?: () => void;
}

/**
 * Makes a contract-keeping flow from a pair of web streams (a
 * `TransformStream`'s ends, a subprocess's stdout and stdin, a
 * `WebSocketStream`'s, ...). The flow locks both streams: reading reads the
 * readable (keeping what did not fit for the next read), writing writes a
 * copy of the bytes to the writable, `closeWrite()` closes the writable,
 * `close()` cancels the readable, aborts the writable and calls
 * `options.close`. A stream that errors makes the pending or next read or
 * write reject with its error; a chunk that is not a `Uint8Array` rejects
 * the read with a `TypeError`.
 *
 * @example A loopback made of one TransformStream
 * ```ts
 * import { flowFromStreams } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
 * await using flow = flowFromStreams(readable, writable, { name: "loopback" });
 * const read = new Response(flow.readable).text();
 * await flow.write(new TextEncoder().encode("echo"));
 * await flow.closeWrite();
 * assert.equal(await read, "echo");
 * ```
 *
 * @param readable The bytes to read.
 * @param writable Where written bytes go.
 * @param options A name for errors, addresses, and what `close()` also does.
 * @returns The flow.
 */
export function flowFromStreams(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
  options: StreamsFlowOptions = {},
): SourceFlow {
  const reader = readable.getReader();
  const writer = writable.getWriter();
  reader.closed.catch(noop);
  writer.closed.catch(noop);
  let rest: Uint8Array | undefined;
  const name = options.name ?? "flow";
  return new SourceFlow({
    async read(p) {
      while (rest === undefined || rest.length === 0) {
        const result = await reader.read();
        if (result.done) return null;
        if (!(result.value instanceof Uint8Array)) {
          throw new TypeError(
            `Cannot read from ${name}: the stream yielded a chunk that is not a Uint8Array`,
          );
        }
        rest = result.value;
      }
      const n = Math.min(p.length, rest.length);
      p.set(rest.subarray(0, n));
      rest = n === rest.length ? undefined : rest.subarray(n);
      return n;
    },
    async write(p) {
      await writer.write(p.slice());
      return p.length;
    },
    closeWrite: () => writer.close(),
    close() {
      rest = undefined;
      reader.cancel().catch(noop);
      writer.abort().catch(noop);
      options.close?.();
    },
  }, options);
}
