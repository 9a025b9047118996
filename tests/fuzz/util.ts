/**
 * Helpers shared by the reliability tests and the stress scripts: bounded
 * waits (a hang becomes a failure), whole-flow reads and writes, digests.
 *
 * @module
 */

import type { Flow } from "../../mod.ts";

/** One mebibyte. */
export const MiB = 1024 * 1024;

/**
 * Rejects when `p` takes longer than `ms`; clears its timer either way.
 *
 * @param p The promise.
 * @param ms The bound.
 * @param what Names the operation in the error.
 * @returns What `p` resolves to.
 */
export async function within<T>(
  p: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no progress in ${ms} ms (a hang)`)),
      ms,
    );
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether `p` is still pending after `ms` (its timer cleared either way).
 *
 * @param p The promise.
 * @param ms How long to wait.
 * @returns True when still pending.
 */
export async function pendingAfter(
  p: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const PENDING = Symbol("pending");
  const r = await Promise.race([
    p.then(() => undefined, () => undefined),
    new Promise((ok) => {
      timer = setTimeout(() => ok(PENDING), ms);
    }),
  ]);
  clearTimeout(timer);
  return r === PENDING;
}

/**
 * Waits `ms` milliseconds.
 *
 * @param ms How long.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((ok) => setTimeout(ok, ms));
}

/** A promise with its resolve and reject. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(x: T): void;
  reject(e: unknown): void;
}

/**
 * Makes a {@linkcode Deferred}.
 *
 * @returns The promise and its resolvers.
 */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (x: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((ok, ko) => {
    resolve = ok;
    reject = ko;
  });
  return { promise, resolve, reject };
}

/**
 * SHA-256 of `bytes`, hex.
 *
 * @param bytes The bytes.
 * @returns The digest.
 */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new Uint8Array(bytes));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/**
 * Writes all of `data` in writes of at most `chunk` bytes.
 *
 * @param flow The flow.
 * @param data The bytes.
 * @param chunk The most bytes per write.
 */
export async function writeAll(
  flow: Flow,
  data: Uint8Array,
  chunk = 65536,
): Promise<void> {
  for (let off = 0; off < data.length;) {
    const n = await flow.write(data.subarray(off, off + chunk));
    if (!(n > 0)) throw new Error(`write returned ${n}`);
    off += n;
  }
}

/**
 * Reads to end of flow with reads of at most `size` bytes.
 *
 * @param flow The flow.
 * @param size The read buffer size.
 * @returns Every byte read.
 */
export async function readAll(flow: Flow, size = 65536): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(size);
  for (;;) {
    const n = await flow.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Reads a test fixture (tests/fixtures/...).
 *
 * @param name The path under tests/fixtures.
 * @returns Its text.
 */
export function fixture(name: string): string {
  return Deno.readTextFileSync(new URL(`../fixtures/${name}`, import.meta.url));
}

/**
 * A connected TCP pair over loopback (the listener is closed).
 *
 * @param hostname The loopback address.
 * @returns The client's and the server's connections.
 */
export async function tcpPair(
  hostname = "127.0.0.1",
): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  using listener = Deno.listen({ hostname, port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname, port: listener.addr.port }),
    listener.accept(),
  ]);
  return [client, server as Deno.TcpConn];
}
