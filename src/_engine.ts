/**
 * Internal binding to the TLS engine: rustls 0.23 (ring) compiled to
 * wasm32-unknown-unknown (`wasm/`), embedded in `_engine_wasm.ts` and driven
 * sans-IO. Not an entry point: `src/tls.ts` builds the public API on it.
 *
 * One wasm instance holds many connections (by handle). A trap in the engine
 * poisons the instance: its sessions throw `TlsError` code "EngineFailure"
 * from then on, and new sessions get a fresh instance of the same compiled
 * module.
 *
 * @module
 */

/**
 * The stable codes of {@linkcode TlsError}:
 *
 * - the peer's certificate: "UnknownIssuer" (not issued by a trusted CA),
 *   "NotValidForName", "Expired", "NotValidYet", "InvalidPurpose" (wrong
 *   extended key usage), "BadSignature", "BadCertificate" (any other
 *   certificate problem), "NoCertificatesPresented" (a client that sent no
 *   certificate to a server requiring one);
 * - the peer: "AlertReceived" (it sent a fatal alert, named in
 *   {@linkcode TlsError.alert}), "NoApplicationProtocol" (no ALPN protocol
 *   in common), "PeerIncompatible" (no version, suite, group or signature
 *   scheme in common), "BadInput" (bytes that are not TLS, e.g. a peer that
 *   does not speak TLS, or a corrupt record), "ProtocolViolation" (TLS in
 *   the wrong order), "UnexpectedEof" (the transport ended without
 *   close_notify, or failed, or ended mid-handshake);
 * - this side: "HandshakeTimeout" (`serve`'s `handshakeTimeout` elapsed),
 *   "EngineFailure" (the wasm engine trapped), "Closed" (the TLS session
 *   was released), "TlsFailure" (any other TLS failure).
 */
export type TlsErrorCode =
  | "UnknownIssuer"
  | "NotValidForName"
  | "Expired"
  | "NotValidYet"
  | "InvalidPurpose"
  | "BadSignature"
  | "BadCertificate"
  | "NoCertificatesPresented"
  | "AlertReceived"
  | "NoApplicationProtocol"
  | "PeerIncompatible"
  | "BadInput"
  | "ProtocolViolation"
  | "UnexpectedEof"
  | "HandshakeTimeout"
  | "EngineFailure"
  | "Closed"
  | "TlsFailure";

/** A TLS failure, with a stable {@linkcode TlsError.code}. */
export class TlsError extends Error {
  /** Stable code: one of {@linkcode TlsErrorCode}. */
  readonly code: TlsErrorCode;
  /** For code "AlertReceived": the alert's name, e.g. "handshake_failure". */
  readonly alert?: string;

  /** Creates a TlsError with the given code and message. */
  constructor(
    code: TlsErrorCode,
    message: string,
    options?: ErrorOptions & { alert?: string },
  ) {
    super(message, options);
    this.name = "TlsError";
    this.code = code;
    if (options?.alert !== undefined) this.alert = options.alert;
  }
}

/** Options of a client session. */
export interface EngineClientOptions {
  /**
   * Server name sent (SNI) and verified; an IP address literal (IPv6
   * optionally in brackets) is verified as an IP SAN and sends no SNI.
   * Default "127.0.0.1", as `Deno.connectTls`.
   */
  hostname?: string;
  /** Trusted CA certificates, PEM; default: the Mozilla root store (webpki-roots). */
  caCerts?: string[];
  /** ALPN protocols to offer. */
  alpnProtocols?: string[];
  /** Client certificate chain (mTLS), PEM; needs `key`. */
  cert?: string;
  /** Client private key (PKCS#8, PKCS#1 RSA or SEC1 EC), PEM; needs `cert`. */
  key?: string;
  /** Accepts any server certificate (handshake signatures are still checked). */
  unsafelyIgnoreCertificateErrors?: boolean;
  /** @internal Testing only: restrict to TLS 1.2. */
  _tls12Only?: boolean;
}

/** Options of a server session. */
export interface EngineServerOptions {
  /** Certificate chain, PEM, leaf first. */
  cert: string;
  /** Private key (PKCS#8, PKCS#1 RSA or SEC1 EC), PEM. */
  key: string;
  /** ALPN protocols accepted, in order of preference. */
  alpnProtocols?: string[];
  /** When given, a client certificate issued by one of these CAs is required. */
  clientCaCerts?: string[];
  /**
   * With `clientCaCerts`: "required" (default) or "optional" (a client may
   * send no certificate; one it sends must verify).
   */
  clientAuth?: "required" | "optional";
  /** @internal Testing only: restrict to TLS 1.2. */
  _tls12Only?: boolean;
}

/** What was negotiated, once the handshake completed. */
export interface HandshakeInfo {
  /** Negotiated ALPN protocol, or null. */
  alpnProtocol: string | null;
  /** Protocol version. */
  protocol: "TLSv1.2" | "TLSv1.3";
  /** IANA cipher suite name, e.g. "TLS_AES_128_GCM_SHA256". */
  cipherSuite: string;
  /** SNI sent by the client (client side) or seen by the server; null if none. */
  serverName: string | null;
  /** The peer's certificates, DER, leaf first (empty when none). */
  peerCertificates: Uint8Array[];
}

/** One TLS connection inside the engine, driven sans-IO. */
export interface Session {
  /**
   * Hands TLS bytes received from the peer to the engine and processes them.
   * Returns how many bytes were consumed (fewer than data.length, possibly 0,
   * when the engine's plaintext buffer is full: read() first, then feed the
   * rest). Throws TlsError on a TLS error; after a throw, takeOutgoing() may
   * still hold an alert to send to the peer.
   */
  feed(data: Uint8Array): number;
  /**
   * Tells the engine the transport ended (EOF). Afterwards read() throws
   * TlsError "UnexpectedEof" unless close_notify was received.
   */
  feedEof(): void;
  /** TLS bytes the engine wants sent to the peer (a fresh copy), or null when none. */
  takeOutgoing(): Uint8Array | null;
  /**
   * Copies decrypted plaintext into buf: the count (>0); 0 when none is
   * available yet; null after the peer's close_notify (clean end of flow).
   * Throws TlsError "UnexpectedEof" after feedEof() without close_notify.
   */
  read(buf: Uint8Array): number | null;
  /**
   * Encrypts plaintext; returns how many bytes were accepted (fewer when the
   * outgoing buffer limit is reached: drain takeOutgoing() first).
   */
  write(data: Uint8Array): number;
  /** Queues close_notify (then takeOutgoing()). */
  closeNotify(): void;
  /** True until the handshake completed. */
  readonly isHandshaking: boolean;
  /** True when takeOutgoing() has bytes. */
  readonly wantsWrite: boolean;
  /** Valid once the handshake completed. */
  handshakeInfo(): HandshakeInfo;
  /** Releases the connection inside the engine. Idempotent. */
  free(): void;
}

// ---------------------------------------------------------------------------
// The wasm instance
// ---------------------------------------------------------------------------

interface Exports {
  memory: WebAssembly.Memory;
  mimic_alloc(len: number): number;
  mimic_free(ptr: number, len: number): void;
  mimic_result_ptr(): number;
  mimic_result_len(): number;
  mimic_heap_bytes(): number;
  mimic_debug_trap(): void;
  mimic_init(): void;
  mimic_client_config_new(ptr: number, len: number): number;
  mimic_server_config_new(ptr: number, len: number): number;
  mimic_config_free(handle: number): void;
  mimic_client_new(config: number, ptr: number, len: number): number;
  mimic_server_new(config: number): number;
  mimic_conn_free(handle: number): void;
  mimic_conn_feed(handle: number, ptr: number, len: number): number;
  mimic_conn_take(handle: number, ptr: number, cap: number): number;
  mimic_conn_read(handle: number, ptr: number, cap: number): number;
  mimic_conn_write(handle: number, ptr: number, len: number): number;
  mimic_conn_close_notify(handle: number): void;
  mimic_conn_state(handle: number): number;
  mimic_conn_info(handle: number): number;
  mimic_selftest(): number;
  mimic_acceptor_new(): number;
  mimic_acceptor_free(handle: number): void;
  mimic_acceptor_feed(handle: number, ptr: number, len: number): number;
  mimic_acceptor_take(handle: number, ptr: number, cap: number): number;
  mimic_acceptor_hello(handle: number): number;
  mimic_acceptor_accept(handle: number, config: number): number;
}

/** Size of the per-instance scratch buffer used to pass bytes in and out. */
const SCRATCH_SIZE = 128 * 1024;
/** Config cache entries per instance (key: JSON of the options). */
const CONFIG_CACHE_SIZE = 64;
/** Status codes of the engine's exports (-1: TLS error, see `error`). */
const ERR_OPTIONS = -2;
const READ_CLOSED = -3;
const READ_UNEXPECTED_EOF = -4;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function engineFailure(cause?: unknown, panic?: string): TlsError {
  return new TlsError(
    "EngineFailure",
    "the TLS engine failed (wasm trap); this connection is lost" +
      (panic ? `: ${panic}` : ""),
    cause === undefined ? undefined : { cause },
  );
}

class Engine {
  readonly x: Exports;
  poisoned = false;
  /** The message of the engine's last panic (set by the panic hook). */
  panicMessage: string | undefined;
  readonly scratch: number;
  #u8: Uint8Array;
  readonly #configs = new Map<string, number>();

  constructor(instance: WebAssembly.Instance) {
    this.x = instance.exports as unknown as Exports;
    this.#u8 = new Uint8Array(this.x.memory.buffer);
    this.call(() => this.x.mimic_init());
    this.scratch = this.call(() => this.x.mimic_alloc(SCRATCH_SIZE)) >>> 0;
    if (this.scratch === 0) throw engineFailure();
  }

  /** The engine's memory; re-taken after it grew (old views detach). */
  mem(): Uint8Array {
    if (this.#u8.byteLength === 0) {
      this.#u8 = new Uint8Array(this.x.memory.buffer);
    }
    return this.#u8;
  }

  /** Runs an export call; any exception from wasm poisons the instance. */
  call<T>(f: () => T): T {
    if (this.poisoned) throw engineFailure(undefined, this.panicMessage);
    try {
      return f();
    } catch (e) {
      this.poisoned = true;
      this.#configs.clear();
      throw engineFailure(e, this.panicMessage);
    }
  }

  /** The error left in the result buffer by a failed call. */
  error(status: number): Error {
    const x = this.x;
    const ptr = this.call(() => x.mimic_result_ptr()) >>> 0;
    const len = this.call(() => x.mimic_result_len()) >>> 0;
    const text = decoder.decode(this.mem().subarray(ptr, ptr + len));
    const [code, alert, ...rest] = text.split("\0");
    const message = rest.join("\0");
    if (status === ERR_OPTIONS) return new TypeError(message);
    if (code === "AlertReceived") {
      return new TlsError(code, `received fatal alert: ${alert}`, { alert });
    }
    return new TlsError(
      (code || "TlsFailure") as TlsErrorCode,
      message || "TLS failure",
    );
  }

  /** Copies `bytes` into a fresh engine allocation; runs f(ptr, len). */
  withBytes<T>(bytes: Uint8Array, f: (ptr: number, len: number) => T): T {
    if (bytes.length <= SCRATCH_SIZE) {
      this.mem().set(bytes, this.scratch);
      return f(this.scratch, bytes.length);
    }
    const x = this.x;
    const ptr = this.call(() => x.mimic_alloc(bytes.length)) >>> 0;
    if (ptr === 0) throw engineFailure();
    try {
      this.mem().set(bytes, ptr);
      return f(ptr, bytes.length);
    } finally {
      if (!this.poisoned) this.call(() => x.mimic_free(ptr, bytes.length));
    }
  }

  /** A config handle for these options, cached by their JSON. */
  config(kind: "client" | "server", key: string, encoded: Uint8Array): number {
    const cacheKey = kind + key;
    const cached = this.#configs.get(cacheKey);
    if (cached !== undefined) {
      // Refresh its position (least recently used goes first).
      this.#configs.delete(cacheKey);
      this.#configs.set(cacheKey, cached);
      return cached;
    }
    const x = this.x;
    const handle = this.withBytes(
      encoded,
      (ptr, len) =>
        this.call(() =>
          kind === "client"
            ? x.mimic_client_config_new(ptr, len)
            : x.mimic_server_config_new(ptr, len)
        ),
    );
    if (handle < 0) throw this.error(handle);
    this.#configs.set(cacheKey, handle);
    if (this.#configs.size > CONFIG_CACHE_SIZE) {
      const [oldKey, oldHandle] = this.#configs.entries().next().value!;
      this.#configs.delete(oldKey);
      // Connections using it keep it alive inside the engine.
      this.call(() => x.mimic_config_free(oldHandle));
    }
    return handle;
  }
}

let modulePromise: Promise<WebAssembly.Module> | undefined;
let enginePromise: Promise<Engine> | undefined;
let currentEngine: Engine | undefined;

async function wasmBytes(): Promise<Uint8Array<ArrayBuffer>> {
  // A static specifier: part of the module graph (no permission needed, also
  // from JSR), but parsed only on first TLS use, not when tls.ts is imported.
  const { ENGINE_WASM_BASE64 } = await import("./_engine_wasm.ts");
  const U = Uint8Array as unknown as {
    fromBase64?: (s: string) => Uint8Array<ArrayBuffer>;
  };
  if (typeof U.fromBase64 === "function") {
    return U.fromBase64(ENGINE_WASM_BASE64);
  }
  const s = atob(ENGINE_WASM_BASE64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

async function instantiate(): Promise<Engine> {
  modulePromise ??= wasmBytes().then((bytes) => WebAssembly.compile(bytes));
  let module: WebAssembly.Module;
  try {
    module = await modulePromise;
  } catch (e) {
    modulePromise = undefined;
    throw engineFailure(e);
  }
  const bound: { memory?: WebAssembly.Memory; engine?: Engine } = {};
  const imports = {
    env: {
      mimic_now_ms: (): number => Date.now(),
      mimic_random: (ptr: number, len: number): void => {
        const view = new Uint8Array(bound.memory!.buffer, ptr >>> 0, len >>> 0);
        for (let off = 0; off < view.length; off += 65536) {
          crypto.getRandomValues(view.subarray(off, off + 65536));
        }
      },
      mimic_panic: (ptr: number, len: number): void => {
        const bytes = new Uint8Array(
          bound.memory!.buffer,
          ptr >>> 0,
          len >>> 0,
        );
        if (bound.engine) bound.engine.panicMessage = decoder.decode(bytes);
      },
    },
  };
  const instance = await WebAssembly.instantiate(module, imports);
  bound.memory = (instance.exports as unknown as Exports).memory;
  bound.engine = new Engine(instance);
  return bound.engine;
}

/** The current (healthy) engine instance, created on first use. */
async function getEngine(): Promise<Engine> {
  for (;;) {
    if (currentEngine?.poisoned) {
      currentEngine = undefined;
      enginePromise = undefined;
    }
    enginePromise ??= instantiate().then(
      (e) => (currentEngine = e),
      (e) => {
        enginePromise = undefined;
        throw e;
      },
    );
    const engine = await enginePromise;
    if (!engine.poisoned) return engine;
  }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

const TAG_CA = 1;
const TAG_ALPN = 2;
const TAG_CERT = 3;
const TAG_KEY = 4;
const TAG_INSECURE = 5;
const TAG_CLIENT_CA = 6;
const TAG_TLS12_ONLY = 7;
const TAG_CLIENT_AUTH_OPTIONAL = 16;

class OptionsWriter {
  #parts: Uint8Array[] = [];
  #len = 0;
  add(tag: number, value?: string): void {
    const bytes = value === undefined
      ? new Uint8Array()
      : encoder.encode(value);
    const head = new Uint8Array(5);
    head[0] = tag;
    new DataView(head.buffer).setUint32(1, bytes.length, true);
    this.#parts.push(head, bytes);
    this.#len += 5 + bytes.length;
  }
  finish(): Uint8Array {
    const out = new Uint8Array(this.#len);
    let off = 0;
    for (const p of this.#parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}

function checkString(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new TypeError(`${name} must be a string`);
  return v;
}

function checkStrings(name: string, v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    throw new TypeError(`${name} must be an array of strings`);
  }
  return v;
}

function checkAlpn(v: unknown): string[] | undefined {
  const list = checkStrings("alpnProtocols", v);
  for (const p of list ?? []) {
    const n = encoder.encode(p).length;
    if (n === 0 || n > 255) {
      throw new TypeError("an ALPN protocol must be 1 to 255 bytes long");
    }
  }
  return list;
}

function encodeClient(o: EngineClientOptions): [string, Uint8Array] {
  const caCerts = checkStrings("caCerts", o.caCerts);
  const alpn = checkAlpn(o.alpnProtocols);
  const cert = checkString("cert", o.cert);
  const key = checkString("key", o.key);
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError("cert and key must be given together");
  }
  const insecure = o.unsafelyIgnoreCertificateErrors === true;
  const tls12 = o._tls12Only === true;
  const w = new OptionsWriter();
  for (const c of caCerts ?? []) w.add(TAG_CA, c);
  for (const p of alpn ?? []) w.add(TAG_ALPN, p);
  if (cert !== undefined) w.add(TAG_CERT, cert);
  if (key !== undefined) w.add(TAG_KEY, key);
  if (insecure) w.add(TAG_INSECURE);
  if (tls12) w.add(TAG_TLS12_ONLY);
  const cacheKey = JSON.stringify([caCerts, alpn, cert, key, insecure, tls12]);
  return [cacheKey, w.finish()];
}

function encodeServer(o: EngineServerOptions): [string, Uint8Array] {
  if (o === null || typeof o !== "object") {
    throw new TypeError("server options are required");
  }
  const cert = checkString("cert", o.cert);
  const key = checkString("key", o.key);
  if (cert === undefined || key === undefined) {
    throw new TypeError("a TLS server needs cert and key");
  }
  const alpn = checkAlpn(o.alpnProtocols);
  const clientCaCerts = checkStrings("clientCaCerts", o.clientCaCerts);
  if (clientCaCerts !== undefined && clientCaCerts.length === 0) {
    throw new TypeError("clientCaCerts must hold at least one certificate");
  }
  const clientAuth = o.clientAuth;
  if (
    clientAuth !== undefined && clientAuth !== "required" &&
    clientAuth !== "optional"
  ) {
    throw new TypeError(
      `clientAuth must be "required" or "optional", not ${
        JSON.stringify(clientAuth) ?? String(clientAuth)
      }`,
    );
  }
  if (clientAuth !== undefined && clientCaCerts === undefined) {
    throw new TypeError("clientAuth needs clientCaCerts");
  }
  const optional = clientAuth === "optional";
  const tls12 = o._tls12Only === true;
  const w = new OptionsWriter();
  w.add(TAG_CERT, cert);
  w.add(TAG_KEY, key);
  for (const p of alpn ?? []) w.add(TAG_ALPN, p);
  for (const c of clientCaCerts ?? []) w.add(TAG_CLIENT_CA, c);
  if (tls12) w.add(TAG_TLS12_ONLY);
  if (optional) w.add(TAG_CLIENT_AUTH_OPTIONAL);
  const cacheKey = JSON.stringify([
    cert,
    key,
    alpn,
    clientCaCerts,
    tls12,
    optional,
  ]);
  return [cacheKey, w.finish()];
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/** Frees engine connections of sessions dropped without free(). */
const finalizer = new FinalizationRegistry<{ engine: Engine; handle: number }>(
  ({ engine, handle }) => {
    if (!engine.poisoned) {
      try {
        engine.call(() => engine.x.mimic_conn_free(handle));
      } catch {
        // Poisoned: nothing to free.
      }
    }
  },
);

class EngineSession implements Session {
  readonly #engine: Engine;
  readonly #handle: number;
  #freed = false;

  constructor(engine: Engine, handle: number) {
    this.#engine = engine;
    this.#handle = handle;
    finalizer.register(this, { engine, handle }, this);
  }

  #check(): Engine {
    if (this.#freed) throw new TlsError("Closed", "the TLS session was freed");
    if (this.#engine.poisoned) {
      throw engineFailure(undefined, this.#engine.panicMessage);
    }
    return this.#engine;
  }

  feed(data: Uint8Array): number {
    return this.#push(data, "mimic_conn_feed");
  }

  /**
   * Copies `data` through the scratch buffer into `op` (feed or write), a
   * scratch-full at a time, until the engine takes fewer bytes than given.
   */
  #push(data: Uint8Array, op: "mimic_conn_feed" | "mimic_conn_write"): number {
    const e = this.#check();
    const x = e.x;
    const h = this.#handle;
    let total = 0;
    while (total < data.length) {
      const n = Math.min(data.length - total, SCRATCH_SIZE);
      e.mem().set(data.subarray(total, total + n), e.scratch);
      const r = e.call(() => x[op](h, e.scratch, n));
      if (r < 0) throw e.error(r);
      total += r;
      if (r < n) break;
    }
    return total;
  }

  feedEof(): void {
    const e = this.#check();
    const r = e.call(() => e.x.mimic_conn_feed(this.#handle, e.scratch, 0));
    if (r < 0) throw e.error(r);
  }

  takeOutgoing(): Uint8Array | null {
    const e = this.#check();
    const x = e.x;
    const h = this.#handle;
    let out: Uint8Array | null = null;
    for (;;) {
      const r = e.call(() => x.mimic_conn_take(h, e.scratch, SCRATCH_SIZE));
      if (r < 0) throw e.error(r);
      if (r === 0) break;
      const chunk = e.mem().slice(e.scratch, e.scratch + r);
      if (out === null) {
        out = chunk;
      } else {
        const joined: Uint8Array = new Uint8Array(out.length + r);
        joined.set(out);
        joined.set(chunk, out.length);
        out = joined;
      }
      if (r < SCRATCH_SIZE) break;
    }
    return out;
  }

  read(buf: Uint8Array): number | null {
    const e = this.#check();
    const cap = Math.min(buf.length, SCRATCH_SIZE);
    if (cap === 0) return 0;
    const r = e.call(() => e.x.mimic_conn_read(this.#handle, e.scratch, cap));
    if (r > 0) {
      buf.set(e.mem().subarray(e.scratch, e.scratch + r));
      return r;
    }
    if (r === 0) return 0;
    if (r === READ_CLOSED) return null;
    if (r === READ_UNEXPECTED_EOF) {
      throw new TlsError(
        "UnexpectedEof",
        "the peer closed the connection without sending close_notify",
      );
    }
    throw e.error(r);
  }

  write(data: Uint8Array): number {
    return this.#push(data, "mimic_conn_write");
  }

  closeNotify(): void {
    const e = this.#check();
    e.call(() => e.x.mimic_conn_close_notify(this.#handle));
  }

  #state(): number {
    const e = this.#check();
    const s = e.call(() => e.x.mimic_conn_state(this.#handle));
    if (s < 0) throw new TlsError("Closed", "no such TLS session");
    return s;
  }

  get isHandshaking(): boolean {
    return (this.#state() & 1) !== 0;
  }

  get wantsWrite(): boolean {
    return (this.#state() & 2) !== 0;
  }

  handshakeInfo(): HandshakeInfo {
    const e = this.#check();
    const x = e.x;
    const len = e.call(() => x.mimic_conn_info(this.#handle));
    if (len < 0) throw e.error(len);
    const ptr = e.call(() => x.mimic_result_ptr()) >>> 0;
    const bytes = e.mem().slice(ptr, ptr + len);
    const view = new DataView(bytes.buffer);
    let off = 0;
    const field = (): Uint8Array | null => {
      const n = view.getUint32(off, true);
      off += 4;
      if (n === 0xffffffff) return null;
      const v = bytes.subarray(off, off + n);
      off += n;
      return v;
    };
    const str = (): string | null => {
      const v = field();
      return v === null ? null : decoder.decode(v);
    };
    const protocol = str() as "TLSv1.2" | "TLSv1.3";
    const cipherSuite = str() ?? "";
    const alpnProtocol = str();
    const serverName = str();
    const count = view.getUint32(off, true);
    off += 4;
    const peerCertificates: Uint8Array[] = [];
    for (let i = 0; i < count; i++) peerCertificates.push(field()!.slice());
    return {
      alpnProtocol,
      protocol,
      cipherSuite,
      serverName,
      peerCertificates,
    };
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    finalizer.unregister(this);
    const e = this.#engine;
    if (e.poisoned) return;
    try {
      e.call(() => e.x.mimic_conn_free(this.#handle));
    } catch {
      // The instance is poisoned now; there is nothing left to free.
    }
  }
}

/** Runs f on a healthy engine, retrying once on a fresh instance if it trapped. */
async function withEngine<T>(f: (e: Engine) => T): Promise<T> {
  const engine = await getEngine();
  try {
    return f(engine);
  } catch (e) {
    if (e instanceof TlsError && e.code === "EngineFailure") {
      return f(await getEngine());
    }
    throw e;
  }
}

/**
 * Validates options (TypeError for malformed PEM, before any I/O), loads the
 * engine lazily (compiled once per process), returns a new client session
 * (ClientHello ready in takeOutgoing()).
 */
export function clientSession(options: EngineClientOptions): Promise<Session> {
  return (async () => {
    const o = options ?? {};
    const hostname = checkString("hostname", o.hostname) ?? "127.0.0.1";
    const [key, encoded] = encodeClient(o);
    const host = encoder.encode(hostname);
    return await withEngine((e) => {
      const config = e.config("client", key, encoded);
      const h = e.withBytes(
        host,
        (ptr, len) => e.call(() => e.x.mimic_client_new(config, ptr, len)),
      );
      if (h < 0) throw e.error(h);
      return new EngineSession(e, h);
    });
  })();
}

/**
 * Validates options (TypeError for malformed PEM, before any I/O), loads the
 * engine lazily, returns a new server session waiting for a ClientHello.
 */
export function serverSession(options: EngineServerOptions): Promise<Session> {
  return (async () => {
    const [key, encoded] = encodeServer(options);
    return await withEngine((e) => {
      const config = e.config("server", key, encoded);
      const h = e.call(() => e.x.mimic_server_new(config));
      if (h < 0) throw e.error(h);
      return new EngineSession(e, h);
    });
  })();
}

// ---------------------------------------------------------------------------
// The ClientHello phase (server certificate selection)
// ---------------------------------------------------------------------------

/** What the server learns from the ClientHello, before it picks its options. */
export interface ClientHelloInfo {
  /** The SNI name the client sent, or `null` (none, or an IP address). */
  serverName: string | null;
  /** The ALPN protocols offered, in the client's order (empty without ALPN). */
  alpnProtocols: string[];
  /**
   * The cipher suites offered, IANA names in the client's order, e.g.
   * "TLS_AES_128_GCM_SHA256"; an unknown suite as "0x1234"; GREASE omitted.
   */
  cipherSuites: string[];
  /**
   * The signature schemes offered, IANA names in the client's order, e.g.
   * "ecdsa_secp256r1_sha256", "rsa_pss_rsae_sha256", "ed25519"; an unknown
   * one as "0x1234"; GREASE omitted.
   */
  signatureSchemes: string[];
}

/** Reads a ClientHello, then becomes a server {@linkcode Session}. */
export interface HelloAcceptor {
  /**
   * Feeds bytes from the client; returns how many were consumed: fewer than
   * data.length once the ClientHello is complete (the rest goes to the
   * session, after accept). Throws TlsError on a TLS error (then
   * takeOutgoing() may hold an alert).
   */
  feed(data: Uint8Array): number;
  /** The ClientHello, once complete; null before. */
  hello(): ClientHelloInfo | null;
  /** An alert to send after a failure, or null. */
  takeOutgoing(): Uint8Array | null;
  /**
   * The server session for these options (TypeError for invalid options),
   * every byte read so far carried over. Once; throws TlsError if the TLS
   * options do not fit the ClientHello (then takeOutgoing() may hold an
   * alert).
   */
  accept(options: EngineServerOptions): Session;
  /** Releases the acceptor. Idempotent. */
  free(): void;
}

const acceptorFinalizer = new FinalizationRegistry<
  { engine: Engine; handle: number }
>(({ engine, handle }) => {
  if (!engine.poisoned) {
    try {
      engine.call(() => engine.x.mimic_acceptor_free(handle));
    } catch {
      // Poisoned: nothing to free.
    }
  }
});

class EngineAcceptor implements HelloAcceptor {
  readonly #engine: Engine;
  readonly #handle: number;
  #freed = false;

  constructor(engine: Engine, handle: number) {
    this.#engine = engine;
    this.#handle = handle;
    acceptorFinalizer.register(this, { engine, handle }, this);
  }

  #check(): Engine {
    if (this.#freed) throw new TlsError("Closed", "the acceptor was freed");
    if (this.#engine.poisoned) {
      throw engineFailure(undefined, this.#engine.panicMessage);
    }
    return this.#engine;
  }

  feed(data: Uint8Array): number {
    const e = this.#check();
    let total = 0;
    while (total < data.length) {
      const n = Math.min(data.length - total, SCRATCH_SIZE);
      e.mem().set(data.subarray(total, total + n), e.scratch);
      const r = e.call(() =>
        e.x.mimic_acceptor_feed(this.#handle, e.scratch, n)
      );
      if (r < 0) throw e.error(r);
      total += r;
      if (r < n) break;
    }
    return total;
  }

  hello(): ClientHelloInfo | null {
    const e = this.#check();
    const len = e.call(() => e.x.mimic_acceptor_hello(this.#handle));
    if (len < 0) throw e.error(len);
    if (len === 0) return null;
    const ptr = e.call(() => e.x.mimic_result_ptr()) >>> 0;
    const bytes = e.mem().slice(ptr, ptr + len);
    const view = new DataView(bytes.buffer);
    let off = 0;
    const str = (): string | null => {
      const n = view.getUint32(off, true);
      off += 4;
      if (n === 0xffffffff) return null;
      const v = decoder.decode(bytes.subarray(off, off + n));
      off += n;
      return v;
    };
    const list = (): string[] => {
      const count = view.getUint32(off, true);
      off += 4;
      const out: string[] = [];
      for (let i = 0; i < count; i++) out.push(str() ?? "");
      return out;
    };
    const serverName = str();
    const alpnProtocols = list();
    const cipherSuites = list();
    const signatureSchemes = list();
    return { serverName, alpnProtocols, cipherSuites, signatureSchemes };
  }

  takeOutgoing(): Uint8Array | null {
    const e = this.#check();
    const r = e.call(() =>
      e.x.mimic_acceptor_take(this.#handle, e.scratch, SCRATCH_SIZE)
    );
    if (r <= 0) return null;
    return e.mem().slice(e.scratch, e.scratch + r);
  }

  accept(options: EngineServerOptions): Session {
    const e = this.#check();
    const [key, encoded] = encodeServer(options);
    const config = e.config("server", key, encoded);
    const h = e.call(() => e.x.mimic_acceptor_accept(this.#handle, config));
    if (h < 0) throw e.error(h);
    return new EngineSession(e, h);
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    acceptorFinalizer.unregister(this);
    const e = this.#engine;
    if (e.poisoned) return;
    try {
      e.call(() => e.x.mimic_acceptor_free(this.#handle));
    } catch {
      // The instance is poisoned now; there is nothing left to free.
    }
  }
}

/**
 * Loads the engine lazily and returns a new acceptor waiting for a
 * ClientHello.
 */
export async function helloAcceptor(): Promise<HelloAcceptor> {
  return await withEngine((e) => {
    const h = e.call(() => e.x.mimic_acceptor_new());
    if (h <= 0) throw e.error(h);
    return new EngineAcceptor(e, h);
  });
}

/**
 * Testing only: makes the current engine instance trap, poisoning it and its
 * sessions. No-op when no engine is loaded.
 */
export function _trapEngineForTesting(): void {
  const e = currentEngine;
  if (e === undefined || e.poisoned) return;
  try {
    e.call(() => e.x.mimic_debug_trap());
  } catch {
    // Expected: the instance is now poisoned.
  }
}

/** Memory statistics of the current engine instance (testing, measurements). */
export interface EngineStats {
  /** Bytes currently allocated on the engine's heap. */
  heapBytes: number;
  /** Size of the engine's linear memory in bytes. */
  memoryBytes: number;
}

/** Testing only: memory statistics of the current engine, or null if none. */
export function _engineStatsForTesting(): EngineStats | null {
  const e = currentEngine;
  if (e === undefined || e.poisoned) return null;
  return {
    heapBytes: e.call(() => e.x.mimic_heap_bytes()) >>> 0,
    memoryBytes: e.x.memory.buffer.byteLength,
  };
}

/**
 * Testing only: runs the engine's self-test of its SIMD ChaCha20-Poly1305
 * against ring's (random keys, nonces, AADs, every length to 1100 bytes and
 * record sizes). Resolves to 0 when they agree, else the failing case.
 */
export async function _engineSelfTestForTesting(): Promise<number> {
  const e = await getEngine();
  return e.call(() => e.x.mimic_selftest());
}
