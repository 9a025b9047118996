/**
 * Load scenarios shared by stress/load.ts (by hand, 1,000 flows) and
 * tests/reliability_load_test.ts (bounded, in CI):
 *
 * - {@linkcode tlsEcho}: N concurrent TLS flows over loopback TCP, our
 *   client (`resolve()` of the `tls` protocol over `tcp`) to our server
 *   (`serve()` with an `acceptTls` upgrade) or to `Deno.listenTls`; each
 *   sends `bytes` random bytes and reads their echo, followed by the
 *   server's SHA-256 of what it received: both digests must match the one
 *   of the bytes sent (zero loss).
 * - {@linkcode resolveStorm}: N concurrent `resolve()` calls over a `tcp`
 *   endpoint with a host name and an injected lookup (Happy Eyeballs over
 *   `::1` and `127.0.0.1`), each flow checked with a one-byte echo.
 *
 * Both report wall time, peak RSS (sampled) and memory per connection, and
 * close every resource they open.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { empty, type Flow, resolve } from "../mod.ts";
import { _engineStatsForTesting } from "../src/_engine.ts";
import { serve } from "../src/serve.ts";
import { tcp } from "../src/tcp.ts";
import { acceptTls, tls } from "../src/tls.ts";
import { Prng } from "../tests/fuzz/prng.ts";

function fixture(name: string): string {
  return Deno.readTextFileSync(
    new URL(`../tests/fixtures/${name}`, import.meta.url),
  );
}

/** Samples RSS every `ms` until stopped; keeps the peak. */
export class RssSampler {
  peak: number;
  readonly start: number;
  #timer: ReturnType<typeof setInterval>;
  constructor(ms = 25) {
    this.start = this.peak = Deno.memoryUsage().rss;
    this.#timer = setInterval(() => this.sample(), ms);
  }
  /** Takes one sample now; returns it. */
  sample(): number {
    const rss = Deno.memoryUsage().rss;
    if (rss > this.peak) this.peak = rss;
    return rss;
  }
  /** Stops sampling. */
  stop(): void {
    clearInterval(this.#timer);
    this.sample();
  }
}

/** What a load run measured. */
export interface LoadReport {
  scenario: string;
  flows: number;
  bytesPerFlow: number;
  ok: number;
  failed: number;
  errors: string[];
  wallMs: number;
  handshakeMs: number;
  transferMs: number;
  rssStart: number;
  rssIdlePeak: number;
  rssPeak: number;
  /** (RSS with every flow established and idle − start) / flows. */
  bytesPerIdleFlow: number;
  /** (peak RSS during the transfer − start) / flows. */
  bytesPerBusyFlow: number;
  wasmMemoryBytes: number;
  /** MiB/s of payload, both directions counted. */
  throughput: number;
}

const MiB = 1024 * 1024;

/** Formats a report as a few lines. */
export function describeReport(r: LoadReport): string {
  const mb = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
  const kb = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
  return [
    `${r.scenario}: ${r.ok}/${r.flows} flows × ${
      kb(r.bytesPerFlow)
    } ok, ${r.failed} failed`,
    `  wall ${(r.wallMs / 1000).toFixed(2)} s (handshakes ${
      (r.handshakeMs / 1000).toFixed(2)
    } s, transfer ${(r.transferMs / 1000).toFixed(2)} s), ${
      r.throughput.toFixed(0)
    } MiB/s echoed`,
    `  RSS start ${mb(r.rssStart)}, idle peak ${mb(r.rssIdlePeak)}, peak ${
      mb(r.rssPeak)
    }; per flow (both ends): idle ${kb(r.bytesPerIdleFlow)}, busy ${
      kb(r.bytesPerBusyFlow)
    }; wasm memory ${mb(r.wasmMemoryBytes)}`,
    ...r.errors.slice(0, 5).map((e) => `  error: ${e}`),
  ].join("\n");
}

/** Echoes what it reads, then the SHA-256 of it all, then half-closes. */
async function echoWithDigest(flow: Flow): Promise<void> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    const chunk = buf.subarray(0, n);
    hash.update(chunk);
    for (let off = 0; off < n;) off += await flow.write(chunk.subarray(off));
  }
  await writeFull(flow, new Uint8Array(hash.digest()));
  await flow.closeWrite();
}

async function writeFull(flow: Flow, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) {
    off += await flow.write(data.subarray(off));
  }
}

/** Sends `data`, reads the echo and the peer's digest; checks both. */
async function exchange(flow: Flow, data: Uint8Array, chunk: number) {
  const expected = createHash("sha256").update(data).digest("hex");
  const sending = (async () => {
    for (let off = 0; off < data.length; off += chunk) {
      await writeFull(flow, data.subarray(off, off + chunk));
    }
    await flow.closeWrite();
  })();
  const hash = createHash("sha256");
  const tail = new Uint8Array(32);
  let received = 0;
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    for (let i = 0; i < n;) {
      const echoLeft = data.length - received;
      if (echoLeft > 0) {
        const k = Math.min(echoLeft, n - i);
        hash.update(buf.subarray(i, i + k));
        received += k;
        i += k;
      } else {
        const k = Math.min(32 - (received - data.length), n - i);
        if (k <= 0) throw new Error("more bytes than sent + digest");
        tail.set(buf.subarray(i, i + k), received - data.length);
        received += k;
        i += k;
      }
    }
  }
  await sending;
  if (received !== data.length + 32) {
    throw new Error(`received ${received} bytes, expected ${data.length + 32}`);
  }
  const echoed = hash.digest("hex");
  const theirs = Array.from(tail, (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
  if (echoed !== expected) {
    throw new Error("the echo differs from what was sent");
  }
  if (theirs !== expected) throw new Error("the server's digest differs");
}

/** Options of {@linkcode tlsEcho}. */
export interface TlsEchoOptions {
  flows: number;
  bytes: number;
  server: "mimic" | "deno";
  /** Write size of the clients. */
  chunk?: number;
  seed?: number;
  log?: (line: string) => void;
}

/**
 * N concurrent TLS echo flows; see the module doc.
 *
 * @param options How many flows, how many bytes each, which server.
 * @returns The measurements.
 */
export async function tlsEcho(options: TlsEchoOptions): Promise<LoadReport> {
  const { flows, bytes, server: kind } = options;
  const chunk = options.chunk ?? 64 * 1024;
  const log = options.log ?? (() => {});
  const ca = fixture("ca.pem");
  const cert = fixture("localhost.pem");
  const key = fixture("localhost.key");
  // One random pool; flow i sends a window of it at its own offset.
  const pool = new Prng(options.seed ?? 1).bytes(bytes + 4 * MiB);
  const dataOf = (i: number) => {
    const off = (i * 7919) % (pool.length - bytes);
    return pool.subarray(off, off + bytes);
  };

  const errors: string[] = [];
  const serverErrors: unknown[] = [];
  let handled = 0;
  let port: number;
  let stop: () => Promise<void>;
  if (kind === "mimic") {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    port = listener.addr.port;
    const server = serve(listener, async (flow) => {
      await echoWithDigest(flow);
      handled++;
    }, {
      upgrade: (flow, signal) => acceptTls(flow, { cert, key, signal }),
      onError: (e) => serverErrors.push(e),
      closeOnShutdown: true,
    });
    stop = () => server.shutdown();
  } else {
    const listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert,
      key,
    });
    port = listener.addr.port;
    const server = serve(listener, async (flow) => {
      await echoWithDigest(flow);
      handled++;
    }, { onError: (e) => serverErrors.push(e), closeOnShutdown: true });
    stop = () => server.shutdown();
  }
  const ctx = empty.add(tls.endpoint, {
    hostname: "localhost",
    caCerts: [ca],
    over: empty.add(tcp.endpoint, { hostname: "127.0.0.1", port }),
  });

  // Warm up (the engine's compilation is not per connection).
  const warm = await resolve(ctx);
  await exchange(warm, dataOf(0).subarray(0, 1000), chunk);
  warm.close();
  handled--;

  const rss = new RssSampler();
  const t0 = performance.now();
  // Phase 1: every flow connects and completes its handshake.
  const opened = await Promise.allSettled(
    Array.from({ length: flows }, () => resolve(ctx)),
  );
  const t1 = performance.now();
  const live: Flow[] = [];
  for (const r of opened) {
    if (r.status === "fulfilled") live.push(r.value);
    else errors.push(`connect: ${r.reason}`);
  }
  // Deno.listenTls handshakes lazily: one byte each way would be needed to
  // be sure; the RSS sample below is what the connections hold idle.
  await new Promise((ok) => setTimeout(ok, 200));
  const rssIdle = rss.sample();
  log(
    `  ${live.length} flows established in ${((t1 - t0) / 1000).toFixed(2)} s`,
  );
  // Phase 2: every flow sends and checks its echo, concurrently.
  const results = await Promise.allSettled(
    live.map((flow, i) => exchange(flow, dataOf(i), chunk)),
  );
  const t2 = performance.now();
  let ok = 0;
  for (const r of results) {
    if (r.status === "fulfilled") ok++;
    else errors.push(`exchange: ${r.reason}`);
  }
  const wasmMemoryBytes = _engineStatsForTesting()?.memoryBytes ?? 0;
  rss.stop();
  for (const flow of live) flow.close();
  await stop();
  for (const e of serverErrors) errors.push(`server: ${e}`);
  if (handled !== ok && errors.length === 0) {
    errors.push(`the server handled ${handled} flows, ${ok} checked`);
  }
  return {
    scenario: `TLS echo, our client → ${
      kind === "mimic" ? "serve() + acceptTls" : "Deno.listenTls"
    }`,
    flows,
    bytesPerFlow: bytes,
    ok,
    failed: flows - ok,
    errors,
    wallMs: t2 - t0,
    handshakeMs: t1 - t0,
    transferMs: t2 - t1,
    rssStart: rss.start,
    rssIdlePeak: Math.max(rssIdle, rss.start),
    rssPeak: rss.peak,
    bytesPerIdleFlow: Math.max(0, rssIdle - rss.start) / flows,
    bytesPerBusyFlow: Math.max(0, rss.peak - rss.start) / flows,
    wasmMemoryBytes,
    throughput: (2 * ok * bytes) / MiB / ((t2 - t1) / 1000),
  };
}

/** Options of {@linkcode resolveStorm}. */
export interface StormOptions {
  count: number;
  /** Listen on ::1 too (else its attempts are refused and fall back). */
  dualStack?: boolean;
  log?: (line: string) => void;
}

/**
 * N concurrent `resolve()` calls with Happy Eyeballs candidates; see the
 * module doc.
 *
 * @param options How many.
 * @returns The measurements.
 */
export async function resolveStorm(options: StormOptions): Promise<LoadReport> {
  const { count } = options;
  const v4 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = v4.addr.port;
  let v6: Deno.Listener | undefined;
  if (options.dualStack) {
    try {
      v6 = Deno.listen({ hostname: "::1", port });
    } catch {
      v6 = undefined; // no IPv6 loopback, or the port is taken there
    }
  }
  const errors: string[] = [];
  const serverErrors: unknown[] = [];
  const echo = async (flow: Flow) => {
    const buf = new Uint8Array(1);
    for (let n; (n = await flow.read(buf)) !== null;) {
      await flow.write(buf.subarray(0, n));
    }
  };
  const servers = [v4, ...(v6 ? [v6] : [])].map((l) =>
    serve(l, echo, {
      onError: (e) => serverErrors.push(e),
      closeOnShutdown: true,
    })
  );
  let lookups = 0;
  const ctx = empty.add(tcp.endpoint, {
    hostname: "storm.test",
    port,
    lookup: (_name: string, type: "A" | "AAAA") => {
      lookups++;
      return Promise.resolve(type === "AAAA" ? ["::1"] : ["127.0.0.1"]);
    },
  });
  const rss = new RssSampler();
  const t0 = performance.now();
  const opened = await Promise.allSettled(
    Array.from({ length: count }, () => resolve(ctx)),
  );
  const t1 = performance.now();
  const live: Flow[] = [];
  for (const r of opened) {
    if (r.status === "fulfilled") live.push(r.value);
    else errors.push(`resolve: ${r.reason}`);
  }
  const rssIdle = rss.sample();
  const families = { v4: 0, v6: 0 };
  const checks = await Promise.allSettled(live.map(async (flow, i) => {
    const addr = (flow as Deno.TcpConn).remoteAddr as Deno.NetAddr;
    families[addr.hostname.includes(":") ? "v6" : "v4"]++;
    await flow.write(new Uint8Array([i & 255]));
    const buf = new Uint8Array(1);
    if ((await flow.read(buf)) !== 1 || buf[0] !== (i & 255)) {
      throw new Error("bad echo");
    }
  }));
  const t2 = performance.now();
  rss.stop();
  let ok = 0;
  for (const r of checks) {
    if (r.status === "fulfilled") ok++;
    else errors.push(`echo: ${r.reason}`);
  }
  for (const flow of live) flow.close();
  await Promise.all(servers.map((s) => s.shutdown()));
  for (const e of serverErrors) errors.push(`server: ${e}`);
  options.log?.(
    `  ${lookups} lookups; connected over IPv4 ${families.v4}, IPv6 ${families.v6}`,
  );
  return {
    scenario: `resolve() storm, Happy Eyeballs (::1, 127.0.0.1)${
      v6 ? ", dual stack" : ", IPv4 only"
    }`,
    flows: count,
    bytesPerFlow: 1,
    ok,
    failed: count - ok,
    errors,
    wallMs: t2 - t0,
    handshakeMs: t1 - t0,
    transferMs: t2 - t1,
    rssStart: rss.start,
    rssIdlePeak: rssIdle,
    rssPeak: rss.peak,
    bytesPerIdleFlow: Math.max(0, rssIdle - rss.start) / count,
    bytesPerBusyFlow: Math.max(0, rss.peak - rss.start) / count,
    wasmMemoryBytes: 0,
    throughput: 0,
  };
}
