// Issue 9, item 9: error wording. ISO 8601 validity dates (Deno.listenTls,
// openssl s_server), PEM errors naming the malformed section, "the peer does
// not speak TLS" with what it sent (Deno.serve's HTTP server, a plain-text
// echo, a banner, fetch() and a raw client against our server), and
// TlsError.code typed as TlsErrorCode.
import assert from "node:assert/strict";
import {
  acceptTls,
  startTls,
  TlsError,
  type TlsErrorCode,
  type TlsFlow,
} from "../src/tls.ts";
import { serve } from "../src/serve.ts";
import { fixture, fixturePath } from "./_helpers.ts";

const encoder = new TextEncoder();
const ca = fixture("ca.pem");
const localhost = {
  cert: fixture("localhost.pem"),
  key: fixture("localhost.key"),
};
const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/;

async function connect(port: number, hostname = "localhost"): Promise<TlsFlow> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return await startTls(conn, { hostname, caCerts: [ca] });
  } catch (error) {
    conn.close();
    throw error;
  }
}

function assertTlsError(e: unknown, code: TlsErrorCode, message: RegExp): true {
  assert.ok(e instanceof TlsError, `not a TlsError: ${e}`);
  assert.equal(e.code, code, e.message);
  assert.match(e.message, message);
  return true;
}

Deno.test("an expired certificate's error gives ISO 8601 dates (Deno.listenTls)", async () => {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: fixture("expired.pem"),
    key: fixture("expired.key"),
  });
  const served = listener.accept().then(async (conn) => {
    await conn.handshake().catch(() => {});
    conn.close();
  });
  await assert.rejects(connect(listener.addr.port), (e) => {
    assertTlsError(
      e,
      "Expired",
      /expired: it is not valid after 2001-01-01T00:00:00Z, and the time is /,
    );
    const now = (e as Error).message.match(/the time is (\S+)$/)![1];
    assert.match(now, ISO);
    assert.ok(Math.abs(Date.parse(now) - Date.now()) < 3_600_000);
    assert.doesNotMatch((e as Error).message, /UNIX|\d{9,}/);
    return true;
  });
  await served;
});

Deno.test("a not-yet-valid certificate's error gives ISO 8601 dates (openssl s_server)", async () => {
  const child = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      "127.0.0.1:0",
      "-naccept",
      "1",
      "-cert",
      fixturePath("notyet.pem"),
      "-key",
      fixturePath("notyet.key"),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    // "ACCEPT" is printed once it listens; the port is in "ACCEPT 127.0.0.1:N".
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let text = "";
    while (!/ACCEPT\s+\S+:(\d+)/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`s_server ended: ${text}`);
      text += value;
    }
    const port = Number(text.match(/ACCEPT\s+\S+:(\d+)/)![1]);
    await assert.rejects(connect(port), (e) =>
      assertTlsError(
        e,
        "NotValidYet",
        /not valid yet: it is not valid before 2100-01-01T00:00:00Z, and the time is \d{4}-/,
      ));
    reader.releaseLock();
  } finally {
    child.kill();
    await child.status;
    await child.stdin.close().catch(() => {});
    await child.stdout.cancel().catch(() => {});
  }
});

const B = "-----BEGIN CERTIFICATE-----";
const E = "-----END CERTIFICATE-----";

Deno.test("PEM errors name the malformed section, not bytes", async (t) => {
  const good = fixture("localhost.pem").trim();
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      "bad base64 in the 2nd section",
      { cert: `${good}\n${B}\nMII!!!notbase64\n${E}\n` },
      /^cert: the 2nd PEM section \(CERTIFICATE\) is malformed: its base64 is invalid/,
    ],
    [
      "no END line",
      { cert: `${B}\nMIIB\n` },
      /^cert: the 1st PEM section \(CERTIFICATE\) has no "-----END CERTIFICATE-----" line$/,
    ],
    [
      "a malformed BEGIN line",
      { cert: `${good}\n${good}\n-----BEGIN CERTIFICATE----\nMIIB\n${E}\n` },
      /^cert: the 3rd PEM section has a malformed BEGIN line: "-----BEGIN CERTIFICATE----"$/,
    ],
    [
      "a bad key",
      { key: "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n" },
      /^key: the 1st PEM section \(PRIVATE KEY\) is malformed: its base64 is invalid/,
    ],
  ];
  for (const [name, bad, message] of cases) {
    await t.step(name, async () => {
      const check = (e: unknown) => {
        assert.ok(e instanceof TypeError, `not a TypeError: ${e}`);
        assert.match(e.message, message);
        assert.doesNotMatch(e.message, /\[\d+, \d+/); // no byte arrays
        return true;
      };
      // The server side, then the client side (mTLS), before any I/O.
      await assert.rejects(
        acceptTls(new NoFlow(), { ...localhost, ...bad } as typeof localhost),
        check,
      );
      await assert.rejects(
        startTls(new NoFlow(), {
          hostname: "localhost",
          caCerts: [ca],
          ...localhost,
          ...bad,
        }),
        check,
      );
    });
  }
  await t.step("caCerts", async () => {
    await assert.rejects(
      startTls(new NoFlow(), {
        hostname: "localhost",
        caCerts: [`${ca}\n${B}\n%%%\n${E}\n`],
      }),
      (e) =>
        e instanceof TypeError &&
        /^caCerts: the 2nd PEM section \(CERTIFICATE\) is malformed/.test(
          e.message,
        ),
    );
  });
});

/** A flow that must not be touched (errors before any I/O). */
class NoFlow {
  read(): Promise<number | null> {
    throw new Error("read");
  }
  write(): Promise<number> {
    throw new Error("write");
  }
  closeWrite(): Promise<void> {
    throw new Error("closeWrite");
  }
  close(): void {}
  get readable(): ReadableStream<Uint8Array> {
    throw new Error("readable");
  }
  get writable(): WritableStream<Uint8Array> {
    throw new Error("writable");
  }
}

Deno.test("startTls() to a plain HTTP server: the peer does not speak TLS, and what it sent", async () => {
  const ac = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: ac.signal,
    onListen: () => {},
  }, () => new Response("plain"));
  try {
    await assert.rejects(
      connect(server.addr.port),
      (e) =>
        assertTlsError(
          e,
          "BadInput",
          /^the peer does not speak TLS: it sent "HTTP\/1\.1 400 Bad Request/,
        ),
    );
  } finally {
    ac.abort();
    await server.finished;
  }
});

/** A TCP server that sends `banner` (if any), then echoes. */
function plainServer(banner?: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      if (banner) await conn.write(encoder.encode(banner));
      const buf = new Uint8Array(4096);
      for (let n; (n = await conn.read(buf)) !== null;) {
        await conn.write(buf.subarray(0, n));
      }
    } catch {
      // The client went away.
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port, done };
}

Deno.test("startTls() to a plain-text echo and to a banner: the peer does not speak TLS", async () => {
  const echo = plainServer();
  await assert.rejects(
    connect(echo.port),
    (e) =>
      assertTlsError(
        e,
        "BadInput",
        /^the peer does not speak TLS: it sent a ClientHello back \(an echo server, or another TLS client\)/,
      ),
  );
  await echo.done;
  const smtp = plainServer("220 mail.example ESMTP ready\r\n");
  await assert.rejects(
    connect(smtp.port),
    (e) =>
      assertTlsError(
        e,
        "BadInput",
        /^the peer does not speak TLS: it sent "220 mail\.example ESMTP r\.\.\."$/,
      ),
  );
  await smtp.done;
});

Deno.test("our TLS server, asked in plain text: the peer does not speak TLS (fetch, a raw client)", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const errors: unknown[] = [];
  let seen!: () => void;
  const two = new Promise<void>((ok) => seen = ok);
  await using _server = serve(listener, () => {}, {
    tls: localhost,
    onError: (e) => {
      errors.push(e);
      if (errors.length === 2) seen();
    },
  });
  const port = listener.addr.port;
  await assert.rejects(fetch(`http://127.0.0.1:${port}/hello`));
  const raw = await Deno.connect({ hostname: "127.0.0.1", port });
  await raw.write(encoder.encode("hello\n"));
  await new Response(raw.readable).arrayBuffer().catch(() => {});
  await two;
  assertTlsError(
    errors[0],
    "BadInput",
    /^the peer does not speak TLS: it sent "GET \/hello HTTP\/1\.1\\r\\n/,
  );
  assertTlsError(
    errors[1],
    "BadInput",
    /^the peer does not speak TLS: it sent "hello\\n"$/,
  );
});

Deno.test("TlsError.code is the TlsErrorCode union", () => {
  const e = new TlsError("Expired", "x");
  const code: TlsErrorCode = e.code;
  // @ts-expect-error: not a code
  const bad: TlsErrorCode = "NoSuchCode";
  void bad;
  // @ts-expect-error: the constructor takes codes only
  new TlsError("Whatever", "x");
  assert.equal(code, "Expired");
});
