// Reliability: faults over TCP (resolve() + serve()) and pipes. Peers that
// reset mid-transfer, half-close and keep reading, stalled readers,
// one-byte transfers, and an AbortSignal fired at every stage of resolution.
// Each case ends with the data delivered, a typed error or end of flow,
// within a bounded time; Deno's sanitizers (on) catch any leaked resource,
// op or timer.
import assert from "node:assert/strict";
import { empty, type Flow, register, req, resolve, value } from "../mod.ts";
import { listenPipe, pipe, pipeProtocol } from "../src/pipe.ts";
import { serve } from "../src/serve.ts";
import { tcp } from "../src/tcp.ts";
import { Prng } from "./fuzz/prng.ts";
import {
  deferred,
  MiB,
  pendingAfter,
  readAll,
  sha256,
  within,
  writeAll,
} from "./fuzz/util.ts";

// --- Helpers ---------------------------------------------------------------------

const LOOPBACK = "127.0.0.1";

/** The typed errors a transport may fail with when its peer goes away. */
const PEER_GONE = [
  Deno.errors.ConnectionReset,
  Deno.errors.BrokenPipe,
  Deno.errors.ConnectionAborted,
  Deno.errors.NotConnected,
  Deno.errors.UnexpectedEof,
];

function assertPeerGone(error: unknown, what: string): void {
  assert.ok(
    PEER_GONE.some((E) => error instanceof E),
    `${what}: expected a typed "peer gone" error, got ${error}`,
  );
}

/** A TCP server on loopback run by serve(), and a context to reach it. */
function tcpServer(
  handler: (flow: Flow, signal: AbortSignal) => Promise<void>,
) {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const errors: unknown[] = [];
  const server = serve(listener, handler, {
    onError: (e) => errors.push(e),
    closeOnShutdown: true,
  });
  const ctx = empty.add(tcp.endpoint, {
    hostname: LOOPBACK,
    port: listener.addr.port,
  });
  return { server, errors, ctx, port: listener.addr.port };
}

const data8 = new Prng(8).bytes(8 * MiB);

// --- Resets mid-transfer -----------------------------------------------------------

Deno.test("TCP: a server that closes with unread data (reset) fails the client's writes with a typed error", async () => {
  const { server, ctx } = tcpServer(async (flow) => {
    await flow.read(new Uint8Array(1000)); // then serve() closes it: unread data
  });
  const client = await resolve(ctx);
  try {
    const error = await within(
      writeAll(client, data8).then(
        () => new Error("every write succeeded"),
        (e) => e,
      ),
      10_000,
      "writing to a reset peer",
    );
    assertPeerGone(error, "client write");
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("TCP: a client that closes with unread data fails the server's writes with a typed error", async () => {
  const failed = deferred<unknown>();
  const { server, ctx } = tcpServer(async (flow) => {
    try {
      await writeAll(flow, data8);
      failed.resolve(new Error("every write succeeded"));
    } catch (error) {
      failed.resolve(error);
    }
  });
  const client = await resolve(ctx);
  assert.ok((await client.read(new Uint8Array(65536)))! > 0);
  client.close(); // unread data: a reset
  assertPeerGone(
    await within(failed.promise, 10_000, "server writes"),
    "server write",
  );
  await server.shutdown();
});

Deno.test("TCP: a peer that resets while the other reads: a typed error or end of flow", async () => {
  const { server, ctx } = tcpServer(async (flow) => {
    await flow.write(data8.subarray(0, 100_000));
    // The client sent bytes we never read: close resets.
  });
  const client = await resolve(ctx);
  await writeAll(client, data8.subarray(0, 4096));
  try {
    const got = await within(readAll(client), 10_000, "reading");
    assert.ok(got.length <= 100_000);
  } catch (error) {
    assertPeerGone(error, "client read");
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("pipe: a peer that closes mid-transfer: BrokenPipe for the writer, end of flow for the reader", async () => {
  const [a, b] = pipe({ highWaterMark: 1024 });
  const writing = writeAll(a, data8.subarray(0, MiB));
  assert.ok(await pendingAfter(writing, 5), "the write waits for room");
  assert.ok((await b.read(new Uint8Array(100)))! > 0);
  b.close();
  await assert.rejects(writing, Deno.errors.BrokenPipe);
  a.close();

  const [c, d] = pipe();
  const reading = readAll(d);
  await writeAll(c, data8.subarray(0, 5000));
  c.close();
  assert.equal((await within(reading, 1000, "reading")).length, 5000);
  d.close();
});

// --- Half-close -------------------------------------------------------------------

async function halfClose(client: Flow, what: string): Promise<void> {
  await client.write(new TextEncoder().encode("send me 1 MiB"));
  await client.closeWrite();
  const got = await within(readAll(client), 10_000, what);
  assert.equal(got.length, MiB);
  assert.equal(await sha256(got), await sha256(data8.subarray(0, MiB)));
}

async function sendAfterEof(flow: Flow): Promise<void> {
  await readAll(flow); // to end of flow: the client half-closed
  await writeAll(flow, data8.subarray(0, MiB), 16384);
  await flow.closeWrite();
}

Deno.test("TCP: the client half-closes, the server keeps sending 1 MiB, the client reads it all", async () => {
  const { server, ctx, errors } = tcpServer(sendAfterEof);
  const client = await resolve(ctx);
  try {
    await halfClose(client, "tcp half-close");
  } finally {
    client.close();
    await server.shutdown();
  }
  assert.deepEqual(errors, []);
});

Deno.test("pipe: the client half-closes, the server keeps sending 1 MiB, the client reads it all", async () => {
  using listener = listenPipe({ highWaterMark: 4096 });
  const errors: unknown[] = [];
  const server = serve(listener, sendAfterEof, {
    onError: (e) => errors.push(e),
  });
  const client = await resolve(empty.add(pipeProtocol.endpoint, listener));
  try {
    await halfClose(client, "pipe half-close");
  } finally {
    client.close();
    await server.shutdown();
  }
  assert.deepEqual(errors, []);
});

// --- Stalled readers and backpressure ----------------------------------------------

Deno.test("pipe: a stalled reader holds the writer, the buffer never exceeds highWaterMark", async () => {
  for (const highWaterMark of [0, 1, 1000, 65536]) {
    const [a, b] = pipe({ highWaterMark });
    const chunk = 4096;
    let accepted = 0;
    let blocked: Promise<number> | undefined;
    for (let i = 0; i < 1000; i++) {
      const w = a.write(data8.subarray(i * chunk, (i + 1) * chunk));
      if (await pendingAfter(w, 2)) {
        blocked = w;
        break;
      }
      accepted += chunk;
    }
    assert.ok(
      blocked !== undefined,
      `hwm ${highWaterMark}: writes never block`,
    );
    assert.ok(
      accepted <= highWaterMark,
      `hwm ${highWaterMark}: ${accepted} bytes accepted without a reader`,
    );
    // The reader drains: the blocked write completes, every byte arrives.
    const reading = readAll(b, 777);
    await blocked;
    await a.closeWrite();
    const got = await within(reading, 5000, "draining");
    assert.equal(got.length, accepted + chunk);
    assert.deepEqual(got, data8.subarray(0, accepted + chunk));
    a.close();
    b.close();
  }
});

Deno.test("TCP: a stalled reader eventually blocks the writer, with bounded memory", async () => {
  const release = deferred();
  const received = deferred<number>();
  const { server, ctx } = tcpServer(async (flow) => {
    await release.promise;
    received.resolve((await readAll(flow)).length);
  });
  const client = await resolve(ctx);
  const rss0 = Deno.memoryUsage().rss;
  const chunk = data8.subarray(0, 65536);
  let written = 0;
  let blocked: Promise<number> | undefined;
  for (let i = 0; i < 4096; i++) {
    const w = client.write(chunk);
    if (await pendingAfter(w, 200)) {
      blocked = w;
      break;
    }
    written += await w;
  }
  const rss1 = Deno.memoryUsage().rss;
  console.log(
    `stalled TCP reader: ${written} bytes accepted before the writer blocked, ` +
      `RSS +${((rss1 - rss0) / MiB).toFixed(1)} MiB`,
  );
  assert.ok(blocked !== undefined, `wrote ${written} bytes without blocking`);
  assert.ok(written < 64 * MiB, `${written} bytes went out to a stalled peer`);
  assert.ok(
    rss1 - rss0 < 64 * MiB,
    `RSS grew by ${rss1 - rss0} bytes while blocked`,
  );
  release.resolve();
  written += await within(blocked, 10_000, "the blocked write");
  await client.closeWrite();
  assert.equal(await within(received.promise, 10_000, "reading"), written);
  client.close();
  await server.shutdown();
});

// --- One byte at a time -------------------------------------------------------------

async function oneByteAtATime(a: Flow, b: Flow, size: number): Promise<void> {
  const data = data8.subarray(0, size);
  const writing = (async () => {
    for (let i = 0; i < size; i++) {
      assert.equal(await a.write(data.subarray(i, i + 1)), 1);
    }
    await a.closeWrite();
  })();
  const got = await within(readAll(b, 1), 30_000, "one byte at a time");
  await writing;
  assert.equal(got.length, size);
  assert.deepEqual(got, data);
}

Deno.test("pipe: 64 KiB one byte at a time", async () => {
  const [a, b] = pipe({ highWaterMark: 1 });
  await oneByteAtATime(a, b, 65536);
  a.close();
  b.close();
});

Deno.test("TCP: 16 KiB one byte at a time", async () => {
  const done = deferred();
  const { server, ctx } = tcpServer(async (flow) => {
    // Echo what comes, one byte at a time.
    const buf = new Uint8Array(1);
    for (let n; (n = await flow.read(buf)) !== null;) {
      assert.equal(n, 1);
      await flow.write(buf);
    }
    await flow.closeWrite();
    done.resolve();
  });
  const client = await resolve(ctx);
  await oneByteAtATime(client, client, 16384);
  await within(done.promise, 10_000, "echo");
  client.close();
  await server.shutdown();
});

// --- Abort at every stage of resolution ------------------------------------------------

const noop = register(
  "reliability-never",
  (_: number, signal: AbortSignal) =>
    new Promise<Flow>((_, reject) => {
      // Connects never; honours the signal.
      signal.addEventListener("abort", () => reject(signal.reason), {
        once: true,
      });
    }),
);

Deno.test("resolve(): aborted during a fold function rejects with the reason", async () => {
  const x = value<number>("x");
  for (const mode of ["sync", "async", "never"] as const) {
    const controller = new AbortController();
    const reason = new Error(`stop ${mode}`);
    const ctx = empty.add(x, 1).fold(noop.endpoint, [req(x)], (n) => {
      if (mode === "sync") {
        controller.abort(reason);
        return n;
      }
      if (mode === "async") {
        queueMicrotask(() => controller.abort(reason));
        return Promise.resolve(n);
      }
      setTimeout(() => controller.abort(reason), 5);
      return new Promise<number>(() => {}); // never settles
    });
    await assert.rejects(
      within(resolve(ctx, { signal: controller.signal }), 5000, mode),
      (e) => e === reason,
    );
  }
});

Deno.test("resolve(): aborted during the Happy Eyeballs lookup rejects with the reason, the lookup is aborted", async () => {
  using listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const lookupSignals: AbortSignal[] = [];
  const controller = new AbortController();
  const reason = new Error("stop during lookup");
  const ctx = empty.add(tcp.endpoint, {
    hostname: "service.test",
    port: listener.addr.port,
    lookup: (_name, _type, signal) => {
      lookupSignals.push(signal);
      if (lookupSignals.length === 2) {
        queueMicrotask(() => controller.abort(reason));
      }
      return new Promise<string[]>((_, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason), {
          once: true,
        });
      });
    },
  });
  await assert.rejects(
    within(resolve(ctx, { signal: controller.signal }), 5000, "lookup"),
    (e) => e === reason,
  );
  assert.equal(lookupSignals.length, 2);
  assert.ok(lookupSignals.every((s) => s.aborted), "the lookups are aborted");
});

Deno.test("resolve(): an abort swept across every event and a few timer ticks: the reason, or a flow; nothing leaks", async () => {
  using listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const port = listener.addr.port;
  const x = value<string>("x");
  const contexts = {
    literal: empty.add(tcp.endpoint, { hostname: LOOPBACK, port }),
    eyeballs: empty.add(tcp.endpoint, {
      hostname: "service.test",
      port,
      attemptDelay: 10,
      // ::1 may have nobody listening: Happy Eyeballs falls back.
      lookup: (_n, type) =>
        Promise.resolve(type === "AAAA" ? ["::1"] : [LOOPBACK]),
    }),
    folded: empty.add(x, LOOPBACK).fold(
      tcp.endpoint,
      [req(x)],
      async (h) => {
        await null;
        return { hostname: h, port };
      },
    ),
  };
  let aborted = 0;
  let connected = 0;
  for (const [name, ctx] of Object.entries(contexts)) {
    // How many events a full resolution emits.
    let events = 0;
    (await resolve(ctx, { onEvent: () => events++ })).close();
    for (let at = 0; at <= events + 6; at++) {
      const controller = new AbortController();
      const reason = new Error(`${name}: abort at ${at}`);
      let seen = 0;
      let timer: ReturnType<typeof setTimeout> | undefined;
      if (at > events) {
        // Past the events: abort after (at - events - 1) ms.
        timer = setTimeout(() => controller.abort(reason), at - events - 1);
      }
      const onEvent = () => {
        if (seen++ === at) controller.abort(reason);
      };
      try {
        const flow = await within(
          resolve(ctx, { signal: controller.signal, onEvent }),
          5000,
          reason.message,
        );
        connected++;
        flow.close();
      } catch (error) {
        assert.equal(error, reason, `${reason.message}: ${error}`);
        aborted++;
      } finally {
        clearTimeout(timer);
      }
    }
  }
  console.log(`abort sweep: ${aborted} aborted, ${connected} connected`);
  assert.ok(aborted > 0 && connected > 0);
  // Let the abandoned connects settle and close (the sanitizers check).
  await new Promise((ok) => setTimeout(ok, 50));
});

Deno.test("resolve(): pipe connect aborted before and during: the reason, nothing accepted stays open", async () => {
  using listener = listenPipe();
  const ctx = empty.add(pipeProtocol.endpoint, listener);
  const controller = new AbortController();
  controller.abort(new Error("early"));
  await assert.rejects(
    resolve(ctx, { signal: controller.signal }),
    (e: Error) => e.message === "early",
  );
  const late = new AbortController();
  const p = resolve(ctx, {
    signal: late.signal,
    onEvent: (e) => {
      if (e.type === "connecting") late.abort(new Error("late"));
    },
  });
  await assert.rejects(p, (e: Error) => e.message === "late");
});
