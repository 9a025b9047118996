/**
 * WebSocket written over any flow (src/_ws_flow.ts), against real peers on
 * 127.0.0.1:
 *
 * - Deno's own `WebSocket` client against our `upgradeWebSocket` server on
 *   a `Deno.listen` listener;
 * - our `openWebSocket` client against `Deno.upgradeWebSocket` (`Deno.serve`);
 * - our client through websockify (Debian's, unmodified) to a TCP echo;
 * - raw frames written by the test (its own encoder, independent of ours)
 *   against our server over TCP and our client over a pipe: fragmentation,
 *   control frames between fragments, 1007, 1009, 1002, drops, bad
 *   handshakes;
 * - the Flow contract's rules on a WebSocket pair.
 */

import assert from "node:assert/strict";
import {
  openWebSocket,
  upgradeWebSocket,
  WebSocketCloseError,
  WebSocketHandshakeError,
  type WebSocketOverFlow,
} from "../src/websocket.ts";
import { errors } from "../src/errors.ts";
import { pipe } from "../src/pipe.ts";
import type { Flow } from "../src/flow.ts";
import {
  concat,
  randomBytes,
  readAll as readAllOf,
  sha256,
} from "./_helpers.ts";
import { startWebsockify } from "./servers/websockify.ts";
import { startTinyproxy } from "./servers/tinyproxy.ts";
import { startDante } from "./servers/dante.ts";
import { ensureCommand, startServerProcess } from "./servers/_util.ts";
import { empty, NotFoundError, resolve, unfold } from "../mod.ts";
import { tcp } from "../src/tcp.ts";
import { tls, type TlsFlow } from "../src/tls.ts";
import { tunnel } from "../src/tunnel.ts";
import { socks, SocksError } from "../src/socks.ts";
import { websocketOver } from "../src/websocket.ts";
import { fromUri, tlsOptions } from "../src/uri.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const ca = await Deno.readTextFile(new URL("ca.pem", fixtures));
const cert = await Deno.readTextFile(new URL("localhost.pem", fixtures));
const key = await Deno.readTextFile(new URL("localhost.key", fixtures));
const clientCert = await Deno.readTextFile(new URL("client.pem", fixtures));
const clientKey = await Deno.readTextFile(new URL("client.key", fixtures));

const enc = new TextEncoder();
const dec = new TextDecoder();

/** `p`, or a rejection after 30 s: a broken peer fails the test instead of hanging it. */
async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, ko) => {
        timer = setTimeout(() => ko(new Error(`Timed out: ${what}`)), 30_000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// --- An independent raw WebSocket peer ----------------------------------------

/** A frame as the test writes it: its own encoder, not ours. */
function rawFrame(
  opcode: number,
  payload: Uint8Array | string,
  options: { fin?: boolean; mask?: boolean; rsv?: number } = {},
): Uint8Array {
  const data = typeof payload === "string" ? enc.encode(payload) : payload;
  const { fin = true, mask = false, rsv = 0 } = options;
  const head: number[] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  const m = mask ? 0x80 : 0;
  if (data.length < 126) head.push(m | data.length);
  else if (data.length < 65536) {
    head.push(m | 126, data.length >> 8, data.length & 0xff);
  } else {
    head.push(m | 127, 0, 0, 0, 0);
    for (let s = 24; s >= 0; s -= 8) head.push((data.length >>> s) & 0xff);
  }
  const key = [0x12, 0x34, 0x56, 0x78];
  if (mask) head.push(...key);
  const out = new Uint8Array(head.length + data.length);
  out.set(head);
  for (let i = 0; i < data.length; i++) {
    out[head.length + i] = mask ? data[i] ^ key[i % 4] : data[i];
  }
  return out;
}

function closeBody(code: number, reason = ""): Uint8Array {
  return concat([new Uint8Array([code >> 8, code & 0xff]), enc.encode(reason)]);
}

interface RawFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

/** Reads HTTP heads and frames from a flow, byte-exact. */
class Raw {
  #buf = new Uint8Array(0);
  constructor(readonly flow: Flow) {}

  async #fill(n: number): Promise<boolean> {
    while (this.#buf.length < n) {
      const chunk = new Uint8Array(65536);
      const got = await this.flow.read(chunk);
      if (got === null) return false;
      this.#buf = concat([this.#buf, chunk.subarray(0, got)]);
    }
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  /** The text of the next HTTP head (without the blank line). */
  head(): Promise<string> {
    return bounded(this.#head(), "an HTTP head");
  }

  async #head(): Promise<string> {
    for (let n = 4;; n++) {
      if (!await this.#fill(n)) throw new Error("EOF inside a head");
      const b = this.#buf;
      if (
        b[n - 4] === 13 && b[n - 3] === 10 && b[n - 2] === 13 && b[n - 1] === 10
      ) {
        return dec.decode(this.#take(n)).slice(0, -4);
      }
    }
  }

  /** The next frame, or null at end of flow. */
  frame(): Promise<RawFrame | null> {
    return bounded(this.#frame(), "a frame");
  }

  async #frame(): Promise<RawFrame | null> {
    if (!await this.#fill(2)) return null;
    const b0 = this.#buf[0], b1 = this.#buf[1];
    let len = b1 & 0x7f;
    let off = 2;
    if (len === 126) {
      await this.#fill(4);
      len = (this.#buf[2] << 8) | this.#buf[3];
      off = 4;
    } else if (len === 127) {
      await this.#fill(10);
      len = new DataView(this.#buf.buffer, this.#buf.byteOffset + 6, 4)
        .getUint32(0);
      off = 10;
    }
    const masked = (b1 & 0x80) !== 0;
    const total = off + (masked ? 4 : 0) + len;
    if (!await this.#fill(total)) throw new Error("EOF inside a frame");
    const bytes = this.#take(total);
    const payload = bytes.slice(total - len);
    if (masked) {
      const key = bytes.subarray(off, off + 4);
      for (let i = 0; i < len; i++) payload[i] ^= key[i % 4];
    }
    return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, masked, payload };
  }

  /** The next frame that is no ping or pong. */
  async dataFrame(): Promise<RawFrame | null> {
    for (;;) {
      const f = await this.frame();
      if (f === null || (f.opcode !== 0x9 && f.opcode !== 0xa)) return f;
    }
  }

  write(bytes: Uint8Array): Promise<void> {
    return (async () => {
      for (let off = 0; off < bytes.length;) {
        off += await this.flow.write(bytes.subarray(off));
      }
    })();
  }
}

function closeCodeOf(f: RawFrame | null): number {
  assert.ok(f !== null, "expected a close frame, got end of flow");
  assert.equal(f.opcode, 0x8, `expected a close frame, got opcode ${f.opcode}`);
  return (f.payload[0] << 8) | f.payload[1];
}

/** The RFC's example key and its accept value, computed independently of our code. */
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

function upgradeRequest(extra: string[] = [], key = KEY): Uint8Array {
  return enc.encode(
    [
      "GET /chat?x=1 HTTP/1.1",
      "Host: 127.0.0.1",
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
      ...extra,
    ].join("\r\n") + "\r\n\r\n",
  );
}

async function acceptOf(key: string): Promise<string> {
  const d = await crypto.subtle.digest(
    "SHA-1",
    enc.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
  );
  return btoa(String.fromCharCode(...new Uint8Array(d)));
}

/** Reads to end of flow, bounded in time. */
function readAll(flow: Flow): Promise<Uint8Array> {
  return bounded(readAllOf(flow), "reading to end of flow");
}

/** Reads until `total` bytes or end of flow, bounded in time. */
function readBytes(flow: Flow, total: number): Promise<Uint8Array> {
  return bounded(readSome(flow, total), `reading ${total} bytes`);
}

async function readSome(flow: Flow, total: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let got = 0;
  const buf = new Uint8Array(256 * 1024);
  while (got < total) {
    const n = await flow.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
    got += n;
  }
  return concat(parts);
}

function isClose(code: number) {
  return (e: unknown) => e instanceof WebSocketCloseError && e.code === code;
}

// --- Our server, a raw or a Deno client ---------------------------------------

/** Our `upgradeWebSocket` on a `Deno.listen` listener; each accepted WebSocket goes to `handle`. */
function ourServer(
  handle: (ws: WebSocketOverFlow) => Promise<void>,
  options: { protocols?: string[]; maxMessageSize?: number } = {},
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tasks: Promise<unknown>[] = [];
  const outcomes: unknown[] = [];
  const flows: WebSocketOverFlow[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      tasks.push(
        (async () => {
          const ws = await upgradeWebSocket(conn, options);
          flows.push(ws);
          try {
            await handle(ws);
          } finally {
            ws.close();
          }
        })().then(
          () => outcomes.push("ok"),
          (error) => outcomes.push(error),
        ),
      );
    }
  })();
  return {
    port: listener.addr.port,
    outcomes,
    /** Waits for the handlers so far. */
    settle: async () => {
      await bounded(Promise.all(tasks), "the server's handlers");
      return outcomes;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      // A test that failed may leave a handler waiting: end it.
      for (const ws of flows) ws.close();
      await Promise.all(tasks);
    },
  };
}

/** Echoes bytes until end of flow, then half-closes. */
async function echo(ws: Flow): Promise<void> {
  const buf = new Uint8Array(100_000);
  for (let n; (n = await ws.read(buf)) !== null;) {
    let off = 0;
    while (off < n) off += await ws.write(buf.subarray(off, n));
  }
  await ws.closeWrite();
}

Deno.test("ws over flow: Deno's WebSocket client against upgradeWebSocket", async () => {
  const seen: { protocol: string; url: string; origin: string | null }[] = [];
  await using server = ourServer(async (ws) => {
    seen.push({
      protocol: ws.protocol,
      url: ws.url,
      origin: ws.headers.get("origin"),
    });
    await echo(ws);
    assert.deepEqual(ws.peerClose, { code: 1000, reason: "done" });
  }, { protocols: ["chat", "echo"] });

  const big = randomBytes(5 * 1024 * 1024);
  const small = Array.from({ length: 200 }, (_, i) => randomBytes(1 + i * 37));
  const text = "h\u00e9llo \u2713 \u{1f600}";
  const expected = concat([big, ...small, enc.encode(text)]);

  const socket = new WebSocket(`ws://127.0.0.1:${server.port}/path?q=1`, [
    "echo",
    "chat",
  ]);
  socket.binaryType = "arraybuffer";
  const received: Uint8Array[] = [];
  let count = 0;
  const closed = new Promise<CloseEvent>((ok) => socket.onclose = ok);
  const all = new Promise<void>((ok, ko) => {
    socket.onerror = (e) =>
      ko(new Error(`WebSocket error: ${(e as ErrorEvent).message}`));
    socket.onmessage = (e) => {
      assert.ok(
        e.data instanceof ArrayBuffer,
        "our server sends binary messages",
      );
      received.push(new Uint8Array(e.data));
      count += e.data.byteLength;
      if (count >= expected.length) ok();
    };
  });
  await bounded(
    new Promise((ok, ko) => {
      socket.onopen = ok;
      socket.addEventListener(
        "close",
        () => ko(new Error("closed before open")),
      );
    }),
    "the WebSocket to open",
  );
  assert.equal(socket.protocol, "chat", "the server's preference wins");
  socket.send(big);
  for (const s of small) socket.send(s);
  socket.send(text);
  await bounded(all, "the echo");
  assert.equal(await sha256(concat(received)), await sha256(expected));
  socket.close(1000, "done");
  const event = await bounded(closed, "the close");
  assert.equal(event.code, 1000);
  assert.ok(event.wasClean);
  assert.deepEqual(await server.settle(), ["ok"]);
  assert.equal(seen[0].protocol, "chat");
  assert.equal(
    seen[0].url,
    "ws://127.0.0.1/path?q=1".replace("127.0.0.1", `127.0.0.1:${server.port}`),
  );
});

// --- Our client against Deno.upgradeWebSocket ---------------------------------

function denoServer(
  onSocket: (socket: WebSocket, req: Request) => void,
  options: { protocol?: string } = {},
) {
  const closes: CloseEvent[] = [];
  let sockets = 0;
  const done: Promise<void>[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      if (req.headers.get("upgrade") !== "websocket") {
        return new Response("no upgrade", { status: 403 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req, options);
      socket.binaryType = "arraybuffer";
      sockets++;
      done.push(
        new Promise((ok) =>
          socket.addEventListener("close", (e) => {
            closes.push(e);
            ok();
          })
        ),
      );
      onSocket(socket, req);
      return response;
    },
  );
  return {
    port: server.addr.port,
    closes,
    sockets: () => sockets,
    closed: () => bounded(Promise.all(done), "the Deno sockets to close"),
    async [Symbol.asyncDispose]() {
      try {
        await bounded(Promise.all(done), "the Deno sockets to close");
      } finally {
        await server.shutdown();
      }
    },
  };
}

function connectTo(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

Deno.test("ws over flow: openWebSocket against Deno.upgradeWebSocket", async (t) => {
  await t.step(
    "large messages both ways, text as UTF-8, subprotocol, close 1000",
    async () => {
      await using server = denoServer((socket) => {
        socket.onopen = () => socket.send("gr\u00fc\u00df \u2713");
        socket.onmessage = (e) => socket.send(e.data);
      }, { protocol: "chat" });
      const url = `ws://127.0.0.1:${server.port}/x`;
      await using ws = await openWebSocket(await connectTo(server.port), url, {
        protocols: ["chat", "other"],
        headers: { Origin: "http://example.test" },
      });
      assert.equal(ws.protocol, "chat");
      const greeting = enc.encode("gr\u00fc\u00df \u2713");
      assert.deepEqual(await readBytes(ws, greeting.length), greeting);
      const big = randomBytes(8 * 1024 * 1024);
      const writes = [
        big,
        randomBytes(1),
        randomBytes(125),
        randomBytes(126),
        randomBytes(65536),
      ];
      const reading = readBytes(ws, writes.reduce((n, w) => n + w.length, 0));
      for (const w of writes) assert.equal(await ws.write(w), w.length);
      assert.equal(await sha256(await reading), await sha256(concat(writes)));
      await ws.closeWrite();
      assert.equal(await bounded(ws.read(new Uint8Array(1)), "a read"), null);
      assert.equal(
        await bounded(ws.read(new Uint8Array(1)), "a read"),
        null,
        "null again",
      );
      await server.closed();
      assert.equal(server.closes[0].code, 1000);
      assert.ok(server.closes[0].wasClean);
    },
  );

  await t.step(
    "fragmented messages with a ping between fragments",
    async () => {
      await using server = denoServer((socket) => {
        socket.onmessage = (e) => socket.send(e.data);
      });
      const tcp = await connectTo(server.port);
      await using ws = await openWebSocket(
        tcp,
        `ws://127.0.0.1:${server.port}/`,
      );
      // Raw client frames on the inner flow, between our own frames.
      const raw = new Raw(ws.inner);
      const part = randomBytes(70_000);
      await raw.write(
        rawFrame(0x2, part.subarray(0, 30_000), { fin: false, mask: true }),
      );
      await raw.write(rawFrame(0x9, "ping?", { mask: true }));
      await raw.write(
        rawFrame(0x0, part.subarray(30_000, 30_001), {
          fin: false,
          mask: true,
        }),
      );
      await raw.write(rawFrame(0x0, part.subarray(30_001), { mask: true }));
      assert.deepEqual(
        await readBytes(ws, part.length),
        part,
        "Deno reassembled, we read it",
      );
      ws.close();
    },
  );

  await t.step("a close code from the server rejects the read", async () => {
    await using server = denoServer((socket) => {
      socket.onopen = () => {
        socket.send(new Uint8Array([1, 2, 3]));
        socket.close(4001, "bye now");
      };
    });
    await using ws = await openWebSocket(
      await connectTo(server.port),
      `ws://127.0.0.1:${server.port}/`,
    );
    assert.deepEqual(await readBytes(ws, 3), new Uint8Array([1, 2, 3]));
    await assert.rejects(bounded(ws.read(new Uint8Array(8)), "a read"), (e) => {
      assert.ok(e instanceof WebSocketCloseError);
      assert.equal(e.code, 4001);
      assert.equal(e.reason, "bye now");
      return true;
    });
    assert.deepEqual(ws.peerClose, { code: 4001, reason: "bye now" });
    // This side may still answer the close.
    await ws.closeWrite();
    await server.closed();
  });

  await t.step("a message over maxMessageSize closes with 1009", async () => {
    await using server = denoServer((socket) => {
      socket.onopen = () => socket.send(new Uint8Array(2048));
    });
    await using ws = await openWebSocket(
      await connectTo(server.port),
      `ws://127.0.0.1:${server.port}/`,
      { maxMessageSize: 1024 },
    );
    await assert.rejects(
      bounded(ws.read(new Uint8Array(4096)), "a read"),
      isClose(1009),
    );
    await assert.rejects(ws.write(new Uint8Array(1)), errors.BrokenPipe);
    await server.closed();
    assert.equal(server.closes[0].code, 1009);
  });
});

Deno.test("ws over flow: a plain HTTP server's answer is refused", async () => {
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("nope", { status: 404, statusText: "Not Found" }),
  );
  const tcp = await connectTo(server.addr.port);
  await assert.rejects(
    openWebSocket(tcp, `ws://127.0.0.1:${server.addr.port}/`),
    (e) => {
      assert.ok(e instanceof WebSocketHandshakeError);
      assert.equal(e.status, 404);
      assert.match(e.message, /answered 404 Not Found, not 101/);
      return true;
    },
  );
  await assert.rejects(
    bounded(tcp.read(new Uint8Array(1)), "a read"),
    errors.BadResource,
    "the flow was closed",
  );
});

// --- websockify -------------------------------------------------------------------

Deno.test("ws over flow: our client through websockify to a TCP echo", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const echoing = (async () => {
    const conns: Promise<void>[] = [];
    for await (const conn of listener) {
      conns.push((async () => {
        try {
          await conn.readable.pipeTo(conn.writable);
        } catch {
          // The bridge closed.
        }
      })());
    }
    await Promise.all(conns);
  })();
  const bridge = await startWebsockify({ targetPort: listener.addr.port });
  try {
    const tcp = await connectTo(bridge.port);
    await using ws = await openWebSocket(
      tcp,
      `ws://127.0.0.1:${bridge.port}/`,
      {
        protocols: ["binary"],
      },
    );
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const reading = readBytes(ws, data.length);
    for (let off = 0; off < data.length;) {
      off += await ws.write(
        data.subarray(off, off + 1 + Math.floor(Math.random() * 200_000)),
      );
    }
    assert.equal(await sha256(await reading), await sha256(data));
    await ws.closeWrite();
    assert.equal(
      await bounded(ws.read(new Uint8Array(16)), "a read"),
      null,
      "websockify answered our close",
    );
  } finally {
    await bridge.close();
    listener.close();
    await echoing;
  }
});

// --- Raw frames against our server -----------------------------------------------

/** A raw client connected to our server, handshake done. */
async function rawClient(
  port: number,
  extra: string[] = [],
): Promise<Raw & AsyncDisposable> {
  const conn = await connectTo(port);
  const raw = new Raw(conn) as Raw & AsyncDisposable;
  raw[Symbol.asyncDispose] = () => {
    try {
      conn.close();
    } catch {
      // Closed.
    }
    return Promise.resolve();
  };
  await raw.write(upgradeRequest(extra));
  const head = await raw.head();
  assert.match(head, /^HTTP\/1\.1 101 /);
  assert.match(
    head,
    new RegExp(
      `\r\nSec-WebSocket-Accept: ${ACCEPT.replace(/[+/]/g, "\\$&")}`,
      "i",
    ),
  );
  return raw;
}

Deno.test("ws over flow: raw frames against upgradeWebSocket", async (t) => {
  await t.step(
    "fragments with control frames between them, then the close handshake",
    async () => {
      const got: string[] = [];
      const { promise: release, resolve: released } = Promise.withResolvers<
        void
      >();
      await using server = ourServer(async (ws) => {
        got.push(dec.decode(await readAll(ws)));
        await ws.write(enc.encode("bye"));
        await ws.closeWrite();
        await release; // the flow stays open: only the close handshake ends TCP
      });
      await using raw = await rawClient(server.port);
      await raw.write(rawFrame(0x1, "Hel", { fin: false, mask: true }));
      await raw.write(rawFrame(0x9, "p1", { mask: true }));
      await raw.write(rawFrame(0xa, "unsolicited", { mask: true }));
      await raw.write(rawFrame(0x0, "lo ", { fin: false, mask: true }));
      await raw.write(rawFrame(0x9, "p2", { mask: true }));
      await raw.write(rawFrame(0x0, "w\u00f6rld", { mask: true }));
      await raw.write(rawFrame(0x2, new Uint8Array(0), { mask: true }));
      const pong1 = await raw.frame();
      assert.deepEqual([pong1?.opcode, dec.decode(pong1?.payload)], [
        0xa,
        "p1",
      ]);
      assert.equal(pong1?.masked, false);
      const pong2 = await raw.frame();
      assert.deepEqual([pong2?.opcode, dec.decode(pong2?.payload)], [
        0xa,
        "p2",
      ]);
      await raw.write(rawFrame(0x8, closeBody(1000), { mask: true }));
      const bye = await raw.frame();
      assert.deepEqual(
        [bye?.opcode, dec.decode(bye?.payload)],
        [0x2, "bye"],
        "written after the peer's close",
      );
      assert.equal(closeCodeOf(await raw.frame()), 1000);
      assert.equal(await raw.frame(), null, "the server half-closed TCP");
      released();
      assert.deepEqual(await server.settle(), ["ok"]);
      assert.deepEqual(got, ["Hello w\u00f6rld"]);
    },
  );

  const failing = async (
    frames: Uint8Array[],
    code: number,
    options: { maxMessageSize?: number } = {},
  ) => {
    await using server = ourServer(async (ws) => {
      await assert.rejects(readAll(ws), isClose(code));
      await assert.rejects(ws.write(new Uint8Array(1)), errors.BrokenPipe);
    }, options);
    await using raw = await rawClient(server.port);
    for (const f of frames) await raw.write(f);
    assert.equal(closeCodeOf(await raw.dataFrame()), code);
    // The server keeps reading (no reset) until the client closes.
    await raw.write(rawFrame(0x8, closeBody(code), { mask: true }));
    assert.equal(await raw.frame(), null);
    assert.deepEqual(await server.settle(), ["ok"]);
  };

  await t.step("invalid UTF-8 in a text message: 1007", () =>
    failing([
      rawFrame(0x1, enc.encode("ok so far "), { fin: false, mask: true }),
      rawFrame(0x0, new Uint8Array([0xc3, 0x28]), { mask: true }),
    ], 1007));

  await t.step("an oversized message: 1009", () =>
    failing(
      [
        rawFrame(0x2, randomBytes(600), { fin: false, mask: true }),
        rawFrame(0x0, randomBytes(600), { mask: true }),
      ],
      1009,
      { maxMessageSize: 1000 },
    ));

  await t.step(
    "an unmasked client frame: 1002",
    () => failing([rawFrame(0x2, "plain", { mask: false })], 1002),
  );

  await t.step(
    "reserved bits: 1002",
    () => failing([rawFrame(0x2, "x", { mask: true, rsv: 4 })], 1002),
  );

  await t.step(
    "a reserved opcode: 1002",
    () => failing([rawFrame(0x5, "x", { mask: true })], 1002),
  );

  await t.step(
    "a fragmented ping: 1002",
    () => failing([rawFrame(0x9, "x", { fin: false, mask: true })], 1002),
  );

  await t.step("a client that drops without a close frame: 1006", async () => {
    await using server = ourServer(async (ws) => {
      const buf = new Uint8Array(16);
      assert.equal(await ws.read(buf), 2);
      await assert.rejects(ws.read(buf), isClose(1006));
    });
    const raw = await rawClient(server.port);
    await raw.write(rawFrame(0x2, "hi", { mask: true }));
    await raw[Symbol.asyncDispose]();
    assert.deepEqual(await server.settle(), ["ok"]);
  });
});

Deno.test("ws over flow: bad upgrade requests are answered and rejected", async (t) => {
  const answer = async (
    request: Uint8Array | null,
    status: number,
    match?: RegExp,
  ) => {
    await using server = ourServer(() => Promise.resolve());
    const conn = await connectTo(server.port);
    const raw = new Raw(conn);
    if (request !== null) await raw.write(request);
    else await conn.closeWrite();
    if (status > 0) {
      const head = await raw.head();
      assert.match(head, new RegExp(`^HTTP/1\\.1 ${status} `));
      if (match) assert.match(head, match);
    }
    conn.close();
    const [outcome] = await server.settle();
    return outcome;
  };
  await t.step("no upgrade: 426 with Upgrade: websocket", async () => {
    const e = await answer(
      enc.encode("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
      426,
      /\r\nUpgrade: websocket/i,
    );
    assert.ok(
      e instanceof WebSocketHandshakeError && e.status === 426,
      String(e),
    );
  });
  await t.step("version 8: 426 with Sec-WebSocket-Version: 13", async () => {
    const req = dec.decode(upgradeRequest()).replace(
      "Version: 13",
      "Version: 8",
    );
    const e = await answer(
      enc.encode(req),
      426,
      /\r\nSec-WebSocket-Version: 13/i,
    );
    assert.ok(e instanceof WebSocketHandshakeError && e.status === 426);
  });
  await t.step("a short key: 400", async () => {
    const e = await answer(upgradeRequest([], "c2hvcnQ="), 400);
    assert.ok(e instanceof WebSocketHandshakeError && e.status === 400);
    assert.match(e.message, /Sec-WebSocket-Key/);
  });
  await t.step(
    "not HTTP (a TLS ClientHello): 400 and InvalidData",
    async () => {
      const hello = new Uint8Array([
        0x16,
        0x03,
        0x01,
        0x00,
        0x05,
        1,
        2,
        3,
        4,
        5,
        13,
        10,
        13,
        10,
      ]);
      const e = await answer(hello, 400);
      assert.ok(e instanceof errors.InvalidData, String(e));
    },
  );
  await t.step("a client that closes mid-request: UnexpectedEof", async () => {
    const partial = upgradeRequest().subarray(0, 40);
    await using server = ourServer(() => Promise.resolve());
    const conn = await connectTo(server.port);
    await conn.write(partial);
    await conn.closeWrite();
    assert.equal(
      await bounded(conn.read(new Uint8Array(1)), "a read"),
      null,
      "closed, no answer",
    );
    conn.close();
    const [e] = await server.settle();
    assert.ok(e instanceof errors.UnexpectedEof, String(e));
    assert.match((e as Error).message, /in the middle of its head/);
  });
});

Deno.test("ws over flow: garbage after the handshake ends in a close code, never a hang", async () => {
  for (let i = 0; i < 40; i++) {
    const [a, b] = pipe();
    const accepting = upgradeWebSocket(b, { maxMessageSize: 4096 });
    const raw = new Raw(a);
    await raw.write(upgradeRequest());
    assert.match(await raw.head(), /^HTTP\/1\.1 101 /);
    await using ws = await accepting;
    const garbage = randomBytes(1 + i * 50);
    garbage[0] = (garbage[0] & 0x8f) | (i % 2 === 0 ? 0 : 0x40);
    garbage[1] |= 0x80; // masked, so parsing goes past the first check
    await raw.write(garbage);
    a.close(); // then the client is gone
    try {
      await readAll(ws);
    } catch (e) {
      assert.ok(e instanceof WebSocketCloseError, String(e));
      assert.ok(
        [1002, 1007, 1009, 1006].includes(e.code) ||
          (e.code >= 1000 && e.code <= 4999),
        `code ${e.code}`,
      );
    }
  }
});

// --- Raw server frames against our client, over a pipe ------------------------------

/** A raw server on one end of a pipe, our client on the other. */
function rawServer(
  answer: (key: string, request: string) => string = (key) =>
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${key}\r\n\r\n`,
  first: Uint8Array = new Uint8Array(0),
  options: { protocols?: string[] } = {},
) {
  const [a, b] = pipe();
  const raw = new Raw(b);
  const serving = (async () => {
    const request = await raw.head();
    const key = /\r\nSec-WebSocket-Key: (\S+)/i.exec(request)![1];
    await raw.write(
      concat([enc.encode(answer(await acceptOf(key), request)), first]),
    );
    return request;
  })();
  const ws = openWebSocket(a, "ws://example.test/ws", options);
  return { raw, ws, request: serving, b };
}

Deno.test("ws over flow: raw frames against openWebSocket", async (t) => {
  await t.step(
    "the request, frames right after the 101, a ping answered while idle",
    async () => {
      const { raw, ws, request, b } = await rawServer(
        undefined,
        rawFrame(0x2, "early"),
        {
          protocols: ["p1", "p2"],
        },
      );
      const head = await request;
      assert.match(head, /^GET \/ws HTTP\/1\.1\r\n/);
      assert.match(head, /\r\nHost: example\.test\r\n/);
      assert.match(head, /\r\nSec-WebSocket-Protocol: p1, p2(\r\n|$)/);
      await using client = await ws;
      assert.equal(client.protocol, "");
      assert.equal(dec.decode(await readBytes(client, 5)), "early");
      await raw.write(rawFrame(0x9, "are you there"));
      const pong = await raw.frame();
      assert.equal(pong?.opcode, 0xa);
      assert.ok(pong?.masked, "client frames are masked");
      assert.equal(dec.decode(pong?.payload), "are you there");
      await client.write(enc.encode("masked"));
      const f = await raw.frame();
      assert.ok(f?.masked);
      assert.equal(dec.decode(f?.payload), "masked");
      await client.closeWrite();
      assert.equal(closeCodeOf(await raw.frame()), 1000);
      await raw.write(rawFrame(0x8, closeBody(1000)));
      assert.equal(
        await bounded(client.read(new Uint8Array(1)), "a read"),
        null,
      );
      assert.equal(await raw.frame(), null, "the client half-closed the flow");
      b.close();
    },
  );

  const failing = async (frames: Uint8Array[], code: number) => {
    const { raw, ws, b } = await rawServer();
    await using client = await ws;
    for (const f of frames) await raw.write(f);
    await assert.rejects(readAll(client), isClose(code));
    assert.equal(closeCodeOf(await raw.dataFrame()), code);
    b.close();
  };
  await t.step(
    "a masked server frame: 1002",
    () => failing([rawFrame(0x2, "x", { mask: true })], 1002),
  );
  await t.step(
    "a fragmented ping: 1002",
    () =>
      failing([
        rawFrame(0x2, "a", { fin: false }),
        rawFrame(0x9, "x", { fin: false }),
      ], 1002),
  );
  await t.step(
    "a continuation with nothing to continue: 1002",
    () => failing([rawFrame(0x0, "x")], 1002),
  );
  await t.step(
    "invalid UTF-8: 1007",
    () => failing([rawFrame(0x1, new Uint8Array([0xf0, 0x9f, 0x98]))], 1007),
  );
  await t.step(
    "a close frame with an invalid code: 1002",
    () => failing([rawFrame(0x8, closeBody(1006))], 1002),
  );

  await t.step("a server that drops without a close frame: 1006", async () => {
    const { raw, ws, b } = await rawServer();
    await using client = await ws;
    await raw.write(rawFrame(0x2, "last"));
    b.close();
    assert.equal(dec.decode(await readBytes(client, 4)), "last");
    await assert.rejects(
      bounded(client.read(new Uint8Array(1)), "a read"),
      isClose(1006),
    );
  });

  const handshake = async (answer: string, check: (e: unknown) => boolean) => {
    const { ws, b } = await rawServer(() => answer);
    await assert.rejects(ws, check);
    b.close();
  };
  await t.step("a wrong Sec-WebSocket-Accept", () =>
    handshake(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
      (e) =>
        e instanceof WebSocketHandshakeError && e.status === 101 &&
        /Accept/.test(e.message),
    ));
  await t.step("a subprotocol not offered", async () => {
    const { ws, b } = await rawServer((key) =>
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${key}\r\nSec-WebSocket-Protocol: evil\r\n\r\n`
    );
    await assert.rejects(
      ws,
      (e) =>
        e instanceof WebSocketHandshakeError && /not offered/.test(e.message),
    );
    b.close();
  });
  await t.step("a 403", () =>
    handshake(
      "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
      (e) => e instanceof WebSocketHandshakeError && e.status === 403,
    ));
  await t.step("not HTTP", () =>
    handshake(
      "SSH-2.0-OpenSSH_9.6\r\n\r\n",
      (e) =>
        e instanceof errors.InvalidData &&
        /does not speak HTTP\/1\.1: it sent "SSH-2\.0/.test(e.message),
    ));
  await t.step("a server that closes mid-handshake", async () => {
    const [a, b] = pipe();
    const serving = (async () => {
      await new Raw(b).head();
      await b.write(enc.encode("HTTP/1.1 101 Switching"));
      b.close();
    })();
    await assert.rejects(
      openWebSocket(a, "ws://example.test/"),
      (e) =>
        e instanceof errors.UnexpectedEof &&
        /in the middle of its head/.test((e as Error).message),
    );
    await serving;
  });
  await t.step("an aborted handshake", async () => {
    const [a, b] = pipe();
    const controller = new AbortController();
    const opening = openWebSocket(a, "ws://example.test/", {
      signal: controller.signal,
    });
    await new Raw(b).head();
    controller.abort(new Error("enough"));
    await assert.rejects(opening, /enough/);
    await assert.rejects(
      bounded(a.read(new Uint8Array(1)), "a read"),
      errors.BadResource,
    );
    b.close();
  });
  await t.step("bad arguments", async () => {
    const [a, b] = pipe();
    await assert.rejects(openWebSocket(a, "ftp://x/"), TypeError);
    const [c, d] = pipe();
    await assert.rejects(
      openWebSocket(c, "ws://x/", { headers: { "Sec-WebSocket-Key": "x" } }),
      /set by the handshake/,
    );
    b.close();
    d.close();
  });
});

// --- The Flow contract ------------------------------------------------------------

async function wsPair(): Promise<[WebSocketOverFlow, WebSocketOverFlow]> {
  const [a, b] = pipe();
  return await Promise.all([
    openWebSocket(a, "ws://pair.test/"),
    upgradeWebSocket(b),
  ]);
}

Deno.test("ws over flow: the Flow contract", async (t) => {
  await t.step(
    "rules 1-3: reads in call order, empty reads, half-close both ways",
    async () => {
      const [c, s] = await wsPair();
      const reads = [1, 2, 3].map(() =>
        bounded(s.read(new Uint8Array(2)), "a read")
      );
      assert.equal(await bounded(s.read(new Uint8Array(0)), "a read"), 0);
      await c.write(enc.encode("abcdef"));
      assert.deepEqual(await Promise.all(reads), [2, 2, 2]);
      await Promise.all([c.write(enc.encode("x")), c.write(enc.encode("y"))]);
      assert.equal(dec.decode(await readBytes(s, 2)), "xy");
      await c.closeWrite();
      await c.closeWrite(); // idempotent
      await assert.rejects(c.write(enc.encode("z")), errors.BrokenPipe);
      assert.equal(await bounded(s.read(new Uint8Array(1)), "a read"), null);
      await s.write(enc.encode("after your close"));
      await s.closeWrite();
      assert.equal(dec.decode(await readAll(c)), "after your close");
      c.close();
      s.close();
    },
  );

  await t.step(
    "rule 4: close interrupts a pending read, then BadResource",
    async () => {
      const [c, s] = await wsPair();
      const pending = bounded(c.read(new Uint8Array(1)), "a read");
      c.close();
      c.close();
      await assert.rejects(pending, errors.Interrupted);
      await assert.rejects(
        bounded(c.read(new Uint8Array(1)), "a read"),
        errors.BadResource,
      );
      await assert.rejects(c.write(new Uint8Array(1)), errors.BadResource);
      await assert.rejects(c.closeWrite(), errors.BadResource);
      // The peer saw our close frame (sent by close()).
      assert.equal(await bounded(s.read(new Uint8Array(1)), "a read"), null);
      assert.deepEqual(s.peerClose, { code: 1000, reason: "" });
      s.close();
    },
  );

  await t.step("rule 4: close interrupts a pending write", async () => {
    const [a, b] = pipe({ highWaterMark: 1024 });
    const [c, s] = await Promise.all([
      openWebSocket(a, "ws://pair.test/"),
      upgradeWebSocket(b),
    ]);
    // Nobody reads the server side: the write waits on backpressure.
    const pending = c.write(randomBytes(200_000));
    const queued = c.write(randomBytes(10));
    c.close();
    await assert.rejects(pending, errors.Interrupted);
    await assert.rejects(queued, errors.Interrupted);
    s.close();
  });

  await t.step("rule 5: the streams", async () => {
    const [c, s] = await wsPair();
    const data = randomBytes(300_000);
    const piping = ReadableStream.from([
      data.subarray(0, 1000),
      data.subarray(1000),
    ])
      .pipeTo(c.writable);
    const got = new Uint8Array(await new Response(s.readable).arrayBuffer());
    await piping;
    assert.equal(await sha256(got), await sha256(data));
    // Cancelling the readable only ends the stream: read() goes on from the
    // same position (rule 5, as tests/conformance_test.ts checks).
    await c.readable.cancel();
    await s.write(enc.encode("kept"));
    const buf = new Uint8Array(8);
    const n = await bounded(c.read(buf), "a read");
    assert.equal(dec.decode(buf.subarray(0, n!)), "kept");
    c.close();
    s.close();
  });

  await t.step("rule 8: dispose, and addresses passed through", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = listener.accept().then((conn) => upgradeWebSocket(conn));
    const tcp = await connectTo(listener.addr.port);
    let client: WebSocketOverFlow;
    {
      await using c = await openWebSocket(
        tcp,
        `ws://127.0.0.1:${listener.addr.port}/`,
      );
      client = c;
      assert.deepEqual(c.remoteAddr, tcp.remoteAddr);
      assert.deepEqual(c.localAddr, tcp.localAddr);
    }
    await assert.rejects(
      bounded(client.read(new Uint8Array(1)), "a read"),
      errors.BadResource,
    );
    using s = await accepted;
    assert.equal(await bounded(s.read(new Uint8Array(1)), "a read"), null);
    listener.close();
  });

  await t.step("writes larger than maxMessageSize are short", async () => {
    const [a, b] = pipe();
    const [c, s] = await Promise.all([
      openWebSocket(a, "ws://pair.test/", { maxMessageSize: 1000 }),
      upgradeWebSocket(b, { maxMessageSize: 1000 }),
    ]);
    assert.equal(await c.write(new Uint8Array(2500)), 1000);
    assert.equal((await readBytes(s, 1000)).length, 1000);
    c.close();
    s.close();
  });
});

// --- ws:// and wss:// as contexts, through a proxy --------------------------------

/** A `Deno.serve` WebSocket echo (HTTPS with the fixture certificate when `secure`). */
function denoEcho(secure: boolean) {
  const paths: string[] = [];
  const codes: number[] = [];
  const done: Promise<void>[] = [];
  const handler = (req: Request): Response => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    paths.push(new URL(req.url).pathname + new URL(req.url).search);
    socket.onmessage = (e) => socket.send(e.data);
    done.push(
      new Promise((ok) =>
        socket.addEventListener("close", (e) => {
          codes.push(e.code);
          ok();
        })
      ),
    );
    return response;
  };
  const options = { hostname: "127.0.0.1", port: 0, onListen() {} };
  const server = secure
    ? Deno.serve({ ...options, cert, key }, handler)
    : Deno.serve(options, handler);
  return {
    port: server.addr.port,
    paths,
    codes,
    closed: () => bounded(Promise.all(done), "the Deno sockets to close"),
    async [Symbol.asyncDispose]() {
      try {
        await bounded(Promise.all(done), "the Deno sockets to close");
      } finally {
        await server.shutdown();
      }
    },
  };
}

async function roundTrip(flow: Flow, size: number): Promise<void> {
  const data = randomBytes(size);
  const reading = readBytes(flow, size);
  for (let off = 0; off < size;) {
    off += await flow.write(data.subarray(off, off + 100_000));
  }
  assert.equal(await sha256(await reading), await sha256(data));
  await flow.closeWrite();
  assert.equal(await bounded(flow.read(new Uint8Array(1)), "a read"), null);
}

Deno.test("ws over flow: ws:// and wss:// URLs resolve to one context", async (t) => {
  await t.step("the endpoints fromUri makes", async () => {
    const endpoint = async (url: string, extra = empty) => {
      const all = await unfold(fromUri(url, extra));
      const found = all.filter((e) => e.value === websocketOver.endpoint);
      assert.equal(found.length, 1, url);
      return found[0].data as { url: string; over: typeof empty };
    };
    const plain = await endpoint("ws://example.test");
    assert.equal(plain.url, "ws://example.test:80/");
    const [inner] = await unfold(plain.over);
    assert.deepEqual(inner.data, { hostname: "example.test", port: 80 });
    const secure = await endpoint(
      "wss://[::1]/x?y=1",
      empty.add(tlsOptions, { caCerts: ["PEM"] }),
    );
    assert.equal(secure.url, "wss://[::1]:443/x?y=1");
    const [outer] = await unfold(secure.over);
    assert.equal(outer.value, tls.endpoint);
    const { over: _, ...options } = outer.data as { over: unknown };
    assert.deepEqual(options, {
      hostname: "::1",
      alpnProtocols: ["http/1.1"],
      caCerts: ["PEM"],
    });
  });

  await t.step("ws:// is websocketOver over tcp", async () => {
    await using server = denoEcho(false);
    await using flow = await resolve(
      fromUri(`ws://127.0.0.1:${server.port}/echo?room=1`),
    );
    assert.ok(websocketOver.is(flow));
    await roundTrip(flow, 1024 * 1024);
    assert.deepEqual(server.paths, ["/echo?room=1"]);
  });

  await t.step(
    "wss:// with a private CA, which Deno's WebSocket cannot do",
    async () => {
      await using server = denoEcho(true);
      const url = `wss://localhost:${server.port}/secure`;
      // Deno's own WebSocket knows only its root store: it fails.
      const socket = new WebSocket(url);
      const event = await bounded(
        new Promise<Event>((ok) => {
          socket.onerror = ok;
          socket.onopen = ok;
        }),
        "Deno's WebSocket to fail",
      );
      assert.equal(event.type, "error");
      assert.match((event as ErrorEvent).message, /certificate|UnknownIssuer/i);
      await bounded(
        new Promise((ok) =>
          socket.readyState === WebSocket.CLOSED ? ok(0) : socket.onclose = ok
        ),
        "Deno's WebSocket to close",
      );
      // One context: the URL and the CA.
      const ctx = fromUri(url).add(tlsOptions, { caCerts: [ca] });
      await using flow = await resolve(ctx);
      assert.ok(websocketOver.is(flow));
      const ws = flow as WebSocketOverFlow;
      assert.equal(ws.url, url);
      const info = await (ws.inner as TlsFlow).handshake();
      assert.equal(info.alpnProtocol, "http/1.1");
      await roundTrip(flow, 2 * 1024 * 1024);
      // `await using` alone closes with 1000, even over TLS.
      {
        await using other = await resolve(ctx);
        await other.write(new Uint8Array([7]));
        assert.equal(
          await bounded(other.read(new Uint8Array(1)), "a read"),
          1,
        );
      }
      await server.closed();
      assert.deepEqual(server.codes, [1000, 1000]);
      assert.deepEqual(server.paths, ["/secure", "/secure"]);
      // Without the CA the certificate is refused.
      await assert.rejects(resolve(fromUri(url)), (e) => {
        assert.ok(e instanceof NotFoundError);
        assert.match(
          String((e.attempts[0].error as Error).message),
          /issuer|certificate/i,
        );
        return true;
      });
    },
  );

  await t.step("wss:// through an HTTP CONNECT proxy (tinyproxy)", async () => {
    await using server = denoEcho(true);
    const proxy = await startTinyproxy();
    try {
      const through = empty.add(tunnel.endpoint, {
        proxy: empty.add(tcp.endpoint, {
          hostname: "127.0.0.1",
          port: proxy.port,
        }),
        target: { hostname: "127.0.0.1", port: server.port },
      });
      const over = empty.add(tls.endpoint, {
        hostname: "localhost",
        caCerts: [ca],
        alpnProtocols: ["http/1.1"],
        over: through,
      });
      const url = `wss://localhost:${server.port}/via-proxy`;
      await using flow = await resolve(
        empty.add(websocketOver.endpoint, { url, over, protocols: ["x"] }),
      );
      assert.ok(websocketOver.is(flow));
      await roundTrip(flow, 1024 * 1024);
      assert.deepEqual(server.paths, ["/via-proxy"]);
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("ws over flow: ws:// and wss:// through a SOCKS proxy (fromUri proxy, Dante)", async (t) => {
  /** The endpoint under the websocketOver one (tls's, for wss://). */
  const route = async (ctx: typeof empty) => {
    const [ws] = (await unfold(ctx)).filter((e) =>
      e.value === websocketOver.endpoint
    );
    const [under] = await unfold((ws.data as { over: typeof empty }).over);
    return under;
  };

  await t.step("ws:// through socks5h:// (no authentication)", async () => {
    await using server = denoEcho(false);
    await using dante = await startDante();
    const ctx = fromUri(`ws://127.0.0.1:${server.port}/plain?q=1`, {
      proxy: `socks5h://127.0.0.1:${dante.port}`,
    });
    const under = await route(ctx);
    assert.equal(under.value, socks.endpoint);
    await using flow = await resolve(ctx);
    assert.ok(websocketOver.is(flow));
    assert.ok(socks.is((flow as WebSocketOverFlow).inner), "over a SocksFlow");
    await roundTrip(flow, 1024 * 1024);
    assert.deepEqual(server.paths, ["/plain?q=1"]);
  });

  await t.step(
    "wss:// (private CA) through socks5h:// with RFC 1929 credentials from the URL",
    async () => {
      await using server = denoEcho(true);
      await using dante = await startDante({ auth: { password: "p@ss wörd" } });
      const userinfo = `${encodeURIComponent(dante.user!)}:${
        encodeURIComponent(dante.password!)
      }`;
      const url = `wss://127.0.0.1:${server.port}/secure`;
      const ctx = fromUri(url, {
        proxy: `socks5h://${userinfo}@127.0.0.1:${dante.port}`,
      }).add(tlsOptions, { caCerts: [ca] });
      const under = await route(ctx);
      assert.equal(under.value, tls.endpoint);
      const [inner] = await unfold((under.data as { over: typeof empty }).over);
      assert.equal(inner.value, socks.endpoint);
      await using flow = await resolve(ctx);
      assert.ok(websocketOver.is(flow));
      const info = await ((flow as WebSocketOverFlow).inner as TlsFlow)
        .handshake();
      assert.equal(info.alpnProtocol, "http/1.1");
      await roundTrip(flow, 2 * 1024 * 1024);
      assert.deepEqual(server.paths, ["/secure"]);
      // A wrong password: Dante refuses it, typed, nothing hangs.
      const wrong = fromUri(url, {
        proxy: `socks5h://${
          encodeURIComponent(dante.user!)
        }:nope@127.0.0.1:${dante.port}`,
      }).add(tlsOptions, { caCerts: [ca] });
      await assert.rejects(resolve(wrong), (e) => {
        assert.ok(e instanceof NotFoundError);
        // websocket-over, then tls, then socks: the SocksError is the cause.
        let cause: unknown = e;
        while (cause instanceof Error && !(cause instanceof SocksError)) {
          cause = cause.cause;
        }
        assert.ok(cause instanceof SocksError, String(e));
        assert.equal(cause.code, "AuthenticationFailed");
        return true;
      });
    },
  );
});

/** stunnel (Debian's stunnel4) requiring a client certificate signed by the fixture CA. */
async function startMtlsStunnel(connectPort: number) {
  const command = await ensureCommand("stunnel4", "stunnel4");
  const dir = await Deno.makeTempDir({ prefix: "mimic-ws-stunnel-" });
  const path = (name: string) => new URL(name, fixtures).pathname;
  return await startServerProcess({
    command,
    args: async (port) => {
      const lines = [
        "foreground = yes",
        "pid =",
        "debug = 3",
        "[wss]",
        `accept = 127.0.0.1:${port}`,
        `connect = 127.0.0.1:${connectPort}`,
        `cert = ${path("localhost.pem")}`,
        `key = ${path("localhost.key")}`,
        `CAfile = ${path("ca.pem")}`,
        "verifyChain = yes",
        "requireCert = yes",
      ];
      await Deno.writeTextFile(`${dir}/stunnel.conf`, lines.join("\n") + "\n");
      return [`${dir}/stunnel.conf`];
    },
    cleanup: () => Deno.remove(dir, { recursive: true }),
  });
}

Deno.test("ws over flow: wss:// with mTLS through stunnel to upgradeWebSocket", async () => {
  await using server = ourServer(echo);
  const stunnel = await startMtlsStunnel(server.port);
  try {
    const url = `wss://localhost:${stunnel.port}/mtls`;
    const ctx = fromUri(url).add(tlsOptions, {
      caCerts: [ca],
      cert: clientCert,
      key: clientKey,
    });
    await using flow = await resolve(ctx);
    assert.ok(websocketOver.is(flow));
    await roundTrip(flow, 1024 * 1024);
    // Without a client certificate stunnel refuses the TLS session.
    await assert.rejects(
      resolve(fromUri(url).add(tlsOptions, { caCerts: [ca] })),
      (e) => {
        assert.ok(e instanceof NotFoundError);
        const error = e.attempts[0].error as Error;
        assert.equal(error.name, "TlsError");
        assert.match(error.message, /certificate_required/);
        return true;
      },
    );
  } finally {
    await stunnel.close();
  }
  const outcomes = await server.settle();
  assert.equal(outcomes[0], "ok");
});
