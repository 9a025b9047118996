// Reliability: TLS faults over pipes and TCP. Peers that reset mid-handshake
// and mid-transfer, close without close_notify, half-close with close_notify
// and keep reading, stall until backpressure holds; records delivered one
// byte at a time and split at every offset; an AbortSignal fired at every
// stage of startTls / acceptTls. Each case ends in data delivered or a typed
// error, within a bounded time; Deno's sanitizers (on) catch leaks.
import assert from "node:assert/strict";
import type { Flow } from "../mod.ts";
import { _engineStatsForTesting, clientSession } from "../src/_engine.ts";
import { pipe } from "../src/pipe.ts";
import {
  acceptTls,
  startTls,
  type TlsClientOptions,
  TlsError,
  type TlsFlow,
} from "../src/tls.ts";
import { Prng } from "./fuzz/prng.ts";
import {
  deferred,
  fixture,
  MiB,
  pendingAfter,
  readAll,
  sha256,
  tcpPair,
  within,
  writeAll,
} from "./fuzz/util.ts";

const ca = fixture("ca.pem");
const server = {
  cert: fixture("localhost.pem"),
  key: fixture("localhost.key"),
};
const trusting: TlsClientOptions = { hostname: "localhost", caCerts: [ca] };
const payload = new Prng(42).bytes(16 * MiB);

type Pair = () => Promise<[Flow, Flow]>;
const transports: [string, Pair][] = [
  ["pipe", () => Promise.resolve(pipe())],
  ["tcp", () => tcpPair()],
];

function closeAll(...flows: (Flow | undefined)[]): void {
  for (const f of flows) {
    try {
      f?.close();
    } catch {
      // Already closed.
    }
  }
}

/** The typed errors a TLS flow may fail with when the peer goes away. */
function assertTyped(error: unknown, what: string): void {
  assert.ok(
    error instanceof TlsError ||
      error instanceof Deno.errors.ConnectionReset ||
      error instanceof Deno.errors.BrokenPipe ||
      error instanceof Deno.errors.ConnectionAborted ||
      error instanceof Deno.errors.BadResource,
    `${what}: expected a TlsError or a typed transport error, got ${error}`,
  );
}

async function handshake(a: Flow, b: Flow): Promise<[TlsFlow, TlsFlow]> {
  return await within(
    Promise.all([startTls(a, trusting), acceptTls(b, server)]),
    10_000,
    "handshake",
  );
}

let clientHello: Uint8Array | undefined;

/** A real ClientHello, as our client sends it. */
async function realClientHello(): Promise<Uint8Array> {
  if (clientHello === undefined) {
    const s = await clientSession({ hostname: "localhost", caCerts: [ca] });
    clientHello = s.takeOutgoing()!;
    s.free();
  }
  return clientHello;
}

// --- Resets and truncation -------------------------------------------------------------

for (const [name, makePair] of transports) {
  Deno.test(`TLS over ${name}: the server resets mid-handshake: startTls rejects with a TlsError`, async () => {
    for (const readFirst of [0, 10, 100_000]) {
      const [a, b] = await makePair();
      const peer = (async () => {
        if (readFirst > 0) await b.read(new Uint8Array(readFirst));
        b.close(); // with unread bytes over TCP: a reset
      })();
      await assert.rejects(
        within(startTls(a, trusting), 10_000, "startTls"),
        (e) => e instanceof TlsError && e.code === "UnexpectedEof",
      );
      await peer;
      closeAll(a);
    }
  });

  Deno.test(`TLS over ${name}: the client sends part of a ClientHello and goes: acceptTls rejects with a TlsError`, async () => {
    const hello = await realClientHello();
    for (const cut of [0, 1, 5, 6, 50, hello.length - 1]) {
      for (const how of ["close", "closeWrite"] as const) {
        const [a, b] = await makePair();
        if (cut > 0) await a.write(hello.subarray(0, cut));
        if (how === "close") a.close();
        else await a.closeWrite();
        await assert.rejects(
          within(acceptTls(b, server), 10_000, `acceptTls, cut ${cut}`),
          TlsError,
        );
        closeAll(a, b);
      }
    }
  });

  Deno.test(`TLS over ${name}: a peer that closes without close_notify: the read rejects with UnexpectedEof`, async () => {
    const [a, b] = await makePair();
    const [c, s] = await handshake(a, b);
    await s.write(new TextEncoder().encode("partial"));
    b.close(); // the transport, not the TLS flow: no close_notify
    const buf = new Uint8Array(100);
    assert.equal(await c.read(buf), 7);
    await assert.rejects(
      within(c.read(buf), 10_000, "read"),
      (e) => e instanceof TlsError && e.code === "UnexpectedEof",
    );
    // Every later read repeats it.
    await assert.rejects(c.read(buf), TlsError);
    closeAll(c, s);
  });

  Deno.test(`TLS over ${name}: a peer that resets mid-transfer: the writer gets a typed error, no hang`, async () => {
    const [a, b] = await makePair();
    const [c, s] = await handshake(a, b);
    const writing = writeAll(s, payload.subarray(0, 8 * MiB));
    assert.ok((await c.read(new Uint8Array(65536)))! > 0);
    await c.write(new Uint8Array(1000)); // unread by the server: a reset
    a.close(); // the client's transport goes away mid-transfer
    const error = await within(
      writing.then(() => new Error("every write succeeded"), (e) => e),
      10_000,
      "server writes",
    );
    assertTyped(error, "server write");
    closeAll(c, s);
  });
}

// --- Half-close with close_notify --------------------------------------------------------

for (const [name, makePair] of transports) {
  Deno.test(`TLS over ${name}: the client half-closes (close_notify), the server sends 1 MiB, the client reads it all`, async () => {
    const [a, b] = await makePair();
    const [c, s] = await handshake(a, b);
    const data = payload.subarray(0, MiB);
    const serving = (async () => {
      const got = await readAll(s);
      assert.equal(new TextDecoder().decode(got), "request");
      await writeAll(s, data, 20_000);
      await s.closeWrite();
    })();
    await c.write(new TextEncoder().encode("request"));
    await c.closeWrite();
    const got = await within(readAll(c), 10_000, "reading after half-close");
    await serving;
    assert.equal(got.length, data.length);
    assert.equal(await sha256(got), await sha256(data));
    closeAll(c, s);
  });
}

// --- Stalled readers ------------------------------------------------------------------

for (const [name, makePair] of transports) {
  Deno.test(`TLS over ${name}: a stalled reader holds the writer; memory stays bounded; then everything arrives`, async () => {
    const [a, b] = await makePair();
    const [c, s] = await handshake(a, b);
    const heap0 = _engineStatsForTesting()!.heapBytes;
    const rss0 = Deno.memoryUsage().rss;
    const writing = writeAll(s, payload, 256 * 1024);
    assert.ok(
      await pendingAfter(writing, 300),
      "16 MiB went out to a reader that reads nothing",
    );
    const heap1 = _engineStatsForTesting()!.heapBytes;
    const rss1 = Deno.memoryUsage().rss;
    assert.ok(
      heap1 - heap0 < 2 * MiB,
      `engine heap grew by ${heap1 - heap0} bytes while stalled`,
    );
    assert.ok(
      rss1 - rss0 < 96 * MiB,
      `RSS grew by ${rss1 - rss0} bytes while stalled`,
    );
    const reading = readAll(c);
    await within(writing, 20_000, "the stalled write");
    await s.closeWrite();
    const got = await within(reading, 20_000, "reading");
    assert.equal(got.length, payload.length);
    assert.equal(await sha256(got), await sha256(payload));
    closeAll(c, s);
  });
}

// --- Re-chunking relays --------------------------------------------------------------

/** Copies `src` to `dst` in pieces given by `cut(position, length)`. */
async function relay(
  src: Flow,
  dst: Flow,
  cut: (pos: number, n: number) => number[],
  count: { bytes: number },
): Promise<void> {
  const buf = new Uint8Array(65536);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) break;
      let off = 0;
      for (const size of cut(count.bytes, n)) {
        await writeAll(dst, buf.subarray(off, off + size));
        off += size;
      }
      count.bytes += n;
    }
    await dst.closeWrite();
  } catch {
    closeAll(src, dst);
  }
}

/**
 * A TLS client and server joined by a relay that re-chunks both directions;
 * the relay's outputs are rendezvous pipes, so every piece is read alone.
 * Runs a handshake and a request / response; returns the bytes relayed.
 */
async function throughRelay(
  cut: (pos: number, n: number) => number[],
): Promise<{ up: number; down: number }> {
  const [c, r1] = pipe({ highWaterMark: 0 });
  const [r2, s] = pipe({ highWaterMark: 0 });
  const up = { bytes: 0 };
  const down = { bytes: 0 };
  const relays = Promise.all([
    relay(r1, r2, cut, up),
    relay(r2, r1, cut, down),
  ]);
  let client: TlsFlow | undefined;
  let srv: TlsFlow | undefined;
  try {
    [client, srv] = await handshake(c, s);
    const request = payload.subarray(0, 300);
    const serving = (async () => {
      const got = await readAll(srv!);
      await writeAll(srv!, got);
      await srv!.closeWrite();
    })();
    await client.write(request);
    await client.closeWrite();
    const echo = await within(readAll(client), 10_000, "echo");
    await serving;
    assert.deepEqual(echo, request);
  } finally {
    closeAll(client, srv, c, s);
    await relays;
    closeAll(r1, r2);
  }
  return { up: up.bytes, down: down.bytes };
}

Deno.test("TLS through a relay delivering one byte at a time", async () => {
  const { up, down } = await throughRelay((_, n) => Array(n).fill(1));
  assert.ok(up > 300 && down > 300);
});

Deno.test("TLS through a relay splitting the byte stream at every offset", async () => {
  const whole = (_: number, n: number) => [n];
  const { up, down } = await throughRelay(whole);
  const total = Math.max(up, down);
  const start = performance.now();
  let runs = 0;
  for (let i = 1; i < total; i++) {
    // Both directions cut at offset i (and only there).
    await throughRelay((pos, n) =>
      pos < i && i < pos + n ? [i - pos, pos + n - i] : [n]
    );
    runs++;
  }
  console.log(
    `split relay: ${runs} handshakes + echo (up ${up} B, down ${down} B) in ` +
      `${(performance.now() - start).toFixed(0)} ms`,
  );
});

// --- Abort at every stage --------------------------------------------------------------

/** A flow that calls `hook` before every read and write of `inner`. */
class Probe implements Flow {
  ops = 0;
  constructor(readonly inner: Flow, readonly hook: (op: number) => void) {}
  read(p: Uint8Array): Promise<number | null> {
    this.hook(++this.ops);
    return this.inner.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    this.hook(++this.ops);
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
  get readable(): ReadableStream<Uint8Array> {
    return this.inner.readable;
  }
  get writable(): WritableStream<Uint8Array> {
    return this.inner.writable;
  }
}

for (const [name, makePair] of transports) {
  for (const side of ["startTls", "acceptTls"] as const) {
    Deno.test(`TLS over ${name}: ${side} aborted at every stage rejects with the reason; the peer gets a TlsError`, async () => {
      let aborted = 0;
      let completed = 0;
      for (let at = 0; at < 20; at++) {
        for (const when of ["before", "after"] as const) {
          const [a, b] = await makePair();
          const controller = new AbortController();
          const reason = new Error(`${side} aborted at op ${at} (${when})`);
          if (at === 0) controller.abort(reason);
          const hook = (op: number) => {
            if (op !== at) return;
            if (when === "before") controller.abort(reason);
            else setTimeout(() => controller.abort(reason), 0);
          };
          const ours = side === "startTls"
            ? startTls(new Probe(a, hook), {
              ...trusting,
              signal: controller.signal,
            })
            : acceptTls(new Probe(b, hook), {
              ...server,
              signal: controller.signal,
            });
          const peerDone = deferred<TlsFlow | unknown>();
          const theirs = side === "startTls"
            ? acceptTls(b, server)
            : startTls(a, trusting);
          theirs.then(peerDone.resolve, peerDone.resolve);
          let flow: TlsFlow | undefined;
          try {
            flow = await within(ours, 10_000, reason.message);
            completed++;
          } catch (error) {
            assert.equal(error, reason, `${reason.message}: got ${error}`);
            aborted++;
            // The caller owns the transport: closing it ends the peer.
            closeAll(side === "startTls" ? a : b);
          }
          const peer = await within(peerDone.promise, 10_000, "the peer");
          if (flow === undefined && !(peer instanceof TlsError)) {
            // Aborted after our last flight went out: the peer completed,
            // and sees the transport end without close_notify.
            assert.ok(peer instanceof Object && "handshake" in peer, `${peer}`);
            await assert.rejects(
              within(
                (peer as TlsFlow).read(new Uint8Array(10)),
                10_000,
                "peer",
              ),
              (e) => e instanceof TlsError && e.code === "UnexpectedEof",
            );
          }
          closeAll(flow, peer instanceof Error ? undefined : peer as TlsFlow);
          closeAll(a, b);
        }
      }
      assert.ok(aborted > 0 && completed > 0, `${aborted} / ${completed}`);
    });
  }
}
