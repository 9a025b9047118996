import assert from "node:assert/strict";
import type { Flow } from "../mod.ts";
import { listenPipe, pipe, type PipeFlow } from "../src/pipe.ts";
import { serve } from "../src/serve.ts";
import { startTls, TlsError, type TlsFlow } from "../src/tls.ts";
import { delay, fixture } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Echoes until end of flow, then half-closes. */
async function echo(flow: Flow): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    let offset = 0;
    while (offset < n) offset += await flow.write(buf.subarray(offset, n));
  }
  await flow.closeWrite();
}

async function writeAll(flow: Flow, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await flow.write(data.subarray(offset));
  }
}

async function readAll(flow: Flow): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buf = new Uint8Array(16 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    chunks.push(...buf.subarray(0, n));
  }
  return new Uint8Array(chunks);
}

/** Sends `text`, half-closes, and returns all the reply. */
async function roundTrip(flow: Flow, text: string): Promise<string> {
  const [, reply] = await Promise.all([
    writeAll(flow, encoder.encode(text)).then(() => flow.closeWrite()),
    readAll(flow),
  ]);
  return decoder.decode(reply);
}

/** A flow whose bytes are XORed with `key` both ways. */
class XorFlow implements Flow {
  readonly #inner: Flow;
  readonly #key: number;
  constructor(inner: Flow, key: number) {
    this.#inner = inner;
    this.#key = key;
  }
  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.#inner.read(p);
    if (n !== null) { for (let i = 0; i < n; i++) p[i] ^= this.#key; }
    return n;
  }
  write(p: Uint8Array): Promise<number> {
    return this.#inner.write(p.map((b) => b ^ this.#key));
  }
  closeWrite(): Promise<void> {
    return this.#inner.closeWrite();
  }
  close(): void {
    this.#inner.close();
  }
  get readable(): ReadableStream<Uint8Array> {
    throw new Error("not used");
  }
  get writable(): WritableStream<Uint8Array> {
    throw new Error("not used");
  }
}

Deno.test("serve() echoes over TCP to concurrent clients", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  await using _server = serve(listener, echo, {
    onError: (e) => errors.push(e),
  });
  const replies = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      using conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: listener.addr.port,
      });
      return await roundTrip(conn, `client ${i} `.repeat(10_000));
    }),
  );
  replies.forEach((reply, i) =>
    assert.equal(reply, `client ${i} `.repeat(10_000))
  );
  assert.deepEqual(errors, []);
});

Deno.test("serve() echoes over a Unix socket", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/echo.sock`;
    const server = serve(Deno.listen({ transport: "unix", path }), echo);
    const replies = await Promise.all(
      [1, 2, 3].map(async (i) => {
        using conn = await Deno.connect({ transport: "unix", path });
        return await roundTrip(conn, `unix ${i}`);
      }),
    );
    assert.deepEqual(replies, ["unix 1", "unix 2", "unix 3"]);
    await server.shutdown();
    await assert.rejects(Deno.connect({ transport: "unix", path }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve() serves a PipeListener", async () => {
  const listener = listenPipe();
  const server = serve(listener, echo);
  const replies = await Promise.all(
    [1, 2, 3].map((i) => roundTrip(listener.connect(), `pipe ${i}`)),
  );
  assert.deepEqual(replies, ["pipe 1", "pipe 2", "pipe 3"]);
  await server.shutdown();
  assert.equal(listener.closed, true);
  assert.throws(() => listener.connect(), Deno.errors.ConnectionRefused);
});

Deno.test("serve() closes each flow once its handler settles", async () => {
  const listener = listenPipe();
  await using _server = serve(listener, async (flow) => {
    await flow.write(encoder.encode("hi"));
    // Returns without closing: the server closes.
  });
  const client = listener.connect();
  assert.equal(decoder.decode(await readAll(client)), "hi");
  await assert.rejects(client.write(new Uint8Array(1)), Deno.errors.BrokenPipe);
  client.close();
});

Deno.test("serve() reports a handler that throws and keeps serving", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  let calls = 0;
  await using _server = serve(listener, async (flow) => {
    if (++calls === 1) throw new Error("handler failed");
    if (calls === 2) {
      await flow.write(encoder.encode("x"));
      throw new Error("sync-ish failure");
    }
    await echo(flow);
  }, { onError: (e) => errors.push(e) });
  for (let i = 0; i < 2; i++) {
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    await readAll(conn);
  }
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  assert.equal(await roundTrip(conn, "still served"), "still served");
  assert.equal(errors.length, 2);
  assert.equal((errors[0] as Error).message, "handler failed");
  assert.equal((errors[1] as Error).message, "sync-ish failure");
});

Deno.test("serve() reports a synchronous throw of the handler", async () => {
  const listener = listenPipe();
  const errors: unknown[] = [];
  const server = serve(listener, () => {
    throw new TypeError("sync");
  }, { onError: (e) => errors.push(e) });
  const client = listener.connect();
  assert.equal(await client.read(new Uint8Array(1)), null);
  client.close();
  await server.shutdown();
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof TypeError);
});

Deno.test("serve() reports to console.error by default", async () => {
  const listener = listenPipe();
  const logged: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => logged.push(args);
  try {
    const server = serve(listener, () => {
      throw new Error("oops");
    });
    const client = listener.connect();
    assert.equal(await client.read(new Uint8Array(1)), null);
    client.close();
    await server.shutdown();
  } finally {
    console.error = original;
  }
  assert.equal(logged.length, 1);
  assert.match(String(logged[0][0]), /^serve\(\): a handler failed/);
  assert.equal((logged[0][1] as Error).message, "oops");
});

Deno.test("serve() survives an onError that throws", async () => {
  const listener = listenPipe();
  const original = console.error;
  let logged = 0;
  console.error = () => logged++;
  try {
    const server = serve(listener, () => {
      throw new Error("handler");
    }, {
      onError: () => {
        throw new Error("reporter");
      },
    });
    const client = listener.connect();
    assert.equal(await client.read(new Uint8Array(1)), null);
    client.close();
    await server.shutdown();
  } finally {
    console.error = original;
  }
  assert.equal(logged, 1);
});

Deno.test("serve() runs the upgrade before the handler", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let seen: Flow | undefined;
  const server = serve(listener, async (flow) => {
    seen = flow;
    await echo(flow);
  }, {
    upgrade: (flow) => Promise.resolve(new XorFlow(flow, 0x20)),
  });
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  // The client XORs too, so the text crosses the wire scrambled.
  const client = new XorFlow(conn, 0x20);
  assert.equal(await roundTrip(client, "Upgraded"), "Upgraded");
  assert.ok(seen instanceof XorFlow);
  await server.shutdown();
});

Deno.test("serve() hands the handler the upgraded flow's bytes", async () => {
  const listener = listenPipe();
  const seen: string[] = [];
  const server = serve(listener, async (flow) => {
    seen.push(decoder.decode(await readAll(flow)));
  }, { upgrade: (flow) => Promise.resolve(new XorFlow(flow, 0x20)) });
  // A raw client: the upgrade flips the case of what it sends.
  const client = listener.connect();
  await writeAll(client, encoder.encode("abc"));
  await client.closeWrite();
  assert.equal(await client.read(new Uint8Array(1)), null);
  client.close();
  await server.shutdown();
  assert.deepEqual(seen, ["ABC"]);
});

Deno.test("serve() reports a failed upgrade and closes the raw flow", async () => {
  const listener = listenPipe();
  const errors: unknown[] = [];
  let handled = 0;
  const server = serve(listener, () => {
    handled++;
  }, {
    upgrade: () => Promise.reject(new Error("handshake failed")),
    onError: (e) => errors.push(e),
  });
  const client = listener.connect();
  assert.equal(await client.read(new Uint8Array(1)), null);
  await assert.rejects(client.write(new Uint8Array(1)), Deno.errors.BrokenPipe);
  client.close();
  await server.shutdown();
  assert.equal(handled, 0);
  assert.equal((errors[0] as Error).message, "handshake failed");
});

Deno.test("serve() stops on abort: the listener closes and finished resolves", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const controller = new AbortController();
  const server = serve(listener, echo, { signal: controller.signal });
  {
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    assert.equal(await roundTrip(conn, "before"), "before");
  }
  controller.abort();
  await server.finished;
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    Deno.errors.ConnectionRefused,
  );
  await server.shutdown(); // idempotent
});

Deno.test("serve() with an aborted signal closes the listener at once", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let handled = 0;
  const server = serve(listener, () => {
    handled++;
  }, { signal: AbortSignal.abort() });
  await server.finished;
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    Deno.errors.ConnectionRefused,
  );
  assert.equal(handled, 0);
});

Deno.test("serve() shutdown waits for in-flight handlers", async () => {
  const listener = listenPipe();
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let aborted = false;
  let finishedHandler = false;
  const server = serve(listener, async (flow, signal) => {
    signal.addEventListener("abort", () => aborted = true);
    await released;
    await flow.write(encoder.encode("late"));
    finishedHandler = true;
  });
  const client = listener.connect();
  const reply = readAll(client);
  await new Promise((resolve) => setTimeout(resolve, 0));
  let shutDown = false;
  const shutdown = server.shutdown().then(() => shutDown = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(aborted, true, "the handler's signal is aborted");
  assert.equal(shutDown, false, "shutdown waits for the handler");
  assert.throws(() => listener.connect(), Deno.errors.ConnectionRefused);
  release();
  await shutdown;
  assert.equal(finishedHandler, true);
  assert.equal(decoder.decode(await reply), "late");
  client.close();
});

Deno.test("serve() closeOnShutdown closes in-flight flows", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  let started!: () => void;
  const isStarted = new Promise<void>((resolve) => started = resolve);
  const server = serve(listener, async (flow) => {
    started();
    await flow.read(new Uint8Array(1)); // the client never writes
  }, { closeOnShutdown: true, onError: (e) => errors.push(e) });
  using conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  await isStarted;
  await server.shutdown();
  assert.equal(await conn.read(new Uint8Array(1)), null);
  assert.deepEqual(errors, []);
});

Deno.test("serve() reports a failing listener and finishes", async () => {
  const closed: string[] = [];
  const [a, b] = pipe();
  const failing = {
    async *[Symbol.asyncIterator](): AsyncGenerator<PipeFlow> {
      yield a;
      await Promise.resolve();
      throw new Error("accept failed");
    },
    close() {
      closed.push("listener");
    },
  };
  const errors: unknown[] = [];
  const server = serve(failing, echo, { onError: (e) => errors.push(e) });
  assert.equal(await roundTrip(b, "first"), "first");
  await server.finished;
  b.close();
  assert.equal((errors[0] as Error).message, "accept failed");
  assert.deepEqual(closed, ["listener"]);
});

Deno.test("serve() abandons a pending next() of a listener without close()", async () => {
  let yieldLate!: (flow: PipeFlow) => void;
  const late = new Promise<PipeFlow>((resolve) => yieldLate = resolve);
  let returned = false;
  const iterable: AsyncIterable<PipeFlow> = {
    [Symbol.asyncIterator]: () => ({
      next: () => late.then((value) => ({ value, done: false })),
      return: () => {
        returned = true;
        return Promise.resolve({ value: undefined, done: true });
      },
    }),
  };
  let handled = 0;
  const server = serve(iterable, () => {
    handled++;
  });
  await server.shutdown();
  assert.equal(returned, true);
  // A flow yielded after shutdown is closed, not handled.
  const [a, b] = pipe();
  yieldLate(a);
  assert.equal(await b.read(new Uint8Array(1)), null);
  b.close();
  assert.equal(handled, 0);
});

// --- TLS: serve(listener, handler, { tls }) ---------------------------------

const CA = fixture("ca.pem");
const CERT = fixture("localhost.pem");
const KEY = fixture("localhost.key");

/** Reads a Deno.Conn to its end, as text. */
async function readText(conn: Deno.Conn): Promise<string> {
  const out: number[] = [];
  const buf = new Uint8Array(16 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) {
    out.push(...buf.subarray(0, n));
  }
  return decoder.decode(new Uint8Array(out));
}

/** Sends `text` over Deno.connectTls with `caCerts`, half-closes, returns the reply. */
async function tlsRoundTrip(
  port: number,
  text: string,
  options: { caCerts?: string[]; alpnProtocols?: string[] } = {},
): Promise<{ reply: string; alpn: string | null }> {
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: options.caCerts ?? [CA],
    alpnProtocols: options.alpnProtocols,
  });
  try {
    const info = await conn.handshake();
    const [, reply] = await Promise.all([
      writeAll(conn, encoder.encode(text)).then(() => conn.closeWrite()),
      readText(conn),
    ]);
    return { reply, alpn: info.alpnProtocol };
  } finally {
    conn.close();
  }
}

Deno.test("serve() with tls accepts Deno.connectTls clients on a TCP listener", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  const infos: string[] = [];
  await using _server = serve(listener, async (flow) => {
    const info = await (flow as TlsFlow).handshake();
    infos.push(`${info.protocol} ${info.serverName} ${info.alpnProtocol}`);
    await echo(flow);
  }, {
    tls: { cert: CERT, key: KEY, alpnProtocols: ["h2", "http/1.1"] },
    onError: (e) => errors.push(e),
  });
  const port = listener.addr.port;
  const results = await Promise.all([
    tlsRoundTrip(port, "one", { alpnProtocols: ["http/1.1"] }),
    tlsRoundTrip(port, "two".repeat(50_000)),
  ]);
  assert.deepEqual(results, [
    { reply: "one", alpn: "http/1.1" },
    { reply: "two".repeat(50_000), alpn: null },
  ]);
  assert.deepEqual(infos.sort(), [
    "TLSv1.3 localhost http/1.1",
    "TLSv1.3 localhost null",
  ]);
  assert.deepEqual(errors, []);
});

Deno.test("serve() with tls reports a failed handshake through onError and goes on", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  let handled = 0;
  await using _server = serve(listener, async (flow) => {
    handled++;
    await echo(flow);
  }, {
    tls: { cert: CERT, key: KEY },
    onError: (e) => errors.push(e),
  });
  const port = listener.addr.port;
  // A client that trusts other CAs (Deno's built-in roots) rejects the
  // certificate, and tells the server so with an alert.
  const wrongCa = await Deno.connectTls({ hostname: "localhost", port });
  await assert.rejects(wrongCa.handshake(), /UnknownIssuer/);
  wrongCa.close();
  // A client that speaks no TLS at all.
  const plain = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(plain, encoder.encode("GET / HTTP/1.0\r\n\r\n"));
  assert.notEqual(await readText(plain).catch(() => ""), "GET / HTTP/1.0");
  plain.close();
  // The server still serves.
  assert.deepEqual(await tlsRoundTrip(port, "still here"), {
    reply: "still here",
    alpn: null,
  });
  for (let i = 0; i < 100 && errors.length < 2; i++) await delay(10);
  assert.ok(errors.length >= 2, `errors: ${errors}`);
  for (const e of errors) {
    assert.ok(e instanceof TlsError, `not a TlsError: ${e}`);
  }
  assert.equal((errors[0] as TlsError).code, "AlertReceived");
  assert.equal(handled, 1);
});

Deno.test("serve() with tls: a client that goes away mid-handshake is reported, not fatal", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  await using _server = serve(listener, echo, {
    tls: { cert: CERT, key: KEY },
    onError: (e) => errors.push(e),
  });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  conn.close();
  for (let i = 0; i < 100 && errors.length < 1; i++) await delay(10);
  assert.equal(errors.length, 1);
  assert.equal((errors[0] as TlsError).code, "UnexpectedEof");
  assert.deepEqual(await tlsRoundTrip(listener.addr.port, "ok"), {
    reply: "ok",
    alpn: null,
  });
});

Deno.test("serve() with tls runs upgrade on the TLS flow", async () => {
  const [raw, upgraded] = [new Set<Flow>(), new Set<Flow>()];
  const listener = listenPipe();
  await using _server = serve(listener, echo, {
    tls: { cert: CERT, key: KEY },
    upgrade: async (flow) => {
      // The handshake is complete before upgrade sees the flow.
      assert.equal((await (flow as TlsFlow).handshake()).protocol, "TLSv1.3");
      raw.add(flow);
      const xor = new XorFlow(flow, 0x55);
      upgraded.add(xor);
      return xor;
    },
  });
  const client = await startTls(listener.connect(), {
    hostname: "localhost",
    caCerts: [CA],
  });
  try {
    const xored = new XorFlow(client, 0x55);
    assert.equal(await roundTrip(xored, "over a pipe"), "over a pipe");
  } finally {
    client.close();
  }
  assert.equal(raw.size, 1);
  assert.equal(upgraded.size, 1);
});

Deno.test("serve() with tls: shutdown aborts a pending handshake without reporting it", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  const server = serve(listener, echo, {
    tls: { cert: CERT, key: KEY },
    onError: (e) => errors.push(e),
  });
  // Connects, and never says a word.
  const idle = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  await delay(50);
  await server.shutdown();
  assert.deepEqual(errors, []);
  // The server closed the flow it accepted.
  assert.equal(await idle.read(new Uint8Array(8)), null);
  idle.close();
});

Deno.test("serve() with tls needs cert and key as strings", () => {
  for (
    const tls of [
      {},
      { cert: CERT },
      { key: KEY },
      { cert: 1, key: KEY },
      null,
    ]
  ) {
    assert.throws(
      () =>
        serve(listenPipe(), echo, {
          tls: tls as unknown as { cert: string; key: string },
        }),
      {
        name: "TypeError",
        message:
          "Cannot serve with TLS: cert and key are required, as PEM strings",
      },
    );
  }
});

Deno.test("serve() with tls reports malformed PEM per flow", async () => {
  const listener = listenPipe();
  const errors: unknown[] = [];
  await using _server = serve(listener, echo, {
    tls: { cert: "not a certificate", key: KEY },
    onError: (e) => errors.push(e),
  });
  const client = listener.connect();
  assert.equal(await client.read(new Uint8Array(8)), null);
  client.close();
  for (let i = 0; i < 100 && errors.length < 1; i++) await delay(10);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof TypeError, String(errors[0]));
});

Deno.test("serve() loads the TLS engine only when a TLS flow is accepted", async () => {
  const serveUrl = new URL("../src/serve.ts", import.meta.url).href;
  const engineUrl = new URL("../src/_engine.ts", import.meta.url).href;
  const code = `
    const { serve } = await import(${JSON.stringify(serveUrl)});
    const pem = (n) => Deno.readTextFile(new URL(n, ${
    JSON.stringify(new URL("./fixtures/", import.meta.url).href)
  }));
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const server = serve(listener, (flow) => flow.closeWrite(), {
      tls: { cert: await pem("localhost.pem"), key: await pem("localhost.key") },
    });
    const engine = await import(${JSON.stringify(engineUrl)});
    const before = engine._engineStatsForTesting();
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port: listener.addr.port,
      caCerts: [await pem("ca.pem")],
    });
    await conn.handshake();
    const after = engine._engineStatsForTesting();
    conn.close();
    await server.shutdown();
    console.log(JSON.stringify([before, after !== null]));
  `;
  const { code: status, stdout, stderr } = await new Deno.Command(
    Deno.execPath(),
    {
      args: ["eval", "--quiet", "--ext=js", code],
      stdout: "piped",
      stderr: "piped",
    },
  ).output();
  assert.equal(decoder.decode(stderr), "");
  assert.equal(status, 0);
  assert.equal(decoder.decode(stdout).trim(), "[null,true]");
});
