// The Flow helpers (flowFromReader, flowFromStreams) on bad sources, and
// resolution's rule 9 and bad protocols; endpoints named in errors and
// traces (tcp, unix, Happy Eyeballs, tunnel).
import assert from "node:assert/strict";
import {
  connect,
  CycleError,
  empty,
  errors,
  type Flow,
  flowFromReader,
  flowFromStreams,
  NotFoundError,
  register,
  req,
  resolve,
  type ResolveEvent,
  unfold,
  value,
} from "../mod.ts";
import { pipe } from "../src/pipe.ts";
import { connectHappyEyeballs, tcp, TcpFlow, unix } from "../src/tcp.ts";
import { acceptTls, startTls } from "../src/tls.ts";
import { connectTunnel, tunnel } from "../src/tunnel.ts";
import { fixture } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

// --- flowFromStreams and flowFromReader on bad sources ----------------------

Deno.test("flowFromStreams() rejects reads with the error of a stream that errors mid-stream", async () => {
  const boom = new Error("boom");
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      c.enqueue(encoder.encode("ok"));
    },
  });
  await using flow = flowFromStreams(readable, new WritableStream());
  const buf = new Uint8Array(8);
  assert.equal(await flow.read(buf), 2);
  const pending = flow.read(buf);
  controller.error(boom);
  await assert.rejects(pending, (e) => e === boom);
  await assert.rejects(flow.read(buf), (e) => e === boom);
});

Deno.test("flowFromStreams() rejects writes with the error of a writable that errors", async () => {
  const boom = new Error("sink broke");
  await using flow = flowFromStreams(
    new ReadableStream(),
    new WritableStream({
      write() {
        throw boom;
      },
    }),
  );
  await assert.rejects(flow.write(new Uint8Array(1)), (e) => e === boom);
});

Deno.test("flowFromStreams() rejects a chunk that is not bytes with a TypeError", async () => {
  const readable = ReadableStream.from(["text"]) as unknown as ReadableStream<
    Uint8Array
  >;
  await using flow = flowFromStreams(readable, new WritableStream(), {
    name: "strings",
  });
  await assert.rejects(flow.read(new Uint8Array(8)), {
    name: "TypeError",
    message: /^Cannot read from strings: /,
  });
});

Deno.test("flowFromStreams() copies written bytes, so the caller may reuse them", async () => {
  const got: Uint8Array[] = [];
  await using flow = flowFromStreams(
    new ReadableStream(),
    new WritableStream({ write: (c) => void got.push(c) }),
  );
  const buf = encoder.encode("abc");
  await flow.write(buf);
  buf.fill(0);
  assert.equal(decoder.decode(got[0]), "abc");
});

Deno.test("flowFromReader() turns a bad source into typed errors, never a hang", async (t) => {
  await t.step("a write that accepts 0 bytes: WriteZero", async () => {
    using flow = flowFromReader({
      read: () => Promise.resolve(null),
      write: () => Promise.resolve(0),
    }, { name: "stuck" });
    await assert.rejects(flow.write(new Uint8Array(4)), {
      name: "WriteZero",
      message: "Cannot write to stuck: it accepted zero bytes",
    });
  });
  await t.step("a read of more bytes than asked: RangeError", async () => {
    using flow = flowFromReader({
      read: () => Promise.resolve(99),
      write: (p) => Promise.resolve(p.length),
    });
    await assert.rejects(flow.read(new Uint8Array(4)), RangeError);
  });
  await t.step("a source that keeps reading 0 bytes: InvalidData", async () => {
    using flow = flowFromReader({
      read: () => Promise.resolve(0),
      write: (p) => Promise.resolve(p.length),
    });
    await assert.rejects(flow.read(new Uint8Array(4)), errors.InvalidData);
  });
  await t.step("a source that throws synchronously: a rejection", async () => {
    using flow = flowFromReader({
      read: () => {
        throw new Error("sync");
      },
      write: () => {
        throw new Error("sync");
      },
    });
    await assert.rejects(flow.read(new Uint8Array(4)), /sync/);
    await assert.rejects(flow.write(new Uint8Array(4)), /sync/);
  });
  await t.step("short writes are completed, in call order", async () => {
    const out: number[] = [];
    using flow = flowFromReader({
      read: () => Promise.resolve(null),
      write: (p) => {
        out.push(p[0]);
        return Promise.resolve(1);
      },
    });
    const counts = await Promise.all([
      flow.write(new Uint8Array([1, 2, 3])),
      flow.write(new Uint8Array([4, 5])),
    ]);
    assert.deepEqual(counts, [3, 2]);
    assert.deepEqual(out, [1, 2, 3, 4, 5]);
  });
  await t.step(
    "a source whose read never settles: close() still ends it",
    async () => {
      const flow = flowFromReader({
        read: () => new Promise(() => {}),
        write: (p) => Promise.resolve(p.length),
      });
      const pending = flow.read(new Uint8Array(4));
      flow.close();
      await assert.rejects(pending, errors.Interrupted);
    },
  );
});

// --- rule 9: resolve never mutates; bad protocols ----------------------------

class BareFlow implements Flow {
  closed = false;
  read(): Promise<number | null> {
    return Promise.resolve(null);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
  get readable(): ReadableStream<Uint8Array> {
    return new ReadableStream();
  }
  get writable(): WritableStream<Uint8Array> {
    return new WritableStream();
  }
  /** An extra of this transport, reached through the wrapper. */
  hello(): string {
    return this.closed ? "closed" : "open";
  }
}

Deno.test("resolve() wraps a flow lacking disposers instead of mutating it", async () => {
  const inner = new BareFlow();
  const bare = register("bare", () => Promise.resolve(inner));
  const flow = await resolve(empty.add(bare.endpoint, null));
  assert.ok(bare.is(flow), "is() recognises the wrapper");
  assert.ok(bare.is(inner), "and the protocol's own object");
  assert.ok(flow instanceof BareFlow, "instanceof holds through the wrapper");
  assert.equal((flow as BareFlow).hello(), "open");
  assert.ok(!Object.hasOwn(inner, Symbol.asyncDispose), "no assignment");
  assert.ok(!(Symbol.asyncDispose in inner));
  {
    await using _ = flow;
  }
  assert.ok(inner.closed);
  assert.equal((flow as BareFlow).hello(), "closed");
});

Deno.test("resolve() works with a frozen flow", async () => {
  const inner = Object.freeze(new BareFlow());
  const frozen = register("frozen", () => Promise.resolve(inner));
  const flow = await resolve(empty.add(frozen.endpoint, null));
  assert.ok(frozen.is(flow));
  assert.equal(await flow.read(new Uint8Array(1)), null);
  assert.equal(
    typeof (flow as Partial<Disposable>)[Symbol.dispose],
    "function",
  );
  flow[Symbol.asyncDispose]();
  assert.ok(Object.isFrozen(inner));
});

Deno.test("resolve() returns a flow that keeps rule 8 as it is", async () => {
  const [a, b] = pipe();
  const given = register("given-pipe", () => Promise.resolve(a));
  const flow = await resolve(empty.add(given.endpoint, null));
  assert.equal(flow, a);
  a.close();
  b.close();
});

Deno.test("resolve() fails an attempt whose protocol returns a non-flow", async () => {
  const closed: string[] = [];
  const liar = register(
    "liar",
    () =>
      Promise.resolve(
        { close: () => closed.push("closed") } as unknown as Flow,
      ),
  );
  const nothing = register(
    "nothing",
    () => Promise.resolve(undefined as unknown as Flow),
  );
  const error = await resolve(
    empty.add(liar.endpoint, null).add(nothing.endpoint, null),
  ).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  assert.deepEqual(error.attempts.map((a) => a.name), ["nothing", "liar"]);
  for (const a of error.attempts) {
    assert.ok(a.error instanceof TypeError);
    assert.match((a.error as Error).message, /not a flow$/);
  }
  assert.deepEqual(closed, ["closed"], "what it returned is closed");
});

Deno.test("connect([...await unfold(ctx)]) keeps CycleError and fold errors", async () => {
  const a = value<number>("a");
  const b = value<number>("b");
  const cyclic = empty.fold(a, [req(b)], (x) => x).fold(b, [req(a)], (x) => x);
  const copied = [...await unfold(cyclic)];
  await assert.rejects(connect(copied), (e) => {
    assert.ok(e instanceof CycleError);
    assert.deepEqual([...e.values].sort(), ["a", "b"]);
    return true;
  });
  const boom = new Error("boom");
  const failing = empty.fold(value<string>("x"), [], () => {
    throw boom;
  });
  const error = await connect([...await unfold(failing)]).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  assert.equal(error.folds[0].error, boom);
});

// --- endpoints named in errors and traces -------------------------------------

Deno.test("a refused tcp connect names the address, in the error and the trace", async () => {
  const port = freePort();
  const events: ResolveEvent[] = [];
  const error = await resolve(
    empty.add(tcp.endpoint, { hostname: "127.0.0.1", port }),
    { onEvent: (e) => events.push(e) },
  ).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  const cause = error.attempts[0].error as Error;
  assert.ok(cause instanceof errors.ConnectionRefused);
  assert.match(
    cause.message,
    new RegExp(`^Cannot connect to 127\\.0\\.0\\.1:${port}: `),
  );
  assert.equal(error.attempts[0].endpoint, `tcp 127.0.0.1:${port}`);
  assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
  const connecting = events.find((e) => e.type === "connecting");
  const failed = events.find((e) => e.type === "connect-failed");
  assert.deepEqual(connecting, {
    type: "connecting",
    protocol: "tcp",
    endpoint: `tcp 127.0.0.1:${port}`,
  });
  assert.equal(
    failed?.type === "connect-failed" && failed.endpoint,
    `tcp 127.0.0.1:${port}`,
  );
});

Deno.test("a missing unix socket names its path", async () => {
  const path = `${await Deno.makeTempDir()}/nobody.sock`;
  const events: ResolveEvent[] = [];
  const error = await resolve(empty.add(unix.endpoint, { path }), {
    onEvent: (e) => events.push(e),
  }).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  const cause = error.attempts[0].error as Error;
  assert.ok(cause instanceof errors.NotFound);
  assert.ok(cause.message.includes(path), cause.message);
  assert.ok(error.message.includes(path), error.message);
  assert.ok(
    events.some((e) =>
      e.type === "connecting" && e.endpoint === `unix ${path}`
    ),
  );
  await Deno.remove(path.replace(/\/nobody\.sock$/, ""), { recursive: true });
});

Deno.test("Happy Eyeballs names each attempt's address in the AggregateError", async () => {
  const port = freePort();
  const error = await connectHappyEyeballs("both.test", port, {
    lookup: (_h, type) =>
      Promise.resolve(type === "A" ? ["127.0.0.1", "127.0.0.2"] : ["::1"]),
  }).catch((e) => e);
  assert.ok(error instanceof AggregateError);
  const messages = error.errors.map((e: Error) => e.message);
  assert.equal(messages.length, 3);
  for (const [i, address] of ["[::1]", "127.0.0.1", "127.0.0.2"].entries()) {
    assert.ok(
      messages[i].startsWith(`Cannot connect to ${address}:${port}: `),
      messages[i],
    );
  }
});

Deno.test("tunnel refuses port 0 as tcp does, before reaching the proxy", async () => {
  let reached = false;
  const proxy = register("never", () => {
    reached = true;
    return Promise.reject(new Error("reached"));
  });
  for (const port of [0, -1, 65536, 1.5]) {
    const error = await resolve(empty.add(tunnel.endpoint, {
      proxy: empty.add(proxy.endpoint, null),
      target: { hostname: "127.0.0.1", port },
    })).catch((e) => e);
    assert.ok(error instanceof NotFoundError);
    assert.ok(error.attempts[0].error instanceof RangeError, `port ${port}`);
  }
  assert.equal(reached, false);
  const tcpError = await resolve(
    empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 0 }),
  ).catch((e) => e);
  assert.ok(tcpError.attempts[0].error instanceof RangeError);
  const [a, b] = pipe();
  await assert.rejects(
    connectTunnel(a, { hostname: "127.0.0.1", port: 0 }),
    RangeError,
  );
  b.close();
});

// --- the tcp flow: a plaintext phase through readable, then TLS -------------

Deno.test("TcpFlow: read a plaintext greeting through readable, then startTls", async () => {
  const cert = fixture("localhost.pem");
  const key = fixture("localhost.key");
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    await conn.write(encoder.encode("220 ready for TLS\r\n"));
    const secure = await acceptTls(conn, { cert, key });
    const buf = new Uint8Array(64);
    const n = await secure.read(buf);
    await secure.write(buf.subarray(0, n!));
    await secure.closeWrite();
    secure.close();
  })();
  const flow = await resolve(
    empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  );
  assert.ok(flow instanceof TcpFlow);
  const reader = flow.readable.getReader();
  let greeting = "";
  while (!greeting.endsWith("\r\n")) {
    const { value } = await reader.read();
    greeting += decoder.decode(value);
  }
  assert.equal(greeting, "220 ready for TLS\r\n");
  await reader.cancel(); // Deno.Conn's readable would close the socket here
  const secure = await startTls(flow, {
    hostname: "localhost",
    caCerts: [fixture("ca.pem")],
  });
  await secure.write(encoder.encode("secret"));
  const buf = new Uint8Array(16);
  const n = await secure.read(buf);
  assert.equal(decoder.decode(buf.subarray(0, n!)), "secret");
  secure.close();
  await served;
});
