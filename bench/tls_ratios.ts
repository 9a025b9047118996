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
// MB/s. Targets: ours ≥ 0.3 × native.
//
// Handshakes: `--handshakes` (default 200) sequential connects per way, in
// alternating blocks of 25: TCP connect + TLS 1.3 handshake + close, each
// timed; the median ms per handshake is compared (a few handshakes of every
// way stall ~40 ms on Nagle + delayed ACK: counted, and in the mean). Target:
// ours ≤ 1.5 × native.
//
// Memory: a child process per way opens `--idle` (default 1,000) idle TLS
// connections; per connection: the engine's heap and WebAssembly.Memory
// growth (ours), and the process's RSS growth (every way; it includes the
// sockets and the JS objects). Target: engine ≤ 64 KiB per idle connection.
//
// --strict: exit 1 when a target is missed (the numbers are printed anyway).
import {
  CHUNK,
  type Client,
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
    for (const way of WAYS) {
      const c = await connectClient(way, port);
      const what = await c.describe();
      await upload(c, 8 * MiB);
      c.close();
      const d = await connectClient(way, port);
      await download(d, 8 * MiB);
      d.close();
      console.log(`  ${way.padEnd(6)} ${what}`);
    }

    // Bulk.
    const up = new Map<Way, number[]>(WAYS.map((w) => [w, []]));
    const downs = new Map<Way, number[]>(WAYS.map((w) => [w, []]));
    for (let round = 0; round < o.rounds; round++) {
      for (const way of rotate(WAYS, round)) {
        const c = await connectClient(way, port);
        const t0 = performance.now();
        await upload(c, o.size);
        const ms = performance.now() - t0;
        c.close();
        up.get(way)!.push(o.size / 1e6 / (ms / 1000));
        const d = await connectClient(way, port);
        const dms = await download(d, o.size); // from the first byte
        d.close();
        downs.get(way)!.push(o.size / 1e6 / (dms / 1000));
      }
    }
    for (
      const [name, data] of [["client→server", up], [
        "server→client",
        downs,
      ]] as const
    ) {
      const ours = median(data.get("ours")!);
      const native = median(data.get("native")!);
      const node = median(data.get("node")!);
      const ok = ours / native >= 0.3;
      if (!ok) missed.push(`bulk ${name}`);
      console.log(
        `bulk ${name}: ours ${fmt(ours, 0)} MB/s, Deno.connectTls ${
          fmt(native, 0)
        } MB/s, ` +
          `node:tls over Duplex ${fmt(node, 0)} MB/s; ours/native ${
            fmt(ours / native)
          } ` +
          `(target ≥ 0.3 ${verdict(ok)}), ours/node ${fmt(ours / node)}`,
      );
    }

    // Handshakes: each timed alone; the median is compared, as the server's
    // Nagle meeting the client's delayed ACK stalls a few of them (of every
    // way) by ~40 ms on loopback.
    const times = new Map<Way, number[]>(WAYS.map((w) => [w, []]));
    for (let done = 0, round = 0; done < o.handshakes; done += BLOCK, round++) {
      const n = Math.min(BLOCK, o.handshakes - done);
      for (const way of rotate(WAYS, round)) {
        for (let i = 0; i < n; i++) {
          const t0 = performance.now();
          (await connectClient(way, port)).close();
          times.get(way)!.push(performance.now() - t0);
        }
      }
    }
    const hs = (w: Way) => {
      const xs = times.get(w)!;
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      const stalls = xs.filter((x) => x > 20).length;
      return { median: median(xs), mean, stalls };
    };
    const [hsOurs, hsNative, hsNode] = [hs("ours"), hs("native"), hs("node")];
    const hsRatio = hsOurs.median / hsNative.median;
    if (hsRatio > 1.5) missed.push("handshake");
    const hsText = (h: ReturnType<typeof hs>) =>
      `${fmt(h.median, 3)} ms (mean ${fmt(h.mean, 2)}, ${h.stalls} > 20 ms)`;
    console.log(
      `handshake (TCP connect + TLS 1.3, ECDSA P-256, sequential, median): ours ${
        hsText(hsOurs)
      }, Deno.connectTls ${hsText(hsNative)}, node:tls over Duplex ${
        hsText(hsNode)
      }; ours/native ${fmt(hsRatio)} (target ≤ 1.5 ${verdict(hsRatio <= 1.5)})`,
    );

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
    const memOk = ours.engineHeapBytes !== null && engine <= 64 * 1024;
    if (!memOk) missed.push("memory");
    console.log(
      `memory per idle connection (${o.idle} open): ours: engine heap ${
        KiB(ours.engineHeapBytes)
      }, engine WebAssembly.Memory growth ${KiB(ours.engineMemoryBytes)} ` +
        `(target ≤ 64 KiB ${verdict(memOk)}); process RSS: ours ${
          KiB(ours.rssBytes)
        }, ` +
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
