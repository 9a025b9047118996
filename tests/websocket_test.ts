// Tests of the WebSocket flow (`./websocket`): a Deno.serve WebSocket
// server, a hand-written server for close codes, and a real websockify
// bridging to TCP (and to TLS) on 127.0.0.1.
import assert from "node:assert/strict";
import { empty, resolve } from "../mod.ts";
import { startTls } from "../src/tls.ts";
import {
  acceptWebSocket,
  websocket,
  WebSocketCloseError,
  type WebSocketFlow,
  websocketFlow,
} from "../src/websocket.ts";
import { randomBytes as random, roundTrip } from "./_helpers.ts";
import { startEchoServer, startTlsEchoOnce } from "./servers/echo.ts";
import { startWebsockify } from "./servers/websockify.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const fixtures = new URL("./fixtures/", import.meta.url);

interface WsServer extends AsyncDisposable {
  url: string;
}

/** A Deno.serve WebSocket server on 127.0.0.1 running `handle` per flow. */
function serveWebSocket(
  handle: (flow: WebSocketFlow, socket: WebSocket) => Promise<void>,
): WsServer {
  const tasks = new Set<Promise<void>>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      const flow = acceptWebSocket(socket);
      const task = handle(flow, socket)
        .catch(() => {})
        .finally(() => flow[Symbol.asyncDispose]());
      tasks.add(task);
      return response;
    },
  );
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    async [Symbol.asyncDispose]() {
      await Promise.all(tasks);
      await server.shutdown();
    },
  };
}

async function echo(flow: WebSocketFlow): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    await flow.write(buf.subarray(0, n));
  }
}

Deno.test("websocketFlow() round-trips 1 MiB with a Deno.serve echo", async () => {
  await using server = serveWebSocket(echo);
  await using flow = await websocketFlow(server.url);
  const data = random(1024 * 1024);
  assert.deepEqual(await roundTrip(flow, data), data);
  // One write of 1 MiB is one message, echoed back whole.
  assert.deepEqual(await roundTrip(flow, data, data.length), data);
  await flow.closeWrite();
  assert.equal(await flow.read(new Uint8Array(8)), null);
  assert.deepEqual(await flow.closed, {
    code: 1000,
    reason: "",
    wasClean: true,
  });
});

Deno.test("websocketFlow() reads what the server sent before closing", async () => {
  await using server = serveWebSocket(async (flow) => {
    await flow.write(encoder.encode("bye"));
    await flow.closeWrite();
  });
  await using flow = await websocketFlow(server.url);
  assert.equal(await new Response(flow.readable).text(), "bye");
  await assert.rejects(flow.write(encoder.encode("x")), Deno.errors.BrokenPipe);
});

Deno.test("acceptWebSocket() closes a flow closed before it opened", async () => {
  await using server = serveWebSocket(async (flow) => {
    flow.close(); // still connecting: Deno alone would never close it
    await flow.closed;
  });
  await using flow = await websocketFlow(server.url);
  assert.equal(await flow.read(new Uint8Array(8)), null);
});

Deno.test("websocketFlow() rejects a text message as invalid data", async () => {
  await using server = serveWebSocket(async (_flow, socket) => {
    if (socket.readyState === WebSocket.CONNECTING) {
      await new Promise((ok) => socket.addEventListener("open", ok));
    }
    socket.send("not bytes");
    await new Promise((ok) => socket.addEventListener("close", ok));
  });
  await using flow = await websocketFlow(server.url);
  await assert.rejects(flow.read(new Uint8Array(8)), (error) => {
    assert.ok(error instanceof Deno.errors.InvalidData);
    assert.match(error.message, /received a text message/);
    return true;
  });
  assert.equal((await flow.closed).code, 4003);
});

/**
 * A minimal hand-written WebSocket server (Deno's WebSocket cannot close
 * with 1011): it accepts one connection, sends "abc" as a binary message,
 * then a close frame with code 1011 and reason "boom".
 */
function closingServer(): { url: string; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    using conn = await listener.accept();
    listener.close();
    const buf = new Uint8Array(4096);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += decoder.decode(buf.subarray(0, n));
    }
    const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
    const digest = await crypto.subtle.digest(
      "SHA-1",
      encoder.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
    );
    const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
    await conn.write(encoder.encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
        `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    ));
    const reason = encoder.encode("boom");
    await conn.write(
      new Uint8Array([
        0x82,
        3,
        ...encoder.encode("abc"), // binary "abc"
        0x88,
        2 + reason.length,
        1011 >> 8,
        1011 & 0xff,
        ...reason, // close
      ]),
    );
    // Wait for the client's close frame, then hang up.
    await conn.read(buf).catch(() => null);
  })();
  return { url: `ws://127.0.0.1:${listener.addr.port}`, done };
}

Deno.test("websocketFlow() rejects the read when closed with code 1011", async () => {
  const server = closingServer();
  try {
    await using flow = await websocketFlow(server.url);
    const buf = new Uint8Array(3);
    assert.equal(await flow.read(buf), 3);
    assert.equal(decoder.decode(buf), "abc");
    await assert.rejects(flow.read(buf), (error) => {
      assert.ok(error instanceof WebSocketCloseError);
      assert.equal(error.code, 1011);
      assert.equal(error.reason, "boom");
      assert.match(error.message, /closed with code 1011 \(boom\)/);
      return true;
    });
  } finally {
    await server.done;
  }
});

Deno.test("websocketFlow() rejects when it cannot open", async (t) => {
  await t.step("nothing listens", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = listener.addr;
    listener.close();
    await assert.rejects(
      websocketFlow(`ws://127.0.0.1:${port}`),
      new RegExp(`^Error: Cannot open WebSocket ws://127.0.0.1:${port}/: `),
    );
  });
  await t.step("the server does not upgrade", async () => {
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response("no", { status: 404 }),
    );
    await assert.rejects(
      websocketFlow(`ws://127.0.0.1:${server.addr.port}`),
      /Cannot open WebSocket/,
    );
  });
  await t.step("the signal aborts", async () => {
    await assert.rejects(
      websocketFlow("ws://127.0.0.1:1", {
        signal: AbortSignal.abort(new Error("stop")),
      }),
      { message: "stop" },
    );
  });
});

Deno.test("the websocket protocol connects through resolve()", async () => {
  await using server = serveWebSocket(echo);
  const flow = await resolve(
    empty.add(websocket.endpoint, { url: server.url }),
  );
  assert.ok(websocket.is(flow));
  await using _ = flow;
  const data = encoder.encode("resolved");
  assert.deepEqual(await roundTrip(flow, data), data);
});

Deno.test("websocketFlow() goes through a real websockify to TCP", async () => {
  const echoServer = startEchoServer();
  const bridge = await startWebsockify({ targetPort: echoServer.port });
  try {
    await using flow = await websocketFlow(`ws://127.0.0.1:${bridge.port}`);
    const data = random(1024 * 1024);
    assert.deepEqual(await roundTrip(flow, data, 65536), data);
  } finally {
    await bridge.close();
    await echoServer.close();
  }
});

Deno.test("TLS runs over a WebSocket flow through websockify", async () => {
  const cert = await Deno.readTextFile(new URL("localhost.pem", fixtures));
  const key = await Deno.readTextFile(new URL("localhost.key", fixtures));
  const ca = await Deno.readTextFile(new URL("ca.pem", fixtures));
  // A TLS echo server made by Deno itself, independent of our TLS.
  const origin = startTlsEchoOnce(cert, key);
  const bridge = await startWebsockify({ targetPort: origin.port });
  try {
    const ws = await websocketFlow(`ws://127.0.0.1:${bridge.port}`);
    await using flow = await startTls(ws, {
      hostname: "localhost",
      caCerts: [ca],
    });
    const info = await flow.handshake();
    assert.equal(info.serverName, "localhost");
    const data = random(256 * 1024);
    assert.deepEqual(await roundTrip(flow, data, 16384), data);
    flow.close();
    await ws.closed;
  } finally {
    await origin.served;
    await bridge.close();
  }
});
