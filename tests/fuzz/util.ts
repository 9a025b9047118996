/**
 * Helpers shared by the reliability tests and the stress scripts: bounded
 * waits (a hang becomes a failure), loopback pairs; and, from
 * `../_helpers.ts`, whole-flow reads and writes, digests and fixtures.
 *
 * @module
 */

export { delay, fixture, readAll, sha256, writeAll } from "../_helpers.ts";

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
