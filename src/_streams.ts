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
import { errors } from "./errors.ts";

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
      if (done) return; // cancelled while reading
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
 * chunk errors it with `Deno.errors.WriteZero`.
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
      let offset = 0;
      while (offset < chunk.length) {
        const n = await write(
          offset === 0 ? chunk : chunk.subarray(offset),
        );
        if (n <= 0) {
          throw new errors.WriteZero(
            "Cannot write to flow: it accepted zero bytes",
          );
        }
        offset += n;
      }
    },
    close(): Promise<void> {
      return closeWrite();
    },
    abort(reason): void | Promise<void> {
      return abort?.(reason);
    },
  });
}
