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
