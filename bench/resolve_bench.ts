// Benchmarks of the tcp protocol against Deno.connect on loopback: the cost
// of a connect through resolve(), and bulk transfer through the flow.
//
//   deno bench --allow-net bench/resolve_bench.ts
import { empty, type Flow, resolve } from "../mod.ts";
import { tcp } from "../src/tcp.ts";

const HOST = "127.0.0.1";
const BULK = 64 * 1024 * 1024;
const CHUNK = 64 * 1024;

/** Accepts connections and closes each at once. */
const acceptor = Deno.listen({ hostname: HOST, port: 0 });
/** Accepts connections, reads each to its end, then answers "ok". */
const sink = Deno.listen({ hostname: HOST, port: 0 });

async function serveAcceptor(): Promise<void> {
  try {
    for await (const conn of acceptor) conn.close();
  } catch {
    // Closed by unload.
  }
}

async function drain(conn: Deno.Conn): Promise<void> {
  try {
    const buf = new Uint8Array(CHUNK);
    while (await conn.read(buf) !== null) { /* discard */ }
    await conn.write(new TextEncoder().encode("ok"));
  } catch {
    // The client went away.
  } finally {
    conn.close();
  }
}

async function serveSink(): Promise<void> {
  try {
    for await (const conn of sink) drain(conn);
  } catch {
    // Closed by unload.
  }
}

const serving = [serveAcceptor(), serveSink()];
globalThis.addEventListener("unload", () => {
  acceptor.close();
  sink.close();
  void Promise.allSettled(serving);
});

const connectCtx = empty.add(tcp.endpoint, {
  hostname: HOST,
  port: acceptor.addr.port,
});
const sinkCtx = empty.add(tcp.endpoint, {
  hostname: HOST,
  port: sink.addr.port,
});
const payload = new Uint8Array(CHUNK).fill(0x6d);

/** Writes BULK bytes, half-closes, and waits for the sink's answer. */
async function transfer(conn: Flow): Promise<void> {
  for (let sent = 0; sent < BULK;) {
    let off = 0;
    while (off < CHUNK) off += await conn.write(payload.subarray(off));
    sent += CHUNK;
  }
  await conn.closeWrite();
  const buf = new Uint8Array(8);
  while (await conn.read(buf) !== null) { /* "ok" */ }
  conn.close();
}

// Fixed iteration counts: each connect leaves a TIME_WAIT socket behind.
Deno.bench({
  name: "Deno.connect",
  group: "connect",
  baseline: true,
  n: 2000,
  warmup: 200,
  async fn() {
    const conn = await Deno.connect({
      hostname: HOST,
      port: acceptor.addr.port,
    });
    conn.close();
  },
});

Deno.bench({
  name: "Deno.connect + setNoDelay (what the tcp protocol does)",
  group: "connect",
  n: 2000,
  warmup: 200,
  async fn() {
    const conn = await Deno.connect({
      hostname: HOST,
      port: acceptor.addr.port,
    });
    conn.setNoDelay(true);
    conn.close();
  },
});

Deno.bench({
  name: "resolve() a tcp endpoint (a TcpFlow)",
  group: "connect",
  n: 2000,
  warmup: 200,
  async fn() {
    const flow = await resolve(connectCtx);
    flow.close();
  },
});

Deno.bench({
  name: "64 MiB over Deno.connect",
  group: "bulk",
  baseline: true,
  n: 20,
  warmup: 2,
  async fn() {
    await transfer(
      await Deno.connect({ hostname: HOST, port: sink.addr.port }),
    );
  },
});

Deno.bench({
  name: "64 MiB over a resolved tcp flow (TcpFlow)",
  group: "bulk",
  n: 20,
  warmup: 2,
  async fn() {
    await transfer(await resolve(sinkCtx));
  },
});
