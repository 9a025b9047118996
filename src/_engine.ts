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

import {
  HOST_AEAD_ALGS,
  type HostAead,
  loadHostAead,
  noHostAeadImports,
  PREFER_AES,
} from "./_host_aead.ts";
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

/** A TLS version the engine speaks. */
export type TlsVersion = "TLSv1.2" | "TLSv1.3";

/** Options shared by client and server sessions (issue 9). */
export interface EngineCommonOptions {
  /**
   * Cipher suites (IANA names), most preferred first; default: the engine's
   * order (see {@linkcode CIPHER_SUITES}).
   */
  cipherSuites?: string[];
  /** Lowest version allowed; default "TLSv1.2". */
  minVersion?: TlsVersion;
  /** Highest version allowed; default "TLSv1.3". */
  maxVersion?: TlsVersion;
  /**
   * Key exchange groups (IANA names, case-insensitive), most preferred
   * first; default: {@linkcode KEY_EXCHANGE_GROUPS}.
   */
  keyExchangeGroups?: string[];
  /** Receives the session's secrets as NSS key log lines (SSLKEYLOGFILE). */
  keyLog?: (line: string) => void;
}

/** Options of a client session. */
export interface EngineClientOptions extends EngineCommonOptions {
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
  /** Keeps and offers session tickets (default true). */
  resumption?: boolean;
  /** Encrypted Client Hello with this ECHConfigList (TLS 1.3 only; required). */
  echConfigList?: Uint8Array;
  /** @internal Testing only: restrict to TLS 1.2. */
  _tls12Only?: boolean;
  /**
   * @internal Testing and benchmarks: false for the engine's own ciphers
   * only, true for the host AEAD where it passed its self-test. Default:
   * true (see `_useHostAeadForTesting`).
   */
  _hostAead?: boolean;
}

/** Options of a server session. */
export interface EngineServerOptions extends EngineCommonOptions {
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
  /** @internal As {@linkcode EngineClientOptions._hostAead}. */
  _hostAead?: boolean;
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
  /** The session was resumed (a ticket or a session ID). */
  resumed: boolean;
  /** The server asked for another key share (HelloRetryRequest). */
  helloRetryRequest: boolean;
  /** IANA name of the key exchange group agreed, or null (TLS 1.2 resumption). */
  keyExchangeGroup: string | null;
}

/**
 * The engine's status after the last call on a session: what the pump
 * needs to decide its next step, without guessing.
 */
export interface SessionStatus {
  /** Decrypted bytes ready to `read()`. */
  plaintext: number;
  /** TLS bytes wait in `takeOutgoing()` (records, an alert, close_notify). */
  tlsToSend: boolean;
  /** The handshake is not complete yet. */
  handshaking: boolean;
  /** The peer's close_notify arrived: after the plaintext, end of flow. */
  peerClosed: boolean;
  /** `feedEof()` was called. */
  transportEnded: boolean;
  /** The session failed: every call throws its error again. */
  failed: boolean;
  /** close_notify was queued. */
  notified: boolean;
}

/**
 * One TLS connection inside the engine, driven sans-IO. The engine keeps
 * the policy: after a failure every call throws the same `TlsError` (one
 * code per failure, whichever call meets it), and after `feedEof()` a read
 * without the peer's close_notify throws `"UnexpectedEof"`.
 */
export interface Session {
  /**
   * Hands TLS bytes received from the peer to the engine and processes them.
   * Returns how many bytes were consumed (fewer than data.length, possibly 0,
   * when the engine's plaintext buffer is full: read() first, then feed the
   * rest). Throws TlsError on a TLS error; after a throw, takeOutgoing() may
   * still hold an alert to send to the peer (`status.tlsToSend`).
   */
  feed(data: Uint8Array): number;
  /**
   * Tells the engine the transport ended (EOF). Throws TlsError
   * "UnexpectedEof" during the handshake; afterwards read() throws it
   * unless close_notify was received.
   */
  feedEof(): void;
  /** TLS bytes the engine wants sent to the peer (a fresh copy), or null when none. */
  takeOutgoing(): Uint8Array | null;
  /**
   * Copies TLS bytes the engine wants sent into `buf` (from its start);
   * returns the count, 0 when none. Call again while `status.tlsToSend`.
   */
  takeOutgoingInto(buf: Uint8Array): number;
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
  /** The status after the last call (updated in place). */
  readonly status: Readonly<SessionStatus>;
  /** True until the handshake completed. */
  readonly isHandshaking: boolean;
  /** True when takeOutgoing() has bytes. */
  readonly wantsWrite: boolean;
  /** Valid once the handshake completed. */
  handshakeInfo(): HandshakeInfo;
  /**
   * Keying material (RFC 5705, RFC 8446 section 7.5), once the handshake
   * completed. RangeError for a length outside 1..16384 (or beyond what the
   * TLS 1.3 suite's hash gives), TypeError for a label TLS reserves.
   */
  exportKeyingMaterial(
    length: number,
    label: string,
    context?: Uint8Array,
  ): Uint8Array;
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
  mimic_status_ptr(): number;
  mimic_abi(i: number): number;
  mimic_conn_info(handle: number): number;
  mimic_conn_export(
    handle: number,
    length: number,
    labelPtr: number,
    labelLen: number,
    ctxPtr: number,
    ctxLen: number,
    hasCtx: number,
  ): number;
  mimic_keylog_take(): number;
  mimic_selftest(): number;
  mimic_host_aead_selftest(): number;
  mimic_set_host_aead(mask: number): void;
  mimic_acceptor_new(): number;
  mimic_acceptor_free(handle: number): void;
  mimic_acceptor_feed(handle: number, ptr: number, len: number): number;
  mimic_acceptor_take(handle: number, ptr: number, cap: number): number;
  mimic_acceptor_hello(handle: number): number;
  mimic_acceptor_accept(handle: number, config: number): number;
}

// The constants shared with the engine. Their source of truth is
// wasm/src/abi.rs: the engine's `mimic_abi(i)` returns them in the order of
// `ENGINE_ABI` below, and `checkAbi` compares every one when the engine is
// loaded (tests/engine_abi_test.ts compares the three).

/** Status codes of the engine's exports (-1: TLS error, see `error`). */
const ERR_TLS = -1;
const ERR_OPTIONS = -2;
const READ_CLOSED = -3;

/** Status flags of the engine's status block (word 2). */
const STATUS_HANDSHAKING = 1;
const STATUS_PEER_CLOSED = 2;
const STATUS_TRANSPORT_ENDED = 4;
const STATUS_FAILED = 8;
const STATUS_NOTIFIED = 16;
const STATUS_WANTS_READ = 32;

/** Option tags (encoding in wasm/src/options.rs). */
const TAG_CA = 1;
const TAG_ALPN = 2;
const TAG_CERT = 3;
const TAG_KEY = 4;
const TAG_INSECURE = 5;
const TAG_CLIENT_CA = 6;
const TAG_TLS12_ONLY = 7;
const TAG_CIPHER_SUITE = 8;
const TAG_MIN_VERSION = 9;
const TAG_MAX_VERSION = 10;
const TAG_KX_GROUP = 11;
const TAG_KEY_LOG = 12;
const TAG_NO_RESUMPTION = 13;
const TAG_ECH_CONFIG_LIST = 14;
const TAG_CLIENT_AUTH_OPTIONAL = 16;

/**
 * Internal: every constant this binding shares with the engine, as
 * `[name, value]` in the order of the engine's `mimic_abi(i)`
 * (`TABLE` in wasm/src/abi.rs).
 */
export const ENGINE_ABI: readonly (readonly [string, number])[] = [
  ["ERR_TLS", ERR_TLS],
  ["ERR_OPTIONS", ERR_OPTIONS],
  ["READ_CLOSED", READ_CLOSED],
  ["STATUS_HANDSHAKING", STATUS_HANDSHAKING],
  ["STATUS_PEER_CLOSED", STATUS_PEER_CLOSED],
  ["STATUS_TRANSPORT_ENDED", STATUS_TRANSPORT_ENDED],
  ["STATUS_FAILED", STATUS_FAILED],
  ["STATUS_NOTIFIED", STATUS_NOTIFIED],
  ["STATUS_WANTS_READ", STATUS_WANTS_READ],
  ["TAG_CA", TAG_CA],
  ["TAG_ALPN", TAG_ALPN],
  ["TAG_CERT", TAG_CERT],
  ["TAG_KEY", TAG_KEY],
  ["TAG_INSECURE", TAG_INSECURE],
  ["TAG_CLIENT_CA", TAG_CLIENT_CA],
  ["TAG_TLS12_ONLY", TAG_TLS12_ONLY],
  ["TAG_CIPHER_SUITE", TAG_CIPHER_SUITE],
  ["TAG_MIN_VERSION", TAG_MIN_VERSION],
  ["TAG_MAX_VERSION", TAG_MAX_VERSION],
  ["TAG_KX_GROUP", TAG_KX_GROUP],
  ["TAG_KEY_LOG", TAG_KEY_LOG],
  ["TAG_NO_RESUMPTION", TAG_NO_RESUMPTION],
  ["TAG_ECH_CONFIG_LIST", TAG_ECH_CONFIG_LIST],
  ["TAG_CLIENT_AUTH_OPTIONAL", TAG_CLIENT_AUTH_OPTIONAL],
];

/** What `mimic_abi(i)` returns past the end of its table (`i32::MIN`). */
export const ENGINE_ABI_END = -0x80000000;

/** Size of the per-instance scratch buffer used to pass bytes in and out. */
const SCRATCH_SIZE = 128 * 1024;
/** Config cache entries per instance (key: JSON of the options). */
const CONFIG_CACHE_SIZE = 64;
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
  readonly #statusPtr: number;
  #u8: Uint8Array;
  #status: Uint32Array;
  readonly #configs = new Map<string, number>();

  constructor(instance: WebAssembly.Instance) {
    this.x = instance.exports as unknown as Exports;
    this.#u8 = new Uint8Array(this.x.memory.buffer);
    this.call(() => this.x.mimic_init());
    this.scratch = this.call(() => this.x.mimic_alloc(SCRATCH_SIZE)) >>> 0;
    if (this.scratch === 0) throw engineFailure();
    this.#statusPtr = this.x.mimic_status_ptr() >>> 0;
    this.#status = new Uint32Array(this.x.memory.buffer, this.#statusPtr, 3);
  }

  /** The status block written by the last connection call. */
  status(): Uint32Array {
    if (this.#status.byteLength === 0) {
      this.#status = new Uint32Array(this.x.memory.buffer, this.#statusPtr, 3);
    }
    return this.#status;
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

/**
 * Which record protection an engine instance uses: "host" (the host AEAD
 * where the self-test passed, else the engine's own) or "wasm" (the
 * engine's own ciphers only). The AEAD switch lives inside an instance, so
 * each mode has its own.
 */
type EngineMode = "host" | "wasm";

interface Slot {
  promise?: Promise<Engine>;
  engine?: Engine;
  info?: EngineInfo;
}

const slots: Record<EngineMode, Slot> = { host: {}, wasm: {} };

let defaultMode: EngineMode = "host";

function modeOf(hostAead: boolean | undefined): EngineMode {
  return hostAead === undefined ? defaultMode : hostAead ? "host" : "wasm";
}

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

/** What the engine's record protection runs on (see {@linkcode engineInfo}). */
export interface EngineInfo {
  /** The host AEAD in use, e.g. "node:crypto (Deno 2.9.6)", or null: the engine's own ciphers only. */
  hostAead: string | null;
  /** The algorithms the host AEAD does (its self-test passed), e.g. ["aes-128-gcm"]. */
  hostAlgorithms: string[];
  /** The self-test's verdict: "passed", "not run" (no host AEAD), or what disagreed. */
  selfTest: string;
  /** The default order of the TLS 1.3 suites, most preferred first. */
  suiteOrder: string[];
}

const SUITES_13 = {
  aes128: "TLS_AES_128_GCM_SHA256",
  aes256: "TLS_AES_256_GCM_SHA384",
  chacha: "TLS_CHACHA20_POLY1305_SHA256",
};

/**
 * Internal: checks every constant of `ENGINE_ABI` against the engine's
 * `mimic_abi(i)`, and that the engine has no more; an `EngineFailure`
 * TlsError names the first that differs.
 */
export function checkAbi(x: { mimic_abi(i: number): number }): void {
  const mismatch = (what: string): TlsError =>
    new TlsError(
      "EngineFailure",
      `the TLS engine does not match its binding: ${what}`,
    );
  ENGINE_ABI.forEach(([name, value], i) => {
    const got = x.mimic_abi(i);
    if (got === ENGINE_ABI_END) {
      throw mismatch(`it has no ${name} (ABI entry ${i})`);
    }
    if (got !== value) {
      throw mismatch(`${name} (ABI entry ${i}) is ${got}, expected ${value}`);
    }
  });
  if (x.mimic_abi(ENGINE_ABI.length) !== ENGINE_ABI_END) {
    throw mismatch(
      `it has more than the ${ENGINE_ABI.length} ABI entries this binding knows`,
    );
  }
}

/**
 * Runs the host AEAD self-test and enables what passed; a disagreement
 * disables that algorithm's host path and says so (once, on the console).
 */
function enableHostAead(x: Exports, host: HostAead | null): EngineInfo {
  if (host === null) {
    return {
      hostAead: null,
      hostAlgorithms: [],
      selfTest: "not run",
      suiteOrder: [
        SUITES_13.chacha,
        SUITES_13.aes128,
        SUITES_13.aes256,
      ],
    };
  }
  const passed = x.mimic_host_aead_selftest() & host.mask;
  const failed = Object.entries(HOST_AEAD_ALGS)
    .filter(([alg]) =>
      (host.mask & (1 << Number(alg))) && !(passed & (1 << Number(alg)))
    )
    .map(([, name]) => name);
  const aesOk = (passed & 0b110) === 0b110;
  const preferAes = host.preferAes && aesOk;
  x.mimic_set_host_aead(passed | (preferAes ? PREFER_AES : 0));
  const selfTest = failed.length === 0
    ? "passed"
    : `the host's ${
      failed.join(", ")
    } disagreed with the known answers: disabled`;
  if (failed.length > 0 && !warnedSelfTest) {
    warnedSelfTest = true;
    console.warn(`mimic TLS: ${host.name}: ${selfTest}`);
  }
  return {
    hostAead: passed === 0 ? null : host.name,
    hostAlgorithms: Object.entries(HOST_AEAD_ALGS)
      .filter(([alg]) => passed & (1 << Number(alg)))
      .map(([, name]) => name),
    selfTest,
    suiteOrder: preferAes
      ? [SUITES_13.aes128, SUITES_13.aes256, SUITES_13.chacha]
      : [SUITES_13.chacha, SUITES_13.aes128, SUITES_13.aes256],
  };
}

let warnedSelfTest = false;

async function instantiate(mode: EngineMode): Promise<Engine> {
  modulePromise ??= wasmBytes().then((bytes) => WebAssembly.compile(bytes));
  let module: WebAssembly.Module;
  try {
    module = await modulePromise;
  } catch (e) {
    modulePromise = undefined;
    throw engineFailure(e);
  }
  const host = await loadHostAead(mode === "wasm");
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
      ...(host === null
        ? noHostAeadImports()
        : host.imports(() => bound.memory!)),
    },
  };
  const instance = await WebAssembly.instantiate(module, imports);
  const x = instance.exports as unknown as Exports;
  bound.memory = x.memory;
  checkAbi(x);
  bound.engine = new Engine(instance);
  slots[mode].info = enableHostAead(x, host);
  return bound.engine;
}

/**
 * What the TLS engine's record protection runs on: the host AEAD (and its
 * self-test's verdict) or the engine's own ciphers, and the default suite
 * order. Loads the engine if it is not loaded yet.
 *
 * @example Where TLS runs on this runtime
 * ```ts
 * import { engineInfo } from "@mimic/mimic/tls";
 * import assert from "node:assert/strict";
 *
 * const info = await engineInfo();
 * // On Deno: "node:crypto (Deno 2.9.6)", ChaCha20-Poly1305 first.
 * assert.ok(info.hostAead === null || info.hostAead.startsWith("node:crypto"));
 * assert.equal(info.suiteOrder.length, 3);
 * ```
 *
 * @returns The engine's information.
 */
export async function engineInfo(): Promise<EngineInfo> {
  await getEngine(defaultMode);
  const info = slots[defaultMode].info!;
  return { ...info, hostAlgorithms: [...info.hostAlgorithms] };
}

/**
 * Testing and benchmarks only: whether sessions made from now on without a
 * `_hostAead` option use the host AEAD (default true).
 */
export function _useHostAeadForTesting(on: boolean): void {
  defaultMode = on ? "host" : "wasm";
}

/**
 * Testing only: forgets the engine instances (sessions on them keep
 * working), so the next session loads a new one and runs its self-test.
 */
export function _resetEnginesForTesting(): void {
  slots.host = {};
  slots.wasm = {};
}

/** The healthy engine instance of `mode`, created on first use. */
async function getEngine(mode: EngineMode): Promise<Engine> {
  const slot = slots[mode];
  for (;;) {
    if (slot.engine?.poisoned) {
      slot.engine = undefined;
      slot.promise = undefined;
    }
    slot.promise ??= instantiate(mode).then(
      (e) => (slot.engine = e),
      (e) => {
        slot.promise = undefined;
        throw e;
      },
    );
    const engine = await slot.promise;
    if (!engine.poisoned) return engine;
  }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * The cipher suites of the engine (IANA names), in its default order of
 * preference (ChaCha20-Poly1305 first: fastest in wasm). Must match
 * `wasm/src/options.rs` (`default_provider`).
 */
export const CIPHER_SUITES: readonly string[] = [
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
];

/**
 * The key exchange groups of the engine (IANA names), in its default order
 * of preference: the post-quantum hybrid first (TLS 1.3 only).
 */
export const KEY_EXCHANGE_GROUPS: readonly string[] = [
  "X25519MLKEM768",
  "x25519",
  "secp256r1",
  "secp384r1",
];

const TLS13_SUITES = new Set([
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
]);

/** Largest exporter output (the engine refuses more). */
const EXPORT_LIMIT = 16 * 1024;
/** Exporter labels TLS uses itself (RFC 5705 section 4; RFC 7627). */
const RESERVED_LABELS = new Set([
  "client finished",
  "server finished",
  "master secret",
  "extended master secret",
  "key expansion",
]);

class OptionsWriter {
  #parts: Uint8Array[] = [];
  #len = 0;
  add(tag: number, value?: string | Uint8Array): void {
    const bytes = value === undefined
      ? new Uint8Array()
      : typeof value === "string"
      ? encoder.encode(value)
      : value.slice();
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

function checkVersion(name: string, v: unknown): TlsVersion | undefined {
  if (v === undefined) return undefined;
  if (v !== "TLSv1.2" && v !== "TLSv1.3") {
    throw new TypeError(
      `${name} must be "TLSv1.2" or "TLSv1.3", got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/**
 * Checks and encodes the options shared by both sides (TypeError or
 * RangeError before any I/O); returns their part of the cache key.
 */
function encodeCommon(o: EngineCommonOptions, w: OptionsWriter): unknown[] {
  const suites = checkStrings("cipherSuites", o.cipherSuites);
  for (const s of suites ?? []) {
    if (!CIPHER_SUITES.includes(s)) {
      throw new TypeError(
        `Unknown cipher suite ${JSON.stringify(s)}: expected one of ${
          CIPHER_SUITES.join(", ")
        }`,
      );
    }
  }
  if (suites !== undefined && suites.length === 0) {
    throw new TypeError("cipherSuites must name at least one cipher suite");
  }
  const groupsIn = checkStrings("keyExchangeGroups", o.keyExchangeGroups);
  const groups = groupsIn?.map((g) => {
    const known = KEY_EXCHANGE_GROUPS.find((k) =>
      k.toLowerCase() === g.toLowerCase()
    );
    if (known === undefined) {
      throw new TypeError(
        `Unknown key exchange group ${JSON.stringify(g)}: expected one of ${
          KEY_EXCHANGE_GROUPS.join(", ")
        }`,
      );
    }
    return known;
  });
  if (groups !== undefined && groups.length === 0) {
    throw new TypeError("keyExchangeGroups must name at least one group");
  }
  const min = checkVersion("minVersion", o.minVersion);
  const max = checkVersion("maxVersion", o.maxVersion);
  if (min === "TLSv1.3" && max === "TLSv1.2") {
    throw new RangeError(
      "minVersion TLSv1.3 is above maxVersion TLSv1.2",
    );
  }
  const allows13 = max !== "TLSv1.2";
  const allows12 = min !== "TLSv1.3";
  if (
    suites !== undefined &&
    !suites.some((s) => TLS13_SUITES.has(s) ? allows13 : allows12)
  ) {
    const allowed = [allows12 && "TLSv1.2", allows13 && "TLSv1.3"]
      .filter(Boolean).join(" and ");
    throw new TypeError(
      `cipherSuites leaves no cipher suite for ${allowed}: ${
        suites.join(", ")
      }`,
    );
  }
  if (
    groups !== undefined && !allows13 &&
    groups.every((g) => g === "X25519MLKEM768")
  ) {
    throw new TypeError(
      "keyExchangeGroups leaves no group for TLSv1.2: X25519MLKEM768 is TLS 1.3 only",
    );
  }
  if (o.keyLog !== undefined && typeof o.keyLog !== "function") {
    throw new TypeError("keyLog must be a function");
  }
  const keyLog = o.keyLog !== undefined;
  for (const s of suites ?? []) w.add(TAG_CIPHER_SUITE, s);
  if (min !== undefined) w.add(TAG_MIN_VERSION, min);
  if (max !== undefined) w.add(TAG_MAX_VERSION, max);
  for (const g of groups ?? []) w.add(TAG_KX_GROUP, g);
  if (keyLog) w.add(TAG_KEY_LOG);
  return [suites, min, max, groups, keyLog];
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
  if (o.resumption !== undefined && typeof o.resumption !== "boolean") {
    throw new TypeError("resumption must be a boolean");
  }
  const noResumption = o.resumption === false;
  const ech = o.echConfigList;
  if (ech !== undefined) {
    if (!(ech instanceof Uint8Array) || ech.length === 0) {
      throw new TypeError("echConfigList must be a non-empty Uint8Array");
    }
    if (o.maxVersion === "TLSv1.2") {
      throw new TypeError(
        "echConfigList needs TLS 1.3, but maxVersion is TLSv1.2",
      );
    }
  }
  const w = new OptionsWriter();
  for (const c of caCerts ?? []) w.add(TAG_CA, c);
  for (const p of alpn ?? []) w.add(TAG_ALPN, p);
  if (cert !== undefined) w.add(TAG_CERT, cert);
  if (key !== undefined) w.add(TAG_KEY, key);
  if (insecure) w.add(TAG_INSECURE);
  if (tls12) w.add(TAG_TLS12_ONLY);
  const common = encodeCommon(o, w);
  if (noResumption) w.add(TAG_NO_RESUMPTION);
  if (ech !== undefined) w.add(TAG_ECH_CONFIG_LIST, ech);
  const cacheKey = JSON.stringify([
    ech === undefined ? null : Array.from(ech),
    caCerts,
    alpn,
    cert,
    key,
    insecure,
    tls12,
    common,
    noResumption,
  ]);
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
  const common = encodeCommon(o, w);
  if (optional) w.add(TAG_CLIENT_AUTH_OPTIONAL);
  const cacheKey = JSON.stringify([
    cert,
    key,
    alpn,
    clientCaCerts,
    tls12,
    common,
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

/** Calls a user's key log callback; its exception is reported, not thrown. */
function deliverKeyLog(keyLog: (line: string) => void, line: string): void {
  try {
    keyLog(line);
  } catch (error) {
    const report = (globalThis as { reportError?: (e: unknown) => void })
      .reportError;
    if (typeof report === "function") {
      report(error);
    } else {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

/** Delivers the key log lines the engine buffered during the last call. */
function drainKeyLog(
  e: Engine,
  keyLog: ((line: string) => void) | undefined,
): void {
  if (keyLog === undefined || e.poisoned) return;
  const x = e.x;
  const len = e.call(() => x.mimic_keylog_take());
  if (len <= 0) return;
  const ptr = e.call(() => x.mimic_result_ptr()) >>> 0;
  const text = decoder.decode(e.mem().subarray(ptr, ptr + len));
  for (const line of text.split("\n")) {
    if (line !== "") deliverKeyLog(keyLog, line + "\n");
  }
}

class EngineSession implements Session {
  readonly #engine: Engine;
  readonly #handle: number;
  readonly #keyLog: ((line: string) => void) | undefined;
  #freed = false;
  readonly status: SessionStatus = {
    plaintext: 0,
    tlsToSend: true,
    handshaking: true,
    peerClosed: false,
    transportEnded: false,
    failed: false,
    notified: false,
  };

  constructor(
    engine: Engine,
    handle: number,
    keyLog?: (line: string) => void,
  ) {
    this.#engine = engine;
    this.#handle = handle;
    this.#keyLog = keyLog;
    finalizer.register(this, { engine, handle }, this);
    this.#drainKeyLog();
  }

  /**
   * Delivers the key log lines the engine buffered during the call just made
   * (rustls logs synchronously, inside the call that derives a secret, so
   * they are this session's). Runs after every call that processes TLS.
   */
  #drainKeyLog(): void {
    drainKeyLog(this.#engine, this.#keyLog);
  }

  #check(): Engine {
    if (this.#freed) throw new TlsError("Closed", "the TLS session was freed");
    if (this.#engine.poisoned) {
      throw engineFailure(undefined, this.#engine.panicMessage);
    }
    return this.#engine;
  }

  /** Copies the engine's status block into `status`; returns `r`. */
  #done(e: Engine, r: number): number {
    const [plaintext, out, flags] = e.status();
    const st = this.status;
    st.plaintext = plaintext;
    st.tlsToSend = out > 0;
    st.handshaking = (flags & STATUS_HANDSHAKING) !== 0;
    st.peerClosed = (flags & STATUS_PEER_CLOSED) !== 0;
    st.transportEnded = (flags & STATUS_TRANSPORT_ENDED) !== 0;
    st.failed = (flags & STATUS_FAILED) !== 0;
    st.notified = (flags & STATUS_NOTIFIED) !== 0;
    return r;
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
      const r = this.#done(e, e.call(() => x[op](h, e.scratch, n)));
      if (r < 0) {
        const error = e.error(r);
        this.#drainKeyLog();
        throw error;
      }
      this.#drainKeyLog();
      total += r;
      if (r < n) break;
    }
    return total;
  }

  feedEof(): void {
    const e = this.#check();
    const r = this.#done(
      e,
      e.call(() => e.x.mimic_conn_feed(this.#handle, e.scratch, 0)),
    );
    if (r < 0) throw e.error(r);
    this.#drainKeyLog();
  }

  takeOutgoingInto(buf: Uint8Array): number {
    const e = this.#check();
    const cap = Math.min(buf.length, SCRATCH_SIZE);
    const r = this.#done(
      e,
      e.call(() => e.x.mimic_conn_take(this.#handle, e.scratch, cap)),
    );
    if (r < 0) throw e.error(r);
    if (r > 0) buf.set(e.mem().subarray(e.scratch, e.scratch + r));
    return r;
  }

  takeOutgoing(): Uint8Array | null {
    const e = this.#check();
    const x = e.x;
    const h = this.#handle;
    let out: Uint8Array | null = null;
    for (;;) {
      const r = this.#done(
        e,
        e.call(() => x.mimic_conn_take(h, e.scratch, SCRATCH_SIZE)),
      );
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
    const r = this.#done(
      e,
      e.call(() => e.x.mimic_conn_read(this.#handle, e.scratch, cap)),
    );
    if (r > 0) {
      buf.set(e.mem().subarray(e.scratch, e.scratch + r));
      return r;
    }
    if (r === 0) return 0;
    if (r === READ_CLOSED) return null;
    throw e.error(r);
  }

  write(data: Uint8Array): number {
    return this.#push(data, "mimic_conn_write");
  }

  closeNotify(): void {
    const e = this.#check();
    e.call(() => e.x.mimic_conn_close_notify(this.#handle));
    this.#done(e, 0);
  }

  get isHandshaking(): boolean {
    return this.status.handshaking;
  }

  get wantsWrite(): boolean {
    return this.status.tlsToSend;
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
    // Appended fields: handshake kind (0 full, 1 HelloRetryRequest, 2
    // resumed), key exchange group.
    const kind = view.getUint32(off, true);
    off += 4;
    const keyExchangeGroup = str();
    return {
      alpnProtocol,
      protocol,
      cipherSuite,
      serverName,
      peerCertificates,
      resumed: kind === 2,
      helloRetryRequest: kind === 1,
      keyExchangeGroup,
    };
  }

  exportKeyingMaterial(
    length: number,
    label: string,
    context?: Uint8Array,
  ): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 1 || length > EXPORT_LIMIT) {
      throw new RangeError(
        `Cannot export keying material: length must be an integer from 1 to ${EXPORT_LIMIT}, got ${length}`,
      );
    }
    if (typeof label !== "string") {
      throw new TypeError(
        "Cannot export keying material: label must be a string",
      );
    }
    if (RESERVED_LABELS.has(label)) {
      throw new TypeError(
        `Cannot export keying material: the label ${
          JSON.stringify(label)
        } is reserved by TLS`,
      );
    }
    const labelBytes = encoder.encode(label);
    if (labelBytes.length < 1 || labelBytes.length > 249) {
      throw new RangeError(
        "Cannot export keying material: label must be 1 to 249 bytes long",
      );
    }
    if (context !== undefined && !(context instanceof Uint8Array)) {
      throw new TypeError(
        "Cannot export keying material: context must be a Uint8Array",
      );
    }
    if (context !== undefined && context.length > 0xffff) {
      throw new RangeError(
        "Cannot export keying material: context must be at most 65535 bytes long",
      );
    }
    const info = this.handshakeInfo();
    if (info.protocol === "TLSv1.3") {
      // HKDF-Expand gives at most 255 hash lengths.
      const limit = 255 * (info.cipherSuite.endsWith("SHA384") ? 48 : 32);
      if (length > limit) {
        throw new RangeError(
          `Cannot export keying material: ${info.cipherSuite} exports at most ${limit} bytes, asked for ${length}`,
        );
      }
    }
    const e = this.#check();
    const x = e.x;
    const ctx = context ?? new Uint8Array(0);
    const mem = e.mem();
    mem.set(labelBytes, e.scratch);
    const ctxPtr = e.scratch + labelBytes.length;
    mem.set(ctx, ctxPtr);
    const r = e.call(() =>
      x.mimic_conn_export(
        this.#handle,
        length,
        e.scratch,
        labelBytes.length,
        ctxPtr,
        ctx.length,
        context === undefined ? 0 : 1,
      )
    );
    if (r < 0) throw e.error(r);
    const ptr = e.call(() => x.mimic_result_ptr()) >>> 0;
    return e.mem().slice(ptr, ptr + r);
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
async function withEngine<T>(
  mode: EngineMode,
  f: (e: Engine) => T,
): Promise<T> {
  const engine = await getEngine(mode);
  try {
    return f(engine);
  } catch (e) {
    if (e instanceof TlsError && e.code === "EngineFailure") {
      return f(await getEngine(mode));
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
    return await withEngine(modeOf(o._hostAead), (e) => {
      const config = e.config("client", key, encoded);
      const h = e.withBytes(
        host,
        (ptr, len) => e.call(() => e.x.mimic_client_new(config, ptr, len)),
      );
      if (h < 0) throw e.error(h);
      return new EngineSession(e, h, o.keyLog);
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
    return await withEngine(modeOf(options?._hostAead), (e) => {
      const config = e.config("server", key, encoded);
      const h = e.call(() => e.x.mimic_server_new(config));
      if (h < 0) throw e.error(h);
      return new EngineSession(e, h, options.keyLog);
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
    if (h < 0) {
      // Secrets derived before the failure are this session's.
      const error = e.error(h);
      drainKeyLog(e, options.keyLog);
      throw error;
    }
    return new EngineSession(e, h, options.keyLog);
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
  return await withEngine(defaultMode, (e) => {
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
  const e = slots[defaultMode].engine;
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
  const e = slots[defaultMode].engine;
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
  const e = await getEngine(defaultMode);
  return e.call(() => e.x.mimic_selftest());
}
