/**
 * The TLS engine fuzzer's core: feeds fresh client and server sessions of
 * src/_engine.ts mutated real records (a captured handshake transcript, bit
 * flipped, truncated, spliced, duplicated) and random records, and checks
 * that each input ends in a `TlsError` or in progress — never another
 * exception, never unbounded memory. An engine trap must be contained (a
 * `TlsError` "EngineFailure", and the next session works).
 *
 * Used by tests/reliability_tls_fuzz_test.ts (bounded) and
 * stress/fuzz_tls.ts (by hand, `--forever`), both through a worker
 * (tests/fuzz/tls_fuzz_worker.ts) so a hang in the engine is caught by a
 * watchdog instead of hanging the run.
 *
 * @module
 */

import {
  _engineStatsForTesting,
  clientSession,
  type EngineClientOptions,
  type EngineServerOptions,
  serverSession,
  type Session,
  TlsError,
} from "../../src/_engine.ts";
import { concat, fixture } from "../_helpers.ts";
import { mutateBytes, mutateBytesMany } from "./mutate.ts";
import { Prng } from "./prng.ts";

/** A client and a server configuration that handshake with each other. */
interface Setup {
  name: string;
  client: EngineClientOptions;
  server: EngineServerOptions;
}

function setups(): Setup[] {
  const ca = fixture("ca.pem");
  const ecdsa = {
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
  };
  const rsa = { cert: fixture("rsa.pem"), key: fixture("rsa.key") };
  const client = { cert: fixture("client.pem"), key: fixture("client.key") };
  const trusting = { hostname: "localhost", caCerts: [ca] };
  return [
    { name: "tls13-ecdsa", client: trusting, server: ecdsa },
    {
      name: "tls12-rsa",
      client: { ...trusting, _tls12Only: true },
      server: { ...rsa, _tls12Only: true },
    },
    {
      name: "tls13-mtls-alpn",
      client: { ...trusting, ...client, alpnProtocols: ["h2", "http/1.1"] },
      server: { ...ecdsa, clientCaCerts: [ca], alpnProtocols: ["http/1.1"] },
    },
    {
      name: "tls12-ecdsa-mtls",
      client: { ...trusting, ...client, _tls12Only: true },
      server: { ...ecdsa, clientCaCerts: [ca], _tls12Only: true },
    },
  ];
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
  const c = await clientSession(setup.client);
  const s = await serverSession(setup.server);
  const log = { client: [] as Uint8Array[], server: [] as Uint8Array[] };
  try {
    pump(c, s, log);
    if (c.isHandshaking || s.isHandshaking) {
      throw new Error(`${setup.name}: the handshake did not complete`);
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

/** Counts of what the fuzzer saw. */
export interface FuzzStats {
  inputs: number;
  tlsErrors: Record<string, number>;
  progressed: number;
  handshakesCompleted: number;
  engineFailures: number;
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

const TARGETS = [
  "server",
  "server",
  "client",
  "client",
  "random",
  "established",
  "mitm",
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

/** Fresh engine statistics (the current instance; null before first use). */
function stats(): { heapBytes: number; memoryBytes: number } {
  return _engineStatsForTesting() ?? { heapBytes: 0, memoryBytes: 0 };
}

/**
 * Runs `count` inputs from `seed` (or forever with `count` Infinity),
 * calling `progress` every `every` inputs with the seed of the next case.
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
  const all = setups();
  const transcripts: Transcript[] = [];
  for (const setup of all) transcripts.push(await capture(setup));
  const donors = transcripts.flatMap((t) => [...t.client, ...t.server]);
  const base = stats();
  const result: FuzzStats = {
    inputs: 0,
    tlsErrors: {},
    progressed: 0,
    handshakesCompleted: 0,
    engineFailures: 0,
    maxMemoryBytes: base.memoryBytes,
    heapBytesStart: base.heapBytes,
    heapBytesEnd: 0,
  };
  const rng = new Prng(seed);
  for (let i = 0; i < count; i++) {
    const caseSeed = rng.u32();
    if (i % every === 0) progress(i, caseSeed, result);
    await one(caseSeed, transcripts, donors, result);
    result.inputs++;
    if ((i & 255) === 0) {
      result.maxMemoryBytes = Math.max(
        result.maxMemoryBytes,
        stats().memoryBytes,
      );
    }
  }
  const end = stats();
  result.maxMemoryBytes = Math.max(result.maxMemoryBytes, end.memoryBytes);
  result.heapBytesEnd = end.heapBytes;
  return result;
}

/** Runs one input; throws {@linkcode FuzzFailure} if it breaks a rule. */
export async function one(
  caseSeed: number,
  transcripts: readonly Transcript[],
  donors: readonly Uint8Array[],
  result: FuzzStats,
): Promise<void> {
  const rng = new Prng(caseSeed);
  const t = rng.pick(transcripts);
  const target = rng.pick(TARGETS);
  const sessions: Session[] = [];
  try {
    try {
      if (target === "server" || (target === "random" && rng.chance(0.5))) {
        const s = await serverSession(t.setup.server);
        sessions.push(s);
        const input = target === "random"
          ? randomRecords(rng)
          : mutateStream(rng, t.client);
        drive(rng, s, input);
      } else if (target === "client" || target === "random") {
        const c = await clientSession(t.setup.client);
        sessions.push(c);
        c.takeOutgoing();
        const input = target === "random"
          ? randomRecords(rng)
          : mutateStream(rng, t.server);
        drive(rng, c, input);
      } else {
        const c = await clientSession(t.setup.client);
        sessions.push(c);
        const s = await serverSession(t.setup.server);
        sessions.push(s);
        if (target === "mitm") {
          mitm(rng, c, s);
        } else {
          pump(c, s);
          result.handshakesCompleted++;
          const victim = rng.chance(0.5) ? c : s;
          const from = victim === c ? t.server : t.client;
          const input = rng.chance(0.5)
            ? randomRecords(rng)
            : mutateBytesMany(rng, from[rng.int(from.length)], donors, 3);
          drive(rng, victim, input);
        }
      }
      result.progressed++;
    } catch (error) {
      if (!(error instanceof TlsError)) {
        throw new FuzzFailure(
          `case seed ${caseSeed} (${target}, ${t.setup.name}): not a TlsError: ${error}`,
          caseSeed,
          { cause: error },
        );
      }
      result.tlsErrors[error.code] = (result.tlsErrors[error.code] ?? 0) + 1;
      if (error.code === "EngineFailure") {
        result.engineFailures++;
        // Contained: a fresh session must work (a new engine instance).
        try {
          (await capture(transcripts[0].setup)).client.length;
        } catch (again) {
          throw new FuzzFailure(
            `case seed ${caseSeed}: the engine trapped and did not recover: ${again}`,
            caseSeed,
            { cause: again },
          );
        }
      }
    }
  } finally {
    for (const s of sessions) s.free();
  }
}
