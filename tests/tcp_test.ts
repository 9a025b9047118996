// Tests of the tcp and unix protocols and of Happy Eyeballs (RFC 8305).
// Only loopback addresses are used; names go through an injected resolver
// (or the built-in `localhost` answer), never through DNS.
import assert from "node:assert/strict";
import { empty, type Flow, NotFoundError, resolve } from "../mod.ts";
import {
  type AttemptEvent,
  connectHappyEyeballs,
  type HappyEyeballsOptions,
  tcp,
  unix,
} from "../src/tcp.ts";
import { FakeTime } from "./_fake_time.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function hasIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}
const noIpv6 = !hasIpv6Loopback();

/** The flow as what tcp and unix return: a Deno.Conn with asyncDispose. */
function conn(flow: Flow): Deno.Conn & AsyncDisposable {
  return flow as Deno.Conn & AsyncDisposable;
}

/** A port nothing listens on: bind one, then close it. */
function freePort(hostname = "127.0.0.1"): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Accepts one connection and echoes it until end of flow. */
async function echoOnce(listener: Deno.Listener): Promise<void> {
  using conn = await listener.accept();
  const buf = new Uint8Array(4096);
  for (let n; (n = await conn.read(buf)) !== null;) {
    let off = 0;
    while (off < n) off += await conn.write(buf.subarray(off, n));
  }
}

async function readAll(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(4096);
  let text = "";
  for (let n; (n = await conn.read(buf)) !== null;) {
    text += decoder.decode(buf.subarray(0, n));
  }
  return text;
}

async function echoThrough(flow: Deno.Conn, text: string): Promise<string> {
  await flow.write(encoder.encode(text));
  await flow.closeWrite();
  return await readAll(flow);
}

/** A resolver with fixed answers, each after an optional delay (ms). */
function fakeLookup(
  answers: { A?: string[] | Error; AAAA?: string[] | Error },
  delays: { A?: number; AAAA?: number } = {},
): NonNullable<HappyEyeballsOptions["lookup"]> {
  return (_name, type, signal) =>
    new Promise((ok, ko) => {
      const answer = answers[type] ?? [];
      const settle = () => {
        signal.removeEventListener("abort", abort);
        if (answer instanceof Error) ko(answer);
        else ok(answer);
      };
      const timer = setTimeout(settle, delays[type] ?? 0);
      const abort = () => {
        clearTimeout(timer);
        ko(signal.reason);
      };
      signal.addEventListener("abort", abort, { once: true });
    });
}

/** Records attempt events with their time since creation (on `clock`). */
function recorder(clock: () => number = () => performance.now()): {
  events: (AttemptEvent & { at: number })[];
  onAttempt: (event: AttemptEvent) => void;
  started: () => string[];
} {
  const t0 = clock();
  const events: (AttemptEvent & { at: number })[] = [];
  return {
    events,
    onAttempt: (event) => events.push({ ...event, at: clock() - t0 }),
    started: () =>
      events.filter((e) => e.type === "start").map((e) => e.address),
  };
}

/** A connect that never completes, rejecting when its attempt is aborted. */
function hang(signal: AbortSignal): Promise<Deno.TcpConn> {
  return new Promise((_, ko) => {
    signal.addEventListener("abort", () => ko(signal.reason), { once: true });
  });
}

/** A connect refused after `ms` (as a real network takes a moment). */
function refused(address: string, ms = 0): Promise<Deno.TcpConn> {
  const error = new Deno.errors.ConnectionRefused(`refused ${address}`);
  if (ms === 0) return Promise.reject(error);
  return new Promise((_, ko) => setTimeout(() => ko(error), ms));
}

// --- tcp over literals -------------------------------------------------------

Deno.test("tcp resolves an IPv4 loopback endpoint and echoes", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = echoOnce(listener);
  const ctx = empty.add(tcp.endpoint, {
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  {
    await using flow = conn(await resolve(ctx));
    assert.ok(tcp.is(flow));
    assert.equal(typeof (flow as Deno.TcpConn).setNoDelay, "function");
    assert.equal(typeof flow[Symbol.asyncDispose], "function");
    assert.equal(await echoThrough(flow, "hello tcp"), "hello tcp");
  }
  await served;
});

Deno.test({
  name: "tcp resolves an IPv6 loopback endpoint, bare or bracketed",
  ignore: noIpv6,
  fn: async () => {
    using listener = Deno.listen({ hostname: "::1", port: 0 });
    for (const hostname of ["::1", "[::1]"]) {
      const served = echoOnce(listener);
      const ctx = empty.add(tcp.endpoint, {
        hostname,
        port: listener.addr.port,
      });
      await using flow = conn(await resolve(ctx));
      assert.ok(tcp.is(flow));
      assert.equal((flow.remoteAddr as Deno.NetAddr).hostname, "::1");
      assert.equal(await echoThrough(flow, hostname), hostname);
      await served;
    }
  },
});

Deno.test("tcp handles refused ports", async () => {
  const port = freePort();
  const error = await resolve(
    empty.add(tcp.endpoint, { hostname: "127.0.0.1", port }),
  ).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  assert.equal(error.attempts.length, 1);
  assert.equal(error.attempts[0].name, "tcp");
  assert.ok(error.attempts[0].error instanceof Deno.errors.ConnectionRefused);
});

Deno.test("tcp rejects endpoints of the wrong shape", async (t) => {
  const cases: [string, unknown, ErrorConstructor, RegExp][] = [
    [
      "a numeric hostname",
      { hostname: 42, port: 80 },
      TypeError,
      /^Cannot connect to tcp endpoint: hostname must be a string, got number$/,
    ],
    [
      "a missing port",
      { hostname: "127.0.0.1" },
      TypeError,
      /port must be a number, got undefined/,
    ],
    ["port 0", { hostname: "127.0.0.1", port: 0 }, RangeError, /got 0$/],
    [
      "port 65536",
      { hostname: "127.0.0.1", port: 65536 },
      RangeError,
      /port must be an integer in 1\.\.65535, got 65536/,
    ],
    ["port 1.5", { hostname: "127.0.0.1", port: 1.5 }, RangeError, /1\.5/],
    ["an empty hostname", { hostname: "", port: 1 }, TypeError, /empty/],
    ["null", null, TypeError, /must be an object, got null/],
    [
      "a negative attemptDelay",
      { hostname: "127.0.0.1", port: 1, attemptDelay: -1 },
      RangeError,
      /attemptDelay/,
    ],
    [
      "a lookup that is no function",
      { hostname: "x.test", port: 1, lookup: "dns" },
      TypeError,
      /lookup must be a function, got string/,
    ],
    [
      "a noDelay that is no boolean",
      { hostname: "127.0.0.1", port: 1, noDelay: "yes" },
      TypeError,
      /noDelay must be a boolean, got string/,
    ],
  ];
  for (const [what, endpoint, kind, message] of cases) {
    await t.step(what, async () => {
      // deno-lint-ignore no-explicit-any
      const ctx = empty.add(tcp.endpoint, endpoint as any);
      const error = await resolve(ctx).catch((e) => e);
      assert.ok(error instanceof NotFoundError);
      const cause = error.attempts[0].error;
      assert.ok(cause instanceof kind, `${cause}`);
      assert.match((cause as Error).message, message);
    });
  }
});

Deno.test("connectHappyEyeballs validates its arguments", async () => {
  await assert.rejects(
    connectHappyEyeballs("127.0.0.1", 70000),
    RangeError,
  );
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    connectHappyEyeballs(undefined as any, 80),
    /hostname must be a string, got undefined/,
  );
});

Deno.test("tcp sets no-delay and survives double close", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const flow = await resolve(
    empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  ) as Deno.TcpConn & AsyncDisposable;
  using _server = await listener.accept();
  await flow[Symbol.asyncDispose]();
  await flow[Symbol.asyncDispose]();
});

Deno.test("tcp handles a connection reset by the peer", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using flow = await resolve(
    empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  ) as Deno.TcpConn & AsyncDisposable;
  const server = await listener.accept();
  await server.write(encoder.encode("partial"));
  // Closing with unread data pending makes the kernel send a reset.
  await flow.write(new Uint8Array(64 * 1024));
  await new Promise((ok) => setTimeout(ok, 20));
  server.close();
  const outcome = await (async () => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await flow.read(buf);
        if (n === null) return "end";
      }
    } catch (error) {
      return error instanceof Error ? error.name : String(error);
    }
  })();
  assert.ok(
    ["end", "ConnectionReset", "BrokenPipe"].includes(outcome),
    outcome,
  );
  // Writing after a reset rejects; it never drops bytes silently.
  await assert.rejects(async () => {
    for (let i = 0; i < 100; i++) await flow.write(new Uint8Array(65536));
  });
});

Deno.test("tcp honours an abort before connecting", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const reason = new Error("stop");
  await assert.rejects(
    resolve(
      empty.add(tcp.endpoint, {
        hostname: "127.0.0.1",
        port: listener.addr.port,
      }),
      { signal: AbortSignal.abort(reason) },
    ),
    (e) => e === reason,
  );
});

Deno.test("tcp keeps the flow open after the resolution's signal aborts", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = echoOnce(listener);
  const controller = new AbortController();
  await using flow = await resolve(
    empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
    { signal: controller.signal },
  ) as Deno.TcpConn & AsyncDisposable;
  controller.abort();
  assert.equal(await echoThrough(flow, "still here"), "still here");
  await served;
});

// --- unix ----------------------------------------------------------------------

Deno.test("unix resolves a socket in a temporary directory and echoes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/mimic.sock`;
    using listener = Deno.listen({ transport: "unix", path });
    const served = echoOnce(listener);
    {
      await using flow = conn(
        await resolve(empty.add(unix.endpoint, { path })),
      );
      assert.ok(unix.is(flow));
      assert.ok(!tcp.is(flow));
      assert.equal(await echoThrough(flow, "unix"), "unix");
    }
    await served;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unix handles missing sockets and wrong shapes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = await resolve(
      empty.add(unix.endpoint, { path: `${dir}/none.sock` }),
    ).catch((e) => e);
    assert.ok(missing instanceof NotFoundError);
    assert.ok(missing.attempts[0].error instanceof Deno.errors.NotFound);
    const wrong = await resolve(
      // deno-lint-ignore no-explicit-any
      empty.add(unix.endpoint, { path: 7 } as any),
    ).catch((e) => e);
    assert.ok(wrong instanceof NotFoundError);
    assert.ok(wrong.attempts[0].error instanceof TypeError);
    assert.equal(
      (wrong.attempts[0].error as Error).message,
      "Cannot connect to unix endpoint: path must be a string, got number",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- Happy Eyeballs --------------------------------------------------------------

Deno.test("connectHappyEyeballs falls back from a refused ::1 to 127.0.0.1", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  // On a fake clock that only moves for the lookups (at 0 ms), the 250 ms
  // attempt delay never passes: only the failure can start the next attempt.
  using time = new FakeTime();
  const trace = recorder(() => time.now);
  const pending = connectHappyEyeballs("service.test", port, {
    lookup: fakeLookup({ AAAA: ["::1"], A: ["127.0.0.1"] }),
    onAttempt: trace.onAttempt,
  });
  await time.tick(0);
  await using conn = await pending;
  using _server = await listener.accept();
  assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
  assert.deepEqual(trace.events.map((e) => [e.type, e.address]), [
    ["start", "::1"],
    ["failed", "::1"],
    ["start", "127.0.0.1"],
    ["connected", "127.0.0.1"],
  ]);
  // The failure started the next attempt at once, not after 250 ms.
  assert.equal(trace.events[2].at, 0);
});

Deno.test("connectHappyEyeballs answers localhost without DNS", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const trace = recorder();
  await using conn = await connectHappyEyeballs(
    "localhost",
    listener.addr.port,
    { onAttempt: trace.onAttempt },
  );
  using _server = await listener.accept();
  assert.equal(conn.remoteAddr.port, listener.addr.port);
  assert.deepEqual(trace.started(), ["::1", "127.0.0.1"]);
});

Deno.test("connectHappyEyeballs interleaves families, IPv6 first", async () => {
  const trace = recorder();
  const error = await connectHappyEyeballs("multi.test", 443, {
    lookup: fakeLookup({
      AAAA: ["::1", "::2", "::3"],
      A: ["127.0.0.1", "127.0.0.2"],
    }),
    connect: ({ hostname }) => refused(hostname, 5),
    onAttempt: trace.onAttempt,
  }).catch((e) => e);
  assert.deepEqual(trace.started(), [
    "::1",
    "127.0.0.1",
    "::2",
    "127.0.0.2",
    "::3",
  ]);
  assert.ok(error instanceof AggregateError);
  assert.equal(error.errors.length, 5);
  assert.ok(
    error.errors.every((e) => e instanceof Deno.errors.ConnectionRefused),
  );
  assert.equal(
    error.message,
    "Cannot connect to multi.test:443: every address failed " +
      "(::1: refused ::1; 127.0.0.1: refused 127.0.0.1; ::2: refused ::2; " +
      "127.0.0.2: refused 127.0.0.2; ::3: refused ::3)",
  );
});

Deno.test("connectHappyEyeballs reports every real address's error", async () => {
  const port = freePort();
  const error = await resolve(
    empty.add(tcp.endpoint, {
      hostname: "down.test",
      port,
      lookup: fakeLookup({ AAAA: ["::1"], A: ["127.0.0.1", "127.0.0.2"] }),
    }),
  ).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  const cause = error.attempts[0].error;
  assert.ok(cause instanceof AggregateError);
  assert.equal(cause.errors.length, 3);
  assert.match(
    cause.message,
    new RegExp(
      `^Cannot connect to down\\.test:${port}: every address failed ` +
        `\\(::1: .+; 127\\.0\\.0\\.1: .+; 127\\.0\\.0\\.2: .+\\)$`,
    ),
  );
});

Deno.test("connectHappyEyeballs starts the next attempt after attemptDelay", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using time = new FakeTime();
  const trace = recorder(() => time.now);
  let slowSignal: AbortSignal | undefined;
  const pending = connectHappyEyeballs("slow.test", listener.addr.port, {
    attemptDelay: 100,
    lookup: fakeLookup({ AAAA: ["::1"], A: ["127.0.0.1"] }),
    connect: ({ hostname, port, signal }) => {
      if (hostname === "::1") {
        slowSignal = signal;
        return hang(signal);
      }
      return Deno.connect({ hostname, port });
    },
    onAttempt: trace.onAttempt,
  });
  await time.tick(99);
  assert.deepEqual(trace.started(), ["::1"], "the second waits 100 ms");
  await time.tick(1);
  assert.deepEqual(trace.started(), ["::1", "127.0.0.1"]);
  await using conn = await pending;
  using _server = await listener.accept();
  assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
  const [first, second] = trace.events.filter((e) => e.type === "start");
  assert.equal(second.at - first.at, 100);
  assert.ok(slowSignal?.aborted, "the losing attempt is aborted");
  assert.deepEqual(trace.events.map((e) => [e.type, e.address]), [
    ["start", "::1"],
    ["start", "127.0.0.1"],
    ["connected", "127.0.0.1"],
    ["cancelled", "::1"],
  ]);
});

Deno.test("connectHappyEyeballs takes the first to connect and closes the late one", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  let late: Promise<Deno.TcpConn> | undefined;
  // ::1 (tried first) is slow and ignores its signal: it connects after the
  // winner, and must be closed by the race.
  const conn = await connectHappyEyeballs("race.test", port, {
    attemptDelay: 20,
    lookup: fakeLookup({ AAAA: ["::1"], A: ["127.0.0.1"] }),
    connect: ({ hostname }) => {
      if (hostname === "::1") {
        late = new Promise((ok) => setTimeout(ok, 150)).then(() =>
          Deno.connect({ hostname: "127.0.0.1", port })
        );
        return late;
      }
      return Deno.connect({ hostname, port });
    },
  });
  using winnerSide = await listener.accept();
  const loser = await late!;
  using loserSide = await listener.accept();
  // The race closed the late connection: its peer reads end of flow, and
  // the winner still works.
  assert.equal(await readAll(loserSide), "");
  assert.throws(() => loser.close(), Deno.errors.BadResource);
  await conn.write(encoder.encode("win"));
  await conn.closeWrite();
  assert.equal(await readAll(winnerSide), "win");
  conn.close();
});

Deno.test("connectHappyEyeballs waits the resolution delay for AAAA", async (t) => {
  const run = async (delays: { A?: number; AAAA?: number }) => {
    using time = new FakeTime();
    const trace = recorder(() => time.now);
    const done = connectHappyEyeballs("dual.test", 80, {
      lookup: fakeLookup({ AAAA: ["::1"], A: ["127.0.0.1"] }, delays),
      connect: ({ hostname }) => refused(hostname),
      onAttempt: trace.onAttempt,
    }).catch((e) => e);
    await time.tick(1000);
    assert.ok(await done instanceof AggregateError);
    return trace.events.filter((e) => e.type === "start");
  };
  await t.step("AAAA within 50 ms goes first", async () => {
    const starts = await run({ AAAA: 15 });
    assert.deepEqual(starts.map((e) => [e.address, e.at]), [
      ["::1", 15],
      ["127.0.0.1", 15],
    ]);
  });
  await t.step("A goes alone once 50 ms have passed", async () => {
    const starts = await run({ AAAA: 200 });
    assert.deepEqual(starts.map((e) => [e.address, e.at]), [
      ["127.0.0.1", 50],
      ["::1", 200],
    ]);
  });
  await t.step("AAAA first starts at once", async () => {
    const starts = await run({ A: 100 });
    assert.deepEqual(starts.map((e) => [e.address, e.at]), [
      ["::1", 0],
      ["127.0.0.1", 100],
    ]);
  });
});

Deno.test("connectHappyEyeballs connects with one family when the other fails", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using conn = await connectHappyEyeballs(
    "v4only.test",
    listener.addr.port,
    {
      lookup: fakeLookup({ AAAA: new Error("no AAAA"), A: ["127.0.0.1"] }),
    },
  );
  using _server = await listener.accept();
  assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
});

Deno.test("connectHappyEyeballs rejects names that resolve to nothing", async () => {
  const empty6 = await connectHappyEyeballs("nothing.test", 80, {
    lookup: fakeLookup({ AAAA: [], A: [] }),
  }).catch((e) => e);
  assert.ok(empty6 instanceof Deno.errors.NotFound);
  assert.equal(empty6.message, "Cannot resolve host nothing.test: no address");
  const failed = await connectHappyEyeballs("broken.test", 80, {
    lookup: fakeLookup({
      AAAA: new Error("SERVFAIL"),
      A: new Error("NXDOMAIN"),
    }),
  }).catch((e) => e);
  assert.ok(failed instanceof Deno.errors.NotFound);
  assert.match(failed.message, /^Cannot resolve host broken\.test: /);
  assert.match(failed.message, /SERVFAIL/);
  assert.match(failed.message, /NXDOMAIN/);
  assert.ok(failed.cause instanceof AggregateError);
});

Deno.test("connectHappyEyeballs honours an abort during the lookup", async () => {
  const controller = new AbortController();
  const lookupSignals: AbortSignal[] = [];
  const pending = connectHappyEyeballs("wait.test", 80, {
    signal: controller.signal,
    lookup: (_name, _type, signal) => {
      lookupSignals.push(signal);
      return new Promise((_, ko) =>
        signal.addEventListener("abort", () => ko(signal.reason), {
          once: true,
        })
      );
    },
  });
  await new Promise((ok) => setTimeout(ok, 10));
  const reason = new Error("enough");
  controller.abort(reason);
  await assert.rejects(pending, (e) => e === reason);
  assert.equal(lookupSignals.length, 2);
  assert.ok(lookupSignals.every((s) => s.aborted));
});

Deno.test("connectHappyEyeballs honours an abort during the attempts", async () => {
  const controller = new AbortController();
  const attemptSignals: AbortSignal[] = [];
  const trace = recorder();
  const pending = connectHappyEyeballs("stuck.test", 80, {
    signal: controller.signal,
    attemptDelay: 10,
    lookup: fakeLookup({ AAAA: ["::1"], A: ["127.0.0.1"] }),
    connect: ({ signal }) => {
      attemptSignals.push(signal);
      return hang(signal);
    },
    onAttempt: trace.onAttempt,
  });
  await new Promise((ok) => setTimeout(ok, 60));
  controller.abort();
  await assert.rejects(pending, (e) => (e as Error).name === "AbortError");
  assert.equal(attemptSignals.length, 2);
  assert.ok(attemptSignals.every((s) => s.aborted));
  assert.deepEqual(
    trace.events.filter((e) => e.type === "cancelled").map((e) => e.address),
    ["::1", "127.0.0.1"],
  );
});

Deno.test("connectHappyEyeballs honours an abort with real connects", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // Aborted while the (instant) loopback connects are in flight: whatever
  // connects is closed, nothing leaks.
  for (let i = 0; i < 20; i++) {
    const controller = new AbortController();
    const pending = connectHappyEyeballs("localhost", listener.addr.port, {
      signal: controller.signal,
    });
    queueMicrotask(() => controller.abort());
    const result = await pending.catch((e) => e);
    if (!(result instanceof Error)) result.close();
    else assert.equal((result as Error).name, "AbortError");
  }
  // Drain what the kernel accepted, so the listener closes clean.
  await new Promise((ok) => setTimeout(ok, 20));
});

Deno.test("tcp resolves a host name through an injected resolver and echoes", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = echoOnce(listener);
  const ctx = empty.add(tcp.endpoint, {
    hostname: "echo.test",
    port: listener.addr.port,
    attemptDelay: 50,
    lookup: fakeLookup({ AAAA: [], A: ["127.0.0.1"] }),
  });
  {
    await using flow = await resolve(ctx) as Deno.TcpConn & AsyncDisposable;
    assert.ok(tcp.is(flow));
    assert.equal(await echoThrough(flow, "by name"), "by name");
  }
  await served;
});

Deno.test("tcp flows close idempotently, as the Flow contract asks", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const flow = await resolve(
    empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  );
  const server = await listener.accept();
  flow.close();
  flow.close();
  await flow[Symbol.asyncDispose]();
  server.close();
});
