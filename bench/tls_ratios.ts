// Ratios of our TLS (startTls: rustls in WASM, over Deno.connect) against
// Deno's native TLS (Deno.connectTls) and node:tls over a Duplex wrapping a
// Deno.Conn, on loopback, in one run.
//
//   deno run -A bench/tls_ratios.ts [--size MiB] [--rounds N]
//       [--handshakes N] [--idle N] [--strict]
//   deno run -A bench/tls_ratios.ts --quick      # 16 MiB, fewer of all: CI
//
// The server is Deno.listenTls (the fixture ECDSA P-256 certificate) in a
// child process, so only the clients share this process's thread.
//
// Bulk: each round moves `--size` MiB (default 256) client→server (the server
// discards; timed from the first write to the server's "ok") and
// server→client (timed from the first byte received to end of flow), once
// per way, the ways in rotating order; the medians over the rounds give
// MB/s. Ways: ours (defaults: host AEAD, ChaCha20-Poly1305 first on Deno),
// ours-wasm (the engine's own ciphers), ours-aes128/-aes256 (AES-GCM only,
// as against a server that picks it) and their -wasm forms (an eighth of
// the size), native, node. Targets: ChaCha20 ≥ 0.33 × native and ≥ 0.75 ×
// node:tls, both directions; AES-GCM ≥ 0.5 × our ChaCha20 in the same run.
//
// Handshakes: `--handshakes` (default 200) sequential connects per way, in
// alternating blocks of 25: TCP connect + TLS 1.3 handshake, each timed;
// the median ms per handshake is compared. Ways: ours (X25519MLKEM768
// first), ours-x25519, ours-resumed (a ticket from the connection before),
// native, node; against the child-process server, then against one in this
// process. Targets: full ≤ 1.35 × native (child process), ≤ 1.6 × (in
// process); resumed ≤ 0.8 × native's full handshake.
//
// Memory: a child process per way opens `--idle` (default 1,000) idle TLS
// connections; per connection: the engine's heap and WebAssembly.Memory
// growth (ours), and the process's RSS growth (every way; it includes the
// sockets and the JS objects). Target: ours ≤ 40 KiB RSS per connection.
//
// --strict: exit 1 when a target is missed (the numbers are printed anyway).
import {
  CHUNK,
  type Client,
  collectTickets,
  connectClient,
  download,
  listenBench,
  upload,
  type Way,
  WAYS,
} from "./_tls.ts";
import { _engineStatsForTesting } from "../src/_engine.ts";
import { median, rotate } from "./_stats.ts";

const MiB = 1024 * 1024;
/** Bulk: ours (ChaCha20 first), its AES-GCM and wasm-only variants, native, node. */
const BULK_WAYS: readonly Way[] = [
  "ours",
  "ours-wasm",
  "ours-aes128",
  "ours-aes256",
  "ours-aes128-wasm",
  "ours-aes256-wasm",
  "native",
  "node",
];
/** Handshakes: ours (X25519MLKEM768 first), x25519 only, resumed, native, node. */
const HS_WAYS: readonly Way[] = [
  "ours",
  "ours-x25519",
  "ours-resumed",
  "native",
  "node",
];
const BLOCK = 25;

interface Options {
  size: number;
  rounds: number;
  handshakes: number;
  idle: number;
  strict: boolean;
}

function parseArgs(args: string[]): Options & {
  serve: boolean;
  memory?: Way;
  port?: number;
} {
  const quick = args.includes("--quick");
  const o = {
    size: (quick ? 16 : 256) * MiB,
    rounds: quick ? 3 : 5,
    handshakes: quick ? 50 : 200,
    idle: quick ? 200 : 1000,
    strict: false,
    serve: false,
    memory: undefined as Way | undefined,
    port: undefined as number | undefined,
  };
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].includes("=")
      ? [
        args[i].slice(0, args[i].indexOf("=")),
        args[i].slice(args[i].indexOf("=") + 1),
      ]
      : [args[i], undefined];
    const operand = (): string => {
      const x = inline ?? args[++i];
      if (x === undefined) throw new TypeError(`${flag} needs a value`);
      return x;
    };
    const count = (): number => {
      const x = operand();
      const n = Number(x);
      if (!(n > 0) || !Number.isFinite(n)) {
        throw new TypeError(`${flag} needs a positive number, got ${x}`);
      }
      return n;
    };
    switch (flag) {
      case "--quick":
        break;
      case "--size":
        o.size = Math.round(count() * MiB);
        break;
      case "--rounds":
        o.rounds = Math.ceil(count());
        break;
      case "--handshakes":
        o.handshakes = Math.ceil(count());
        break;
      case "--idle":
        o.idle = Math.ceil(count());
        break;
      case "--strict":
        o.strict = true;
        break;
      case "--serve":
        o.serve = true;
        break;
      case "--memory":
        o.memory = operand() as Way;
        break;
      case "--port":
        o.port = count();
        break;
      default:
        throw new TypeError(`unknown argument ${JSON.stringify(args[i])}`);
    }
  }
  return o;
}

const gc = (globalThis as { gc?: () => void }).gc;

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// --- Child: the server --------------------------------------------------------

function runServer(): void {
  // Serves until the parent kills this process.
  console.log(listenBench().port);
}

// --- Child: memory of idle connections ----------------------------------------

interface MemoryResult {
  way: Way;
  idle: number;
  rssBytes: number;
  engineHeapBytes: number | null;
  engineMemoryBytes: number | null;
  describe: string;
}

async function runMemory(way: Way, port: number, idle: number): Promise<void> {
  // Warm up: the engine compiled and instantiated, the config cached.
  for (let i = 0; i < 5; i++) (await connectClient(way, port)).close();
  await settle();
  const rss0 = Deno.memoryUsage().rss;
  const engine0 = _engineStatsForTesting();
  const clients: Client[] = [];
  for (let i = 0; i < idle; i++) clients.push(await connectClient(way, port));
  await settle();
  const rss1 = Deno.memoryUsage().rss;
  const engine1 = _engineStatsForTesting();
  const result: MemoryResult = {
    way,
    idle,
    rssBytes: (rss1 - rss0) / idle,
    engineHeapBytes: engine0 && engine1
      ? (engine1.heapBytes - engine0.heapBytes) / idle
      : null,
    engineMemoryBytes: engine0 && engine1
      ? (engine1.memoryBytes - engine0.memoryBytes) / idle
      : null,
    describe: await clients[0].describe(),
  };
  console.log(JSON.stringify(result));
  for (const c of clients) c.close();
}

// --- The parent ---------------------------------------------------------------

async function startServerProcess(): Promise<{
  port: number;
  stop(): Promise<void>;
}> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      import.meta.filename!,
      "--serve",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the bench server exited before listening");
    out += value;
  }
  reader.releaseLock();
  return {
    port: Number(out.trim()),
    stop: async () => {
      child.kill("SIGKILL");
      await child.stdout.cancel().catch(() => {});
      await child.status;
    },
  };
}

async function measureMemory(
  way: Way,
  port: number,
  idle: number,
): Promise<MemoryResult> {
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--v8-flags=--expose-gc",
      import.meta.filename!,
      "--memory",
      way,
      "--port",
      String(port),
      "--idle",
      String(idle),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (code !== 0) throw new Error(`the ${way} memory child failed`);
  return JSON.parse(new TextDecoder().decode(stdout).trim());
}

async function main(o: Options): Promise<number> {
  const server = await startServerProcess();
  const port = server.port;
  try {
    const fmt = (x: number, d = 2) => x.toFixed(d);
    const verdict = (ok: boolean) => ok ? "ok" : "MISSED";
    const missed: string[] = [];
    console.log(
      `tls_ratios: ${o.size / MiB} MiB each way × ${o.rounds} rounds, ` +
        `${o.handshakes} handshakes, ${o.idle} idle connections per way; ` +
        `${CHUNK / 1024} KiB writes; server: Deno.listenTls in a child process`,
    );

    // Warm up every way (JIT, the engine's compile), and say what each negotiates.
    for (const way of BULK_WAYS) {
      const c = await connectClient(way, port);
      const what = await c.describe();
      await upload(c, 4 * MiB);
      c.close();
      const d = await connectClient(way, port);
      await download(d, 4 * MiB);
      d.close();
      console.log(`  ${way.padEnd(16)} ${what}`);
    }

    // Bulk. The engine's own AES-GCM is slow: it moves an eighth.
    const sizeOf = (way: Way) =>
      way.endsWith("-wasm") && way.includes("aes") ? o.size / 8 : o.size;
    const up = new Map<Way, number[]>(BULK_WAYS.map((w) => [w, []]));
    const downs = new Map<Way, number[]>(BULK_WAYS.map((w) => [w, []]));
    for (let round = 0; round < o.rounds; round++) {
      for (const way of rotate(BULK_WAYS, round)) {
        const size = sizeOf(way);
        const c = await connectClient(way, port);
        const t0 = performance.now();
        await upload(c, size);
        const ms = performance.now() - t0;
        c.close();
        up.get(way)!.push(size / 1e6 / (ms / 1000));
        const d = await connectClient(way, port);
        const dms = await download(d, size); // from the first byte
        d.close();
        downs.get(way)!.push(size / 1e6 / (dms / 1000));
      }
    }
    for (
      const [name, data] of [["client→server", up], [
        "server→client",
        downs,
      ]] as const
    ) {
      const m = (w: Way) => median(data.get(w)!);
      const spread = (w: Way) => {
        const xs = data.get(w)!;
        return `${fmt(Math.min(...xs), 0)}-${fmt(Math.max(...xs), 0)}`;
      };
      const ours = m("ours");
      const native = m("native");
      const node = m("node");
      const okNative = ours / native >= 0.33;
      const okNode = ours / node >= 0.75;
      if (!okNative) missed.push(`bulk ${name} vs native`);
      if (!okNode) missed.push(`bulk ${name} vs node:tls`);
      console.log(
        `bulk ${name} (MB/s, median and range): ` +
          BULK_WAYS.map((w) => `${w} ${fmt(m(w), 0)} (${spread(w)})`).join(
            ", ",
          ),
      );
      console.log(
        `  ChaCha20 (ours)/native ${fmt(ours / native)} (target ≥ 0.33 ${
          verdict(okNative)
        }), ours/node:tls ${fmt(ours / node)} (target ≥ 0.75 ${
          verdict(okNode)
        }); ours-wasm/ours ${fmt(m("ours-wasm") / ours)}`,
      );
      for (const aes of ["ours-aes128", "ours-aes256"] as const) {
        const r = m(aes) / ours;
        const ok = r >= 0.5;
        if (!ok) missed.push(`${aes} ${name}`);
        console.log(
          `  ${aes}/ours (AES-GCM against ChaCha20, same run) ${fmt(r)} ` +
            `(target ≥ 0.5 ${verdict(ok)}); against the engine's own AES-GCM ${
              fmt(m(aes) / m(`${aes}-wasm` as Way))
            }x`,
        );
      }
    }

    // Handshakes: each timed alone; the median is compared, as the server's
    // Nagle meeting the client's delayed ACK stalls a few of them (of every
    // way) by ~40 ms on loopback. Once against the child-process server, once
    // against a server in this process (sharing its thread with the client).
    const inProcess = listenBench();
    try {
      for (
        const [where, at, limit] of [
          ["child-process server", port, 1.35],
          ["in-process server", inProcess.port, 1.6],
        ] as const
      ) {
        await collectTickets("ours-resumed", at);
        const times = new Map<Way, number[]>(HS_WAYS.map((w) => [w, []]));
        for (
          let done = 0, round = 0;
          done < o.handshakes;
          done += BLOCK, round++
        ) {
          const n = Math.min(BLOCK, o.handshakes - done);
          for (const way of rotate(HS_WAYS, round)) {
            for (let i = 0; i < n; i++) {
              const t0 = performance.now();
              const c = await connectClient(way, at);
              const t1 = performance.now();
              if (way === "ours-resumed") {
                // Keep the cache full: read this connection's new tickets.
                await upload(c, 1);
              }
              c.close();
              times.get(way)!.push(t1 - t0);
            }
          }
        }
        const hs = (w: Way) => {
          const xs = times.get(w)!;
          const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
          const stalls = xs.filter((x) => x > 20).length;
          return { median: median(xs), mean, stalls };
        };
        const native = hs("native").median;
        const ratio = hs("ours").median / native;
        const resumed = hs("ours-resumed").median / native;
        if (ratio > limit) missed.push(`handshake (${where})`);
        if (resumed > 0.8) missed.push(`resumed handshake (${where})`);
        const hsText = (w: Way) => {
          const h = hs(w);
          return `${w} ${fmt(h.median, 3)} ms (mean ${
            fmt(h.mean, 2)
          }, ${h.stalls} > 20 ms)`;
        };
        console.log(
          `handshake, ${where} (TCP connect + TLS 1.3, ECDSA P-256, sequential, median): ` +
            HS_WAYS.map(hsText).join(", "),
        );
        console.log(
          `  full: ours/native ${fmt(ratio)} (target ≤ ${limit} ${
            verdict(ratio <= limit)
          }), ours-x25519/native ${
            fmt(hs("ours-x25519").median / native)
          }; resumed: ours-resumed/native full ${fmt(resumed)} (target ≤ 0.8 ${
            verdict(resumed <= 0.8)
          })`,
        );
      }
    } finally {
      await inProcess.close();
    }

    // Memory, each way in a fresh process.
    const memory = new Map<Way, MemoryResult>();
    for (const way of WAYS) {
      memory.set(way, await measureMemory(way, port, o.idle));
    }
    const KiB = (x: number | null) =>
      x === null ? "n/a" : `${fmt(x / 1024, 1)} KiB`;
    const ours = memory.get("ours")!;
    const engine = Math.max(
      ours.engineHeapBytes ?? 0,
      ours.engineMemoryBytes ?? 0,
    );
    const memOk = ours.rssBytes <= 40 * 1024;
    if (!memOk) missed.push("memory");
    console.log(
      `memory per idle connection (${o.idle} open): ours: engine heap ${
        KiB(ours.engineHeapBytes)
      }, engine WebAssembly.Memory growth ${KiB(ours.engineMemoryBytes)} (${
        KiB(engine)
      } at most); process RSS: ours ${KiB(ours.rssBytes)} (target ≤ 40 KiB ${
        verdict(memOk)
      }), ` +
        `Deno.connectTls ${
          KiB(memory.get("native")!.rssBytes)
        }, node:tls over Duplex ${KiB(memory.get("node")!.rssBytes)}`,
    );
    if (missed.length > 0) console.log(`missed: ${missed.join(", ")}`);
    return o.strict && missed.length > 0 ? 1 : 0;
  } finally {
    await server.stop();
  }
}

if (import.meta.main) {
  const o = parseArgs(Deno.args);
  if (o.serve) runServer();
  else if (o.memory !== undefined) {
    if (!WAYS.includes(o.memory) || o.port === undefined) {
      throw new TypeError("--memory needs ours, native or node, and --port");
    }
    await runMemory(o.memory, o.port, o.idle);
  } else Deno.exitCode = await main(o);
}
