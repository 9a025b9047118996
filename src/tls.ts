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
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const ca = testPki.ca;
 * const { cert, key } = testPki.server;
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
  type Addr,
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
import { readableFromFlow, Unread, writableFromFlow } from "./_streams.ts";
import { abortable, closeQuietly, messageOf, writeAll } from "./_util.ts";
import { errors } from "./errors.ts";

export { type EngineInfo, engineInfo, TlsError } from "./_engine.ts";
export type { ClientHelloInfo, TlsErrorCode } from "./_engine.ts";
export type { PeerCertificate } from "./_x509.ts";
export type { Arg, ArgTypes, Context, Flow, Protocol, Value };

/** A TLS version: nothing older than TLS 1.2 is ever allowed. */
export type TlsVersion = "TLSv1.2" | "TLSv1.3";

/**
 * Options shared by {@linkcode TlsClientOptions} and
 * {@linkcode TlsServerOptions}: what to negotiate, and key logging.
 * Unknown names, and combinations that leave nothing to negotiate, are a
 * `TypeError` (a `RangeError` for `minVersion` above `maxVersion`) before
 * any I/O.
 *
 * @example Only TLS 1.3, only AES-256-GCM, post-quantum key exchange only
 * ```ts
 * import { acceptTls, startTls } from "@mimic/mimic/tls";
 * import { pipe } from "@mimic/mimic/pipe";
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const lines: string[] = [];
 * const [client, server] = await Promise.all([
 *   startTls(a, {
 *     hostname: "localhost",
 *     caCerts: [testPki.ca],
 *     minVersion: "TLSv1.3",
 *     cipherSuites: ["TLS_AES_256_GCM_SHA384"],
 *     keyExchangeGroups: ["X25519MLKEM768"],
 *     keyLog: (line) => lines.push(line), // e.g. append to $SSLKEYLOGFILE
 *   }),
 *   acceptTls(b, testPki.server),
 * ]);
 * const info = await client.handshake();
 * assert.equal(info.cipherSuite, "TLS_AES_256_GCM_SHA384");
 * assert.equal(info.keyExchangeGroup, "X25519MLKEM768");
 * assert.ok(lines.some((l) => l.startsWith("CLIENT_TRAFFIC_SECRET_0 ")));
 * client.close();
 * server.close();
 * ```
 */
export interface TlsCommonOptions {
  /**
   * Cipher suites to allow, by IANA name, most preferred first (a server
   * uses its own order). Default, fastest first in WebAssembly:
   * `TLS_CHACHA20_POLY1305_SHA256`, `TLS_AES_128_GCM_SHA256`,
   * `TLS_AES_256_GCM_SHA384`, then the TLS 1.2 ECDHE suites
   * (`TLS_ECDHE_{ECDSA,RSA}_WITH_{CHACHA20_POLY1305_SHA256,AES_128_GCM_SHA256,AES_256_GCM_SHA384}`).
   */
  cipherSuites?: string[];
  /** The lowest version allowed. Default `"TLSv1.2"`. */
  minVersion?: TlsVersion;
  /** The highest version allowed. Default `"TLSv1.3"`. */
  maxVersion?: TlsVersion;
  /**
   * Key exchange groups, by IANA name (case-insensitive), most preferred
   * first. Default: `"X25519MLKEM768"` (the post-quantum hybrid of ML-KEM-768
   * and X25519, TLS 1.3 only; the client also sends an x25519 share, so a
   * server without it needs no extra round trip), `"x25519"`,
   * `"secp256r1"`, `"secp384r1"`.
   */
  keyExchangeGroups?: string[];
  /**
   * Receives the connection's secrets as NSS key log lines, exactly the
   * SSLKEYLOGFILE format (`LABEL <client random> <secret>`, hex, each line
   * ending in `"\n"`, as node:tls's `keylog` event), so Wireshark can decrypt
   * a capture. Append them to a file to use them. Called during the
   * handshake; an exception it throws is reported (`reportError`), not
   * raised in the connection.
   */
  keyLog?: (line: string) => void;
}

/** Options of {@linkcode startTls}: the client side of TLS. */
export interface TlsClientOptions extends TlsCommonOptions {
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
  /**
   * Keeps the sessions (TLS 1.3 tickets, TLS 1.2 tickets or IDs) servers
   * give and offers them on the next connection with the same options, to
   * resume without a full handshake (`resumed` in the handshake's info).
   * Default `true`; `false` neither keeps nor offers any.
   */
  resumption?: boolean;
  /**
   * Encrypted Client Hello (ECH): an ECHConfigList (the `ech` parameter of
   * the server's HTTPS DNS record, base64-decoded). The real ClientHello,
   * with `hostname` as SNI, is encrypted to the server's key; the network
   * sees only the list's public name. TLS 1.3 only. ECH is then required:
   * a server that does not accept it fails the handshake (`TlsError` code
   * `"PeerIncompatible"`), after proving it holds the public name.
   * Neither Deno's TLS nor node:tls has it.
   */
  echConfigList?: Uint8Array;
  /** Aborts the handshake: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Options of {@linkcode acceptTls}: the server side of TLS. The server
 * issues session tickets (TLS 1.3 and 1.2, stateless, keys rotated every
 * 6 hours) and keeps TLS 1.2 session IDs, so clients resume.
 */
export interface TlsServerOptions extends TlsCommonOptions {
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
 * @example Certificates by name; other names refused
 * ```ts
 * import type {
 *   TlsServerOptions,
 *   TlsServerOptionsFunction,
 * } from "@mimic/mimic/tls";
 * import { testPki } from "@mimic/mimic/testing";
 *
 * const byName = new Map<string, TlsServerOptions>([
 *   ["localhost", testPki.server],
 * ]);
 * const choose: TlsServerOptionsFunction = (hello) => {
 *   const options = byName.get(hello.serverName ?? "");
 *   if (options === undefined) {
 *     throw new Error(`No certificate for ${hello.serverName}`);
 *   }
 *   return options;
 * };
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
  /** The session was resumed (from a ticket or a session ID): no full handshake. */
  resumed: boolean;
  /**
   * The IANA name of the key exchange group agreed, e.g. `"X25519MLKEM768"`
   * or `"x25519"`; `null` when there was none (a TLS 1.2 resumption).
   */
  keyExchangeGroup: string | null;
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
 * It keeps the Flow contract (rules 1-9 of the package's `Flow`):
 *
 * - `read(p)`: 1..`p.length` plaintext bytes; `null` after the peer's
 *   close_notify, on every later read too; rejects with `TlsError`
 *   `"UnexpectedEof"` when the transport ends without one, and with the
 *   engine's `TlsError` for a bad record or an alert from the peer
 *   (`"AlertReceived"`, with `alert`): the same error on every later call.
 *   A transport failure (e.g. `ConnectionReset`) is passed on as it is.
 * - `write(p)` resolves to `p.length` once `p` is encrypted and handed to
 *   the underlying flow; concurrent writes go out in call order. One
 *   ordered writer sends every TLS byte (records, alerts, close_notify).
 * - `closeWrite()` sends close_notify, then half-closes the underlying
 *   flow; idempotent; a later `write` rejects with `BrokenPipe`.
 * - `close()` is idempotent: it sends close_notify after what is queued
 *   (best effort), then closes the underlying flow. Reads and writes
 *   pending at that moment reject with `Interrupted`; later calls with
 *   `BadResource` (the package's `errors`, Deno's classes on Deno).
 * - `readable`/`writable` are made on first use and share `read`'s and
 *   `write`'s position: closing `writable` is `closeWrite()`, aborting it
 *   is `close()`; cancelling `readable` ends the stream only.
 * - `localAddr`/`remoteAddr` are the underlying flow's, when it has them.
 *
 * @example Read to the end over TLS, from Deno's own TLS server
 * ```ts
 * import { startTls, type TlsFlow } from "@mimic/mimic/tls";
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listenTls({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   ...testPki.server,
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
 *   caCerts: [testPki.ca],
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
  /**
   * Keying material exported from the connection's secrets (RFC 5705; RFC
   * 8446 section 7.5 for TLS 1.3), as node:tls's `exportKeyingMaterial`:
   * both ends get the same bytes for the same label and context, e.g. for
   * tls-exporter channel binding (RFC 9266: 32 bytes, label
   * `"EXPORTER-Channel-Binding"`, no context).
   *
   * @example tls-exporter channel binding (RFC 9266)
   * ```ts
   * import { acceptTls, startTls } from "@mimic/mimic/tls";
   * import { pipe } from "@mimic/mimic/pipe";
   * import { testPki } from "@mimic/mimic/testing";
   * import assert from "node:assert/strict";
   *
   * const [a, b] = pipe();
   * const [client, server] = await Promise.all([
   *   startTls(a, { hostname: "localhost", caCerts: [testPki.ca] }),
   *   acceptTls(b, testPki.server),
   * ]);
   * const label = "EXPORTER-Channel-Binding";
   * const ours = client.exportKeyingMaterial(32, label);
   * assert.deepEqual(ours, server.exportKeyingMaterial(32, label));
   * client.close();
   * server.close();
   * ```
   *
   * @param length How many bytes: 1 to 16384 (TLS 1.3: at most 255 hash lengths, 8160 or 12240).
   * @param label The label; labels TLS uses itself ("client finished", "server finished",
   *   "master secret", "extended master secret", "key expansion") are refused.
   * @param context Optional context (TLS 1.2 tells no context from an empty one).
   * @returns `length` bytes.
   * @throws {RangeError} For a length out of range, or a label or context too long.
   * @throws {TypeError} For a reserved label.
   * @throws {TlsError} Once the flow is closed (code `"Closed"`).
   */
  exportKeyingMaterial(
    length: number,
    label: string,
    context?: Uint8Array,
  ): Uint8Array;
}

/**
 * The first read buffer: one whole TLS record (2^14 plaintext + 256 bytes of
 * expansion + 5 bytes of header, RFC 8446 section 5.2). Small, so a
 * handshake and an idle connection cost little.
 */
const FIRST_READ_SIZE = 16 * 1024 + 256 + 5;
/**
 * The read buffer grows (x4) up to this size while reads fill it (bulk
 * transfers: fewer reads and engine calls); it is dropped after the
 * handshake and made again by the next read.
 */
const MAX_READ_SIZE = 256 * 1024;
/** How long a failing handshake waits for its alert to be written. */
const ALERT_TIMEOUT_MS = 1000;
/** How long close() lets queued TLS bytes (and close_notify) drain. */
const CLOSE_DRAIN_MS = 1000;
const EMPTY = new Uint8Array(0);

function closedError(op: "read from" | "write to" | "close"): Error {
  return new errors.BadResource(`Cannot ${op} TLS flow: it is closed`);
}

function toInfo(info: HandshakeInfo): TlsHandshakeInfo {
  return {
    alpnProtocol: info.alpnProtocol,
    protocol: info.protocol,
    cipherSuite: info.cipherSuite,
    serverName: info.serverName,
    peerCertificates: info.peerCertificates,
    resumed: info.resumed,
    keyExchangeGroup: info.keyExchangeGroup,
    peerCertificate: peerCertificate(info.peerCertificates[0]),
  };
}

/**
 * Owns every byte a TLS flow sends: writes go out to the inner flow in the
 * order they were queued, never interleaved; the first failure is kept and
 * every later send rejects with it.
 */
class OrderedWriter {
  readonly #flow: Flow;
  #tail: Promise<void> = Promise.resolve();
  #queued = 0;
  #error: { error: unknown } | undefined;

  constructor(flow: Flow) {
    this.#flow = flow;
  }

  /** Queues `data`; resolves once it is written (the bytes may be reused then). */
  send(data: Uint8Array): Promise<void> {
    if (this.#error !== undefined) return Promise.reject(this.#error.error);
    const run = (): Promise<void> =>
      this.#error !== undefined
        ? Promise.reject(this.#error.error)
        : writeAll(this.#flow, data, "the TLS flow's transport");
    // An idle writer starts at once: the inner write is dispatched now.
    const task = this.#queued === 0 ? run() : this.#tail.then(run);
    this.#queued++;
    this.#tail = task.then(
      () => {
        this.#queued--;
      },
      (error) => {
        this.#queued--;
        this.#error ??= { error };
      },
    );
    return task;
  }

  /** Nothing is being written. */
  get idle(): boolean {
    return this.#queued === 0;
  }

  /** A write failed: nothing more goes out. */
  get failed(): boolean {
    return this.#error !== undefined;
  }

  /** Resolves once everything queued so far is written or failed. */
  settled(): Promise<void> {
    return this.#tail;
  }
}

/**
 * The TLS flow: a {@linkcode Session} pumped over an inner {@linkcode Flow}.
 *
 * The pump, as rustls' own example loops: the engine reports its status
 * after every call (plaintext ready, TLS to send, handshaking, peer closed,
 * failed), and the pump does what it says: read plaintext, or send what
 * the engine has, or read the inner flow and feed it. EOF and error policy
 * are the engine's (a failure is repeated by every later call; a transport
 * end without close_notify is `UnexpectedEof`); the pump keeps only the
 * transport's own failure, and close's interruption.
 */
class TlsConn implements TlsFlow {
  readonly #inner: Flow;
  readonly #session: Session;
  readonly #writer: OrderedWriter;
  /** Where the inner flow is read into; made by the first read after idling. */
  #readBuf: Uint8Array | undefined;
  /** Bytes read from the inner flow and not yet taken by the engine. */
  #pending: Uint8Array = EMPTY;
  /** Two reusable batches of outgoing records for the write path. */
  readonly #batches: Uint8Array[] = [EMPTY, EMPTY];
  #turn = 0;
  #info: TlsHandshakeInfo | undefined;
  /** Reads, in call order. */
  #reading: Promise<unknown> = Promise.resolve();
  /** Writes and closeWrite, in call order. */
  #writing: Promise<unknown> = Promise.resolve();
  /** The inner flow's read failure, repeated by every later read. */
  #transportError: { error: unknown } | undefined;
  /** Bytes a cancelled readable had read and not delivered: read first. */
  readonly #unread = new Unread();
  /** closeWrite()'s task: set once, the write side is closed. */
  #closeWrite: Promise<void> | undefined;
  #closed = false;
  /** Rejected by close(): pending reads and writes end with Interrupted. */
  readonly #interrupted: Promise<never>;
  #interrupt!: (error: Error) => void;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  constructor(inner: Flow, session: Session) {
    this.#inner = inner;
    this.#session = session;
    this.#writer = new OrderedWriter(inner);
    this.#interrupted = new Promise<never>((_, reject) => {
      this.#interrupt = reject;
    });
    this.#interrupted.catch(() => {});
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

  /** `p`, unless close() comes first: then Interrupted. */
  #race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.#interrupted]);
  }

  /**
   * Runs the handshake to completion. On failure, sends the engine's alert
   * (best effort), frees the session and rethrows; the inner flow is left
   * open.
   */
  async #handshake(signal: AbortSignal | undefined): Promise<void> {
    const session = this.#session;
    try {
      while (session.status.handshaking) {
        this.#flush().catch(() => {}); // a failure comes back from #receive
        await abortable(this.#receive(), signal);
      }
      await abortable(this.#flush(), signal); // the last flight, written
      this.#info = toInfo(session.handshakeInfo());
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
          messageOf(error)
        }`,
        { cause: error },
      );
    } finally {
      this.#readBuf = undefined; // idle connections hold no read buffer
    }
  }

  /** Sends what the engine has to send (an alert), waiting a little at most. */
  async #sendAlert(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const timeout = new Promise<void>((ok) => {
        timer = setTimeout(ok, ALERT_TIMEOUT_MS);
      });
      await Promise.race([this.#flush(), timeout]);
    } catch {
      // Best effort: the handshake's error is what matters.
    } finally {
      clearTimeout(timer);
    }
  }

  /** Queues everything the engine has to send; resolves once it is written. */
  #flush(): Promise<void> {
    let last: Promise<void> | undefined;
    while (this.#session.status.tlsToSend) {
      const out = this.#session.takeOutgoing();
      if (out === null) break;
      last = this.#writer.send(out);
    }
    return last ?? Promise.resolve();
  }

  /**
   * Gives the engine more TLS bytes: what is pending, else one read of the
   * inner flow (its end is fed as such); then sends what the engine has to
   * say (handshake flights, key update replies, alerts).
   */
  async #receive(): Promise<void> {
    const session = this.#session;
    if (this.#pending.length === 0) {
      if (this.#transportError !== undefined) throw this.#transportError.error;
      const buf = this.#readBuf ??= new Uint8Array(FIRST_READ_SIZE);
      let n: number | null;
      try {
        n = await this.#race(this.#inner.read(buf));
      } catch (error) {
        if (this.#closed) throw error;
        this.#transportError = { error };
        throw error;
      }
      if (n === null) {
        session.feedEof(); // the engine says what that end means
        return;
      }
      this.#pending = buf.subarray(0, n);
      if (n === buf.length && n < MAX_READ_SIZE) {
        // A full read: bulk data. #pending keeps the old buffer alive.
        this.#readBuf = new Uint8Array(Math.min(n * 4, MAX_READ_SIZE));
      }
    }
    const fed = session.feed(this.#pending);
    // An empty rest drops its buffer (an idle connection holds none).
    this.#pending = fed === this.#pending.length
      ? EMPTY
      : this.#pending.subarray(fed);
    if (session.status.tlsToSend) this.#flush().catch(() => {});
    if (
      fed === 0 && session.status.plaintext === 0 && !session.status.peerClosed
    ) {
      throw new TlsError(
        "EngineFailure",
        "Cannot read from TLS flow: the engine accepts no bytes and has none to give",
      );
    }
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(closedError("read from"));
    if (p.length === 0) return Promise.resolve(0);
    const task = this.#reading.then(() => this.#read(p));
    this.#reading = task.catch(() => {});
    return task;
  }

  async #read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#closed) throw this.#interruptedError("read from");
      if (this.#unread.size > 0) return this.#unread.take(p);
      const n = this.#session.read(p);
      if (n !== 0) return n;
      await this.#receive();
    }
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(closedError("write to"));
    if (this.#closeWrite !== undefined) {
      return Promise.reject(
        new errors.BrokenPipe(
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
    while (offset < p.length) {
      if (this.#closed) throw this.#interruptedError();
      const n = session.write(offset === 0 ? p : p.subarray(offset));
      offset += n;
      const batch = this.#takeBatch(n);
      if (batch === null) {
        if (n === 0) {
          throw new TlsError(
            "EngineFailure",
            "Cannot write to TLS flow: the engine accepts no bytes",
          );
        }
        continue;
      }
      const sent = this.#race(this.#writer.send(batch));
      sent.catch(() => {}); // awaited below, or superseded by an error
      if (inflight !== undefined) await inflight;
      inflight = sent;
    }
    if (inflight !== undefined) await inflight;
    return p.length;
  }

  /**
   * The engine's outgoing records after writing `n` plaintext bytes, in the
   * next of two reusable buffers (the one before it is still being written;
   * the one before that was awaited), or null when there are none.
   */
  #takeBatch(n: number): Uint8Array | null {
    const session = this.#session;
    if (!session.status.tlsToSend) return null;
    // Records of up to 2^14 bytes, 22 bytes of overhead each, and room for
    // a key update reply or a ticket acknowledgement queued before.
    const need = n + 22 * Math.ceil(n / 16384) + 1024;
    let buf = this.#batches[this.#turn];
    if (buf.length < need) {
      buf = this.#batches[this.#turn] = new Uint8Array(
        Math.max(4096, 2 ** Math.ceil(Math.log2(need))),
      );
    }
    this.#turn ^= 1;
    const got = session.takeOutgoingInto(buf);
    if (!session.status.tlsToSend) {
      return got === 0 ? null : buf.subarray(0, got);
    }
    // More than the estimate: the rest in a fresh buffer.
    const rest = session.takeOutgoing()!;
    const all = new Uint8Array(got + rest.length);
    all.set(buf.subarray(0, got));
    all.set(rest, got);
    return all;
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError("close"));
    if (this.#closeWrite !== undefined) return this.#closeWrite;
    const task = this.#writing.then(async () => {
      if (this.#closed) throw this.#interruptedError();
      this.#session.closeNotify();
      await this.#race(this.#flush());
      await this.#race(this.#inner.closeWrite());
    });
    this.#writing = task.catch(() => {});
    this.#closeWrite = task;
    return task;
  }

  #interruptedError(op: "read from" | "write to" = "write to"): Error {
    return new errors.Interrupted(
      `Cannot ${op} TLS flow: it was closed meanwhile`,
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#interrupt(
      new errors.Interrupted(
        "Cannot complete the operation on the TLS flow: it was closed meanwhile",
      ),
    );
    const wasIdle = this.#writer.idle;
    try {
      const status = this.#session.status;
      if (!status.notified && !status.failed && !this.#writer.failed) {
        // close_notify goes through the writer, after every byte before it.
        this.#session.closeNotify();
        const out = this.#session.takeOutgoing();
        if (out !== null) this.#writer.send(out).catch(() => {});
      }
    } catch {
      // The session failed: nothing to say to the peer.
    }
    this.#session.free();
    this.#pending = EMPTY;
    this.#readBuf = undefined;
    if (wasIdle) {
      // The write of close_notify is dispatched: flows of this package and
      // Deno's sockets send it before they close.
      closeQuietly(this.#inner);
      return;
    }
    const timer = setTimeout(() => closeQuietly(this.#inner), CLOSE_DRAIN_MS);
    this.#writer.settled().then(() => {
      clearTimeout(timer);
      closeQuietly(this.#inner);
    });
  }

  handshake(): Promise<TlsHandshakeInfo> {
    return Promise.resolve(this.#info!);
  }

  /** The inner flow's local address, when it has one. */
  get localAddr(): Addr | undefined {
    return (this.#inner as { localAddr?: Addr }).localAddr;
  }

  /** The inner flow's remote address, when it has one. */
  get remoteAddr(): Addr | undefined {
    return (this.#inner as { remoteAddr?: Addr }).remoteAddr;
  }

  exportKeyingMaterial(
    length: number,
    label: string,
    context?: Uint8Array,
  ): Uint8Array {
    return this.#session.exportKeyingMaterial(length, label, context);
  }

  get readable(): ReadableStream<Uint8Array> {
    // Cancelling it ends the stream only: the flow reads on, from where
    // the stream stopped.
    return this.#readable ??= readableFromFlow(
      (p) => this.read(p),
      () => {},
      { unread: (bytes) => this.#unread.unshift(bytes) },
    );
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  [Symbol.dispose](): void {
    this.close();
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
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listenTls({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   ...testPki.server,
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
 *     caCerts: [testPki.ca],
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
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const cert = testPki.server.cert;
 * const key = testPki.server.key;
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = Deno.connectTls({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   caCerts: [testPki.ca],
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
 * @example Certificates chosen by SNI; an unknown name is refused
 * ```ts
 * import {
 *   acceptTls,
 *   type ClientHelloInfo,
 *   startTls,
 *   TlsError,
 *   type TlsServerOptions,
 * } from "@mimic/mimic/tls";
 * import { pipe } from "@mimic/mimic/pipe";
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const sites = new Map<string, TlsServerOptions>([
 *   ["localhost", testPki.server],
 * ]);
 * const seen: ClientHelloInfo[] = [];
 * const choose = (hello: ClientHelloInfo): TlsServerOptions => {
 *   seen.push(hello);
 *   const site = sites.get(hello.serverName ?? "");
 *   if (site === undefined) throw new Error(`No site ${hello.serverName}`);
 *   return site;
 * };
 *
 * const [a, b] = pipe();
 * const [client, server] = await Promise.all([
 *   startTls(a, { hostname: "localhost", caCerts: [testPki.ca] }),
 *   acceptTls(b, choose),
 * ]);
 * assert.equal(seen[0].serverName, "localhost");
 * assert.equal(
 *   (await client.handshake()).peerCertificate?.subject,
 *   "CN=localhost",
 * );
 * client.close();
 * server.close();
 *
 * // Another name: the function throws, the client gets a handshake_failure.
 * const [c, d] = pipe();
 * const [refused, failed] = await Promise.allSettled([
 *   startTls(c, { hostname: "other.example", caCerts: [testPki.ca] }),
 *   acceptTls(d, choose),
 * ]);
 * assert.ok(refused.status === "rejected" && refused.reason instanceof TlsError);
 * assert.ok(failed.status === "rejected");
 * assert.equal(seen[1].serverName, "other.example");
 * c.close();
 * d.close();
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
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listenTls({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   ...testPki.server,
 * });
 * const served = listener.accept().then(async (conn) => {
 *   await conn.write(new TextEncoder().encode("hi"));
 *   await conn.closeWrite();
 *   conn.close();
 * });
 *
 * const ctx = empty.add(tls.endpoint, {
 *   hostname: "localhost",
 *   caCerts: [testPki.ca],
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
