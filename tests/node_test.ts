/**
 * `./node` against the real libraries and real peers on 127.0.0.1:
 *
 * - `fromDuplex` over real `node:net` sockets (Deno's native TCP listener as
 *   the peer): reads in order, half-close both ways, a kernel RST, close
 *   semantics, addresses; Duplexes that fail or vanish mid-stream.
 * - `toDuplex` over pipes: backpressure, end() as half-close, destroy() as
 *   close, the flow's errors.
 * - `netTcp`/`netUnix` through `resolve`, and TLS over them to Deno's TLS.
 * - undici (npm) over our TLS over a CONNECT tunnel through a real tinyproxy
 *   to a `Deno.serve` HTTPS server with the fixture certificate.
 * - a `node:http` server fed by our TLS flows, reached over a WebSocket
 *   through a real websockify, by `node:http`'s client and by undici.
 * - isomorphic-git (npm) listing refs over https (our TLS, Deno's TLS server
 *   in front of `git http-backend`), checked against `git ls-remote`.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import { Buffer } from "node:buffer";
import * as net from "node:net";
import { Duplex, PassThrough } from "node:stream";
import { Agent, request as undiciRequest } from "undici";
import git from "isomorphic-git";
import {
  type Context,
  empty,
  errors,
  NotFoundError,
  register,
  resolve,
} from "../mod.ts";
import {
  createConnection,
  type DuplexFlow,
  FlowDuplex,
  fromDuplex,
  type HttpTarget,
  netTcp,
  netUnix,
  serveHttp,
  toDuplex,
  undiciConnect,
} from "../src/node.ts";
import { pipe } from "../src/pipe.ts";
import { tcp } from "../src/tcp.ts";
import { acceptTls, tls, TlsError, type TlsFlow } from "../src/tls.ts";
import { tunnel } from "../src/tunnel.ts";
import { websocket } from "../src/websocket.ts";
import { randomBytes } from "./_helpers.ts";
import {
  createEmptyRepository,
  createRepository,
  git as runGit,
} from "./servers/git_daemon.ts";
import { startGitHttp } from "./servers/git_http.ts";
import { startTinyproxy } from "./servers/tinyproxy.ts";
import { startWebsockify } from "./servers/websockify.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const ca = await Deno.readTextFile(new URL("ca.pem", fixtures));
const cert = await Deno.readTextFile(new URL("localhost.pem", fixtures));
const key = await Deno.readTextFile(new URL("localhost.key", fixtures));
const enc = new TextEncoder();
const dec = new TextDecoder();

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A `node:net` socket (allowHalfOpen) to a fresh native Deno listener, as a flow, and the accepted peer. */
async function netPair(): Promise<
  { flow: DuplexFlow; peer: Deno.TcpConn; listener: Deno.TcpListener }
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const flow = await resolve(
    empty.add(netTcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  );
  assert.ok(netTcp.is(flow));
  return { flow, peer: await accepted, listener };
}

async function readAllFlow(
  flow: { read(p: Uint8Array): Promise<number | null> },
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

async function writeAllFlow(
  flow: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  for (let off = 0; off < data.length;) {
    off += await flow.write(data.subarray(off));
  }
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // Already closed.
  }
}

// ---------------------------------------------------------------------------
// fromDuplex over real node:net sockets
// ---------------------------------------------------------------------------

Deno.test("fromDuplex() serves concurrent reads in call order over a node:net socket", async () => {
  const { flow, peer, listener } = await netPair();
  try {
    const data = randomBytes(200_000);
    const writing = writeAllFlow(peer, data).then(() => peer.closeWrite());
    const got: Uint8Array[] = [];
    // Rounds of 40 concurrent reads of odd sizes: each gets the next bytes;
    // those past the end get null.
    let ended = false;
    for (let round = 0; !ended && round < 10_000; round++) {
      const bufs = Array.from(
        { length: 40 },
        (_, i) => new Uint8Array(1 + ((i * 7919 + round) % 9000)),
      );
      const counts = await Promise.all(bufs.map((b) => flow.read(b)));
      counts.forEach((n, i) => {
        if (n === null) {
          ended = true;
          return;
        }
        assert.ok(!ended, "bytes after null");
        assert.ok(n >= 1 && n <= bufs[i].length);
        got.push(bufs[i].subarray(0, n));
      });
    }
    await writing;
    const all = new Uint8Array(data.length);
    let off = 0;
    for (const c of got) {
      all.set(c, off);
      off += c.length;
    }
    assert.equal(off, data.length);
    assert.equal(sha256(all), sha256(data));
    assert.equal(await flow.read(new Uint8Array(0)), 0);
  } finally {
    flow.close();
    closeQuietly(peer);
    listener.close();
  }
});

Deno.test("fromDuplex() half-closes both ways over a node:net socket", async () => {
  const { flow, peer, listener } = await netPair();
  try {
    await writeAllFlow(flow, enc.encode("request"));
    const closing = flow.closeWrite();
    assert.equal(flow.closeWrite(), closing, "closeWrite() is idempotent");
    await closing;
    // The peer reads every byte, then end of flow.
    assert.equal(dec.decode(await readAllFlow(peer)), "request");
    // This side keeps reading after its half-close.
    await writeAllFlow(peer, enc.encode("answer"));
    await peer.closeWrite();
    assert.equal(dec.decode(await readAllFlow(flow)), "answer");
    assert.equal(await flow.read(new Uint8Array(8)), null, "null again");
    await assert.rejects(flow.write(enc.encode("x")), errors.BrokenPipe);
    await assert.rejects(flow.write(enc.encode("x")), Deno.errors.BrokenPipe);
  } finally {
    flow.close();
    closeQuietly(peer);
    listener.close();
  }
});

Deno.test("fromDuplex() keeps writing after the peer's half-close (netTcp sockets are allowHalfOpen)", async () => {
  const { flow, peer, listener } = await netPair();
  try {
    await peer.closeWrite();
    assert.equal(await flow.read(new Uint8Array(8)), null);
    await writeAllFlow(flow, enc.encode("still here"));
    await flow.closeWrite();
    assert.equal(dec.decode(await readAllFlow(peer)), "still here");
  } finally {
    flow.close();
    closeQuietly(peer);
    listener.close();
  }
});

Deno.test("fromDuplex() rejects with ConnectionReset when the peer resets (RST)", async () => {
  // The peer: a node:net server that answers one chunk with an RST
  // (SO_LINGER 0 through resetAndDestroy()).
  const server = net.createServer((socket) => {
    socket.once("data", () => socket.resetAndDestroy());
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as net.AddressInfo;
  const flow = await resolve(
    empty.add(netTcp.endpoint, { hostname: "127.0.0.1", port }),
  );
  try {
    const reading = flow.read(new Uint8Array(16));
    await writeAllFlow(flow, enc.encode("reset me"));
    const error = await reading.then(
      (n) => assert.fail(`read resolved ${n} after a reset`),
      (e) => e,
    );
    assert.ok(error instanceof errors.ConnectionReset, String(error));
    assert.ok(error instanceof Deno.errors.ConnectionReset);
    assert.equal(error.name, "ConnectionReset");
    // The next read rejects the same way; writes too.
    await assert.rejects(flow.read(new Uint8Array(1)), errors.ConnectionReset);
    await assert.rejects(flow.write(enc.encode("x")), errors.ConnectionReset);
  } finally {
    flow.close();
    await new Promise((ok) => server.close(ok));
  }
});

Deno.test("fromDuplex() close(): pending calls Interrupted, later ones BadResource, idempotent", async () => {
  const { flow, peer, listener } = await netPair();
  try {
    const pending = [
      flow.read(new Uint8Array(4)),
      flow.read(new Uint8Array(4)),
    ];
    flow.close();
    flow.close();
    for (const p of pending) await assert.rejects(p, errors.Interrupted);
    await assert.rejects(flow.read(new Uint8Array(4)), errors.BadResource);
    await assert.rejects(flow.read(new Uint8Array(0)), errors.BadResource);
    await assert.rejects(flow.write(enc.encode("x")), errors.BadResource);
    await assert.rejects(flow.closeWrite(), errors.BadResource);
    // The socket is gone: the peer reads end of flow.
    assert.equal(await peer.read(new Uint8Array(4)), null);
  } finally {
    closeQuietly(peer);
    listener.close();
  }
});

Deno.test("fromDuplex() has the socket's addresses, streams and dispose", async () => {
  const { flow, peer, listener } = await netPair();
  try {
    assert.deepEqual(flow.remoteAddr, {
      transport: "tcp",
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    assert.equal(flow.localAddr?.port, (peer.remoteAddr as Deno.NetAddr).port);
    // readable and writable: writable.close() is a half-close.
    const writer = flow.writable.getWriter();
    await writer.write(enc.encode("via streams"));
    await writer.close();
    assert.equal(dec.decode(await readAllFlow(peer)), "via streams");
    await writeAllFlow(peer, enc.encode("back"));
    await peer.closeWrite();
    assert.equal(await new Response(flow.readable).text(), "back");
    await flow[Symbol.asyncDispose]();
    await assert.rejects(flow.read(new Uint8Array(1)), errors.BadResource);
  } finally {
    flow.close();
    closeQuietly(peer);
    listener.close();
  }
});

Deno.test("fromDuplex() names the errors of a Duplex that fails or vanishes mid-stream", async () => {
  // A Duplex that errors with an error without a code: ConnectionAborted.
  const failing = new PassThrough();
  const flow = fromDuplex(failing);
  failing.write("first");
  const buf = new Uint8Array(16);
  assert.equal(dec.decode(buf.subarray(0, (await flow.read(buf))!)), "first");
  const reading = flow.read(buf);
  const cause = new Error("disk on fire");
  failing.destroy(cause);
  const error = await reading.then(() => assert.fail("resolved"), (e) => e);
  assert.ok(error instanceof errors.ConnectionAborted);
  assert.equal(error.cause, cause);
  await assert.rejects(flow.write(enc.encode("x")), errors.ConnectionAborted);
  flow.close();

  // One with an ECONNRESET code: ConnectionReset.
  const reset = new PassThrough();
  const flow2 = fromDuplex(reset);
  const pending = flow2.read(buf);
  reset.destroy(
    Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
  );
  await assert.rejects(pending, errors.ConnectionReset);
  flow2.close();

  // Destroyed by someone else without an error, before its end.
  const vanishing = new PassThrough();
  const flow3 = fromDuplex(vanishing);
  const pending3 = flow3.read(buf);
  vanishing.destroy();
  await assert.rejects(pending3, errors.ConnectionReset);
  flow3.close();

  // Object chunks are not bytes: InvalidData, not a hang.
  const objects = new Duplex({
    objectMode: true,
    read() {
      this.push({ not: "bytes" });
    },
    write(_c, _e, cb) {
      cb();
    },
  });
  const flow4 = fromDuplex(objects);
  await assert.rejects(flow4.read(buf), errors.InvalidData);
  flow4.close();
});

// ---------------------------------------------------------------------------
// toDuplex
// ---------------------------------------------------------------------------

Deno.test("toDuplex() moves 2 MiB both ways over a pipe with backpressure", async () => {
  const [a, b] = pipe();
  const duplex = toDuplex(a);
  const up = randomBytes(2 * 1024 * 1024);
  const down = randomBytes(2 * 1024 * 1024);
  // Node side writes in 10 KB chunks honouring backpressure, then end().
  const nodeWrites = (async () => {
    for (let off = 0; off < up.length; off += 10_000) {
      if (!duplex.write(up.subarray(off, off + 10_000))) {
        await new Promise((ok) => duplex.once("drain", ok));
      }
    }
    await new Promise<void>((ok, ko) =>
      duplex.end((e?: Error) => e ? ko(e) : ok())
    );
  })();
  const nodeReads = (async () => {
    const chunks: Uint8Array[] = [];
    for await (const c of duplex) chunks.push(c);
    return Buffer.concat(chunks);
  })();
  const [gotUp] = await Promise.all([
    readAllFlow(b),
    (async () => {
      await writeAllFlow(b, down);
      await b.closeWrite();
    })(),
  ]);
  await nodeWrites;
  const gotDown = await nodeReads;
  assert.equal(sha256(gotUp), sha256(up));
  assert.equal(sha256(gotDown), sha256(down));
  duplex.destroy();
  b.close();
});

Deno.test("toDuplex() destroy() closes the flow; the flow's errors destroy the duplex", async () => {
  const [a, b] = pipe();
  const duplex = toDuplex(a);
  assert.ok(duplex instanceof FlowDuplex);
  assert.equal(duplex.flow, a);
  const closed = new Promise((ok) => duplex.once("close", ok));
  duplex.destroy();
  await closed;
  await assert.rejects(a.read(new Uint8Array(1)), errors.BadResource);
  assert.equal(await b.read(new Uint8Array(1)), null);
  b.close();

  // A flow whose read fails: the duplex emits that error.
  const reset = new errors.ConnectionReset("peer reset");
  const broken = {
    read: () => Promise.reject(reset),
    write: (p: Uint8Array) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {},
    readable: new ReadableStream<Uint8Array>(),
    writable: new WritableStream<Uint8Array>(),
  };
  const d2 = toDuplex(broken);
  const error = await new Promise((ok) => {
    d2.on("error", ok);
    d2.resume();
  });
  assert.equal(error, reset);

  // A write that accepts nothing: WriteZero, not a spin.
  const d3 = toDuplex({ ...broken, write: () => Promise.resolve(0) });
  const e3 = await new Promise<Error | null | undefined>((ok) => {
    d3.on("error", () => {});
    d3.write("x", ok);
  });
  assert.ok(e3 instanceof errors.WriteZero);
  d3.destroy();

  // A read that resolves 0 (against rule 1): InvalidData, not a spin.
  const d4 = toDuplex({ ...broken, read: () => Promise.resolve(0) });
  const e4 = await new Promise((ok) => {
    d4.on("error", ok);
    d4.resume();
  });
  assert.ok(e4 instanceof errors.InvalidData);
});

Deno.test("toDuplex() setTimeout() emits timeout after inactivity", async () => {
  const [a, b] = pipe();
  const duplex = toDuplex(a);
  // The inactivity timer is unref'd, as net.Socket's: keep the test alive.
  const guard = setTimeout(() => {}, 10_000);
  await new Promise<void>((ok) => duplex.setTimeout(50, ok));
  clearTimeout(guard);
  duplex.setTimeout(0);
  duplex.destroy();
  b.close();
});

// ---------------------------------------------------------------------------
// netTcp / netUnix
// ---------------------------------------------------------------------------

Deno.test("netTcp: TLS over node:net to Deno's own TLS server", async () => {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    alpnProtocols: ["mimic-echo"],
  });
  const serving = (async () => {
    using conn = await listener.accept();
    const data = await readAllFlow(conn);
    await writeAllFlow(conn, enc.encode(sha256(data)));
    await conn.closeWrite();
    await conn.read(new Uint8Array(1)).catch(() => null);
  })();
  const flow = await resolve(
    empty.add(tls.endpoint, {
      hostname: "localhost",
      caCerts: [ca],
      alpnProtocols: ["mimic-echo"],
      over: empty.add(netTcp.endpoint, {
        hostname: "127.0.0.1",
        port: listener.addr.port,
      }),
    }),
  ) as TlsFlow;
  try {
    assert.ok(tls.is(flow));
    assert.equal((await flow.handshake()).alpnProtocol, "mimic-echo");
    const data = randomBytes(300_000);
    await writeAllFlow(flow, data);
    await flow.closeWrite();
    assert.equal(dec.decode(await readAllFlow(flow)), sha256(data));
  } finally {
    flow.close();
    await serving;
  }
});

Deno.test("netTcp and netUnix fail with typed errors", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await assert.rejects(
    netTcpConnect({ hostname: "127.0.0.1", port }),
    (e: Error) =>
      e instanceof errors.ConnectionRefused &&
      e.message.includes(`127.0.0.1:${port}`),
  );
  await assert.rejects(
    netTcpConnect({ hostname: "127.0.0.1", port: 0 }),
    (e: Error) => e instanceof TypeError && /port must be/.test(e.message),
  );
  await assert.rejects(
    netTcpConnect({ hostname: "", port: 80 }),
    TypeError,
  );
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      resolve(empty.add(netUnix.endpoint, { path: `${dir}/none` })),
      (e: Error & { attempts?: { error: unknown }[] }) =>
        e.attempts?.[0]?.error instanceof errors.NotFound,
    );
    // A working Unix socket, with bytes.
    const path = `${dir}/socket`;
    using ul = Deno.listen({ transport: "unix", path });
    const accepted = ul.accept();
    await using flow = await resolve(empty.add(netUnix.endpoint, { path }));
    using peer = await accepted;
    await writeAllFlow(flow, enc.encode("unix"));
    await flow.closeWrite();
    assert.equal(dec.decode(await readAllFlow(peer)), "unix");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // An aborted signal stops the connect.
  const controller = new AbortController();
  controller.abort(new Error("stop"));
  await assert.rejects(
    resolve(empty.add(netTcp.endpoint, { hostname: "127.0.0.1", port: 9 }), {
      signal: controller.signal,
    }),
    /stop/,
  );
});

async function netTcpConnect(
  endpoint: { hostname: string; port: number },
): Promise<never> {
  try {
    const flow = await resolve(empty.add(netTcp.endpoint, endpoint));
    flow.close();
  } catch (error) {
    const attempts = (error as { attempts?: { error: unknown }[] }).attempts;
    throw attempts?.[0]?.error ?? error;
  }
  throw new Error("connected");
}

// ---------------------------------------------------------------------------
// undici over our TLS over a CONNECT tunnel (tinyproxy)
// ---------------------------------------------------------------------------

/** A `Deno.serve` HTTPS server (Deno's own TLS) answering with what it got. */
function startHttpsEcho(): { port: number; server: Deno.HttpServer } {
  const { promise, resolve: ok } = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    onListen: ({ port }) => ok(port),
  }, async (req) => {
    const body = new Uint8Array(await req.arrayBuffer());
    return Response.json({
      method: req.method,
      path: new URL(req.url).pathname,
      host: req.headers.get("host"),
      length: body.length,
      sha256: sha256(body),
    });
  });
  let port = 0;
  promise.then((p) => port = p);
  return {
    get port() {
      return port;
    },
    server,
  };
}

Deno.test("undici: HTTPS over our TLS over a CONNECT tunnel through tinyproxy", async () => {
  const target = startHttpsEcho();
  await new Promise((ok) => setTimeout(ok, 0));
  while (target.port === 0) await new Promise((ok) => setTimeout(ok, 10));
  const proxy = await startTinyproxy();
  // The only way to the target is through the proxy: count the connections
  // made to it.
  let proxyConnections = 0;
  const toProxy = register("test-proxy-tcp", async (_: null) => {
    proxyConnections++;
    return await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  });
  const protocols: string[] = [];
  const targets: HttpTarget[] = [];
  const viaProxy = (t: HttpTarget, caCerts = [ca]): Context => {
    targets.push(t);
    return empty.add(tls.endpoint, {
      hostname: t.hostname,
      caCerts,
      alpnProtocols: ["http/1.1"],
      over: empty.add(tunnel.endpoint, {
        proxy: empty.add(toProxy.endpoint, null),
        target: { hostname: t.hostname, port: t.port },
      }),
    });
  };
  const dispatcher = new Agent({
    connect: undiciConnect(viaProxy, {
      onEvent: (e) => {
        if (e.type === "connected") protocols.push(e.protocol);
      },
    }),
  });
  try {
    const base = `https://localhost:${target.port}`;
    for (let i = 0; i < 3; i++) {
      // Let undici see the idle connection as reusable (it validates idle
      // sockets in a setImmediate) before the next request.
      if (i > 0) await new Promise((ok) => setTimeout(ok, 20));
      const res = await undiciRequest(`${base}/get/${i}`, { dispatcher });
      assert.equal(res.statusCode, 200);
      const json = await res.body.json() as Record<string, unknown>;
      assert.equal(json.path, `/get/${i}`);
      assert.equal(json.host, `localhost:${target.port}`);
    }
    const body = randomBytes(1024 * 1024);
    await new Promise((ok) => setTimeout(ok, 20));
    const res = await undiciRequest(`${base}/post`, {
      dispatcher,
      method: "POST",
      body,
    });
    const json = await res.body.json() as Record<string, unknown>;
    assert.equal(json.method, "POST");
    assert.equal(json.length, body.length);
    assert.equal(json.sha256, sha256(body));
    // Keep-alive: one connection (TLS inside a tunnel through the proxy)
    // served all four.
    assert.deepEqual(protocols, ["tls"]);
    assert.equal(proxyConnections, 1);
    assert.deepEqual(targets, [{
      protocol: "https:",
      hostname: "localhost",
      port: target.port,
    }]);

    // A CA that does not sign the server: undici's request rejects with our TlsError.
    const other = new Agent({
      connect: undiciConnect((t) => viaProxy(t, [cert])),
    });
    try {
      await assert.rejects(
        undiciRequest(`${base}/bad`, { dispatcher: other }),
        (e: Error & { attempts?: { error: unknown }[] }) => {
          const cause = e.attempts?.[0]?.error;
          return cause instanceof TlsError && cause.code === "UnknownIssuer";
        },
      );
    } finally {
      await other.close();
    }
  } finally {
    await dispatcher.close();
    await proxy.close();
    await target.server.shutdown();
  }
});

// ---------------------------------------------------------------------------
// a node:http server over our TLS, reached over a WebSocket (websockify)
// ---------------------------------------------------------------------------

Deno.test("node:http server over our TLS over a WebSocket through websockify", async () => {
  const seen: { tls: boolean; alpn: string | false | null }[] = [];
  const server = http.createServer(async (req, res) => {
    const socket = req.socket as unknown as FlowDuplex;
    const flow = socket.flow as TlsFlow;
    seen.push({
      tls: typeof (flow as Partial<TlsFlow>).handshake === "function",
      alpn: (await flow.handshake()).alpnProtocol,
    });
    const chunks: Uint8Array[] = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    res.setHeader("content-type", "text/plain");
    res.end(`${req.method} ${req.url} ${body.length} ${sha256(body)}`);
  });
  // The TCP side websockify bridges to: our acceptTls, then node:http.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      served.push(
        acceptTls(conn, { cert, key, alpnProtocols: ["http/1.1"] }).then(
          (flow) => serveHttp(server, flow),
          () => closeQuietly(conn),
        ),
      );
    }
  })().catch(() => {});
  const bridge = await startWebsockify({ targetPort: listener.addr.port });
  const overWebSocket = (t: HttpTarget): Context =>
    empty.add(tls.endpoint, {
      hostname: t.hostname,
      caCerts: [ca],
      alpnProtocols: ["http/1.1"],
      over: empty.add(websocket.endpoint, {
        url: `ws://127.0.0.1:${bridge.port}`,
        protocols: ["binary"],
      }),
    });
  try {
    // node's own client, with createConnection.
    const body = randomBytes(256 * 1024);
    const text = await new Promise<string>((ok, ko) => {
      // node:https with createConnection: its agent (and its TLS) is
      // bypassed, the context does the TLS.
      const req = https.request("https://localhost/upload?x=1", {
        method: "PUT",
        createConnection: createConnection(overWebSocket),
      }, (res) => {
        let s = "";
        res.setEncoding("utf8");
        res.on("data", (d) => s += d);
        res.on("end", () => ok(`${res.statusCode} ${s}`));
        res.on("error", ko);
      });
      req.on("error", ko);
      req.end(body);
    });
    assert.equal(text, `200 PUT /upload?x=1 ${body.length} ${sha256(body)}`);

    // undici through the same path.
    const dispatcher = new Agent({ connect: undiciConnect(overWebSocket) });
    try {
      const res = await undiciRequest("https://localhost/u", { dispatcher });
      assert.equal(res.statusCode, 200);
      assert.equal(
        await res.body.text(),
        `GET /u 0 ${sha256(new Uint8Array(0))}`,
      );
    } finally {
      await dispatcher.close();
    }
    assert.equal(seen.length, 2);
    for (const s of seen) assert.deepEqual(s, { tls: true, alpn: "http/1.1" });
  } finally {
    await bridge.close();
    listener.close();
    await accepting;
    server.close();
    server.closeAllConnections();
    await Promise.all(served);
  }
});

// ---------------------------------------------------------------------------
// isomorphic-git over undici over our TLS
// ---------------------------------------------------------------------------

interface GitHttpRequest {
  url: string;
  method?: string;
  headers?: Record<string, string>;
  body?: AsyncIterableIterator<Uint8Array> | Uint8Array[];
}

/** isomorphic-git's `http` plugin, made from undici with our connector. */
function gitHttpClient(dispatcher: Agent) {
  return {
    async request(req: GitHttpRequest) {
      let body: Uint8Array | undefined;
      if (req.body) {
        const chunks: Uint8Array[] = [];
        for await (const c of req.body) chunks.push(c);
        body = Buffer.concat(chunks);
      }
      const res = await undiciRequest(req.url, {
        dispatcher,
        method: (req.method ?? "GET") as "GET",
        headers: req.headers,
        body,
      });
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) {
        if (typeof v === "string") headers[k] = v;
        else if (Array.isArray(v)) headers[k] = v.join(", ");
      }
      return {
        url: req.url,
        method: req.method ?? "GET",
        statusCode: res.statusCode,
        statusMessage: String(res.statusCode),
        headers,
        body: (async function* () {
          for await (const c of res.body) yield new Uint8Array(c);
        })(),
      };
    },
  };
}

Deno.test("isomorphic-git lists refs over https through undici over our TLS", async () => {
  const root = await Deno.makeTempDir({ prefix: "mimic-node-git-" });
  try {
    await createRepository(root);
    await createEmptyRepository(root);
    const server = await startGitHttp({ root, cert, key });
    const connected: string[] = [];
    const dispatcher = new Agent({
      connect: undiciConnect(
        (t) =>
          empty.add(tls.endpoint, {
            hostname: t.hostname,
            caCerts: [ca],
            alpnProtocols: ["http/1.1"],
            over: empty.add(tcp.endpoint, {
              hostname: "127.0.0.1",
              port: t.port,
            }),
          }),
        {
          onEvent: (e) => {
            if (e.type === "connected") connected.push(e.protocol);
          },
        },
      ),
    });
    try {
      const url = `https://localhost:${server.port}/repo.git`;
      const refs = await git.listServerRefs({
        http: gitHttpClient(dispatcher),
        url,
        protocolVersion: 1,
        peelTags: true,
        symrefs: true,
      });
      const ours = refs.flatMap((r) => [
        `${r.oid}\t${r.ref}`,
        ...(r.peeled ? [`${r.peeled}\t${r.ref}^{}`] : []),
      ]).sort();
      const expected = (await runGit(root, ["ls-remote", `${root}/repo.git`]))
        .trim().split("\n").sort();
      assert.deepEqual(ours, expected);
      assert.ok(expected.some((l) => l.endsWith("\trefs/tags/v1.0^{}")));
      const head = refs.find((r) => r.ref === "HEAD");
      assert.equal(head?.target, "refs/heads/main");

      // getRemoteInfo (protocol v2 discovery) through the same client.
      const info = await git.getRemoteInfo2({
        http: gitHttpClient(dispatcher),
        url,
      });
      assert.equal(info.protocolVersion, 2);

      const empty = await git.listServerRefs({
        http: gitHttpClient(dispatcher),
        url: `https://localhost:${server.port}/empty.git`,
        protocolVersion: 1,
      });
      assert.deepEqual(empty.filter((r) => r.ref !== "capabilities^{}"), []);
      assert.ok(connected.includes("tls"));
    } finally {
      await dispatcher.close();
      await server.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("undiciConnect() and createConnection() pass resolution failures to the client", async () => {
  // Nothing to connect: undici's request and node:http's request both fail
  // with the resolver's NotFoundError, not a hang.
  const dispatcher = new Agent({ connect: undiciConnect(() => empty) });
  try {
    await assert.rejects(
      undiciRequest("http://nowhere.test/", { dispatcher }),
      NotFoundError,
    );
  } finally {
    await dispatcher.close();
  }
  const error = await new Promise<unknown>((ok) => {
    const req = http.request("http://nowhere.test/", {
      createConnection: createConnection(() => empty),
    }, () => ok(new Error("answered")));
    req.on("error", ok);
    req.end();
  });
  assert.ok(error instanceof NotFoundError, String(error));
});

Deno.test("fromDuplex() write: the caller may reuse its buffer once the write resolved", async () => {
  // A PassThrough hands written chunks to its reader as they are: here the
  // flow's own read side (it loops back).
  const flow = fromDuplex(new PassThrough());
  const p = enc.encode("first");
  assert.equal(await flow.write(p), 5);
  p.fill(0x78); // reused by the caller
  const buf = new Uint8Array(16);
  const n = await flow.read(buf);
  assert.equal(dec.decode(buf.subarray(0, n!)), "first");
  flow.close();

  // After a reset, closeWrite() rejects with the reset, too.
  const reset = new PassThrough();
  const flow2 = fromDuplex(reset);
  reset.destroy(
    Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
  );
  await assert.rejects(flow2.read(new Uint8Array(1)), errors.ConnectionReset);
  await assert.rejects(flow2.closeWrite(), errors.ConnectionReset);
  flow2.close();
});
