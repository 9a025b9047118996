/**
 * Web streams over a flow's `read`/`write`/`closeWrite` primitives, shared by
 * the transports (pipe, TLS, process, WebSocket, ...) to implement
 * {@linkcode Flow.readable} and {@linkcode Flow.writable} the same way.
 *
 * The streams follow the flow's half-close semantics rather than
 * `Deno.Conn`'s (whose streams close the whole connection):
 *
 * - reaching end of flow closes the readable and nothing else, so the flow can
 *   still be written to;
 * - cancelling the readable calls `cancel` (typically: stop reading, drop what
 *   is buffered, let the peer's writes fail);
 * - closing the writable calls `closeWrite` (the peer reads end of flow);
 * - aborting the writable calls `abort` (typically: close the whole flow).
 *
 * Neither stream must be used while the flow's own `read`/`write` are used
 * directly: bytes would be split between the two readers in any order.
 *
 * @module
 */

import type { Flow } from "./flow.ts";
import { writeAll } from "./_util.ts";

/** The default size of the chunks a readable allocates for default readers. */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;

/** Options for {@linkcode readableFromFlow}. */
export interface ReadableFromFlowOptions {
  /**
   * The size of the buffer allocated for each `read` when the stream is read
   * by a default reader (a BYOB reader supplies its own buffers).
   *
   * @default {65536}
   */
  chunkSize?: number;
  /**
   * Takes back bytes a pull had read when the stream was cancelled before
   * they were delivered, so the flow's next `read` gets them (one position
   * shared by `read` and `readable`). Default: they are dropped.
   */
  unread?: (bytes: Uint8Array) => void;
}

/**
 * Makes a byte stream (`type: "bytes"`) that pulls from `read`. Default
 * readers get chunks of at most `chunkSize` bytes; BYOB readers get their
 * bytes read straight into their own buffers (no copy). End of flow (`read`
 * resolving to `null`) closes the stream; a rejected `read` errors it.
 *
 * @param read Reads into `p`, resolving to the count read or `null` at end of flow.
 * @param cancel Called once when the consumer cancels the stream.
 * @param options The chunk size for default readers.
 * @returns A readable byte stream over `read`.
 *
 * @example A readable over a fixed buffer
 * ```ts
 * import { readableFromFlow } from "./_streams.ts";
 * import assert from "node:assert/strict";
 *
 * let sent = false;
 * const readable = readableFromFlow((p) => {
 *   if (sent) return Promise.resolve(null);
 *   sent = true;
 *   p.set([1, 2, 3]);
 *   return Promise.resolve(3);
 * }, () => {});
 * const chunks = await Array.fromAsync(readable);
 * assert.deepEqual(chunks.map((c) => [...c]), [[1, 2, 3]]);
 * ```
 */
export function readableFromFlow(
  read: Flow["read"],
  cancel: (reason: unknown) => void | Promise<void>,
  options: ReadableFromFlowOptions = {},
): ReadableStream<Uint8Array> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize <= 0) {
    throw new RangeError(
      `Cannot make a readable: chunkSize must be a positive integer, got ${chunkSize}`,
    );
  }
  const unread = options.unread;
  let done = false;
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: chunkSize,
    async pull(controller): Promise<void> {
      const request = controller.byobRequest;
      const view = request?.view
        ? new Uint8Array(
          request.view.buffer,
          request.view.byteOffset,
          request.view.byteLength,
        )
        : new Uint8Array(chunkSize);
      let n: number | null;
      try {
        do n = await read(view); while (n === 0 && !done);
      } catch (error) {
        if (done) return;
        throw error;
      }
      if (done) {
        // Cancelled while reading: the bytes belong to the flow's next read
        // (a detached BYOB view has lost them).
        if (n !== null && n > 0 && view.byteLength >= n) {
          unread?.(view.subarray(0, n));
        }
        return;
      }
      if (n === null) {
        done = true;
        controller.close();
        request?.respond(0);
      } else if (request) {
        request.respond(n);
      } else {
        controller.enqueue(view.subarray(0, n));
      }
    },
    cancel(reason): void | Promise<void> {
      done = true;
      return cancel(reason);
    },
  });
}

/** Options for {@linkcode writableFromFlow}. */
export interface WritableFromFlowOptions {
  /**
   * Called when the stream is aborted (e.g. by `pipeTo` when its source
   * errors). Typically closes the whole flow. Default: nothing.
   */
  abort?: (reason: unknown) => void | Promise<void>;
}

/**
 * Makes a writable stream whose chunks go to `write`, looping over short
 * writes so every byte of a chunk is written before the next one; closing the
 * stream calls `closeWrite`. A chunk that is not a `Uint8Array` errors the
 * stream with a `TypeError`; a `write` that accepts zero bytes of a non-empty
 * chunk errors it with `errors.WriteZero`.
 *
 * @param write Writes from `p`, resolving to the count written.
 * @param closeWrite Half-closes the flow; called when the stream is closed.
 * @param options What to do when the stream is aborted.
 * @returns A writable stream over `write`.
 *
 * @example A writable that collects bytes
 * ```ts
 * import { writableFromFlow } from "./_streams.ts";
 * import assert from "node:assert/strict";
 *
 * const got: number[] = [];
 * const writable = writableFromFlow((p) => {
 *   got.push(...p);
 *   return Promise.resolve(p.length);
 * }, () => Promise.resolve());
 * await ReadableStream.from([new Uint8Array([1, 2]), new Uint8Array([3])])
 *   .pipeTo(writable);
 * assert.deepEqual(got, [1, 2, 3]);
 * ```
 */
export function writableFromFlow(
  write: Flow["write"],
  closeWrite: () => Promise<void>,
  options: WritableFromFlowOptions = {},
): WritableStream<Uint8Array> {
  const { abort } = options;
  return new WritableStream<Uint8Array>({
    async write(chunk): Promise<void> {
      if (!(chunk instanceof Uint8Array)) {
        throw new TypeError(
          "Cannot write to flow: a chunk must be a Uint8Array",
        );
      }
      await writeAll({ write }, chunk);
    },
    close(): Promise<void> {
      return closeWrite();
    },
    abort(reason): void | Promise<void> {
      return abort?.(reason);
    },
  });
}

/**
 * Bytes a cancelled readable had read and not delivered (the `unread`
 * option of {@linkcode readableFromFlow}): the flow's next reads take them
 * before anything else, so `read` and `readable` keep one position.
 *
 * @example Put back, then read first
 * ```ts
 * import { Unread } from "./_streams.ts";
 * import assert from "node:assert/strict";
 *
 * const unread = new Unread();
 * unread.unshift(new Uint8Array([3, 4]));
 * unread.unshift(new Uint8Array([1, 2]));
 * const p = new Uint8Array(3);
 * assert.equal(unread.take(p), 3);
 * assert.deepEqual([...p], [1, 2, 3]);
 * assert.equal(unread.size, 1);
 * ```
 */
export class Unread {
  #bytes: Uint8Array | undefined;

  /** How many bytes are kept. */
  get size(): number {
    return this.#bytes?.length ?? 0;
  }

  /**
   * Puts a copy of `bytes` in front of those kept.
   *
   * @param bytes The bytes a cancelled pull had read.
   */
  unshift(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const rest = this.#bytes;
    if (rest === undefined) {
      this.#bytes = bytes.slice();
      return;
    }
    const all = new Uint8Array(bytes.length + rest.length);
    all.set(bytes);
    all.set(rest, bytes.length);
    this.#bytes = all;
  }

  /**
   * Moves up to `p.length` kept bytes into `p`.
   *
   * @param p Where to put them.
   * @returns The count moved (0 when none is kept).
   */
  take(p: Uint8Array): number {
    const kept = this.#bytes;
    if (kept === undefined) return 0;
    const n = Math.min(p.length, kept.length);
    p.set(kept.subarray(0, n));
    this.#bytes = n === kept.length ? undefined : kept.subarray(n);
    return n;
  }

  /** Drops what is kept. */
  clear(): void {
    this.#bytes = undefined;
  }
}
