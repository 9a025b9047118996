/**
 * The TLS engine fuzzer's core: feeds fresh client and server sessions of
 * src/_engine.ts mutated real records (captured handshakes: TLS 1.3 with
 * each of ChaCha20-Poly1305, AES-128-GCM and AES-256-GCM, X25519MLKEM768,
 * HelloRetryRequest, TLS 1.2 ECDHE suites, mTLS, ALPN, resumption; on the
 * host AEAD and on the engine's own ciphers), random records, records
 * mutated in flight, and post-handshake records (mutated application data,
 * truncated records, clear-text garbage, and records sealed with the peer's
 * real traffic keys from the key log: KeyUpdate-like garbage, alerts, bad
 * inner types, oversized plaintext); also the server's ClientHello
 * acceptor (src/_engine.ts `helloAcceptor`, with a sync or async SNI
 * function) and `acceptTls` with a function over a pipe.
 *
 * Properties checked on every case: it ends in a `TlsError` whose code is
 * one of `TlsErrorCode`, or cleanly, never another exception; a session
 * that threw is `status.failed` and throws the same code from every later
 * feed, read, write and feedEof (the sticky first error); no engine trap
 * (an "EngineFailure" is counted and must be contained); a case on the
 * engine's own ciphers makes no host AEAD call, one on the host AEAD that
 * completes a handshake does; valid records sealed with the harness's keys
 * are read back exactly (the crafted path really reaches the engine). After
 * the run, with every session freed, each engine instance's heap must be
 * back near its level after warm-up.
 *
 * Used by tests/reliability_tls_fuzz_test.ts (bounded) and
 * stress/fuzz_tls.ts (long runs), both through a worker
 * (tests/fuzz/tls_fuzz_worker.ts) so a hang in the engine is caught by a
 * watchdog instead of hanging the run.
 *
 * @module
 */

import {
  _engineStatsForTesting,
  _useHostAeadForTesting,
  CIPHER_SUITES,
  clientSession,
  type EngineClientOptions,
  engineInfo,
  type EngineServerOptions,
  type HelloAcceptor,
  helloAcceptor,
  KEY_EXCHANGE_GROUPS,
  serverSession,
  type Session,
  TlsError,
  type TlsErrorCode,
} from "../../src/_engine.ts";
import { _hostAeadTesting } from "../../src/_host_aead.ts";
import { acceptTls, startTls, type TlsFlow } from "../../src/tls.ts";
import { pipe } from "../../src/pipe.ts";
import { concat, fixture } from "../_helpers.ts";
import { mutateBytes, mutateBytesMany, mutateText } from "./mutate.ts";
import { Prng } from "./prng.ts";
import { secretsOf, Tls13Keys } from "./tls13_records.ts";

/** A client and a server configuration that handshake with each other. */
export interface Setup {
  name: string;
  client: EngineClientOptions;
  server: EngineServerOptions;
  /** Record protection: the host AEAD (node:crypto) or the engine's own. */
  host: boolean;
  /** Capture the second handshake of the client config (a resumption). */
  resume?: boolean;
  /** What the captured handshake must agree (checked at capture). */
  expect: {
    protocol: "TLSv1.2" | "TLSv1.3";
    suite?: string;
    group?: string;
    resumed?: boolean;
    helloRetryRequest?: boolean;
  };
}

const CIPHER_SUITE_NAMES = CIPHER_SUITES;
const GROUP_NAMES = KEY_EXCHANGE_GROUPS;
const CHACHA = "TLS_CHACHA20_POLY1305_SHA256";
const AES128 = "TLS_AES_128_GCM_SHA256";
const AES256 = "TLS_AES_256_GCM_SHA384";
const SHORT: Record<string, string> = {
  [CHACHA]: "chacha",
  [AES128]: "aes128",
  [AES256]: "aes256",
};

function setups(): Setup[] {
  const ca = fixture("ca.pem");
  const ecdsa = {
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
  };
  const rsa = { cert: fixture("rsa.pem"), key: fixture("rsa.key") };
  const client = { cert: fixture("client.pem"), key: fixture("client.key") };
  const trusting = { hostname: "localhost", caCerts: [ca] };
  const out: Setup[] = [];
  const add = (
    name: string,
    host: boolean,
    c: EngineClientOptions,
    s: EngineServerOptions,
    expect: Setup["expect"],
    resume = false,
  ) =>
    out.push({
      name: `${name}-${host ? "host" : "wasm"}`,
      host,
      resume,
      client: { ...c, _hostAead: host },
      server: { ...s, _hostAead: host },
      expect,
    });
  const v13 = "TLSv1.3" as const;
  const v12 = "TLSv1.2" as const;
  add("tls13-ecdsa", true, trusting, ecdsa, { protocol: v13, suite: CHACHA });
  for (const host of [true, false]) {
    for (const suite of [CHACHA, AES128, AES256]) {
      add(
        `tls13-${SHORT[suite]}`,
        host,
        { ...trusting, cipherSuites: [suite] },
        suite === AES256 ? rsa : ecdsa,
        { protocol: v13, suite },
      );
    }
    add(
      "tls13-mlkem",
      host,
      { ...trusting, keyExchangeGroups: ["X25519MLKEM768"] },
      { ...ecdsa, keyExchangeGroups: ["X25519MLKEM768", "x25519"] },
      { protocol: v13, group: "X25519MLKEM768" },
    );
  }
  add(
    "tls13-hrr-aes128",
    true,
    { ...trusting, keyExchangeGroups: ["x25519", "secp384r1"] },
    { ...ecdsa, keyExchangeGroups: ["secp384r1"], cipherSuites: [AES128] },
    { protocol: v13, group: "secp384r1", helloRetryRequest: true },
  );
  add(
    "tls12-rsa-aes128",
    true,
    { ...trusting, maxVersion: v12 },
    { ...rsa, cipherSuites: ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"] },
    { protocol: v12, suite: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" },
  );
  add(
    "tls12-ecdsa-chacha",
    false,
    {
      ...trusting,
      cipherSuites: ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"],
    },
    { ...ecdsa, maxVersion: v12 },
    { protocol: v12, suite: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" },
  );
  add(
    "tls12-ecdsa-aes256",
    true,
    { ...trusting, _tls12Only: true },
    {
      ...ecdsa,
      _tls12Only: true,
      cipherSuites: ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
    },
    { protocol: v12, suite: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" },
  );
  add(
    "tls13-mtls-alpn",
    true,
    { ...trusting, ...client, alpnProtocols: ["h2", "http/1.1"] },
    { ...ecdsa, clientCaCerts: [ca], alpnProtocols: ["http/1.1"] },
    { protocol: v13 },
  );
  add(
    "tls12-ecdsa-mtls",
    false,
    { ...trusting, ...client, _tls12Only: true },
    { ...ecdsa, clientCaCerts: [ca], _tls12Only: true },
    { protocol: v12 },
  );
  add(
    "tls13-resumed",
    true,
    { ...trusting, cipherSuites: [AES256, AES128] },
    ecdsa,
    { protocol: v13, resumed: true },
    true,
  );
  add(
    "tls12-resumed",
    false,
    { ...trusting, maxVersion: v12 },
    rsa,
    { protocol: v12, resumed: true },
    true,
  );
  return out;
}

/** What one side sent during a real exchange, record by record. */
interface Transcript {
  setup: Setup;
  /** Records the client sent (handshake, application data, close_notify). */
  client: Uint8Array[];
  /** Records the server sent. */
  server: Uint8Array[];
}

/** Splits a TLS byte stream into records (a trailing partial one is kept). */
export function records(stream: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < stream.length) {
    const len = off + 5 <= stream.length
      ? (stream[off + 3] << 8) | stream[off + 4]
      : stream.length;
    const end = Math.min(stream.length, off + 5 + len);
    out.push(stream.slice(off, end));
    off = end;
  }
  return out;
}

/** Moves bytes both ways until neither side has more; throws on error. */
function pump(
  c: Session,
  s: Session,
  log?: { client: Uint8Array[]; server: Uint8Array[] },
): void {
  for (let i = 0; i < 200; i++) {
    let moved = false;
    const cs = c.takeOutgoing();
    if (cs !== null) {
      log?.client.push(cs);
      feedAll(s, cs);
      moved = true;
    }
    const sc = s.takeOutgoing();
    if (sc !== null) {
      log?.server.push(sc);
      feedAll(c, sc);
      moved = true;
    }
    if (!moved) return;
  }
  throw new Error("the pump does not settle");
}

const scratch = new Uint8Array(64 * 1024);

/** Feeds all of `data`, draining plaintext when the engine pushes back. */
function feedAll(s: Session, data: Uint8Array): void {
  let off = 0;
  let stuck = 0;
  while (off < data.length) {
    const n = s.feed(data.subarray(off));
    off += n;
    if (n === 0) {
      if (s.read(scratch) === 0 && ++stuck > 2) {
        throw new Error("the engine accepts no bytes and has none to give");
      }
    } else stuck = 0;
  }
}

/** Captures a real client ↔ server exchange, split into records. */
export async function capture(setup: Setup): Promise<Transcript> {
  if (setup.resume) {
    // A first full handshake leaves a ticket (or session ID) in the
    // client's config; the captured one resumes with it.
    const c = await clientSession(setup.client);
    const s = await serverSession(setup.server);
    try {
      pump(c, s);
      c.write(new Uint8Array([1]));
      s.write(new Uint8Array([2]));
      pump(c, s);
      while ((c.read(scratch) ?? 0) > 0) { /* drain */ }
    } finally {
      c.free();
      s.free();
    }
  }
  const c = await clientSession(setup.client);
  const s = await serverSession(setup.server);
  const log = { client: [] as Uint8Array[], server: [] as Uint8Array[] };
  try {
    pump(c, s, log);
    if (c.isHandshaking || s.isHandshaking) {
      throw new Error(`${setup.name}: the handshake did not complete`);
    }
    const info = c.handshakeInfo();
    const e = setup.expect;
    const got = {
      protocol: info.protocol,
      suite: e.suite === undefined ? undefined : info.cipherSuite,
      group: e.group === undefined ? undefined : info.keyExchangeGroup,
      resumed: e.resumed === undefined ? undefined : info.resumed,
      helloRetryRequest: e.helloRetryRequest === undefined
        ? undefined
        : info.helloRetryRequest,
    };
    if (JSON.stringify(got) !== JSON.stringify({ ...got, ...e })) {
      throw new Error(
        `${setup.name}: agreed ${JSON.stringify(got)}, expected ${
          JSON.stringify(e)
        }`,
      );
    }
    c.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    s.write(new Uint8Array(3000).fill(0x61));
    pump(c, s, log);
    c.closeNotify();
    s.closeNotify();
    pump(c, s, log);
  } finally {
    c.free();
    s.free();
  }
  return {
    setup,
    client: records(concat(log.client)),
    server: records(concat(log.server)),
  };
}

/** The codes of `TlsErrorCode` (a TlsError with another code is a bug). */
/** Exhaustive: a code added to the union fails the type check here. */
const CODE_TABLE: Record<TlsErrorCode, true> = {
  UnknownIssuer: true,
  NotValidForName: true,
  Expired: true,
  NotValidYet: true,
  InvalidPurpose: true,
  BadSignature: true,
  BadCertificate: true,
  NoCertificatesPresented: true,
  AlertReceived: true,
  NoApplicationProtocol: true,
  PeerIncompatible: true,
  BadInput: true,
  ProtocolViolation: true,
  UnexpectedEof: true,
  HandshakeTimeout: true,
  EngineFailure: true,
  Closed: true,
  TlsFailure: true,
};
const CODES: ReadonlySet<string> = new Set(Object.keys(CODE_TABLE));

/** Heap and memory of one engine instance. */
export interface HeapStats {
  /** After the captures and a warm-up pass (caches filled). */
  heapBytesStart: number;
  /**
   * Halfway through the run: the engine's bounded caches (rustls's session
   * caches, the configs) fill early, so a leak shows as growth from here.
   */
  heapBytesMid: number;
  /** After the run, every session freed (during it: the latest sample). */
  heapBytesEnd: number;
  /** Largest linear memory seen. */
  maxMemoryBytes: number;
}

/** Counts of what the fuzzer saw. */
export interface FuzzStats {
  inputs: number;
  /** Cases per target. */
  targets: Record<string, number>;
  /** Cases per setup. */
  setups: Record<string, number>;
  tlsErrors: Record<string, number>;
  progressed: number;
  handshakesCompleted: number;
  /** Of the live handshakes (established target), those resumed. */
  resumed: number;
  engineFailures: number;
  /** Sessions whose sticky error was probed (feed, read, write, feedEof). */
  stickyChecked: number;
  /** Host AEAD calls made by host cases (seal, open). */
  hostSeals: number;
  hostOpens: number;
  /** Cases on the engine's own ciphers checked to make no host call. */
  wasmCasesChecked: number;
  /** Records sealed with the peer's keys, by kind. */
  crafted: Record<string, number>;
  /** Crafted runs of valid records (application data, KeyUpdate) read back exactly. */
  craftedReadBack: number;
  /** Of those, runs that went through a KeyUpdate (and the reply worked). */
  keyUpdatesFollowed: number;
  /** Truncated records then EOF that ended in "UnexpectedEof". */
  truncatedEof: number;
  /** ClientHellos the acceptor parsed; chooser calls sync and async. */
  acceptorHellos: number;
  chooserSync: number;
  chooserAsync: number;
  /** Handshakes completed through the acceptor (live clients). */
  acceptorHandshakes: number;
  /** Known upstream issues met (not failures), by name. */
  knownIssues: Record<string, number>;
  /** acceptTls (function form, over a pipe) outcomes. */
  acceptTls: Record<string, number>;
  /** Per engine instance. */
  heap: { host: HeapStats; wasm: HeapStats };
  /** For the old single-instance summary: the host instance's figures. */
  maxMemoryBytes: number;
  heapBytesStart: number;
  heapBytesEnd: number;
}

/** An input that broke a rule: not a TlsError, or a trap not contained. */
export class FuzzFailure extends Error {
  constructor(message: string, readonly seed: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "FuzzFailure";
  }
}

/** A broken rule, found inside a case (its seed added by {@linkcode one}). */
class Violation extends Error {}

const TARGETS = [
  "server",
  "server",
  "client",
  "client",
  "random",
  "established",
  "established",
  "established",
  "mitm",
  "acceptor",
  "acceptor",
  "options",
] as const;

/** A plausible random TLS record (or a few). */
function randomRecords(rng: Prng): Uint8Array {
  const parts: Uint8Array[] = [];
  const n = rng.range(1, 3);
  for (let i = 0; i < n; i++) {
    const type = rng.chance(0.8) ? rng.range(20, 24) : rng.int(256);
    const version = rng.chance(0.8)
      ? [3, rng.range(1, 4)]
      : [rng.int(256), rng.int(256)];
    const len = rng.chance(0.9)
      ? rng.int(400)
      : rng.pick([0, 16384, 16385, 18432, 65535]);
    const body = rng.bytes(
      Math.min(len, rng.chance(0.9) ? len : rng.int(len + 1)),
    );
    const head = new Uint8Array([
      type,
      version[0],
      version[1],
      len >> 8,
      len & 255,
    ]);
    if (type === 22 && body.length >= 4 && rng.chance(0.7)) {
      // A handshake message header: type, 24-bit length.
      body[0] = rng.pick([
        1,
        2,
        4,
        8,
        11,
        12,
        13,
        14,
        15,
        16,
        20,
        24,
        rng.int(256),
      ]);
      const hl = rng.chance(0.7) ? body.length - 4 : rng.int(1 << 24);
      body[1] = hl >> 16;
      body[2] = hl >> 8;
      body[3] = hl;
    }
    parts.push(head, body);
  }
  return concat(parts);
}

/** Mutates a stream of records: one record, several, or the whole. */
function mutateStream(rng: Prng, recs: readonly Uint8Array[]): Uint8Array {
  const list = recs.map((r) => r as Uint8Array);
  // Often stop after a prefix: the first flight matters most.
  const keep = rng.chance(0.5) ? rng.range(1, list.length) : list.length;
  const kept = list.slice(0, keep);
  switch (rng.int(5)) {
    case 0: {
      const i = rng.int(kept.length);
      kept[i] = mutateBytesMany(rng, kept[i], recs, 2);
      return concat(kept);
    }
    case 1: {
      // Only the body of one record, keeping its header consistent.
      const i = rng.int(kept.length);
      const r = kept[i];
      if (r.length > 5) {
        const body = mutateBytes(rng, r.subarray(5), recs);
        const head = r.slice(0, 5);
        head[3] = body.length >> 8;
        head[4] = body.length & 255;
        kept[i] = concat([head, body]);
      }
      return concat(kept);
    }
    case 2: {
      // Duplicate, drop or reorder records.
      const i = rng.int(kept.length);
      const j = rng.int(kept.length);
      const r = rng.int(3);
      if (r === 0) kept.splice(j, 0, kept[i]);
      else if (r === 1 && kept.length > 1) kept.splice(i, 1);
      else [kept[i], kept[j]] = [kept[j], kept[i]];
      return concat(kept);
    }
    case 3:
      return mutateBytesMany(rng, concat(kept), recs, 4);
    default:
      return concat([
        ...kept.slice(0, rng.int(kept.length)),
        randomRecords(rng),
      ]);
  }
}

/** Feeds `input` to `s` in random pieces; reads plaintext; takes output. */
function drive(rng: Prng, s: Session, input: Uint8Array): void {
  let off = 0;
  while (off < input.length) {
    const size = rng.chance(0.6)
      ? input.length - off
      : rng.range(1, input.length - off);
    feedAll(s, input.subarray(off, off + size));
    off += size;
    s.takeOutgoing();
  }
  while ((s.read(scratch) ?? 0) > 0) {
    // Drain plaintext.
  }
  if (rng.chance(0.3)) {
    s.feedEof();
    try {
      s.read(scratch);
    } catch (error) {
      if (!(error instanceof TlsError)) throw error;
    }
  }
  s.takeOutgoing();
}

/** Runs a live handshake with one record mutated in flight. */
function mitm(rng: Prng, c: Session, s: Session): void {
  const target = rng.int(6);
  let seen = 0;
  for (let i = 0; i < 200; i++) {
    let moved = false;
    for (const [from, to] of [[c, s], [s, c]] as const) {
      const out = from.takeOutgoing();
      if (out === null) continue;
      moved = true;
      const recs = records(out).map((r) =>
        seen++ === target ? mutateBytes(rng, r, []) : r
      );
      feedAll(to, concat(recs));
    }
    if (!moved) break;
  }
  if (!c.isHandshaking && !s.isHandshaking) {
    c.write(new Uint8Array([1, 2, 3]));
    pump(c, s);
  }
}

/** A session that remembers the first TlsError one of its calls threw. */
type Watched = Session & { readonly firstError: TlsError | undefined };

function watch(s: Session): Watched {
  let first: TlsError | undefined;
  return new Proxy(s, {
    get(target, p) {
      if (p === "firstError") return first;
      const v = Reflect.get(target, p, target);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        try {
          return v.apply(target, args);
        } catch (error) {
          if (error instanceof TlsError) {
            first ??= error;
            noteTrap(error);
          }
          throw error;
        }
      };
    },
  }) as Watched;
}

/** Engine traps seen by any call (some paths swallow a TlsError). */
const traps: string[] = [];

function noteTrap(error: unknown): void {
  if (error instanceof TlsError && error.code === "EngineFailure") {
    traps.push(error.message);
  }
}

/** A TlsError with a known code, or a Violation. */
function checkTlsError(error: unknown, where: string): TlsError {
  noteTrap(error);
  if (!(error instanceof TlsError)) {
    throw new Violation(`${where}: not a TlsError: ${error}`, {
      cause: error,
    });
  }
  if (!CODES.has(error.code)) {
    throw new Violation(`${where}: unknown TlsError code ${error.code}`);
  }
  if (error.code === "AlertReceived" && typeof error.alert !== "string") {
    throw new Violation(`${where}: AlertReceived without its alert name`);
  }
  return error;
}

/**
 * The sticky error: a session that threw a TlsError is failed, and every
 * later feed, read, write and feedEof throws the same code; takeOutgoing
 * (which may hold the alert) does not throw.
 */
function checkSticky(s: Watched, result: FuzzStats): void {
  const first = s.firstError;
  if (first === undefined && !s.status.failed) return;
  if (first?.code === "EngineFailure") return;
  if (first !== undefined && !s.status.failed) {
    throw new Violation(
      `threw ${first.code} but status.failed is false`,
    );
  }
  let code: string | undefined = first?.code;
  const probes: [string, () => unknown][] = [
    ["read", () => s.read(scratch)],
    ["feed", () => s.feed(new Uint8Array([23, 3, 3, 0, 1, 0]))],
    ["write", () => s.write(new Uint8Array([1, 2, 3]))],
    ["feedEof", () => s.feedEof()],
    ["read again", () => s.read(scratch)],
  ];
  for (const [name, probe] of probes) {
    let thrown: unknown = undefined;
    try {
      probe();
    } catch (error) {
      thrown = error;
    }
    if (thrown === undefined) {
      throw new Violation(
        `after ${code ?? "status.failed"}, ${name} did not throw`,
      );
    }
    const e = checkTlsError(thrown, `sticky ${name}`);
    code ??= e.code;
    if (e.code !== code) {
      throw new Violation(
        `sticky error: first ${code}, then ${name} threw ${e.code}`,
      );
    }
  }
  try {
    s.takeOutgoing();
  } catch (error) {
    throw new Violation(`takeOutgoing after a failure threw: ${error}`, {
      cause: error,
    });
  }
  result.stickyChecked++;
}

/** Reads all plaintext available; null after close_notify. */
function readAll(s: Session): Uint8Array | null {
  const parts: Uint8Array[] = [];
  for (;;) {
    const n = s.read(scratch);
    if (n === null) return parts.length === 0 ? null : concat(parts);
    if (n === 0) return concat(parts);
    parts.push(scratch.slice(0, n));
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A live handshake, then post-handshake records into one side. */
async function established(
  rng: Prng,
  t: Transcript,
  donors: readonly Uint8Array[],
  result: FuzzStats,
  sessions: Watched[],
): Promise<void> {
  const keyLog: string[] = [];
  const c = watch(
    await clientSession({
      ...t.setup.client,
      keyLog: (line) => keyLog.push(line),
      // Half full handshakes: tickets offered are mostly accepted.
      resumption: rng.chance(0.5),
    }),
  );
  sessions.push(c);
  const s = watch(await serverSession(t.setup.server));
  sessions.push(s);
  const log = { client: [] as Uint8Array[], server: [] as Uint8Array[] };
  // Nothing is mutated yet: any failure here is a bug.
  try {
    pump(c, s, log);
    if (c.isHandshaking || s.isHandshaking) {
      throw new Violation("the live handshake did not complete");
    }
    result.handshakesCompleted++;
    if (c.handshakeInfo().resumed) result.resumed++;
    for (let i = rng.int(3); i > 0; i--) {
      const up = rng.bytes(rng.int(300));
      const down = rng.bytes(rng.int(3000));
      c.write(up);
      s.write(down);
      pump(c, s, log);
      if (!equal(readAll(s) ?? up.subarray(1), up)) {
        throw new Violation("client data was lost");
      }
      if (!equal(readAll(c) ?? down.subarray(1), down)) {
        throw new Violation("server data was lost");
      }
    }
  } catch (error) {
    if (error instanceof TlsError) {
      throw new Violation(
        `the live exchange failed: ${error.code}: ${error.message}`,
        {
          cause: error,
        },
      );
    }
    throw error;
  }
  if (rng.chance(0.3)) exporter(rng, c, s, result);
  const victimIsClient = rng.chance(0.5);
  const victim = victimIsClient ? c : s;
  const peer = victimIsClient ? s : c;
  const info = c.handshakeInfo();
  const kind = rng.int(info.protocol === "TLSv1.3" ? 8 : 6);
  switch (kind) {
    case 0: {
      // Real application data from the peer, mutated.
      peer.write(rng.bytes(rng.range(1, 2000)));
      const out = peer.takeOutgoing()!;
      drive(rng, victim, mutateBytesMany(rng, out, donors, 3));
      return;
    }
    case 1: {
      // A truncated record, then the transport ends: "UnexpectedEof".
      peer.write(rng.bytes(rng.range(1, 2000)));
      const out = peer.takeOutgoing()!;
      feedAll(victim, out.subarray(0, rng.int(out.length)));
      readAll(victim);
      victim.feedEof();
      try {
        readAll(victim);
      } catch (error) {
        if (checkTlsError(error, "truncated").code !== "UnexpectedEof") {
          throw new Violation(
            `a truncated record then EOF gave ${(error as TlsError).code}`,
          );
        }
        result.truncatedEof++;
        return;
      }
      throw new Violation("a truncated record then EOF read cleanly");
    }
    case 2: {
      // Clear-text records after the handshake: KeyUpdate-like handshake
      // messages, alerts, ChangeCipherSpec, heartbeat, short "ciphertext".
      const parts: Uint8Array[] = [];
      for (let i = rng.range(1, 3); i > 0; i--) {
        const body = rng.pick([
          () => new Uint8Array([24, 0, 0, 1, rng.int(3)]),
          () => new Uint8Array([24, 0, 0, rng.int(4), rng.int(256)]),
          () => new Uint8Array([rng.int(3), rng.int(256)]),
          () => new Uint8Array([1]),
          () => rng.bytes(rng.int(40)),
        ])();
        const type = body[0] === 24 && body.length === 5
          ? 22
          : rng.pick([20, 21, 22, 23, 24]);
        parts.push(
          new Uint8Array([type, 3, 3, body.length >> 8, body.length & 255]),
          body,
        );
      }
      drive(rng, victim, concat(parts));
      return;
    }
    case 3: {
      // The peer's real close_notify (or alert) record, mutated.
      peer.closeNotify();
      const out = peer.takeOutgoing()!;
      drive(rng, victim, rng.chance(0.2) ? out : mutateBytes(rng, out));
      return;
    }
    case 4:
      drive(rng, victim, randomRecords(rng));
      return;
    case 5: {
      const from = victimIsClient ? t.server : t.client;
      drive(
        rng,
        victim,
        mutateBytesMany(rng, from[rng.int(from.length)], donors, 3),
      );
      return;
    }
    default:
      crafted(rng, victim, peer, victimIsClient, keyLog, log, result);
  }
}

/** One crafted inner plaintext: its content type, content and validity. */
interface Inner {
  kind: string;
  type: number;
  content: Uint8Array;
  /** Application data or a valid KeyUpdate: must be accepted. */
  valid: boolean;
  keyUpdate?: boolean;
  requested?: boolean;
  raw?: Uint8Array;
  padding?: number;
  /** A NewSessionTicket sent to a client. */
  ticket?: boolean;
}

/** A NewSessionTicket (RFC 8446 4.6.1), well formed or not quite. */
function newSessionTicket(rng: Prng): Uint8Array {
  const u16 = (n: number) => [n >> 8, n & 255];
  const nonce = rng.bytes(rng.int(rng.chance(0.9) ? 33 : 256));
  const ticket = rng.bytes(rng.chance(0.9) ? rng.range(1, 300) : 0);
  const ext = rng.chance(0.5)
    ? new Uint8Array([0, 42, 0, 4, ...rng.bytes(4)]) // early_data
    : rng.chance(0.2)
    ? rng.bytes(rng.int(12))
    : new Uint8Array(0);
  const body = concat([
    rng.chance(0.9)
      ? new Uint8Array([0, 0, 0x1c, 0x20]) // lifetime 7200 s
      : rng.bytes(4), // lifetime, maybe over 7 days
    rng.bytes(4), // age_add
    new Uint8Array([nonce.length]),
    nonce,
    new Uint8Array(u16(ticket.length)),
    ticket,
    new Uint8Array(u16(ext.length)),
    ext,
  ]);
  const len = body.length;
  return concat([
    new Uint8Array([4, len >> 16, (len >> 8) & 255, len & 255]),
    body,
  ]);
}

function craftInner(rng: Prng, victimIsClient: boolean): Inner {
  if (rng.chance(0.08)) {
    // A forged ticket: a client stores it (and later offers it to a
    // server, which does not know it); a server must refuse it.
    return {
      kind: "ticket",
      type: 22,
      content: newSessionTicket(rng),
      valid: false,
      ticket: victimIsClient,
    };
  }
  switch (rng.int(12)) {
    case 0:
    case 1:
    case 2:
      return {
        kind: "appdata",
        type: 23,
        content: rng.bytes(rng.chance(0.1) ? 0 : rng.int(3000)),
        valid: true,
        padding: rng.chance(0.3) ? rng.int(200) : 0,
      };
    case 3: {
      const requested = rng.chance(0.5);
      return {
        kind: "keyupdate",
        type: 22,
        content: new Uint8Array([24, 0, 0, 1, requested ? 1 : 0]),
        valid: true,
        keyUpdate: true,
        requested,
      };
    }
    case 4: {
      // KeyUpdate-like garbage: a bad value, a bad length, trailing bytes.
      const body = rng.pick([
        () => new Uint8Array([24, 0, 0, 1, rng.range(2, 255)]),
        () => new Uint8Array([24, 0, 0, 0]),
        () => new Uint8Array([24, 0, 0, 2, 0, 0]),
        () => new Uint8Array([24, 0, 0, 1]),
        () => new Uint8Array([24, 0, 0, 1, 0, 24, 0, 0, 1, 1]),
        () => concat([new Uint8Array([24, 0, 0, 1, 0]), rng.bytes(3)]),
      ])();
      return {
        kind: "keyupdate-garbage",
        type: 22,
        content: body,
        valid: false,
      };
    }
    case 5: {
      // Another post-handshake handshake message, plausible or not.
      const body = rng.bytes(rng.int(200));
      const type = rng.pick([
        1,
        2,
        4,
        5,
        8,
        11,
        13,
        15,
        20,
        24,
        254,
        rng.int(256),
      ]);
      const len = rng.chance(0.8) ? body.length : rng.int(1 << 24);
      return {
        kind: "handshake-garbage",
        type: 22,
        content: concat([
          new Uint8Array([type, len >> 16, (len >> 8) & 255, len & 255]),
          body,
        ]),
        valid: false,
      };
    }
    case 6: {
      const alert = rng.pick([
        () => new Uint8Array([1, 0]),
        () => new Uint8Array([1, 90]),
        () => new Uint8Array([2, rng.int(256)]),
        () => new Uint8Array([rng.int(256), rng.int(256)]),
        () => rng.bytes(rng.pick([0, 1, 3, 4])),
      ])();
      return { kind: "alert", type: 21, content: alert, valid: false };
    }
    case 7:
      return {
        kind: "ccs",
        type: 20,
        content: new Uint8Array([1]),
        valid: false,
      };
    case 8:
      return {
        kind: "bad-type",
        type: rng.pick([0, 24, 25, 255, rng.int(256)]),
        content: rng.bytes(rng.int(50)),
        valid: false,
      };
    case 9:
      return {
        kind: "no-type",
        type: 0,
        content: new Uint8Array(0),
        raw: new Uint8Array(rng.int(30)),
        valid: false,
      };
    case 10:
      return {
        kind: "oversized",
        type: 23,
        content: rng.bytes(16385 + rng.int(300)),
        valid: false,
      };
    default:
      return {
        kind: "empty-handshake",
        type: 22,
        content: new Uint8Array(0),
        valid: false,
      };
  }
}

/**
 * Records sealed with the peer's real traffic keys (from the key log, at
 * the sequence number the victim expects), so their inner plaintext
 * reaches the engine's post-handshake processing. A run of valid records
 * must be read back exactly, and after a KeyUpdate the victim's own
 * records (with its reply, if asked) must reach the real peer.
 */
function crafted(
  rng: Prng,
  victim: Watched,
  peer: Watched,
  victimIsClient: boolean,
  keyLog: readonly string[],
  log: { client: Uint8Array[]; server: Uint8Array[] },
  result: FuzzStats,
): void {
  const secrets = secretsOf(keyLog);
  const label = victimIsClient
    ? "SERVER_TRAFFIC_SECRET_0"
    : "CLIENT_TRAFFIC_SECRET_0";
  const secret = secrets.get(label);
  if (secret === undefined) throw new Violation(`no ${label} in the key log`);
  const keys = new Tls13Keys(victim.handshakeInfo().cipherSuite, secret);
  // The victim has read every record the peer sent: count those under the
  // application key.
  for (const r of records(concat(victimIsClient ? log.server : log.client))) {
    keys.open(r);
  }
  if (keys.seq === 0 && !victimIsClient) {
    // The client sends no application record before ours: fine.
  }
  const inners: Inner[] = [];
  // Often a run of valid records only (application data and KeyUpdates):
  // it must read back exactly.
  const validOnly = rng.chance(0.3);
  for (let i = rng.range(1, 4); i > 0; i--) {
    let inner = craftInner(rng, victimIsClient);
    while (validOnly && !inner.valid) inner = craftInner(rng, victimIsClient);
    inners.push(inner);
  }
  const parts: Uint8Array[] = [];
  const expected: Uint8Array[] = [];
  let keyUpdate = false;
  let requested = false;
  for (const inner of inners) {
    result.crafted[inner.kind] = (result.crafted[inner.kind] ?? 0) + 1;
    parts.push(keys.seal(inner.type, inner.content, inner.padding, inner.raw));
    if (inner.type === 23 && inner.valid) expected.push(inner.content);
    if (inner.keyUpdate) {
      keys.update();
      keyUpdate = true;
      requested ||= inner.requested === true;
    }
  }
  const allValid = inners.every((i) => i.valid);
  let input = concat(parts);
  if (!allValid && rng.chance(0.3)) input = mutateBytes(rng, input);
  const whole = allValid || rng.chance(0.5);
  if (whole) feedAll(victim, input);
  else {
    drive(rng, victim, input);
    return;
  }
  const got = readAll(victim);
  if (!allValid) return;
  // Every record was valid: the plaintext must come back exactly.
  if (got === null || !equal(got, concat(expected))) {
    throw new Violation(
      `crafted valid records (${inners.map((i) => i.kind)}) read back ${
        got === null ? "end of flow" : `${got.length} bytes`
      }, expected ${concat(expected).length} bytes`,
    );
  }
  result.craftedReadBack++;
  if (!keyUpdate) return;
  // The victim's next records (after its own KeyUpdate when asked) must
  // reach the real peer.
  const ping = rng.bytes(rng.range(1, 100));
  victim.write(ping);
  const out = victim.takeOutgoing();
  if (out === null) throw new Violation("no record after a KeyUpdate");
  feedAll(peer, out);
  const back = readAll(peer);
  if (back === null || !equal(back, ping)) {
    throw new Violation(
      `after a KeyUpdate (requested ${requested}) the peer read ${
        back?.length ?? "end of flow"
      } bytes, expected ${ping.length}`,
    );
  }
  result.keyUpdatesFollowed++;
}

/**
 * The exporter with odd arguments: a result of the length asked, the same
 * on both sides, or a RangeError or TypeError (reserved labels, lengths
 * outside 1..16384 or beyond the suite's hash, oversized contexts).
 */
function exporter(
  rng: Prng,
  c: Session,
  s: Session,
  result: FuzzStats,
): void {
  const length = rng.pick([
    () => rng.range(1, 64),
    () =>
      rng.pick([
        0,
        -1,
        1.5,
        NaN,
        Infinity,
        16384,
        16385,
        255 * 32,
        255 * 48,
        2 ** 32,
      ]),
    () => rng.int(20000),
  ])();
  const label = rng.pick([
    () => "EXPORTER-fuzz",
    () =>
      rng.pick([
        "client finished",
        "master secret",
        "key expansion",
        "extended master secret",
      ]),
    () => mutateText(rng, "EXPORTER-my-protocol"),
    () => "x".repeat(rng.pick([0, 249, 250])),
  ])();
  const context = rng.pick([
    () => undefined,
    () => rng.bytes(rng.int(40)),
    () => new Uint8Array(rng.pick([0, 65535, 65536])),
  ])();
  const run = (side: Session): Uint8Array | Error => {
    try {
      const out = side.exportKeyingMaterial(length, label, context);
      if (!(out instanceof Uint8Array) || out.length !== length) {
        throw new Violation(
          `the exporter gave ${out?.length} bytes for ${length}`,
        );
      }
      return out;
    } catch (error) {
      if (error instanceof Violation) throw error;
      if (error instanceof RangeError || error instanceof TypeError) {
        return error;
      }
      throw new Violation(`the exporter threw ${error}`, { cause: error });
    }
  };
  const a = run(c);
  const b = run(s);
  if (a instanceof Uint8Array !== b instanceof Uint8Array) {
    throw new Violation(`the exporter: client ${a}, server ${b}`);
  }
  if (a instanceof Uint8Array && !equal(a, b as Uint8Array)) {
    throw new Violation("the exporter: client and server disagree");
  }
  const k = a instanceof Uint8Array ? "exported" : `exporter ${a.name}`;
  result.crafted[k] = (result.crafted[k] ?? 0) + 1;
}

/**
 * Options with one field mutated (a suite, group or version name, ALPN,
 * PEM): a session, or a TypeError or RangeError before any I/O; an
 * unknown suite, group or version is named in the message.
 */
async function options(
  rng: Prng,
  t: Transcript,
  result: FuzzStats,
  sessions: Watched[],
): Promise<void> {
  const server = rng.chance(0.5);
  const o: Record<string, unknown> = {
    ...(server ? t.setup.server : t.setup.client),
  };
  const field = rng.pick([
    "cipherSuites",
    "keyExchangeGroups",
    "minVersion",
    "maxVersion",
    "alpnProtocols",
    "cert",
    "key",
  ]);
  let named: string | undefined;
  // Suite and version names are exact, group names case-insensitive.
  const pickName = (list: readonly string[], anyCase = false) => {
    const v = rng.chance(0.7)
      ? mutateText(rng, rng.pick(list))
      : rng.pick(list);
    const known = anyCase
      ? list.some((x) => x.toLowerCase() === v.toLowerCase())
      : list.includes(v);
    if (!known) named = v;
    return v;
  };
  switch (field) {
    case "cipherSuites":
      o.cipherSuites = rng.chance(0.1) ? [] : [pickName(CIPHER_SUITE_NAMES)];
      break;
    case "keyExchangeGroups":
      o.keyExchangeGroups = rng.chance(0.1)
        ? []
        : [pickName(GROUP_NAMES, true)];
      break;
    case "minVersion":
    case "maxVersion":
      o[field] = pickName(["TLSv1.2", "TLSv1.3"]);
      break;
    case "alpnProtocols":
      o.alpnProtocols = [mutateText(rng, "http/1.1", ["h2"])];
      break;
    default: {
      const pem = String(o[field] ?? fixture("client.pem"));
      o[field] = rng.chance(0.5)
        ? mutateText(rng, pem)
        : pem.slice(0, rng.int(pem.length));
    }
  }
  try {
    const session = server
      ? await serverSession(o as unknown as EngineServerOptions)
      : await clientSession(o as EngineClientOptions);
    sessions.push(watch(session));
    if (named !== undefined) {
      throw new Violation(`${field} ${JSON.stringify(named)} was accepted`);
    }
    result.crafted["options accepted"] =
      (result.crafted["options accepted"] ?? 0) + 1;
  } catch (error) {
    if (error instanceof Violation) throw error;
    if (!(error instanceof TypeError || error instanceof RangeError)) {
      throw new Violation(`${field}: options gave ${error}`, { cause: error });
    }
    if (named !== undefined && !error.message.includes(JSON.stringify(named))) {
      throw new Violation(
        `${field} ${
          JSON.stringify(named)
        }: the error does not name it: ${error.message}`,
      );
    }
    const k = `options ${error.name}`;
    result.crafted[k] = (result.crafted[k] ?? 0) + 1;
  }
}

/** What an SNI function picks for a ClientHello. */
function chooseFor(
  hello: { serverName: string | null; cipherSuites: string[] },
  t: Transcript,
  rng: Prng,
  fits: { value: boolean } = { value: true },
): EngineServerOptions {
  const rsa = { cert: fixture("rsa.pem"), key: fixture("rsa.key") };
  const base = hello.serverName === "localhost" ? t.setup.server : rsa;
  fits.value = base === t.setup.server;
  if (rng.chance(0.1)) {
    fits.value = false;
    // Valid options that may not fit the ClientHello.
    const plain = { cert: base.cert, key: base.key };
    return rng.pick<EngineServerOptions>([
      { ...plain, minVersion: "TLSv1.3" },
      { ...plain, maxVersion: "TLSv1.2" },
      { ...plain, cipherSuites: [AES256] },
      { ...plain, keyExchangeGroups: ["secp384r1"] },
      { ...plain, alpnProtocols: ["nope"] },
    ]);
  }
  return base;
}

function checkHello(hello: unknown): void {
  const h = hello as Record<string, unknown>;
  const strings = (v: unknown) =>
    Array.isArray(v) && v.every((x) => typeof x === "string");
  if (
    h === null || typeof h !== "object" ||
    !(h.serverName === null || typeof h.serverName === "string") ||
    !strings(h.alpnProtocols) || !strings(h.cipherSuites) ||
    !strings(h.signatureSchemes)
  ) {
    throw new Violation(`a malformed ClientHelloInfo: ${JSON.stringify(h)}`);
  }
}

/**
 * The acceptor: a (mutated, or live) ClientHello fed in pieces, an SNI
 * function (sync or async) picks the options, accept, the rest fed on.
 */
async function acceptor(
  rng: Prng,
  t: Transcript,
  result: FuzzStats,
  sessions: Watched[],
  acceptors: HelloAcceptor[],
): Promise<void> {
  const a = await helloAcceptor();
  acceptors.push(a);
  let c: Watched | undefined;
  let input: Uint8Array;
  if (rng.chance(0.3)) {
    c = watch(await clientSession(t.setup.client));
    sessions.push(c);
    input = c.takeOutgoing()!;
  } else {
    input = mutateStream(rng, t.client);
  }
  let off = 0;
  let hello = null;
  while (off < input.length && hello === null) {
    const size = rng.chance(0.5)
      ? input.length - off
      : rng.range(1, input.length - off);
    let n: number;
    try {
      n = a.feed(input.subarray(off, off + size));
    } catch (error) {
      checkTlsError(error, "acceptor feed");
      a.takeOutgoing();
      let after: unknown = null;
      try {
        after = a.hello();
      } catch (again) {
        checkTlsError(again, "hello() after a failure"); // "Closed"
      }
      if (after !== null) {
        throw new Violation("a failed acceptor has a ClientHello");
      }
      throw error;
    }
    off += n;
    hello = a.hello();
    if (n < size && hello === null) {
      throw new Violation(
        "the acceptor took fewer bytes without a ClientHello",
      );
    }
  }
  if (hello === null) return;
  checkHello(hello);
  result.acceptorHellos++;
  let options: EngineServerOptions;
  const fits = { value: true };
  if (rng.chance(0.5)) {
    result.chooserSync++;
    options = chooseFor(hello, t, rng, fits);
  } else {
    result.chooserAsync++;
    options = await new Promise<EngineServerOptions>((ok) =>
      setTimeout(() => ok(chooseFor(hello!, t, rng, fits)), 0)
    );
  }
  const mustWork = c !== undefined && fits.value;
  let s: Watched;
  try {
    s = watch(a.accept(options));
  } catch (error) {
    checkTlsError(error, "acceptor accept");
    if (mustWork) {
      throw new Violation(`a live ClientHello was not accepted: ${error}`);
    }
    a.takeOutgoing();
    throw error;
  }
  sessions.push(s);
  try {
    a.accept(options);
    throw new Violation("a second accept did not throw");
  } catch (error) {
    if (error instanceof Violation) throw error;
    checkTlsError(error, "second accept");
  }
  if (c === undefined) {
    drive(rng, s, input.subarray(off));
    return;
  }
  try {
    pump(c, s);
  } catch (error) {
    if (
      error instanceof TlsError &&
      error.message.includes("MissingPskExtensionInSecondClientHello")
    ) {
      // A known rustls 0.23.46 disagreement (tests/tls_fuzz_findings_test.ts):
      // its client drops a ticket whose hash does not fit the suite of a
      // HelloRetryRequest (an earlier case here chose another suite for
      // the name), its server refuses a second ClientHello without one.
      result.knownIssues.hrrPsk = (result.knownIssues.hrrPsk ?? 0) + 1;
      throw error;
    }
    if (mustWork && error instanceof TlsError) {
      throw new Violation(
        `a live handshake through the acceptor failed: ${error.code}: ${error.message}`,
      );
    }
    throw error;
  }
  if (c.isHandshaking || s.isHandshaking) {
    if (mustWork) {
      throw new Violation("a live handshake through the acceptor stalled");
    }
    return;
  }
  const info = s.handshakeInfo();
  if (info.serverName !== hello.serverName) {
    throw new Violation(
      `the acceptor's session saw ${info.serverName}, the hello ${hello.serverName}`,
    );
  }
  c.write(new Uint8Array([1, 2, 3]));
  pump(c, s);
  const got = readAll(s);
  if (got === null || !equal(got, new Uint8Array([1, 2, 3]))) {
    throw new Violation("data through the acceptor's session was lost");
  }
  result.acceptorHandshakes++;
}

/** Strips the internal options (startTls takes the public ones too). */
function publicClient(o: EngineClientOptions): EngineClientOptions {
  const { _tls12Only: _a, ...rest } = o;
  return rest;
}

/**
 * `acceptTls` with an SNI function over a pipe: the function returns sync
 * or async, throws, rejects, never settles (the signal ends it) or returns
 * no options; the client is live or writes mutated bytes then ends.
 */
async function acceptTlsCase(
  rng: Prng,
  t: Transcript,
  result: FuzzStats,
): Promise<void> {
  const [a, b] = pipe();
  const ctl = new AbortController();
  const behaviour = rng.pick(
    ["sync", "async", "async", "throw", "reject", "never", "invalid"] as const,
  );
  const boom = new Error("the SNI function refused");
  let called = false;
  const choose = (hello: {
    serverName: string | null;
    cipherSuites: string[];
  }) => {
    called = true;
    checkHello(hello);
    const o = chooseFor(hello, t, crng);
    switch (behaviour) {
      case "sync":
        return o;
      case "async":
        return new Promise<EngineServerOptions>((ok) =>
          setTimeout(() => ok(o), crng.int(3))
        );
      case "throw":
        throw boom;
      case "reject":
        return Promise.reject(boom);
      case "never":
        setTimeout(() => ctl.abort(new Error("the test aborts")), 1);
        return new Promise<EngineServerOptions>(() => {});
      case "invalid":
        return { cert: 42 } as unknown as EngineServerOptions;
    }
  };
  const live = rng.chance(0.5);
  const garbage = mutateStream(rng, t.client);
  // The SNI function draws from its own generator: the client side runs
  // concurrently, and the case must not depend on the interleaving.
  const crng = rng.fork();
  const bump = (k: string) =>
    result.acceptTls[k] = (result.acceptTls[k] ?? 0) + 1;
  const server = acceptTls(b, choose, { signal: ctl.signal }).then(
    async (flow: TlsFlow) => {
      bump(`${behaviour}: accepted`);
      await flow.close();
      return null;
    },
    (error: unknown) => {
      b.close();
      if (behaviour === "never" && error === ctl.signal.reason && called) {
        bump("never: aborted");
      } else if (
        (behaviour === "throw" || behaviour === "reject") && error === boom
      ) {
        bump(`${behaviour}: its error`);
      } else if (behaviour === "invalid" && error instanceof TypeError) {
        bump("invalid: TypeError");
      } else {
        bump(
          `${behaviour}: TlsError ${checkTlsError(error, "acceptTls").code}`,
        );
      }
      return error;
    },
  );
  const client = (async () => {
    if (live) {
      try {
        const flow = await startTls(a, publicClient(t.setup.client));
        await flow.close();
      } catch (error) {
        checkTlsError(error, "startTls against acceptTls");
      }
      return;
    }
    try {
      await a.write(garbage);
      await a.closeWrite();
      const buf = new Uint8Array(16384);
      while ((await a.read(buf)) !== null) { /* drain */ }
    } catch {
      // The server closed its end: fine.
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<"hang">((ok) =>
    timer = setTimeout(() => ok("hang"), 15_000)
  );
  try {
    const r = await Promise.race([Promise.all([server, client]), hang]);
    if (r === "hang") {
      throw new Violation(`acceptTls (${behaviour}, live ${live}) hangs`);
    }
  } finally {
    clearTimeout(timer);
    ctl.abort();
    a.close();
    b.close();
  }
}

/** Fresh statistics of one engine instance (zeros before first use). */
function instanceStats(mode: "host" | "wasm"): {
  heapBytes: number;
  memoryBytes: number;
} {
  _useHostAeadForTesting(mode === "host");
  try {
    return _engineStatsForTesting() ?? { heapBytes: 0, memoryBytes: 0 };
  } finally {
    _useHostAeadForTesting(true);
  }
}

function track(result: FuzzStats): void {
  for (const mode of ["host", "wasm"] as const) {
    const h = result.heap[mode];
    const now = instanceStats(mode);
    h.maxMemoryBytes = Math.max(h.maxMemoryBytes, now.memoryBytes);
    h.heapBytesEnd = now.heapBytes; // the latest, for progress reports
  }
}

/** Which host AEAD algorithm a suite uses. */
function algOf(suite: string): string {
  return suite.includes("AES_128")
    ? "aes-128-gcm"
    : suite.includes("AES_256")
    ? "aes-256-gcm"
    : "chacha20-poly1305";
}

/** What {@linkcode one} needs besides the case seed. */
export interface Corpus {
  transcripts: Transcript[];
  donors: Uint8Array[];
  hostAlgorithms: string[];
}

/** Captures every setup (checking what each agreed). */
export async function corpus(): Promise<Corpus> {
  _useHostAeadForTesting(true);
  const transcripts: Transcript[] = [];
  for (const setup of setups()) transcripts.push(await capture(setup));
  return {
    transcripts,
    donors: transcripts.flatMap((t) => [...t.client, ...t.server]),
    hostAlgorithms: (await engineInfo()).hostAlgorithms,
  };
}

/** Zeroed statistics. */
export function newStats(): FuzzStats {
  const heap = () => ({
    heapBytesStart: 0,
    heapBytesMid: 0,
    heapBytesEnd: 0,
    maxMemoryBytes: 0,
  });
  return {
    inputs: 0,
    targets: {},
    setups: {},
    tlsErrors: {},
    progressed: 0,
    handshakesCompleted: 0,
    resumed: 0,
    engineFailures: 0,
    stickyChecked: 0,
    hostSeals: 0,
    hostOpens: 0,
    wasmCasesChecked: 0,
    crafted: {},
    craftedReadBack: 0,
    keyUpdatesFollowed: 0,
    truncatedEof: 0,
    acceptorHellos: 0,
    chooserSync: 0,
    chooserAsync: 0,
    acceptorHandshakes: 0,
    knownIssues: {},
    acceptTls: {},
    heap: { host: heap(), wasm: heap() },
    maxMemoryBytes: 0,
    heapBytesStart: 0,
    heapBytesEnd: 0,
  };
}

/**
 * Runs `count` inputs from `seed` (or forever with `count` Infinity),
 * calling `progress` every `every` inputs with the seed of the next case.
 * The heap baseline is taken after a warm-up pass (one case of each setup
 * and target, not counted); the end after the run.
 *
 * @param seed The run's seed.
 * @param count How many inputs.
 * @param progress Called with the case index, its seed and the stats.
 * @returns The statistics.
 * @throws {FuzzFailure} On the first input that breaks a rule.
 */
export async function fuzz(
  seed: number,
  count: number,
  progress: (i: number, caseSeed: number, s: FuzzStats) => void = () => {},
  every = 500,
): Promise<FuzzStats> {
  const c = await corpus();
  const result = newStats();
  // Warm-up: fills the config caches, ticket stores and allocator pools.
  const warm = newStats();
  const wrng = new Prng(seed ^ 0x5eed);
  for (let i = 0; i < 150; i++) await one(wrng.u32(), c, warm);
  for (const mode of ["host", "wasm"] as const) {
    const st = instanceStats(mode);
    result.heap[mode].heapBytesStart = st.heapBytes;
    result.heap[mode].maxMemoryBytes = st.memoryBytes;
  }
  const rng = new Prng(seed);
  for (let i = 0; i < count; i++) {
    const caseSeed = rng.u32();
    if (i % every === 0) progress(i, caseSeed, result);
    await one(caseSeed, c, result);
    result.inputs++;
    if ((i & 255) === 0) track(result);
    if (i === Math.floor(count / 2)) {
      for (const mode of ["host", "wasm"] as const) {
        result.heap[mode].heapBytesMid = instanceStats(mode).heapBytes;
      }
    }
  }
  track(result);
  for (const mode of ["host", "wasm"] as const) {
    result.heap[mode].heapBytesEnd = instanceStats(mode).heapBytes;
  }
  result.maxMemoryBytes = Math.max(
    result.heap.host.maxMemoryBytes,
    result.heap.wasm.maxMemoryBytes,
  );
  result.heapBytesStart = result.heap.host.heapBytesStart;
  result.heapBytesEnd = result.heap.host.heapBytesEnd;
  return result;
}

/** Runs one input; throws {@linkcode FuzzFailure} if it breaks a rule. */
export async function one(
  caseSeed: number,
  corpus: Corpus,
  result: FuzzStats,
): Promise<void> {
  const { transcripts, donors } = corpus;
  const rng = new Prng(caseSeed);
  const t = rng.pick(transcripts);
  const target = rng.int(40) === 0 ? "acceptTls" : rng.pick(TARGETS);
  result.targets[target] = (result.targets[target] ?? 0) + 1;
  result.setups[t.setup.name] = (result.setups[t.setup.name] ?? 0) + 1;
  const sessions: Watched[] = [];
  const acceptors: HelloAcceptor[] = [];
  const trapsBefore = traps.length;
  const seals = _hostAeadTesting.seals;
  const opens = _hostAeadTesting.opens;
  const handshakes = result.handshakesCompleted;
  const fail = (message: string, cause?: unknown): FuzzFailure =>
    new FuzzFailure(
      `case seed ${caseSeed} (${target}, ${t.setup.name}): ${message}`,
      caseSeed,
      { cause },
    );
  try {
    try {
      if (target === "server" || (target === "random" && rng.chance(0.5))) {
        const s = watch(await serverSession(t.setup.server));
        sessions.push(s);
        const input = target === "random"
          ? randomRecords(rng)
          : mutateStream(rng, t.client);
        drive(rng, s, input);
      } else if (target === "client" || target === "random") {
        const c = watch(await clientSession(t.setup.client));
        sessions.push(c);
        c.takeOutgoing();
        const input = target === "random"
          ? randomRecords(rng)
          : mutateStream(rng, t.server);
        drive(rng, c, input);
      } else if (target === "established") {
        await established(rng, t, donors, result, sessions);
      } else if (target === "acceptor") {
        await acceptor(rng, t, result, sessions, acceptors);
      } else if (target === "options") {
        await options(rng, t, result, sessions);
      } else if (target === "acceptTls") {
        await acceptTlsCase(rng, t, result);
      } else {
        const c = watch(await clientSession(t.setup.client));
        sessions.push(c);
        const s = watch(await serverSession(t.setup.server));
        sessions.push(s);
        mitm(rng, c, s);
      }
      result.progressed++;
    } catch (error) {
      if (error instanceof Violation) throw fail(error.message, error.cause);
      if (error instanceof FuzzFailure) throw error;
      if (!(error instanceof TlsError)) {
        throw fail(`not a TlsError: ${error}`, error);
      }
      if (!CODES.has(error.code)) throw fail(`unknown code ${error.code}`);
      result.tlsErrors[error.code] = (result.tlsErrors[error.code] ?? 0) + 1;
      noteTrap(error);
    }
    if (traps.length > trapsBefore) {
      // A trap (even one a path swallowed): contained if a fresh session
      // works (a new engine instance), but a bug all the same.
      result.engineFailures++;
      const message = traps.slice(trapsBefore).join("; ");
      try {
        (await capture(transcripts[0].setup)).client.length;
      } catch (again) {
        throw fail(
          `the engine trapped (${message}) and did not recover: ${again}`,
          again,
        );
      }
      throw fail(`the engine trapped: ${message}`);
    }
    try {
      for (const s of sessions) checkSticky(s, result);
    } catch (error) {
      if (error instanceof Violation) throw fail(error.message, error.cause);
      throw error;
    }
    // The AEAD path: the engine's own ciphers make no host call (nor does
    // TLS 1.2: the host AEAD is for the TLS 1.3 suites); a host session
    // that completed a TLS 1.3 handshake made some.
    const host = t.setup.host && t.setup.expect.protocol === "TLSv1.3";
    const ds = _hostAeadTesting.seals - seals;
    const dOpen = _hostAeadTesting.opens - opens;
    const perSession = target !== "acceptor" && target !== "acceptTls";
    if (perSession && !host) {
      if (ds + dOpen > 0) {
        throw fail(
          `a case on the engine's own ciphers made ${
            ds + dOpen
          } host AEAD calls`,
        );
      }
      result.wasmCasesChecked++;
    }
    if (perSession && host) {
      result.hostSeals += ds;
      result.hostOpens += dOpen;
      const suite = t.setup.expect.suite;
      const hostDoesIt = suite === undefined
        ? corpus.hostAlgorithms.length === 3
        : corpus.hostAlgorithms.includes(algOf(suite));
      if (result.handshakesCompleted > handshakes && hostDoesIt && ds === 0) {
        throw fail("a host AEAD handshake sealed nothing with the host");
      }
    }
  } finally {
    for (const s of sessions) s.free();
    for (const a of acceptors) a.free();
  }
}
