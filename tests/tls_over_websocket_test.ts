/**
 * `examples/tls_over_websocket.ts` against a real websockify bridging to a
 * TLS echo server made by Deno itself (`Deno.listenTls`), on 127.0.0.1:
 * bytes verified by SHA-256 on both ends, the example run as a subprocess
 * (a line, random bytes, the demo with both bridges), and failures: a
 * bridge killed mid-transfer, nothing listening, a wrong TLS name.
 */

import assert from "node:assert/strict";
import {
  connectTlsOverWebSocket,
  sha256,
  TlsOverWebSocketError,
} from "../examples/tls_over_websocket.ts";
import {
  assertOneStderrLine,
  concat,
  randomBytes as random,
  runExampleText,
  type TextRun as Run,
} from "./_helpers.ts";
import { startWebsockify } from "./servers/websockify.ts";
import { freePort } from "./servers/_util.ts";

const EXAMPLE = new URL("../examples/tls_over_websocket.ts", import.meta.url)
  .pathname;
const fixtures = new URL("./fixtures/", import.meta.url);
const CA_FILE = new URL("ca.pem", fixtures).pathname;
const ca = await Deno.readTextFile(CA_FILE);
const cert = await Deno.readTextFile(new URL("localhost.pem", fixtures));
const key = await Deno.readTextFile(new URL("localhost.key", fixtures));

function runExample(args: string[]): Promise<Run> {
  return runExampleText(EXAMPLE, args);
}

function assertOneLineError(run: Run, pattern: RegExp): void {
  assert.notEqual(run.code, 0, `expected a failure, got:\n${run.stdout}`);
  assertOneStderrLine(run.stderr, "tls_over_websocket", pattern);
}

/** The value of a `name: value` line of the example's output. */
function field(stdout: string, name: string): string | undefined {
  const line = stdout.split("\n").find((l) => l.startsWith(`${name}:`));
  return line?.slice(name.length + 1).trim();
}

interface TlsEcho extends AsyncDisposable {
  port: number;
  /** Every connection's received bytes, once it ended. */
  received: Uint8Array<ArrayBuffer>[];
  /** Called with the running count of bytes received on a connection. */
  onBytes?: (count: number) => void;
}

/** A TLS echo server by Deno's own TLS (independent of ours), on 127.0.0.1. */
function startTlsEcho(): TlsEcho {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    alpnProtocols: ["mimic-echo"],
  });
  const tasks = new Set<Promise<void>>();
  const conns = new Set<Deno.TlsConn>();
  const server: TlsEcho = {
    port: listener.addr.port,
    received: [],
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await accepting;
      await Promise.all(tasks);
    },
  };
  const echo = async (conn: Deno.TlsConn): Promise<void> => {
    const chunks: Uint8Array[] = [];
    let count = 0;
    try {
      const buf = new Uint8Array(64 * 1024);
      for (let n; (n = await conn.read(buf)) !== null;) {
        chunks.push(buf.slice(0, n));
        count += n;
        server.onBytes?.(count);
        for (let off = 0; off < n;) {
          off += await conn.write(buf.subarray(off, n));
        }
      }
    } catch {
      // The bridge hung up.
    } finally {
      conns.delete(conn);
      server.received.push(concat(chunks));
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const task = echo(conn);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch {
      // Closed.
    }
  })();
  return server;
}

/** Waits until `cond()` holds (polling), at most `ms`. */
async function eventually(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("Timed out waiting");
    await new Promise((ok) => setTimeout(ok, 20));
  }
}

Deno.test("connectTlsOverWebSocket() round-trips 1 MiB through a real websockify", async () => {
  await using echo = startTlsEcho();
  const bridge = await startWebsockify({ targetPort: echo.port });
  try {
    const flow = await connectTlsOverWebSocket(
      `ws://127.0.0.1:${bridge.port}`,
      { hostname: "localhost", caCerts: [ca], alpnProtocols: ["mimic-echo"] },
    );
    const info = await flow.handshake();
    assert.equal(info.serverName, "localhost");
    assert.equal(info.alpnProtocol, "mimic-echo");
    const data = random(1024 * 1024);
    const back = new Uint8Array(data.length);
    const writing = (async () => {
      for (let off = 0; off < data.length;) {
        off += await flow.write(data.subarray(off, off + 100_000));
      }
    })();
    for (let off = 0; off < back.length;) {
      const n = await flow.read(back.subarray(off));
      assert.notEqual(n, null, `end of flow after ${off} bytes`);
      off += n!;
    }
    await writing;
    assert.equal(await sha256(back), await sha256(data));
    flow.close();
    await eventually(() => echo.received.length === 1);
    assert.equal(await sha256(echo.received[0]), await sha256(data));
  } finally {
    await bridge.close();
  }
});

Deno.test("tls_over_websocket sends a line through websockify and prints the reply", async () => {
  await using echo = startTlsEcho();
  const bridge = await startWebsockify({ targetPort: echo.port });
  try {
    const run = await runExample([
      `ws://127.0.0.1:${bridge.port}`,
      "--host",
      "localhost",
      "--ca-file",
      CA_FILE,
      "--alpn",
      "mimic-echo",
      "--message",
      "ping over TLS over a WebSocket",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.match(field(run.stdout, "protocol") ?? "", /^TLSv1\.[23]$/);
    assert.match(field(run.stdout, "cipher") ?? "", /^TLS_/);
    assert.equal(field(run.stdout, "alpn"), "mimic-echo");
    assert.equal(field(run.stdout, "server name"), "localhost");
    assert.equal(field(run.stdout, "sent"), "ping over TLS over a WebSocket");
    assert.equal(
      field(run.stdout, "received"),
      "ping over TLS over a WebSocket",
    );
  } finally {
    await bridge.close();
  }
});

Deno.test("tls_over_websocket echoes 1 MiB through websockify, SHA-256 checked on both ends", async () => {
  await using echo = startTlsEcho();
  const bridge = await startWebsockify({ targetPort: echo.port });
  try {
    const run = await runExample([
      `ws://127.0.0.1:${bridge.port}`,
      "--host",
      "localhost",
      "--ca-file",
      CA_FILE,
      "--bytes",
      String(1024 * 1024),
    ]);
    assert.equal(run.code, 0, run.stderr);
    const sent = /^(\d+) bytes, sha-256 ([0-9a-f]{64})$/.exec(
      field(run.stdout, "sent") ?? "",
    );
    const received = /^(\d+) bytes, sha-256 ([0-9a-f]{64})$/.exec(
      field(run.stdout, "received") ?? "",
    );
    assert.ok(sent && received, run.stdout);
    assert.equal(sent[1], "1048576");
    assert.deepEqual(received.slice(1), sent.slice(1));
    assert.equal(field(run.stdout, "alpn"), "(none)");
    // What the TLS server decrypted is what the client says it sent.
    await eventually(() => echo.received.length === 1);
    assert.equal(echo.received[0].length, 1024 * 1024);
    assert.equal(await sha256(echo.received[0]), sent[2]);
  } finally {
    await bridge.close();
  }
});

for (const bridge of ["websockify", "deno"]) {
  Deno.test(`tls_over_websocket runs its demo with the ${bridge} bridge`, async () => {
    const run = await runExample(["--bridge", bridge, "--bytes", "300000"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.match(
      run.stdout,
      bridge === "websockify" ? /demo: websockify/ : /demo: a Deno\.serve/,
    );
    assert.equal(field(run.stdout, "alpn"), "mimic-echo");
    assert.equal(field(run.stdout, "server name"), "localhost");
    const sent = field(run.stdout, "sent");
    assert.match(sent ?? "", /^300000 bytes, sha-256 [0-9a-f]{64}$/);
    assert.equal(field(run.stdout, "received"), sent);
  });
}

Deno.test("tls_over_websocket runs its demo with a line by default", async () => {
  const run = await runExample(["--message", "demo line"]);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(field(run.stdout, "received"), "demo line");
});

Deno.test("tls_over_websocket fails with one line when websockify dies mid-transfer", async () => {
  await using echo = startTlsEcho();
  const bridge = await startWebsockify({ targetPort: echo.port });
  let killed: Promise<void> | undefined;
  echo.onBytes = (count) => {
    if (count >= 1024 * 1024) killed ??= bridge.close();
  };
  try {
    const run = await runExample([
      `ws://127.0.0.1:${bridge.port}`,
      "--host",
      "localhost",
      "--ca-file",
      CA_FILE,
      "--bytes",
      String(64 * 1024 * 1024),
      "--timeout",
      "60",
    ]);
    assert.ok(killed !== undefined, "the bridge was never killed");
    assertOneLineError(run, /cannot exchange data with localhost through ws:/);
    // The reason is the WebSocket's (abnormal close, broken pipe) or the
    // TLS flow's (the transport ended without close_notify).
    assert.match(
      run.stderr,
      /WebSocket|UnexpectedEof|close_notify|closed|Broken pipe/i,
    );
    assert.doesNotMatch(run.stdout, /^received:/m);
  } finally {
    await killed;
    await bridge.close();
  }
});

Deno.test("tls_over_websocket fails with one line when nothing listens", async () => {
  const port = freePort();
  const run = await runExample([
    `ws://127.0.0.1:${port}`,
    "--host",
    "localhost",
    "--ca-file",
    CA_FILE,
  ]);
  assertOneLineError(
    run,
    new RegExp(`cannot open the WebSocket ws://127\\.0\\.0\\.1:${port}/`),
  );
  assert.equal(run.code, 1);
});

Deno.test("tls_over_websocket fails with one line on a name the certificate does not cover", async () => {
  await using echo = startTlsEcho();
  const bridge = await startWebsockify({ targetPort: echo.port });
  try {
    const run = await runExample([
      `ws://127.0.0.1:${bridge.port}`,
      "--host",
      "wrong.example",
      "--ca-file",
      CA_FILE,
    ]);
    assertOneLineError(
      run,
      /cannot establish TLS with wrong\.example through ws:.*(NotValidForName|not valid)/i,
    );
    // Without the test CA, the certificate's issuer is unknown.
    const untrusted = await runExample([
      `ws://127.0.0.1:${bridge.port}`,
      "--host",
      "localhost",
    ]);
    assertOneLineError(
      untrusted,
      /cannot establish TLS with localhost.*(UnknownIssuer|issuer)/i,
    );
  } finally {
    await bridge.close();
  }
});

Deno.test("connectTlsOverWebSocket() names the failed step", async () => {
  await assert.rejects(
    connectTlsOverWebSocket("ftp://127.0.0.1/", { hostname: "localhost" }),
    (error) => error instanceof TlsOverWebSocketError && error.step === "parse",
  );
  await assert.rejects(
    connectTlsOverWebSocket(`ws://127.0.0.1:${freePort()}`, {
      hostname: "localhost",
    }),
    (error) =>
      error instanceof TlsOverWebSocketError && error.step === "websocket",
  );
});

Deno.test("tls_over_websocket prints its help, and rejects bad usage with exit code 2", async () => {
  const help = await runExample(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: tls_over_websocket\.ts/);
  assert.match(help.stdout, /--ca-file/);
  const noHost = await runExample(["ws://127.0.0.1:1"]);
  assertOneLineError(noHost, /--host is required/);
  assert.equal(noHost.code, 2);
  const unknown = await runExample(["--frobnicate"]);
  assertOneLineError(unknown, /unknown option --frobnicate/);
  assert.equal(unknown.code, 2);
});
