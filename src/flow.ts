/**
 * The byte stream every transport hands back: mimic's `Mirage_flow.S`.
 *
 * @module
 */

/**
 * A full-duplex byte stream. A `Deno.TcpConn`, `Deno.UnixConn` and
 * `Deno.TlsConn` are flows as they are; every flow this package makes also
 * implements `Symbol.asyncDispose`, so `await using` works.
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
