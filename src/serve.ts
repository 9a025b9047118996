/**
 * The accept side: serve every flow a listener accepts with a handler, with
 * optional TLS (`tls: { cert, key }`, over the package's own engine, so over
 * any listener of flows), an optional per-flow upgrade and a graceful
 * shutdown.
 *
 * @example An echo server over TCP
 * ```ts
 * import { serve } from "@mimic/mimic/serve";
 * import assert from "node:assert/strict";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using _server = serve(listener, async (flow) => {
 *   const buf = new Uint8Array(1024);
 *   for (let n; (n = await flow.read(buf)) !== null;) {
 *     await flow.write(buf.subarray(0, n));
 *   }
 * });
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * await conn.write(new TextEncoder().encode("hi"));
 * await conn.closeWrite();
 * assert.equal(await new Response(conn.readable).text(), "hi");
 * ```
 *
 * @module
 */

import { type Flow, SourceFlow } from "./flow.ts";
import type { TlsServerOptions, TlsServerOptionsFunction } from "./tls.ts";
import { closeQuietly } from "./_util.ts";
import { TcpFlow, UnixFlow } from "./tcp.ts";

export type { Flow, TlsServerOptions, TlsServerOptionsFunction };

/**
 * A flow as a handler receives it: with the transport's addresses when it
 * has them (TCP and Unix listeners; a TLS flow passes its transport's
 * through, so a `serve({ tls })` handler sees the client's address).
 *
 * @example Log who connected
 * ```ts
 * import type { ServeHandler } from "@mimic/mimic/serve";
 *
 * const handler: ServeHandler = (flow) => {
 *   const peer = flow.remoteAddr as Deno.NetAddr | undefined;
 *   console.log("connection from", peer?.hostname, peer?.port);
 * };
 * ```
 */
export type ServedFlow = Flow & {
  /** This side's address, when the transport has one. */
  readonly localAddr?: Deno.Addr;
  /** The client's address, when the transport has one. */
  readonly remoteAddr?: Deno.Addr;
};

/** The default of {@linkcode ServeOptions.handshakeTimeout}, ms. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Handles one accepted (and upgraded) flow. The server closes the flow once
 * the returned promise settles. `signal` is aborted when the server shuts
 * down, so long-running handlers can stop early.
 *
 * @example A handler that greets until shutdown
 * ```ts
 * import type { ServeHandler } from "@mimic/mimic/serve";
 *
 * const greet: ServeHandler = async (flow, signal) => {
 *   const hello = new TextEncoder().encode("hello\n");
 *   while (!signal.aborted) {
 *     await flow.write(hello);
 *     await new Promise((resolve) => setTimeout(resolve, 1000));
 *   }
 * };
 * ```
 */
export type ServeHandler = (
  flow: ServedFlow,
  signal: AbortSignal,
) => void | Promise<void>;

/**
 * Options for {@linkcode serve}.
 *
 * @example Options with TLS, an upgrade and an error reporter
 * ```ts
 * import type { ServeOptions } from "@mimic/mimic/serve";
 * import { testPki } from "@mimic/mimic/testing";
 *
 * const controller = new AbortController();
 * const options: ServeOptions = {
 *   signal: controller.signal,
 *   tls: testPki.server,
 *   // Runs on the TLS flow, once the handshake is complete.
 *   upgrade: (flow) => Promise.resolve(flow),
 *   // A client that has not finished its TLS handshake in 5 s is dropped.
 *   handshakeTimeout: 5_000,
 *   onError: (error) => console.warn("connection failed:", error),
 *   closeOnShutdown: true,
 * };
 * ```
 */
export interface ServeOptions {
  /** Aborting it shuts the server down, as {@linkcode Server.shutdown}. */
  signal?: AbortSignal;
  /**
   * Accepts TLS on each flow (with {@linkcode acceptTls} from `./tls`)
   * before `upgrade` and the handler see it: the handler gets the TLS flow,
   * its handshake complete. The handshakes run concurrently, one per flow;
   * a failed one (a client that does not trust the certificate, speaks no
   * TLS, or goes away) closes the flow and is reported through `onError`
   * as a `TlsError`, and the server goes on. Shutting down aborts the
   * handshakes in progress (not reported); so does `tls.signal`.
   *
   * The TLS engine is loaded when the first flow is accepted, not before,
   * so malformed PEM (a `TypeError`) is reported per flow, like a failed
   * handshake. `cert` and `key` are checked to be strings at once.
   *
   * It composes with `upgrade`: TLS first, then `upgrade` on the TLS flow.
   * A listener that already speaks TLS (`Deno.listenTls`) needs neither.
   *
   * It may also be a function of the ClientHello that returns the options,
   * sync or async (certificates chosen by SNI, see `acceptTls`): its errors
   * are reported through `onError` like a failed handshake, and
   * `handshakeTimeout` bounds it too.
   */
  tls?: TlsServerOptions | TlsServerOptionsFunction;
  /**
   * With `tls`: how long a client has to finish its TLS handshake, in ms,
   * from the moment its flow is accepted (the ClientHello phase and the
   * `tls` function included). A client that has not finished by then is
   * dropped: its flow is closed, and `onError` receives a `TlsError` with
   * code "HandshakeTimeout". `Infinity` disables it. Idle or slow clients
   * thus cannot hold connections forever.
   *
   * @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * Upgrades each accepted flow before the handler sees it (after TLS, when
   * `tls` is given: it then receives the TLS flow). It runs concurrently
   * per flow, and receives a signal aborted at shutdown. If it rejects, the
   * raw flow is closed and the error reported through `onError`.
   */
  upgrade?: (flow: Flow, signal: AbortSignal) => Promise<Flow>;
  /**
   * Receives every error of a handler, an upgrade or the listener; it never
   * stops the server, except that an error of the listener's iterator ends
   * accepting. Default: `console.error` prefixed with `serve():` and what
   * failed.
   */
  onError?: (error: unknown) => void;
  /**
   * When `true`, shutting down also closes every flow still being handled
   * (so handlers blocked on an idle peer end promptly), and the errors these
   * handlers and upgrades then throw are not reported. Default: `false`,
   * shutdown waits for handlers to finish by themselves.
   *
   * @default {false}
   */
  closeOnShutdown?: boolean;
}

/**
 * A running server, as returned by {@linkcode serve}.
 *
 * @example Shut down, then wait
 * ```ts
 * import { listenPipe } from "@mimic/mimic/pipe";
 * import { serve } from "@mimic/mimic/serve";
 *
 * const server = serve(listenPipe(), (flow) => flow.closeWrite());
 * await server.shutdown(); // the listener is closed, handlers settled
 * await server.finished; // already resolved
 * ```
 */
export interface Server extends AsyncDisposable {
  /**
   * Resolves (never rejects) once the listener is closed and every handler
   * has settled.
   */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, closes the listener, aborts the handlers' signal and
   * waits for the handlers to settle (see
   * {@linkcode ServeOptions.closeOnShutdown}). Idempotent: resolves as
   * {@linkcode Server.finished}. A handler must not await it, or it waits
   * for itself.
   *
   * @returns {@linkcode Server.finished}.
   */
  shutdown(): Promise<void>;
}

/**
 * Serves every flow `listener` yields with `handler`, one call per flow, all
 * running concurrently. The server owns the listener and the flows:
 *
 * - a connection accepted from a `Deno.Listener` over TCP or a Unix socket
 *   is handed on as the package's flow (`TcpFlow` / `UnixFlow` from
 *   `./tcp`, keeping the Flow contract); other flows as they are;
 * - each flow gets a TLS handshake when `options.tls` is given, is then
 *   upgraded by `options.upgrade` (if any), then handed to `handler`; once
 *   the handler settles, the flow is closed (and so is the raw flow under
 *   an upgraded one; closing twice is harmless, errors of `close` are
 *   ignored);
 * - an error thrown by a handler, a TLS handshake or an upgrade is reported
 *   through `options.onError` and never stops the server; an error thrown by the
 *   listener's iterator (e.g. `accept` failing) is reported and ends
 *   accepting;
 * - shutting down (`shutdown()`, `await using`, or aborting `options.signal`)
 *   stops accepting and closes the listener: `close()` for a `Deno.Listener`
 *   or any iterable with a `close()` method, and `return()` on its iterator.
 *   Handlers are not killed; the server waits for them, and `finished`
 *   resolves once all settled. The listener is also closed when its iterator
 *   ends or fails;
 * - no promise it makes ever rejects unhandled.
 *
 * A flow accepted but not yet handed to a handler when shutdown starts is
 * closed. An `AsyncIterable` listener with a `close()` method must end a
 * pending `next()` when closed (as `Deno.Listener` and `PipeListener` do);
 * one without `close()` has its pending `next()` abandoned at shutdown (a
 * flow it yields afterwards is closed).
 *
 * @param listener A `Deno.Listener` (TCP, Unix, TLS), a `PipeListener`, or
 *   any async iterable of flows.
 * @param handler Handles one flow; see {@linkcode ServeHandler}.
 * @param options A shutdown signal, TLS, an upgrade, an error reporter.
 * @returns The running server.
 * @throws {TypeError} When `options.tls` is given without `cert` and `key`
 *   as strings.
 *
 * @example A Unix socket server with an upgrade, stopped by a signal
 * ```ts
 * import { serve } from "@mimic/mimic/serve";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/echo.sock`;
 * const controller = new AbortController();
 * const server = serve(
 *   Deno.listen({ transport: "unix", path }),
 *   async (flow) => {
 *     await flow.write(new TextEncoder().encode("hello"));
 *   },
 *   { signal: controller.signal },
 * );
 * const conn = await Deno.connect({ transport: "unix", path });
 * assert.equal(await new Response(conn.readable).text(), "hello");
 * controller.abort();
 * await server.finished;
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @example TLS on a TCP listener, for Deno's own TLS client
 * ```ts
 * import { serve } from "@mimic/mimic/serve";
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using _server = serve(listener, async (flow) => {
 *   await flow.write(new TextEncoder().encode("hello over TLS"));
 *   await flow.closeWrite(); // close_notify
 * }, {
 *   tls: testPki.server,
 * });
 * const conn = await Deno.connectTls({
 *   hostname: "localhost",
 *   port: listener.addr.port,
 *   caCerts: [testPki.ca],
 * });
 * assert.equal(await new Response(conn.readable).text(), "hello over TLS");
 * ```
 */
export function serve(
  listener: Deno.Listener | AsyncIterable<Flow>,
  handler: ServeHandler,
  options: ServeOptions = {},
): Server {
  const tls = options.tls;
  if (
    tls !== undefined && typeof tls !== "function" &&
    (typeof tls?.cert !== "string" || typeof tls?.key !== "string")
  ) {
    throw new TypeError(
      "Cannot serve with TLS: cert and key are required, as PEM strings",
    );
  }
  const timeout = options.handshakeTimeout;
  if (
    timeout !== undefined && (typeof timeout !== "number" || !(timeout > 0))
  ) {
    throw new TypeError(
      `Cannot serve: handshakeTimeout must be a positive number of milliseconds (or Infinity), not ${
        String(timeout)
      }`,
    );
  }
  return new FlowServer(listener, handler, options);
}

/** `./tls.ts`, imported on first use: the TLS engine is large. */
let tlsModule: Promise<typeof import("./tls.ts")> | undefined;

/**
 * Accepts TLS on `flow`, aborted by `signal` too, and failed with a
 * `TlsError` "HandshakeTimeout" once `timeoutMs` passed since `started`.
 */
async function acceptTlsLazily(
  flow: Flow,
  options: TlsServerOptions | TlsServerOptionsFunction,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<Flow> {
  const started = Date.now();
  tlsModule ??= import("./tls.ts").catch((error) => {
    tlsModule = undefined; // the next flow tries again
    throw error;
  });
  const { acceptTls, TlsError } = await tlsModule;
  signal.throwIfAborted();
  const timer = new AbortController();
  // Beyond setTimeout's range (~24.8 days) is no timeout.
  const id = timeoutMs <= 0x7fffffff
    ? setTimeout(() => {
      timer.abort(
        new TlsError(
          "HandshakeTimeout",
          `Cannot complete the TLS handshake: the client did not finish it within ${timeoutMs} ms`,
        ),
      );
    }, Math.max(0, timeoutMs - (Date.now() - started)))
    : undefined;
  try {
    return await acceptTls(flow, options, {
      signal: AbortSignal.any([signal, timer.signal]),
    });
  } finally {
    clearTimeout(id);
  }
}

const STOP: unique symbol = Symbol("stop");

/**
 * An accepted `Deno.TcpConn` or `Deno.UnixConn` as the package's flow (Flow
 * contract: `writable.close()` half-closes, cancelling `readable` keeps the
 * connection, typed errors); other flows as they are.
 */
function contractFlow(flow: Flow): Flow {
  if (flow instanceof SourceFlow || "handshake" in flow) return flow;
  const conn = flow as Partial<Deno.TcpConn>;
  if (typeof conn.ref !== "function") return flow;
  const addr = conn.localAddr as Deno.Addr | undefined;
  if (addr?.transport === "tcp" && typeof conn.setNoDelay === "function") {
    return new TcpFlow(conn as Deno.TcpConn);
  }
  if (addr?.transport === "unix") {
    return new UnixFlow(
      conn as unknown as Deno.UnixConn,
      addr.path ?? "(unnamed)",
    );
  }
  return flow;
}

class FlowServer implements Server {
  readonly finished: Promise<void>;
  readonly #listener: AsyncIterable<Flow>;
  readonly #handler: ServeHandler;
  readonly #tls: TlsServerOptions | TlsServerOptionsFunction | undefined;
  readonly #handshakeTimeout: number;
  readonly #upgrade: ServeOptions["upgrade"];
  readonly #onError: ServeOptions["onError"];
  readonly #closeOnShutdown: boolean;
  readonly #controller = new AbortController();
  #wake: ((stop: typeof STOP) => void) | undefined;
  #iterator: AsyncIterator<Flow> | undefined;
  #listenerClosed = false;
  readonly #tasks = new Set<Promise<void>>();
  readonly #flows = new Set<Flow>();

  constructor(
    listener: AsyncIterable<Flow>,
    handler: ServeHandler,
    options: ServeOptions,
  ) {
    this.#listener = listener;
    this.#handler = handler;
    this.#tls = options.tls === undefined || typeof options.tls === "function"
      ? options.tls
      : { ...options.tls };
    this.#handshakeTimeout = options.handshakeTimeout ?? HANDSHAKE_TIMEOUT_MS;
    this.#upgrade = options.upgrade;
    this.#onError = options.onError;
    this.#closeOnShutdown = options.closeOnShutdown ?? false;
    const signal = options.signal;
    const onAbort = (): void => this.#stop();
    if (signal?.aborted) this.#stop();
    else signal?.addEventListener("abort", onAbort, { once: true });
    this.finished = this.#run().then(() => {
      signal?.removeEventListener("abort", onAbort);
    });
  }

  shutdown(): Promise<void> {
    this.#stop();
    return this.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  #stop(): void {
    if (this.#controller.signal.aborted) return;
    this.#controller.abort(
      new DOMException("The server is shutting down", "AbortError"),
    );
    this.#wake?.(STOP);
    this.#closeListener();
    if (this.#closeOnShutdown) {
      for (const flow of this.#flows) closeQuietly(flow);
    }
  }

  async #run(): Promise<void> {
    try {
      if (!this.#controller.signal.aborted) {
        this.#iterator = this.#listener[Symbol.asyncIterator]();
      }
      while (this.#iterator && !this.#controller.signal.aborted) {
        const next = this.#iterator.next();
        // A fresh promise per accept, so no reaction piles up on a shared one.
        const stopped = new Promise<typeof STOP>((resolve) => {
          this.#wake = resolve;
        });
        const result = await Promise.race([next, stopped]);
        this.#wake = undefined;
        if (result === STOP) {
          await this.#abandon(next);
          break;
        }
        if (result.done) break;
        this.#spawn(result.value);
      }
    } catch (error) {
      if (!this.#controller.signal.aborted) {
        this.#report("accepting failed", error);
      }
    }
    this.#closeListener();
    await Promise.allSettled(this.#tasks);
  }

  /** Settles a `next()` pending at shutdown; closes a flow it yields. */
  async #abandon(next: Promise<IteratorResult<Flow>>): Promise<void> {
    const settled = next.then(
      (result) => {
        if (!result.done) closeQuietly(result.value);
      },
      () => {},
    );
    // A listener we could close ends its pending accept: wait for it, so no
    // operation is left pending. Otherwise, let it go.
    if (typeof (this.#listener as { close?: unknown }).close === "function") {
      await settled;
    }
  }

  #closeListener(): void {
    if (this.#listenerClosed) return;
    this.#listenerClosed = true;
    const iterator = this.#iterator;
    if (iterator?.return) {
      try {
        iterator.return().catch(() => {});
      } catch {
        // A synchronous throw of return() is as good as done.
      }
    }
    const listener = this.#listener as { close?: () => void };
    if (typeof listener.close === "function") {
      try {
        listener.close();
      } catch (error) {
        if (!(error instanceof Deno.errors.BadResource)) {
          this.#report("closing the listener failed", error);
        }
      }
    }
  }

  #spawn(accepted: Flow): void {
    const task = this.#handle(contractFlow(accepted));
    this.#tasks.add(task);
    task.then(() => this.#tasks.delete(task));
  }

  async #handle(raw: Flow): Promise<void> {
    const signal = this.#controller.signal;
    // The raw flow, then the TLS flow over it, then the upgraded one.
    const layers = [raw];
    const wrap = (flow: Flow): void => {
      if (flow === layers[layers.length - 1]) return;
      layers.push(flow);
      this.#flows.add(flow);
    };
    this.#flows.add(raw);
    try {
      if (this.#closeOnShutdown && signal.aborted) return;
      if (this.#tls) {
        try {
          wrap(
            await acceptTlsLazily(
              raw,
              this.#tls,
              signal,
              this.#handshakeTimeout,
            ),
          );
        } catch (error) {
          // A handshake aborted by shutdown is no failure to report.
          const stopped = signal.aborted && error === signal.reason;
          if (!stopped && !this.#forced()) {
            this.#report("a TLS handshake failed", error);
          }
          return;
        }
        if (this.#closeOnShutdown && signal.aborted) return;
      }
      if (this.#upgrade) {
        try {
          wrap(await this.#upgrade(layers[layers.length - 1], signal));
        } catch (error) {
          if (!this.#forced()) this.#report("an upgrade failed", error);
          return;
        }
        if (this.#closeOnShutdown && signal.aborted) return;
      }
      await this.#handler(layers[layers.length - 1], signal);
    } catch (error) {
      if (!this.#forced()) this.#report("a handler failed", error);
    } finally {
      // Outermost first: a TLS flow sends close_notify before its transport goes.
      for (let i = layers.length - 1; i >= 0; i--) {
        closeQuietly(layers[i]);
        this.#flows.delete(layers[i]);
      }
    }
  }

  /** Whether flows were closed by shutdown, making their errors expected. */
  #forced(): boolean {
    return this.#closeOnShutdown && this.#controller.signal.aborted;
  }

  #report(what: string, error: unknown): void {
    try {
      if (this.#onError) this.#onError(error);
      else console.error(`serve(): ${what}:`, error);
    } catch (thrown) {
      console.error("serve(): onError threw:", thrown, "reporting:", error);
    }
  }
}
