// Tests of HTTP CONNECT tunnels (`./tunnel`): a real tinyproxy, a real
// stunnel in front of it (an HTTPS proxy), TLS inside the tunnel, and fake
// proxies over in-memory pipes for the edge cases. Only 127.0.0.1 is used.
import assert from "node:assert/strict";
import {
  type Context,
  empty,
  type Flow,
  NotFoundError,
  resolve,
} from "../mod.ts";
import { pipe } from "../src/pipe.ts";
import { tcp } from "../src/tcp.ts";
import { tls } from "../src/tls.ts";
import {
  connectTunnel,
  tunnel,
  TunnelError,
  TunnelFlow,
} from "../src/tunnel.ts";
import {
  randomBytes as random,
  roundTrip as echoRoundTrip,
} from "./_helpers.ts";
import { startEchoServer, startTlsEchoOnce } from "./servers/echo.ts";
import { startStunnel } from "./servers/stunnel.ts";
import { startTinyproxy } from "./servers/tinyproxy.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const fixtures = new URL("./fixtures/", import.meta.url);
const certPath = new URL("localhost.pem", fixtures).pathname;
const keyPath = new URL("localhost.key", fixtures).pathname;

/** Writes `data` in 64 KiB writes while reading as many bytes back. */
function roundTrip(flow: Flow, data: Uint8Array): Promise<Uint8Array> {
  return echoRoundTrip(flow, data, 65536);
}

function tcpContext(port: number): Context {
  return empty.add(tcp.endpoint, { hostname: "127.0.0.1", port });
}

Deno.test("tunnel goes through a real tinyproxy to a TCP echo server", async (t) => {
  const echo = startEchoServer();
  const proxy = await startTinyproxy();
  try {
    await t.step("with resolve()", async () => {
      const flow = await resolve(empty.add(tunnel.endpoint, {
        proxy: tcpContext(proxy.port),
        target: { hostname: "127.0.0.1", port: echo.port },
      }));
      assert.ok(tunnel.is(flow));
      assert.ok(flow instanceof TunnelFlow);
      await using _ = flow;
      assert.equal(flow.response.status, 200);
      const data = random(1024 * 1024);
      assert.deepEqual(await roundTrip(flow, data), data);
      // The echo server half-closes when we do: end of flow goes through.
      await flow.closeWrite();
      assert.equal(await flow.read(new Uint8Array(8)), null);
    });

    await t.step("with connectTunnel() over a Deno.Conn", async () => {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: proxy.port,
      });
      await using flow = await connectTunnel(conn, {
        hostname: "127.0.0.1",
        port: echo.port,
      });
      assert.equal(flow.inner, conn);
      // tinyproxy stops relaying the answer once the client half-closes,
      // so read the echo before closing the writable.
      const writer = flow.writable.getWriter();
      const reader = flow.readable.getReader();
      await writer.write(encoder.encode("via streams"));
      let text = "";
      while (text.length < 11) {
        const { value } = await reader.read();
        text += decoder.decode(value);
      }
      assert.equal(text, "via streams");
      await writer.close();
      assert.equal((await reader.read()).done, true);
    });
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("tunnel rejects with TunnelError when the proxy refuses", async (t) => {
  const echo = startEchoServer();
  const proxy = await startTinyproxy({
    connectPorts: [443],
    basicAuth: { user: "mimic", password: "secret" },
  });
  try {
    const authorization = `Basic ${btoa("mimic:secret")}`;
    await t.step("a port not allowed: 403", async () => {
      await assert.rejects(
        resolve(empty.add(tunnel.endpoint, {
          proxy: tcpContext(proxy.port),
          target: { hostname: "127.0.0.1", port: echo.port },
          headers: { "Proxy-Authorization": authorization },
        })),
        (error) => {
          // resolve() wraps the attempt's failure in a NotFoundError.
          assert.ok(error instanceof NotFoundError);
          const cause = error.attempts[0].error;
          assert.ok(cause instanceof TunnelError);
          assert.equal(cause.status, 403);
          assert.equal(
            cause.message,
            `Proxy refused CONNECT to 127.0.0.1:${echo.port}: 403 Access violation`,
          );
          return true;
        },
      );
    });
    await t.step(
      "no credentials: 407, and the proxy flow is closed",
      async () => {
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: proxy.port,
        });
        await assert.rejects(
          connectTunnel(conn, { hostname: "127.0.0.1", port: 443 }),
          (error) => {
            assert.ok(error instanceof TunnelError);
            assert.equal(error.status, 407);
            assert.ok(
              error.headers.get("proxy-authenticate")?.startsWith("Basic"),
            );
            return true;
          },
        );
        assert.throws(() => conn.close(), Deno.errors.BadResource);
      },
    );
  } finally {
    await proxy.close();
    await echo.close();
  }
});

Deno.test("tunnel goes through an HTTPS proxy (stunnel in front of tinyproxy)", async (t) => {
  const ca = await Deno.readTextFile(new URL("ca.pem", fixtures));
  const cert = await Deno.readTextFile(certPath);
  const key = await Deno.readTextFile(keyPath);
  const echo = startEchoServer();
  const proxy = await startTinyproxy();
  const stunnel = await startStunnel({
    connectPort: proxy.port,
    cert: certPath,
    key: keyPath,
  });
  const httpsProxy = empty.add(tls.endpoint, {
    hostname: "localhost",
    caCerts: [ca],
    over: tcpContext(stunnel.port),
  });
  try {
    await t.step("tunnel inside TLS", async () => {
      const flow = await resolve(empty.add(tunnel.endpoint, {
        proxy: httpsProxy,
        target: { hostname: "127.0.0.1", port: echo.port },
      }));
      assert.ok(tunnel.is(flow));
      await using _ = flow;
      assert.ok(tls.is(flow.inner));
      const data = random(256 * 1024);
      assert.deepEqual(await roundTrip(flow, data), data);
    });

    await t.step("TLS inside the tunnel inside TLS", async () => {
      // An HTTPS-like origin: Deno's own TLS, independent of ours.
      const origin = startTlsEchoOnce(cert, key);
      try {
        const flow = await resolve(empty.add(tls.endpoint, {
          hostname: "localhost",
          caCerts: [ca],
          over: empty.add(tunnel.endpoint, {
            proxy: httpsProxy,
            target: { hostname: "127.0.0.1", port: origin.port },
          }),
        }));
        assert.ok(tls.is(flow));
        await using _ = flow;
        const data = random(256 * 1024);
        assert.deepEqual(await roundTrip(flow, data), data);
      } finally {
        await origin.served;
      }
    });
  } finally {
    await stunnel.close();
    await proxy.close();
    await echo.close();
  }
});

/** A fake proxy on the far end of a pipe: reads the request, writes `answer`. */
function fakeProxy(
  answer: Uint8Array[],
): { client: Flow; server: Flow; request: Promise<string> } {
  const [client, server] = pipe();
  const request = (async () => {
    const buf = new Uint8Array(4096);
    let text = "";
    while (!text.includes("\r\n\r\n")) {
      const n = await server.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n));
    }
    for (const chunk of answer) await server.write(chunk);
    return text;
  })();
  return { client, server, request };
}

Deno.test("connectTunnel() serves bytes that arrived with the head first", async () => {
  const { client, server, request } = fakeProxy([
    encoder.encode(
      "HTTP/1.1 200 Connection established\r\nVia: fake\r\n\r\nearly",
    ),
  ]);
  await using flow = await connectTunnel(client, {
    hostname: "::1",
    port: 8443,
  }, { headers: { "Proxy-Authorization": "Basic eDp5" } });
  assert.equal(
    await request,
    "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n" +
      "Proxy-Authorization: Basic eDp5\r\n\r\n",
  );
  assert.equal(flow.response.statusText, "Connection established");
  assert.equal(flow.response.headers.get("via"), "fake");
  const buf = new Uint8Array(3);
  assert.equal(await flow.read(buf), 3);
  assert.equal(decoder.decode(buf), "ear");
  await server.write(encoder.encode(" late"));
  await server.closeWrite();
  assert.equal(await new Response(flow.readable).text(), "ly late");
  server.close();
});

Deno.test("connectTunnel() reads a head split in single bytes", async () => {
  const head = encoder.encode("HTTP/1.0 200 OK\r\n\r\n");
  const { client, server } = fakeProxy(
    [...head].map((b) => new Uint8Array([b])),
  );
  await using flow = await connectTunnel(client, {
    hostname: "127.0.0.1",
    port: 1,
  });
  assert.equal(flow.response.status, 200);
  await server.write(encoder.encode("x"));
  const buf = new Uint8Array(8);
  assert.equal(await flow.read(buf), 1);
  server.close();
});

Deno.test("connectTunnel() rejects bad answers and closes the flow", async (t) => {
  const cases: [string, string, unknown][] = [
    [
      "the proxy closes first",
      "HTTP/1.1 200 OK\r\n",
      Deno.errors.UnexpectedEof,
    ],
    ["not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", Deno.errors.InvalidData],
    ["a redirect", "HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n", TunnelError],
  ];
  for (const [name, answer, type] of cases) {
    await t.step(name, async () => {
      const { client, server } = fakeProxy([encoder.encode(answer)]);
      const closing = (async () => {
        await new Promise((ok) => setTimeout(ok, 10));
        await server.closeWrite();
      })();
      await assert.rejects(
        connectTunnel(client, { hostname: "127.0.0.1", port: 1 }),
        type as typeof Error,
      );
      await closing;
      await assert.rejects(client.write(new Uint8Array(1)));
      server.close();
    });
  }
  await t.step("a head too large", async () => {
    const { client, server } = fakeProxy([
      encoder.encode("HTTP/1.1 200 OK\r\nX: " + "a".repeat(2000) + "\r\n\r\n"),
    ]);
    await assert.rejects(
      connectTunnel(client, { hostname: "127.0.0.1", port: 1 }, {
        maxHeadSize: 1024,
      }),
      /exceeds 1024 bytes/,
    );
    server.close();
  });
  await t.step("a header with a line break", async () => {
    const [client, server] = pipe();
    await assert.rejects(
      connectTunnel(client, { hostname: "127.0.0.1", port: 1 }, {
        headers: { "X-Evil": "a\r\nHost: b" },
      }),
      TypeError,
    );
    server.close();
  });
  await t.step("the signal aborts", async () => {
    const [client, server] = pipe();
    const controller = new AbortController();
    const pending = connectTunnel(client, { hostname: "127.0.0.1", port: 1 }, {
      signal: controller.signal,
    });
    controller.abort(new Error("stop"));
    await assert.rejects(pending, { message: "stop" });
    server.close();
  });
});
