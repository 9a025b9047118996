/**
 * The server's ClientHello phase, for {@linkcode acceptTls} given a function
 * of the ClientHello (certificates chosen by SNI): reads the ClientHello from
 * the flow into the engine's acceptor, asks the user's function for the
 * options, and turns the acceptor into a server session that carries over
 * every byte read. Not an entry point.
 *
 * @module
 */

import type { Flow } from "./flow.ts";
import {
  type ClientHelloInfo,
  type EngineServerOptions,
  type HelloAcceptor,
  helloAcceptor,
  type Session,
  TlsError,
} from "./_engine.ts";

/** Chooses the server's options from the ClientHello, sync or async. */
export type ServerOptionsChooser<T> = (
  hello: ClientHelloInfo,
) => T | Promise<T>;

/** What {@linkcode acceptHello} hands back. */
export interface Accepted {
  /** The server session, the ClientHello already processed. */
  session: Session;
  /** The `signal` of the options the function returned, if any. */
  signal: AbortSignal | undefined;
}

/** Bytes read from the flow at a time before the ClientHello is complete. */
const READ_SIZE = 16 * 1024;
/** How long a failing ClientHello phase waits for its alert to be written. */
const ALERT_TIMEOUT_MS = 1000;
/** A fatal handshake_failure alert record, in the clear (nothing is agreed yet). */
const HANDSHAKE_FAILURE = new Uint8Array([21, 3, 3, 0, 2, 2, 40]);

/** Resolves or rejects as `p`, or rejects with the signal's reason first. */
function race<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((ok, ko) => {
    const abort = (): void => ko(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    p.then(ok, ko).finally(() => signal.removeEventListener("abort", abort));
  });
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Writes `alert` to `flow`, best effort, waiting a little at most. */
async function sendAlert(flow: Flow, alert: Uint8Array | null): Promise<void> {
  if (alert === null || alert.length === 0) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const sent = (async () => {
      for (let off = 0; off < alert.length;) {
        const n = await flow.write(alert.subarray(off));
        if (!(n > 0)) return;
        off += n;
      }
    })();
    sent.catch(() => {});
    await Promise.race([
      sent,
      new Promise<void>((ok) => timer = setTimeout(ok, ALERT_TIMEOUT_MS)),
    ]);
  } catch {
    // Best effort: the failure itself is what the caller reports.
  } finally {
    clearTimeout(timer);
  }
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object without cert and key" : typeof v;
}

/** Reads the ClientHello; rejects as the handshake would. */
async function readHello(
  flow: Flow,
  acceptor: HelloAcceptor,
  signal: AbortSignal | undefined,
): Promise<[ClientHelloInfo, Uint8Array]> {
  const buf = new Uint8Array(READ_SIZE);
  for (;;) {
    let n: number | null;
    try {
      n = await race(flow.read(buf), signal);
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      throw new TlsError(
        "UnexpectedEof",
        `Cannot complete the TLS handshake: the transport failed: ${
          message(error)
        }`,
        { cause: error },
      );
    }
    if (n === null) {
      throw new TlsError(
        "UnexpectedEof",
        "Cannot complete the TLS handshake: the peer closed the connection before its ClientHello was complete",
      );
    }
    const chunk = buf.subarray(0, n);
    let fed: number;
    try {
      fed = acceptor.feed(chunk);
    } catch (error) {
      await sendAlert(flow, acceptor.takeOutgoing());
      throw error;
    }
    const hello = acceptor.hello();
    if (hello !== null) return [hello, chunk.slice(fed)];
  }
}

/**
 * Runs the ClientHello phase on `flow`: reads the ClientHello, calls
 * `choose` with it (raced with `signal`), validates what it returns and
 * accepts with it. On failure the acceptor is freed, an alert is sent (best
 * effort: handshake_failure when `choose` throws or returns no options, the
 * engine's alert for a TLS error; none when aborted), and the error thrown:
 * `choose`'s own error, a `TypeError` for what it returned, a
 * {@linkcode TlsError}, or the signal's reason. The flow is left open.
 *
 * @param flow The transport.
 * @param choose The user's function of the ClientHello.
 * @param signal Aborts the phase.
 * @returns The server session and the chosen options' signal.
 */
export async function acceptHello(
  flow: Flow,
  choose: ServerOptionsChooser<
    EngineServerOptions & { signal?: AbortSignal }
  >,
  signal: AbortSignal | undefined,
): Promise<Accepted> {
  signal?.throwIfAborted();
  const acceptor = await helloAcceptor();
  try {
    const [hello, rest] = await readHello(flow, acceptor, signal);
    let chosen: unknown;
    try {
      chosen = await race(Promise.resolve().then(() => choose(hello)), signal);
    } catch (error) {
      if (!(signal?.aborted && error === signal.reason)) {
        await sendAlert(flow, HANDSHAKE_FAILURE);
      }
      throw error;
    }
    const o = chosen as EngineServerOptions & { signal?: unknown };
    if (
      o === null || typeof o !== "object" || typeof o.cert !== "string" ||
      typeof o.key !== "string"
    ) {
      await sendAlert(flow, HANDSHAKE_FAILURE);
      throw new TypeError(
        `Cannot accept TLS: the ClientHello function must return server options with cert and key as PEM strings, not ${
          describe(chosen)
        }`,
      );
    }
    const chosenSignal = o.signal;
    if (
      chosenSignal !== undefined && !(chosenSignal instanceof AbortSignal)
    ) {
      await sendAlert(flow, HANDSHAKE_FAILURE);
      throw new TypeError(
        "Cannot accept TLS: the signal of the options returned by the ClientHello function must be an AbortSignal",
      );
    }
    const { signal: _, ...engineOptions } = o;
    let session: Session;
    try {
      session = acceptor.accept(engineOptions);
    } catch (error) {
      await sendAlert(
        flow,
        error instanceof TlsError ? acceptor.takeOutgoing() : HANDSHAKE_FAILURE,
      );
      throw error;
    }
    try {
      for (let off = 0; off < rest.length;) {
        const n = session.feed(rest.subarray(off));
        if (n === 0) {
          throw new TlsError(
            "EngineFailure",
            "Cannot complete the TLS handshake: the engine accepts no bytes",
          );
        }
        off += n;
      }
    } catch (error) {
      try {
        await sendAlert(flow, session.takeOutgoing());
      } finally {
        session.free();
      }
      throw error;
    }
    return { session, signal: chosenSignal };
  } finally {
    acceptor.free();
  }
}
