// Ratios of the tcp protocol against Deno.connect on loopback.
//
//   deno run -A bench/tcp_ratios.ts [rounds]
//
// Connect: each round makes 1,000 sequential connections each way, in
// alternating blocks of 50 (so drift and noise hit every way alike); the
// medians over the rounds are compared: target ≤ 1.08 (resolve / direct
// Deno.connect + setNoDelay, time per connect, as the tcp protocol turns
// no-delay on). A bare way, resolve() of a protocol that is Deno.connect and
// nothing else, splits the overhead between the core (unfold, connect) and
// the tcp protocol (validation, signal, no-delay, its TcpFlow).
//
// Bulk: each round sends 256 MiB twice each way to a sink, with 64 KiB and
// with 1 MiB writes, and reads 256 MiB twice each way from a source, each
// way in a child process of its own; target ≥ 0.95 (resolved / direct,
// MB/s). The resolved flow is a TcpFlow (the package's flow over the
// Deno.TcpConn: calls queued in call order, typed errors); it also turns
// TCP_NODELAY on (the kernel then pushes every write at once):
// "direct+nodelay" shows that effect alone, and "resolved noDelay:false" the
// flow without it.
import { empty, type Flow, register, resolve } from "../mod.ts";
import { tcp } from "../src/tcp.ts";
import { median, rotate } from "./_stats.ts";

const HOST = "127.0.0.1";
const CONNECTS = 1000;
const BLOCK = 50;
const BULK = 256 * 1024 * 1024;
const CHUNKS = [64 * 1024, 1024 * 1024];
const TRANSFERS = 2;
const CHILD = Deno.args[0] === "--bulk";
const SINK = Deno.args[0] === "--sink";
const ROUNDS = CHILD ? 0 : Number(Deno.args[0] ?? 7);

const acceptor = Deno.listen({ hostname: HOST, port: 0 });
// The sink lives in a process of its own (`--sink`), so the readers never
// share the writers' thread; `--bulk` children get its port as an argument.
const sink = Deno.listen({ hostname: HOST, port: 0 });
const sinkPort = CHILD ? Number(Deno.args[3]) : sink.addr.port;
// The source (in the same process as the sink) writes BULK bytes to each
// connection, then closes it.
const source = Deno.listen({ hostname: HOST, port: 0 });
const sourcePort = CHILD ? Number(Deno.args[4]) : source.addr.port;

async function serveAcceptor(): Promise<void> {
  try {
    for await (const conn of acceptor) conn.close();
  } catch {
    // Closed at the end.
  }
}

async function drain(conn: Deno.Conn): Promise<void> {
  try {
    const buf = new Uint8Array(1024 * 1024);
    while (await conn.read(buf) !== null) { /* discard */ }
    await conn.write(new TextEncoder().encode("ok"));
  } catch {
    // The client went away.
  } finally {
    conn.close();
  }
}

async function serveSink(): Promise<void> {
  const drains: Promise<void>[] = [];
  try {
    for await (const conn of sink) drains.push(drain(conn));
  } catch {
    // Closed at the end.
  }
  await Promise.all(drains);
}

async function fill(conn: Deno.Conn, chunk: number): Promise<void> {
  try {
    const payload = new Uint8Array(chunk).fill(0x6d);
    for (let sent = 0; sent < BULK; sent += chunk) {
      let off = 0;
      while (off < chunk) off += await conn.write(payload.subarray(off));
    }
  } catch {
    // The client went away.
  } finally {
    conn.close();
  }
}

async function serveSource(): Promise<void> {
  const fills: Promise<void>[] = [];
  try {
    // The first byte the client sends says the write size: 0 → 64 KiB, 1 → 1 MiB.
    for await (const conn of source) {
      const one = new Uint8Array(1);
      fills.push(
        conn.read(one).then(() => fill(conn, CHUNKS[one[0]] ?? CHUNKS[0])),
      );
    }
  } catch {
    // Closed at the end.
  }
  await Promise.all(fills);
}

const serving = [serveAcceptor(), serveSink(), serveSource()];

const at = (port: number) => ({ hostname: HOST, port });
const tcpCtx = empty.add(tcp.endpoint, at(acceptor.addr.port));
const sinkCtx = empty.add(tcp.endpoint, at(sinkPort));
const nagleCtx = empty.add(tcp.endpoint, {
  ...at(sinkPort),
  noDelay: false,
});
const bare = register(
  "bare-tcp",
  (e: { hostname: string; port: number }) => Deno.connect(e),
);
const bareCtx = empty.add(bare.endpoint, at(acceptor.addr.port));

/** Reads everything the source sends, in `chunk`-sized reads. */
async function receive(conn: Flow, chunk: number): Promise<void> {
  await conn.write(new Uint8Array([CHUNKS.indexOf(chunk)]));
  const buf = new Uint8Array(chunk);
  let got = 0;
  for (let n; (n = await conn.read(buf)) !== null;) got += n;
  if (got !== BULK) throw new Error(`received ${got} of ${BULK} bytes`);
  conn.close();
}

/** Writes 256 MiB in `chunk`-sized writes, half-closes, waits for "ok". */
async function transfer(conn: Flow, chunk: number): Promise<void> {
  const payload = new Uint8Array(chunk).fill(0x6d);
  for (let sent = 0; sent < BULK; sent += chunk) {
    let off = 0;
    while (off < chunk) off += await conn.write(payload.subarray(off));
  }
  await conn.closeWrite();
  const buf = new Uint8Array(8);
  while (await conn.read(buf) !== null) { /* "ok" */ }
  conn.close();
}

const connects = {
  direct: async (): Promise<void> =>
    (await Deno.connect(at(acceptor.addr.port))).close(),
  "direct+nodelay": async (): Promise<void> => {
    const conn = await Deno.connect(at(acceptor.addr.port));
    conn.setNoDelay(true);
    conn.close();
  },
  core: async (): Promise<void> => (await resolve(bareCtx)).close(),
  resolved: async (): Promise<void> => (await resolve(tcpCtx)).close(),
};
type ConnectWay = keyof typeof connects;

const opens = {
  direct: (): Promise<Flow> => Deno.connect(at(sinkPort)),
  "direct+nodelay": async (): Promise<Flow> => {
    const conn = await Deno.connect(at(sinkPort));
    conn.setNoDelay(true);
    return conn;
  },
  resolved: (): Promise<Flow> => resolve(sinkCtx),
  "resolved noDelay:false": (): Promise<Flow> => resolve(nagleCtx),
  "read direct": (): Promise<Flow> => Deno.connect(at(sourcePort)),
  "read resolved": (): Promise<Flow> =>
    resolve(empty.add(tcp.endpoint, at(sourcePort))),
};
type BulkWay = keyof typeof opens;

const usPerConnect: Record<ConnectWay, number[]> = {
  direct: [],
  "direct+nodelay": [],
  core: [],
  resolved: [],
};
const mbPerSecond = new Map<string, number[]>();
const bulkKey = (way: BulkWay, chunk: number) => `${way} ${chunk}`;

if (SINK) {
  console.log(`${sink.addr.port} ${source.addr.port}`);
  await Promise.all(serving); // until killed
}

if (CHILD) {
  // Child mode: `--bulk <way> <chunk>` prints the ms that TRANSFERS
  // transfers took, after one to warm up.
  const way = Deno.args[1] as BulkWay;
  const chunk = Number(Deno.args[2]);
  const run = way.startsWith("read") ? receive : transfer;
  await run(await opens[way](), chunk);
  const t0 = performance.now();
  for (let i = 0; i < TRANSFERS; i++) await run(await opens[way](), chunk);
  console.log(performance.now() - t0);
  acceptor.close();
  sink.close();
  source.close();
  await Promise.all(serving);
  Deno.exit(0);
}

// Warm up every path (JIT, the servers' loops).
for (const connect of Object.values(connects)) {
  for (let i = 0; i < 200; i++) await connect();
}
const sinkProcess = await (async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--sink"],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the sink process ended");
    text += decoder.decode(value, { stream: true });
  }
  await reader.cancel();
  const [port, sourcePort] = text.trim().split(" ").map(Number);
  return { child, port, sourcePort };
})();

/** Runs one bulk way in a child process; resolves to the ms it took. */
async function bulkInChild(way: BulkWay, chunk: number): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--bulk",
      way,
      `${chunk}`,
      `${sinkProcess.port}`,
      `${sinkProcess.sourcePort}`,
    ],
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`bulk child ${way} failed`);
  return Number(new TextDecoder().decode(out.stdout).trim());
}

const connectWays = Object.keys(connects) as ConnectWay[];
const bulkWays = Object.keys(opens) as BulkWay[];
for (let round = 0; round < ROUNDS; round++) {
  const order = rotate(connectWays, round);
  const spent: Record<ConnectWay, number> = {
    direct: 0,
    "direct+nodelay": 0,
    core: 0,
    resolved: 0,
  };
  for (let done = 0; done < CONNECTS; done += BLOCK) {
    for (const way of order) {
      const t0 = performance.now();
      for (let i = 0; i < BLOCK; i++) await connects[way]();
      spent[way] += performance.now() - t0;
    }
  }
  for (const way of order) {
    usPerConnect[way].push(spent[way] * 1000 / CONNECTS);
  }
  for (const chunk of CHUNKS) {
    // Each way in a process of its own, so that one way's objects never
    // make another's call sites polymorphic (V8 feedback is per process).
    const took = new Map<BulkWay, number>();
    for (const way of rotate(bulkWays, round)) {
      took.set(way, await bulkInChild(way, chunk));
    }
    for (const [way, ms] of took) {
      const key = bulkKey(way, chunk);
      const list = mbPerSecond.get(key) ?? [];
      list.push(TRANSFERS * BULK / 1e6 / (ms / 1000));
      mbPerSecond.set(key, list);
    }
  }
}

acceptor.close();
sink.close();
source.close();
await Promise.all(serving);
sinkProcess.child.kill();
await sinkProcess.child.status;

const fmt = (x: number, d = 3) => x.toFixed(d);
const verdict = (ok: boolean) => ok ? "ok" : "MISSED";
const paired = (xs: number[], ys: number[]) =>
  median(xs.map((x, i) => x / ys[i]));

console.log(
  `${ROUNDS} rounds: ${CONNECTS} connects each way; ` +
    `${TRANSFERS} × 256 MiB each way per write size`,
);
const c = {
  direct: median(usPerConnect.direct),
  nodelay: median(usPerConnect["direct+nodelay"]),
  core: median(usPerConnect.core),
  resolved: median(usPerConnect.resolved),
};
const connectRatio = c.resolved / c.nodelay;
console.log(
  `connect: Deno.connect+setNoDelay ${fmt(c.nodelay, 1)} µs, resolve(tcp) ` +
    `${fmt(c.resolved, 1)} µs: ratio ${fmt(connectRatio)} (paired ${
      fmt(paired(usPerConnect.resolved, usPerConnect["direct+nodelay"]))
    }), target ≤ 1.08 ${verdict(connectRatio <= 1.08)}; ` +
    `Deno.connect alone ${fmt(c.direct, 1)} µs`,
);
console.log(
  `  the core alone, resolve(bare Deno.connect protocol): ` +
    `${fmt(c.core, 1)} µs, ratio ${fmt(c.core / c.direct)}; ` +
    `the tcp protocol on top of it: ratio ${fmt(c.resolved / c.core)}`,
);
for (const chunk of CHUNKS) {
  const get = (way: BulkWay) => mbPerSecond.get(bulkKey(way, chunk))!;
  const direct = median(get("direct"));
  const nodelay = median(get("direct+nodelay"));
  const resolved = median(get("resolved"));
  const nagle = median(get("resolved noDelay:false"));
  const ratio = resolved / direct;
  console.log(
    `bulk, ${chunk / 1024} KiB writes: Deno.connect ${fmt(direct, 0)} MB/s, ` +
      `resolved ${fmt(resolved, 0)} MB/s: ratio ${fmt(ratio)} (paired ${
        fmt(paired(get("resolved"), get("direct")))
      }), target ≥ 0.95 ${verdict(ratio >= 0.95)}; ` +
      `vs Deno.connect+setNoDelay ${fmt(nodelay, 0)} MB/s: ratio ${
        fmt(resolved / nodelay)
      }; resolved with noDelay: false ${fmt(nagle, 0)} MB/s: ratio ${
        fmt(nagle / direct)
      }`,
  );
  const readDirect = median(get("read direct"));
  const readResolved = median(get("read resolved"));
  console.log(
    `bulk, ${chunk / 1024} KiB reads: Deno.connect ${fmt(readDirect, 0)} ` +
      `MB/s, resolved ${fmt(readResolved, 0)} MB/s: ratio ${
        fmt(readResolved / readDirect)
      } (paired ${
        fmt(paired(get("read resolved"), get("read direct")))
      }), target ≥ 0.95 ${verdict(readResolved / readDirect >= 0.95)}`,
  );
}
