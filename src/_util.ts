/**
 * Internal helpers shared by every transport: one write-all loop, one abort
 * race, one quiet close. Not an entry point.
 *
 * @module
 */

import type { Flow } from "./flow.ts";
import { errors } from "./errors.ts";

/**
 * Writes all of `data` to `flow`, looping over short writes.
 *
 * @param flow Where to write.
 * @param data The bytes.
 * @param what Names the flow in the error for a write that accepts nothing.
 * @throws {errors.WriteZero} When a write accepts zero bytes of a non-empty rest.
 */
export async function writeAll(
  flow: Pick<Flow, "write">,
  data: Uint8Array,
  what = "flow",
): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const n = await flow.write(offset === 0 ? data : data.subarray(offset));
    if (!(n > 0)) {
      throw new errors.WriteZero(
        `Cannot write to ${what}: it accepted zero bytes`,
      );
    }
    offset += n;
  }
}

/**
 * Resolves or rejects as `p`, unless `signal` aborts first: then rejects with
 * the signal's reason (and `p`'s own rejection is handled, never unhandled).
 *
 * @param p The promise to race.
 * @param signal The signal, if any.
 * @returns `p`'s outcome or the abort.
 */
export function abortable<T>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((ok, ko) => {
    const abort = () => {
      p.catch(() => {});
      ko(signal.reason);
    };
    signal.addEventListener("abort", abort, { once: true });
    p.then(ok, ko).finally(() => signal.removeEventListener("abort", abort));
  });
}

/**
 * Closes `flow`, ignoring an error (a flow already closed by its owner).
 *
 * @param flow What to close, or undefined.
 */
export function closeQuietly(flow: { close(): void } | undefined): void {
  try {
    flow?.close();
  } catch {
    // Already closed.
  }
}

/** The message of an error, or the value as a string. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `x`'s type, for error messages ("got null", "got array"). */
export function typeName(x: unknown): string {
  return x === null ? "null" : Array.isArray(x) ? "array" : typeof x;
}

/**
 * The one endpoint validation: `target` must be an object with a non-empty
 * string `hostname` and an integer `port` in 1..65535.
 *
 * @param what Names the endpoint in the error ("tcp", "tunnel target").
 * @param target The endpoint to check.
 * @returns `target`, typed.
 * @throws {TypeError} For a wrong shape or type.
 * @throws {RangeError} For a port out of range (0 included).
 */
export function checkHostPort(
  what: string,
  target: unknown,
): { hostname: string; port: number } {
  const fail = (reason: string, Kind = TypeError): never => {
    throw new Kind(`Cannot connect to ${what} endpoint: ${reason}`);
  };
  if (typeof target !== "object" || target === null) {
    fail(`the endpoint must be an object, got ${typeName(target)}`);
  }
  const { hostname, port } = target as Record<string, unknown>;
  if (typeof hostname !== "string") {
    fail(`hostname must be a string, got ${typeName(hostname)}`);
  }
  if (hostname === "") fail("hostname must not be empty");
  if (typeof port !== "number") {
    fail(`port must be a number, got ${typeName(port)}`);
  }
  if (
    !Number.isInteger(port) || (port as number) <= 0 ||
    (port as number) >= 65536
  ) {
    fail(`port must be an integer in 1..65535, got ${port}`, RangeError);
  }
  return target as { hostname: string; port: number };
}

/** `host:port`, with brackets around an IPv6 address. */
export function authority(hostname: string, port: number): string {
  const host = hostname.includes(":") && !hostname.startsWith("[")
    ? `[${hostname}]`
    : hostname;
  return `${host}:${port}`;
}

/**
 * Names the endpoint in a connect error: an I/O error (`ConnectionRefused`,
 * `NotFound`, ...) becomes the same class with the message "Cannot connect
 * to `where`: ..." and the original as `cause`; other errors (a `TypeError`
 * of validation, an abort reason) are returned as they are.
 *
 * @param error What the connect threw.
 * @param where The endpoint, printable ("127.0.0.1:80", "unix /run/x.sock").
 * @returns The error to throw.
 */
export function naming(error: unknown, where: string): unknown {
  if (!(error instanceof Error) || error.message.includes(where)) return error;
  const Kind = (errors as unknown as Record<string, typeof Error | undefined>)[
    error.name
  ];
  if (Kind === undefined || !(error instanceof Kind)) return error;
  return new Kind(`Cannot connect to ${where}: ${error.message}`, {
    cause: error,
  });
}
