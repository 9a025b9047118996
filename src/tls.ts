/**
 * TLS over any {@linkcode Flow}: a TCP or Unix connection, an in-memory pipe,
 * a WebSocket, a subprocess, or another TLS flow (TLS inside TLS).
 *
 * The TLS engine is rustls compiled to WebAssembly and driven sans-IO: it
 * knows bytes, not sockets. This module is the pump that moves bytes between
 * the engine and a flow: {@linkcode startTls} (client) and
 * {@linkcode acceptTls} (server) run the handshake and hand back a
 * {@linkcode TlsFlow}; the {@linkcode tls} protocol makes TLS over whatever an
 * inner context resolves to one `resolve()` away.
 *
 * Semantics, as a `Deno.TlsConn` but *improved* where noted:
 *
 * - `startTls`/`acceptTls` resolve only once the handshake is complete and,
 *   for the client, the server's certificate is verified (*improved*: Deno's
 *   handshake errors surface at the first read or write). A failed handshake
 *   rejects with a {@linkcode TlsError} after a best-effort attempt to send
 *   the engine's alert to the peer; an aborted `signal` rejects with the
 *   signal's reason. Either way the flow given is **not** closed (the caller
 *   owns it) but is unusable: close it. The {@linkcode tls} protocol does.
 * - `read(p)` resolves to `null` only after the peer's close_notify; a peer
 *   that ends the transport without one makes the read reject with
 *   `TlsError` code `"UnexpectedEof"` (truncation is not end of flow).
 * - `write(p)` resolves to `p.length` once every byte of `p` is encrypted and
 *   accepted by the underlying flow's `write`; concurrent writes go out in
 *   call order.
 * - Nothing is read from the underlying flow while nobody reads the TLS flow,
 *   so a slow reader pushes back on the peer.
 *
 * @example TLS over an in-memory pipe
 * ```ts
 * import { acceptTls, startTls } from "@mimic/mimic/tls";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * const ca = await pem("ca.pem");
 * const cert = await pem("localhost.pem");
 * const key = await pem("localhost.key");
 * const [a, b] = pipe();
 * const [client, server] = await Promise.all([
 *   startTls(a, { hostname: "localhost", caCerts: [ca] }),
 *   acceptTls(b, { cert, key }),
 * ]);
 * await client.write(new TextEncoder().encode("ping"));
 * await client.closeWrite();
 * assert.equal(await new Response(server.readable).text(), "ping");
 * client.close();
 * server.close();
 * ```
 *
 * @module
 */

import {
  type Arg,
  type ArgTypes,
  type Context,
  type Flow,
  type Protocol,
  register,
  resolve,
  type Value,
} from "../mod.ts";
import {
  type ClientHelloInfo,
  clientSession,
  type HandshakeInfo,
  serverSession,
  type Session,
  TlsError,
} from "./_engine.ts";
import { acceptHello } from "./_accept.ts";
import { type PeerCertificate, peerCertificate } from "./_x509.ts";
import { readableFromFlow, writableFromFlow } from "./_streams.ts";

export { TlsError } from "./_engine.ts";
export type { ClientHelloInfo, TlsErrorCode } from "./_engine.ts";
export type { PeerCertificate } from "./_x509.ts";
export type { Arg, ArgTypes, Context, Flow, Protocol, Value };

/** Options of {@linkcode startTls}: the client side of TLS. */
export interface TlsClientOptions {
  /**
   * The server's name: sent as SNI, and the name its certificate must be
   * valid for. An IP address (`"127.0.0.1"`, `"::1"`) is verified as an IP
   * address SAN and sends no SNI. Required, unless
   * `unsafelyIgnoreCertificateErrors` is set.
   */
  hostname?: string;
  /** Trusted CA certificates, PEM. Default: the built-in Mozilla root store. */
  caCerts?: string[];
  /** ALPN protocols to offer, most preferred first. */
  alpnProtocols?: string[];
  /** A client certificate chain (mTLS), PEM; requires `key`. */
  cert?: string;
  /** The client certificate's private key, PEM; requires `cert`. */
  key?: string;
  /**
   * Skips verification of the server's certificate: the only way to turn it
   * off. Never use it outside tests.
   */
  unsafelyIgnoreCertificateErrors?: boolean;
  /** Aborts the handshake: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of {@linkcode acceptTls}: the server side of TLS. */
export interface TlsServerOptions {
  /** The certificate chain, PEM, leaf first. */
  cert: string;
  /** The private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC). */
  key: string;
  /**
   * ALPN protocols to accept, most preferred first. A client that offers
   * ALPN protocols but none of these fails the handshake.
   */
  alpnProtocols?: string[];
  /**
   * When given, the client must present a certificate signed by one of these
   * CA certificates (PEM).
   */
  clientCaCerts?: string[];
  /**
   * With `clientCaCerts`: `"required"` (the default) refuses a client
   * without a certificate (`TlsError` code "NoCertificatesPresented" on the
   * server); `"optional"` accepts one without, but a certificate it does
   * present must still verify. Without `clientCaCerts`, a `TypeError`.
   */
  clientAuth?: "required" | "optional";
  /** Aborts the handshake: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Chooses the server's options from the ClientHello, sync or async: one
 * server, several names (certificates by SNI), or ALPN-dependent options.
 * Given to {@linkcode acceptTls} or as `serve`'s `tls`.
 *
 * @example Certificates by name, with a default
 * ```ts
 * import type { TlsServerOptionsFunction } from "@mimic/mimic/tls";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * const fallback = {
 *   cert: await pem("localhost.pem"),
 *   key: await pem("localhost.key"),
 * };
 * const byName = new Map([["wrong.example", {
 *   cert: await pem("wrongname.pem"),
 *   key: await pem("wrongname.key"),
 * }]]);
 * const choose: TlsServerOptionsFunction = (hello) =>
 *   byName.get(hello.serverName ?? "") ?? fallback;
 * ```
 */
export type TlsServerOptionsFunction = (
  hello: ClientHelloInfo,
) => TlsServerOptions | Promise<TlsServerOptions>;

/** The third argument of {@linkcode acceptTls}. */
export interface AcceptTlsOptions {
  /**
   * Aborts the handshake, the ClientHello phase included (with either form
   * of the options; with an options object, as well as its own `signal`).
   */
  signal?: AbortSignal;
}

/** What a completed handshake agreed on: the shape of `Deno.TlsHandshakeInfo` and more. */
export interface TlsHandshakeInfo {
  /** The ALPN protocol agreed, or `null` without ALPN. */
  alpnProtocol: string | null;
  /** The TLS version. */
  protocol: "TLSv1.2" | "TLSv1.3";
  /** The IANA name of the cipher suite, e.g. `"TLS_AES_128_GCM_SHA256"`. */
  cipherSuite: string;
  /** The SNI name: the one the client sent, as seen by the server; the one asked for by the client. */
  serverName: string | null;
  /** The peer's certificates, DER, leaf first; empty when it sent none. */
  peerCertificates: Uint8Array[];
  /**
   * The peer's leaf certificate, parsed (subject, issuer, SANs, validity,
   * serial, SHA-256 fingerprint); `null` when it sent none (or when it
   * cannot be parsed, which a verified certificate always can).
   */
  peerCertificate: PeerCertificate | null;
}

/**
 * A TLS connection over a {@linkcode Flow}, made by {@linkcode startTls},
 * {@linkcode acceptTls} or the {@linkcode tls} protocol.
 *
 * - `read(p)` decrypts straight into `p`; `null` after the peer's
 *   close_notify; rejects with `TlsError` `"UnexpectedEof"` when the
 *   transport ends without one, and with the engine's `TlsError` for a bad
 *   record or an alert from the peer (`"AlertReceived"`, with `alert`).
 * - `write(p)` resolves to `p.length` once `p` is encrypted and accepted by
 *   the underlying flow; concurrent writes go out in call order.
 * - `closeWrite()` sends close_notify, then half-closes the underlying flow.
 * - `close()` is idempotent: it sends close_notify when it can without
 *   waiting (best effort), then closes the underlying flow. Afterwards
 *   `read` and `write` reject with `Deno.errors.BadResource`, and so do
 *   those pending.
 * - `readable`/`writable` are made on first use: closing `writable` is
 *   `closeWrite()`, aborting it is `close()`; cancelling `readable` makes
 *   further reads end (`null`) but leaves the write side open.
 *
 * @example Read to the end over TLS, from Deno's own TLS server
 * ```ts
 * import { startTls, type TlsFlow } from "@mimic/mimic/tls";
 * import assert from "node:assert/strict";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * using listener = Deno.listenTls({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   cert: await pem("localhost.pem"),
 *   key: await pem("localhost.key"),
 * });
 * const served = listener.accept().then(async (conn) => {
 *   await conn.write(new TextEncoder().encode("hello"));
 *   await conn.closeWrite(); // close_notify
 *   conn.close();
 * });
 *
 * const conn = await Deno.connect({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 * });
 * await using flow: TlsFlow = await startTls(conn, {
 *   hostname: "localhost",
 *   caCerts: [await pem("ca.pem")],
 * });
 * assert.equal((await flow.handshake()).protocol, "TLSv1.3");
 * assert.equal(await new Response(flow.readable).text(), "hello");
 * await served;
 * ```
 */
export interface TlsFlow extends Flow, AsyncDisposable {
  /**
   * What the handshake agreed on, as `Deno.TlsConn.handshake()`. Already
   * settled when {@linkcode startTls} or {@linkcode acceptTls} resolves.
   *
   * @returns The handshake's information.
   */
  handshake(): Promise<TlsHandshakeInfo>;
}

/** Bytes read from the underlying flow at a time, at first. */
const READ_BUFFER_SIZE = 64 * 1024;
/**
 * The read buffer grows (x4) up to this size while reads fill it (bulk
 * transfers: fewer reads and engine calls, ~+10% throughput); idle and
 * small-message connections keep 64 KiB.
 */
const MAX_READ_BUFFER_SIZE = 256 * 1024;
/** How long a failing handshake waits for its alert to be written. */
const ALERT_TIMEOUT_MS = 1000;

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function closedError(op: "read from" | "write to"): Error {
  return new Deno.errors.BadResource(`Cannot ${op} TLS flow: it is closed`);
}

/** Resolves or rejects as `p`, or rejects with the signal's reason first. */
function race<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((ok, ko) => {
    const abort = () => ko(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    p.then(ok, ko).finally(() => signal.removeEventListener("abort", abort));
  });
}

/** Writes all of `data` to `flow`, looping over short writes. */
async function writeAll(flow: Flow, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const n = await flow.write(offset === 0 ? data : data.subarray(offset));
    if (!(n > 0)) {
      throw new Deno.errors.WriteZero(
        "Cannot write to TLS flow: the underlying flow accepted zero bytes",
      );
    }
    offset += n;
  }
}

function toInfo(info: HandshakeInfo): TlsHandshakeInfo {
  return {
    alpnProtocol: info.alpnProtocol,
    protocol: info.protocol,
    cipherSuite: info.cipherSuite,
    serverName: info.serverName,
    peerCertificates: info.peerCertificates,
    peerCertificate: peerCertificate(info.peerCertificates[0]),
  };
}

/** The TLS flow: a {@linkcode Session} pumped over an inner {@linkcode Flow}. */
class TlsConn implements TlsFlow {
  readonly #inner: Flow;
  readonly #session: Session;
  /** The reusable buffer the underlying flow is read into. */
  #buf = new Uint8Array(READ_BUFFER_SIZE);
  /** Bytes read from the underlying flow and not yet fed to the engine. */
  #pending: Uint8Array = new Uint8Array(0);
  #info: Promise<TlsHandshakeInfo> | undefined;
  /** Reads, one at a time. */
  #reading: Promise<unknown> = Promise.resolve();
  /** Writes and closeWrite, one at a time. */
  #writing: Promise<unknown> = Promise.resolve();
  /** TLS bytes to the underlying flow, in the order the engine made them. */
  #sending: Promise<unknown> = Promise.resolve();
  #sendsInFlight = 0;
  #sendError: { error: unknown } | undefined;
  /** A read error that every later read repeats. */
  #readError: { error: unknown } | undefined;
  /** The peer's close_notify was read. */
  #eof = false;
  /** The underlying flow reached its end (and the engine was told). */
  #transportEnded = false;
  #readCancelled = false;
  #writeClosed = false;
  /** close_notify was queued. */
  #notified = false;
  #closeWrite: Promise<void> | undefined;
  #closed = false;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  constructor(inner: Flow, session: Session) {
    this.#inner = inner;
    this.#session = session;
  }

  /** Makes the flow and runs its handshake; see {@linkcode TlsConn.#handshake}. */
  static async open(
    flow: Flow,
    session: Session,
    signal: AbortSignal | undefined,
  ): Promise<TlsFlow> {
    if (signal?.aborted) {
      session.free();
      throw signal.reason;
    }
    const conn = new TlsConn(flow, session);
    await conn.#handshake(signal);
    return conn;
  }

  /**
   * Runs the handshake to completion. On failure, sends the engine's alert
   * (best effort), frees the session and rethrows; the inner flow is left
   * open.
   */
  async #handshake(signal: AbortSignal | undefined): Promise<void> {
    const session = this.#session;
    try {
      for (;;) {
        await race(this.#flush(), signal);
        if (!session.isHandshaking) break;
        if (this.#pending.length === 0) {
          let n: number | null;
          try {
            n = await race(this.#inner.read(this.#buf), signal);
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
              "Cannot complete the TLS handshake: the peer closed the connection",
            );
          }
          this.#pending = this.#buf.subarray(0, n);
          continue;
        }
        const fed = session.feed(this.#pending);
        this.#pending = this.#pending.subarray(fed);
        if (fed === 0 && session.isHandshaking) {
          throw new TlsError(
            "EngineFailure",
            "Cannot complete the TLS handshake: the engine accepts no bytes",
          );
        }
      }
      await race(this.#flush(), signal);
      this.#info = Promise.resolve(toInfo(session.handshakeInfo()));
    } catch (error) {
      if (error instanceof TlsError) await this.#sendAlert();
      this.#closed = true;
      session.free();
      if (
        error instanceof TlsError ||
        (signal?.aborted && error === signal.reason)
      ) {
        throw error;
      }
      throw new TlsError(
        "UnexpectedEof",
        `Cannot complete the TLS handshake: the transport failed: ${
          message(error)
        }`,
        { cause: error },
      );
    }
  }

  /** Sends what the engine has to send (an alert), waiting a little at most. */
  async #sendAlert(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const sent = this.#flush();
      const timeout = new Promise<void>((ok) => {
        timer = setTimeout(ok, ALERT_TIMEOUT_MS);
      });
      await Promise.race([sent, timeout]);
    } catch {
      // Best effort: the handshake's error is what matters.
    } finally {
      clearTimeout(timer);
    }
  }

  /** Queues `data` to the underlying flow after every byte queued before. */
  #send(data: Uint8Array): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.#sendError !== undefined) throw this.#sendError.error;
      await writeAll(this.#inner, data);
    };
    const task = this.#sendsInFlight === 0 ? run() : this.#sending.then(run);
    this.#sendsInFlight++;
    this.#sending = task.then(
      () => {
        this.#sendsInFlight--;
      },
      (error) => {
        this.#sendsInFlight--;
        this.#sendError ??= { error };
      },
    );
    return task;
  }

  /** Sends everything the engine has to send; resolves once it is written. */
  #flush(): Promise<void> {
    let last: Promise<void> | undefined;
    for (;;) {
      const out = this.#session.takeOutgoing();
      if (out === null) break;
      last = this.#send(out);
    }
    return last ?? Promise.resolve();
  }

  /** Flushes without waiting; a failure is kept for the next write. */
  #flushLater(): void {
    try {
      this.#flush().catch(() => {});
    } catch {
      // The session failed: the caller reports its own error.
    }
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(closedError("read from"));
    const task = this.#reading.then(() => this.#read(p));
    this.#reading = task.catch(() => {});
    return task;
  }

  async #read(p: Uint8Array): Promise<number | null> {
    const session = this.#session;
    for (;;) {
      if (this.#closed) throw closedError("read from");
      if (this.#readError !== undefined) throw this.#readError.error;
      if (this.#eof || this.#readCancelled) return null;
      if (p.length === 0) return 0;
      let n: number | null;
      try {
        n = session.read(p);
      } catch (error) {
        this.#failRead(error);
      }
      if (n === null) {
        this.#eof = true;
        return null;
      }
      if (n > 0) return n;
      if (this.#transportEnded) {
        this.#failRead(
          new TlsError(
            "UnexpectedEof",
            "Cannot read from TLS flow: the peer closed the connection without sending close_notify",
          ),
        );
      }
      if (this.#pending.length > 0) {
        let fed: number;
        try {
          fed = session.feed(this.#pending);
        } catch (error) {
          this.#flushLater(); // the alert, if any
          this.#failRead(error);
        }
        this.#pending = this.#pending.subarray(fed);
        this.#flushLater(); // key update replies, after feeding
        if (fed === 0) {
          // The engine holds plaintext it will give now, or is stuck.
          const m = session.read(p);
          if (m === null) {
            this.#eof = true;
            return null;
          }
          if (m > 0) return m;
          this.#failRead(
            new TlsError(
              "EngineFailure",
              "Cannot read from TLS flow: the engine accepts no bytes and has none to give",
            ),
          );
        }
        continue;
      }
      let got: number | null;
      try {
        got = await this.#inner.read(this.#buf);
      } catch (error) {
        if (this.#closed) throw closedError("read from");
        this.#failRead(error);
      }
      if (this.#closed) throw closedError("read from");
      if (got === null) {
        // The next session.read() says how it ended: null after close_notify,
        // else TlsError "UnexpectedEof" (truncation is not end of flow).
        try {
          session.feedEof();
        } catch (error) {
          this.#failRead(error);
        }
        this.#transportEnded = true;
        continue;
      }
      this.#pending = this.#buf.subarray(0, got);
      if (got === this.#buf.length && got < MAX_READ_BUFFER_SIZE) {
        // A full read: bulk data. #pending keeps the old buffer alive.
        this.#buf = new Uint8Array(got * 4);
      }
    }
  }

  #failRead(error: unknown): never {
    this.#readError = { error };
    throw error;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(closedError("write to"));
    if (this.#writeClosed) {
      return Promise.reject(
        new Deno.errors.BadResource(
          "Cannot write to TLS flow: it is closed for writing",
        ),
      );
    }
    if (p.length === 0) return Promise.resolve(0);
    const task = this.#writing.then(() => this.#write(p));
    this.#writing = task.catch(() => {});
    return task;
  }

  async #write(p: Uint8Array): Promise<number> {
    const session = this.#session;
    let offset = 0;
    // One batch of records is written while the next one is encrypted.
    let inflight: Promise<void> | undefined;
    try {
      while (offset < p.length) {
        if (this.#closed) throw closedError("write to");
        if (this.#sendError !== undefined) throw this.#sendError.error;
        const n = session.write(offset === 0 ? p : p.subarray(offset));
        offset += n;
        const out = session.takeOutgoing();
        if (out === null) {
          if (n === 0) {
            throw new TlsError(
              "EngineFailure",
              "Cannot write to TLS flow: the engine accepts no bytes",
            );
          }
          continue;
        }
        const sent = this.#send(out);
        sent.catch(() => {}); // awaited below, or superseded by an error
        if (inflight !== undefined) await inflight;
        inflight = sent;
      }
      if (inflight !== undefined) await inflight;
    } catch (error) {
      if (this.#closed) throw closedError("write to");
      throw error;
    }
    return p.length;
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#closeWrite !== undefined) return this.#closeWrite;
    this.#writeClosed = true;
    const task = this.#writing.then(async () => {
      if (this.#closed) return;
      this.#notified = true;
      this.#session.closeNotify();
      await this.#flush();
      if (this.#closed) return;
      await this.#inner.closeWrite();
    });
    this.#writing = task.catch(() => {});
    this.#closeWrite = task;
    return task;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (
      !this.#notified && this.#sendsInFlight === 0 &&
      this.#sendError === undefined && this.#readError === undefined
    ) {
      // Best effort, without waiting: a write dispatched before close goes out
      // on the flows of this package and on Deno's sockets.
      this.#notified = true;
      try {
        this.#session.closeNotify();
        const out = this.#session.takeOutgoing();
        if (out !== null) this.#inner.write(out).catch(() => {});
      } catch {
        // The session failed: nothing to say to the peer.
      }
    }
    this.#writeClosed = true;
    this.#session.free();
    this.#pending = new Uint8Array(0);
    try {
      this.#inner.close();
    } catch {
      // Already closed by its owner.
    }
  }

  handshake(): Promise<TlsHandshakeInfo> {
    return this.#info!;
  }

  /** The inner flow's local address, when it has one. */
  get localAddr(): Deno.Addr | undefined {
    return (this.#inner as { localAddr?: Deno.Addr }).localAddr;
  }

  /** The inner flow's remote address, when it has one. */
  get remoteAddr(): Deno.Addr | undefined {
    return (this.#inner as { remoteAddr?: Deno.Addr }).remoteAddr;
  }

  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFromFlow(
      (p) => this.read(p),
      () => {
        this.#readCancelled = true;
      },
    );
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Starts TLS as the client over `flow`: runs the handshake, verifies the
 * server's certificate for `hostname`, and resolves to the
 * {@linkcode TlsFlow} once both are done.
 *
 * On failure (a {@linkcode TlsError}, or the signal's reason when aborted)
 * `flow` is not closed: the caller owns it, and should close it.
 *
 * @example TLS over a TCP connection, with ALPN and a timeout
 * ```ts
 * import { startTls } from "@mimic/mimic/tls";
 * import assert from "node:assert/strict";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * using listener = Deno.listenTls({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   cert: await pem("localhost.pem"),
 *   key: await pem("localhost.key"),
 *   alpnProtocols: ["http/1.1"],
 * });
 * const served = listener.accept().then(async (conn) => {
 *   await conn.handshake();
 *   conn.close();
 * });
 *
 * const conn = await Deno.connect({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 * });
 * try {
 *   await using flow = await startTls(conn, {
 *     hostname: "localhost",
 *     caCerts: [await pem("ca.pem")],
 *     alpnProtocols: ["h2", "http/1.1"],
 *     signal: AbortSignal.timeout(5000),
 *   });
 *   assert.equal((await flow.handshake()).alpnProtocol, "http/1.1");
 * } catch (error) {
 *   conn.close(); // a failed handshake leaves the flow to its owner
 *   throw error;
 * }
 * await served;
 * ```
 *
 * @param flow The transport: any flow.
 * @param options The server's name, trust, ALPN, a client certificate, a signal.
 * @returns The TLS flow, its handshake complete.
 * @throws {TypeError} Before any I/O, for a missing `hostname` or malformed PEM.
 * @throws {TlsError} When the handshake fails.
 */
export async function startTls(
  flow: Flow,
  options: TlsClientOptions = {},
): Promise<TlsFlow> {
  const { signal, ...engineOptions } = options;
  if (
    options.hostname === undefined && !options.unsafelyIgnoreCertificateErrors
  ) {
    throw new TypeError(
      "Cannot start TLS: hostname is required to verify the server's certificate",
    );
  }
  signal?.throwIfAborted();
  return await TlsConn.open(flow, await clientSession(engineOptions), signal);
}

/**
 * Accepts TLS as the server over `flow`: runs the handshake (verifying the
 * client's certificate when `clientCaCerts` is given) and resolves to the
 * {@linkcode TlsFlow} once it is complete.
 *
 * On failure (a {@linkcode TlsError}, or the signal's reason when aborted)
 * `flow` is not closed: the caller owns it, and should close it.
 *
 * @example Accept TLS on a TCP listener, for Deno's own TLS client
 * ```ts
 * import { acceptTls } from "@mimic/mimic/tls";
 * import assert from "node:assert/strict";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * const cert = await pem("localhost.pem");
 * const key = await pem("localhost.key");
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = Deno.connectTls({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   caCerts: [await pem("ca.pem")],
 * }).then(async (conn) => {
 *   const text = await new Response(conn.readable).text();
 *   return text;
 * });
 *
 * const conn = await listener.accept();
 * await using flow = await acceptTls(conn, { cert, key }).catch((error) => {
 *   conn.close(); // a failed handshake leaves the flow to its owner
 *   throw error;
 * });
 * await flow.write(new TextEncoder().encode("hello\n"));
 * await flow.closeWrite();
 * assert.equal(await client, "hello\n");
 * ```
 *
 * @example One server, two names: certificates chosen by SNI
 * ```ts
 * import { acceptTls, type ClientHelloInfo, startTls } from "@mimic/mimic/tls";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * const certs: Record<string, { cert: string; key: string }> = {
 *   "localhost": {
 *     cert: await pem("localhost.pem"),
 *     key: await pem("localhost.key"),
 *   },
 *   "wrong.example": {
 *     cert: await pem("wrongname.pem"),
 *     key: await pem("wrongname.key"),
 *   },
 * };
 * const seen: ClientHelloInfo[] = [];
 * const [a, b] = pipe();
 * const [client, server] = await Promise.all([
 *   startTls(a, { hostname: "wrong.example", caCerts: [await pem("ca.pem")] }),
 *   acceptTls(b, (hello) => {
 *     seen.push(hello);
 *     return certs[hello.serverName ?? "localhost"] ?? certs.localhost;
 *   }),
 * ]);
 * assert.equal(seen[0].serverName, "wrong.example");
 * assert.equal(
 *   (await client.handshake()).peerCertificate?.subject,
 *   "CN=wrong.example",
 * );
 * client.close();
 * server.close();
 * ```
 *
 * @param flow The transport: any flow.
 * @param options The certificate and key, ALPN, client CAs, a signal; or a
 *   function of the ClientHello ({@linkcode ClientHelloInfo}) that returns
 *   them, sync or async. If the function throws (or rejects), `acceptTls`
 *   rejects with its error, after sending a handshake_failure alert (best
 *   effort); if it never settles, the signal ends the handshake. What it
 *   returns is validated as an options object is (`TypeError`).
 * @param init A signal for the whole handshake (either form of `options`).
 * @returns The TLS flow, its handshake complete.
 * @throws {TypeError} Before any I/O, for a missing `cert` or `key`, or malformed PEM.
 * @throws {TlsError} When the handshake fails.
 */
export async function acceptTls(
  flow: Flow,
  options: TlsServerOptions | TlsServerOptionsFunction,
  init: AcceptTlsOptions = {},
): Promise<TlsFlow> {
  const outer = init?.signal;
  if (typeof options === "function") {
    outer?.throwIfAborted();
    const { session, signal } = await acceptHello(flow, options, outer);
    return await TlsConn.open(flow, session, both(outer, signal));
  }
  const { signal, ...engineOptions } = options ?? {};
  if (typeof options?.cert !== "string" || typeof options?.key !== "string") {
    throw new TypeError(
      "Cannot accept TLS: cert and key are required, as PEM strings (or a function of the ClientHello that returns them)",
    );
  }
  const combined = both(outer, signal);
  combined?.throwIfAborted();
  return await TlsConn.open(
    flow,
    await serverSession(engineOptions),
    combined,
  );
}

/** Either signal, or both, or none. */
function both(
  a: AbortSignal | undefined,
  b: AbortSignal | undefined,
): AbortSignal | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return AbortSignal.any([a, b]);
}

/**
 * The `tls` protocol: TLS as the client over whatever the `over` context
 * resolves to (TCP, a Unix socket, a pipe, or TLS itself). The inner flow is
 * closed when the handshake fails. A missing `hostname` fails the attempt
 * with a `TypeError` before the inner context is resolved (unless
 * `unsafelyIgnoreCertificateErrors` is set). The endpoint's own `signal`,
 * if any, aborts along with the resolution's.
 *
 * @example TLS over TCP, one resolve away
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import { tls } from "@mimic/mimic/tls";
 * import assert from "node:assert/strict";
 *
 * const pem = (name: string) =>
 *   Deno.readTextFile(new URL(`../tests/fixtures/${name}`, import.meta.url));
 * using listener = Deno.listenTls({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   cert: await pem("localhost.pem"),
 *   key: await pem("localhost.key"),
 * });
 * const served = listener.accept().then(async (conn) => {
 *   await conn.write(new TextEncoder().encode("hi"));
 *   await conn.closeWrite();
 *   conn.close();
 * });
 *
 * const ctx = empty.add(tls.endpoint, {
 *   hostname: "localhost",
 *   caCerts: [await pem("ca.pem")],
 *   over: empty.add(tcp.endpoint, {
 *     hostname: "127.0.0.1",
 *     port: listener.addr.port,
 *   }),
 * });
 * const flow = await resolve(ctx);
 * assert.ok(tls.is(flow));
 * assert.equal(await new Response(flow.readable).text(), "hi");
 * flow.close();
 * await served;
 * ```
 */
export const tls: Protocol<TlsClientOptions & { over: Context }, TlsFlow> =
  register(
    "tls",
    async (
      endpoint: TlsClientOptions & { over: Context },
      signal: AbortSignal,
    ): Promise<TlsFlow> => {
      const { over, ...options } = endpoint;
      if (
        options.hostname === undefined &&
        !options.unsafelyIgnoreCertificateErrors
      ) {
        throw new TypeError(
          "Cannot connect the tls protocol: hostname is required to verify the server's certificate",
        );
      }
      const both = options.signal === undefined
        ? signal
        : AbortSignal.any([options.signal, signal]);
      const inner = await resolve(over, { signal: both });
      try {
        return await startTls(inner, { ...options, signal: both });
      } catch (error) {
        inner.close();
        throw error;
      }
    },
  );
