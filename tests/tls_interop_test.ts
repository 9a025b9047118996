// Interoperability of the TLS pump (src/tls.ts) with other TLS stacks: Deno's
// native rustls (`Deno.listenTls`, `Deno.connectTls`) and OpenSSL
// (`openssl s_server`, `openssl s_client`), on loopback only.
import assert from "node:assert/strict";
import type { Flow } from "../mod.ts";
import {
  acceptTls,
  startTls,
  type TlsClientOptions,
  TlsError,
  type TlsFlow,
} from "../src/tls.ts";
import {
  der,
  fixture,
  fixturePath as path,
  randomBytes,
  readAll,
  sha256,
  writeAll,
} from "./_helpers.ts";
import { Collector, opensslClient, OpensslServer } from "./servers/openssl.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ca = fixture("ca.pem");
const ecdsa = { cert: fixture("localhost.pem"), key: fixture("localhost.key") };
const rsa = { cert: fixture("rsa.pem"), key: fixture("rsa.key") };
const clientCert = { cert: fixture("client.pem"), key: fixture("client.key") };
const selfSigned = {
  cert: fixture("selfsigned.pem"),
  key: fixture("selfsigned.key"),
};
const trusting: TlsClientOptions = { hostname: "localhost", caCerts: [ca] };

/** Reads until `text` has arrived (or end of flow), returning all read. */
async function readUntil(flow: Flow, text: string): Promise<string> {
  let got = "";
  const buf = new Uint8Array(4096);
  while (!got.includes(text)) {
    const n = await flow.read(buf);
    if (n === null) break;
    got += decoder.decode(buf.subarray(0, n));
  }
  return got;
}

function assertTlsError(
  error: unknown,
  code: string | string[],
): asserts error is TlsError {
  assert.ok(error instanceof TlsError, `not a TlsError: ${error}`);
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(
    codes.includes(error.code),
    `code ${error.code} (${error.message}) is not one of ${codes}`,
  );
}

/** Our client over a fresh TCP connection; closes the connection on failure. */
async function connectTls(
  port: number,
  options: TlsClientOptions,
  hostname = "127.0.0.1",
): Promise<TlsFlow> {
  const conn = await Deno.connect({ hostname, port });
  try {
    return await startTls(conn, options);
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** Accepts one TCP connection and runs our server on it. */
function serveOnce(
  listener: Deno.Listener,
  handle: (flow: TlsFlow) => Promise<void>,
  options: Parameters<typeof acceptTls>[1],
): Promise<{ flow?: TlsFlow; error?: unknown }> {
  return (async () => {
    const conn = await listener.accept();
    let flow: TlsFlow;
    try {
      flow = await acceptTls(conn, options);
    } catch (error) {
      conn.close();
      return { error };
    }
    try {
      await handle(flow);
      return { flow };
    } catch (error) {
      return { flow, error };
    } finally {
      flow.close();
    }
  })();
}

/** A line-echo handler: reads a line, answers "echo: <line>", close_notify. */
async function echoLine(flow: TlsFlow): Promise<void> {
  const line = await readUntil(flow, "\n");
  await flow.write(encoder.encode(`echo: ${line}`));
  await flow.closeWrite();
  // s_client answers with its own close_notify (or just goes away).
  await flow.read(new Uint8Array(16)).catch(() => null);
}

// ---------------------------------------------------------------------------
// Our client against Deno's native TLS server
// ---------------------------------------------------------------------------

Deno.test("startTls() talks to Deno.listenTls and moves 4 MiB both ways", async () => {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    ...ecdsa,
    alpnProtocols: ["echo", "h2"],
  });
  const served = (async () => {
    using conn = await listener.accept();
    const info = await conn.handshake();
    const data = await readAll(conn);
    await writeAll(conn, data, 100_000);
    await conn.closeWrite();
    return info;
  })();
  const flow = await connectTls(listener.addr.port, {
    ...trusting,
    alpnProtocols: ["echo"],
  });
  const info = await flow.handshake();
  assert.equal(info.protocol, "TLSv1.3");
  assert.equal(info.alpnProtocol, "echo");
  const data = randomBytes(4 * 1024 * 1024);
  const [, got] = await Promise.all([
    writeAll(flow, data, 100_000).then(() => flow.closeWrite()),
    readAll(flow),
  ]);
  assert.equal(await sha256(got), await sha256(data));
  const serverInfo = await served;
  assert.equal(serverInfo.alpnProtocol, "echo");
  flow.close();
});

Deno.test("startTls() verifies 127.0.0.1 and ::1 as IP SANs against Deno.listenTls", async (t) => {
  for (const hostname of ["127.0.0.1", "::1"]) {
    let listener: Deno.TlsListener;
    try {
      listener = Deno.listenTls({ hostname, port: 0, ...rsa });
    } catch (error) {
      if (hostname !== "::1") throw error;
      await t.step({ name: "::1 (no IPv6 loopback)", ignore: true, fn() {} });
      continue;
    }
    await t.step(hostname, async () => {
      const served = (async () => {
        using conn = await listener.accept();
        await conn.write(encoder.encode("hello"));
        await conn.closeWrite();
        await conn.read(new Uint8Array(8)).catch(() => null);
      })();
      const flow = await connectTls(
        listener.addr.port,
        { hostname, caCerts: [ca] },
        hostname,
      );
      const info = await flow.handshake();
      assert.equal(info.serverName, null); // no SNI for an IP address
      assert.deepEqual(info.peerCertificates[0], der(rsa.cert));
      assert.equal(decoder.decode(await readAll(flow)), "hello");
      flow.close();
      await served;
    });
    listener.close();
  }
});

// ---------------------------------------------------------------------------
// Our server against Deno's native TLS client
// ---------------------------------------------------------------------------

Deno.test("acceptTls() serves Deno.connectTls with ALPN and a client certificate", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const data = randomBytes(2 * 1024 * 1024);
  const served = serveOnce(listener, async (flow) => {
    const got = await readAll(flow);
    await writeAll(flow, got, 100_000);
    await flow.closeWrite();
  }, { ...ecdsa, alpnProtocols: ["h2", "echo"], clientCaCerts: [ca] });
  using conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: listener.addr.port,
    caCerts: [ca],
    alpnProtocols: ["echo"],
    ...clientCert,
  });
  const info = await conn.handshake();
  assert.equal(info.alpnProtocol, "echo");
  const [, got] = await Promise.all([
    writeAll(conn, data, 100_000).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  assert.equal(await sha256(got), await sha256(data));
  const { flow, error } = await served;
  assert.equal(error, undefined);
  const serverInfo = await flow!.handshake();
  assert.equal(serverInfo.alpnProtocol, "echo");
  assert.equal(serverInfo.protocol, "TLSv1.3");
  assert.deepEqual(serverInfo.peerCertificates[0], der(clientCert.cert));
});

// ---------------------------------------------------------------------------
// Our client against openssl s_server
// ---------------------------------------------------------------------------

Deno.test("startTls() talks to openssl s_server", async (t) => {
  const cases = [
    { name: "TLS 1.3, ECDSA", args: ["-tls1_3"], pair: ecdsa, v: "TLSv1.3" },
    { name: "TLS 1.3, RSA", args: ["-tls1_3"], pair: rsa, v: "TLSv1.3" },
    { name: "TLS 1.2, ECDSA", args: ["-tls1_2"], pair: ecdsa, v: "TLSv1.2" },
    { name: "TLS 1.2, RSA", args: ["-tls1_2"], pair: rsa, v: "TLSv1.2" },
  ] as const;
  for (const c of cases) {
    await t.step(c.name, async () => {
      await using server = await OpensslServer.start([
        ...c.args,
        "-cert",
        path(c.pair === rsa ? "rsa.pem" : "localhost.pem"),
        "-key",
        path(c.pair === rsa ? "rsa.key" : "localhost.key"),
        "-alpn",
        "h2,http/1.1",
      ]);
      const flow = await connectTls(server.port, {
        ...trusting,
        alpnProtocols: ["http/1.1"],
      });
      const info = await flow.handshake();
      assert.equal(info.protocol, c.v);
      assert.equal(info.alpnProtocol, "http/1.1");
      assert.deepEqual(info.peerCertificates[0], der(c.pair.cert));
      if (c.v === "TLSv1.2") {
        assert.match(
          info.cipherSuite,
          c.pair === rsa ? /^TLS_ECDHE_RSA_WITH_/ : /^TLS_ECDHE_ECDSA_WITH_/,
        );
      }
      // -rev answers every line reversed.
      await flow.write(encoder.encode("hello openssl\n"));
      assert.equal(await readUntil(flow, "\n"), "lssnepo olleh\n");
      flow.close();
    });
  }
});

Deno.test("startTls() presents a client certificate to openssl s_server -Verify", async (t) => {
  for (const version of ["-tls1_3", "-tls1_2"]) {
    await t.step(version, async () => {
      await using server = await OpensslServer.start([
        version,
        "-cert",
        path("localhost.pem"),
        "-key",
        path("localhost.key"),
        "-Verify",
        "1",
        "-CAfile",
        path("ca.pem"),
        "-verify_return_error",
      ]);
      const flow = await connectTls(server.port, {
        ...trusting,
        ...clientCert,
      });
      await flow.write(encoder.encode("mutual\n"));
      assert.equal(await readUntil(flow, "\n"), "lautum\n");
      flow.close();
    });
  }
});

Deno.test("startTls() receives openssl's alert when its client certificate is missing", async (t) => {
  for (const version of ["-tls1_3", "-tls1_2"]) {
    await t.step(version, async () => {
      await using server = await OpensslServer.start([
        version,
        "-cert",
        path("localhost.pem"),
        "-key",
        path("localhost.key"),
        "-Verify",
        "1",
        "-CAfile",
        path("ca.pem"),
        "-verify_return_error",
      ]);
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      let error: unknown;
      try {
        // TLS 1.2 fails the handshake; in TLS 1.3 the client finishes first
        // and the alert arrives on the first read.
        const flow = await startTls(conn, trusting);
        error = await flow.read(new Uint8Array(16)).then(
          () => assert.fail("read succeeded"),
          (e) => e,
        );
        flow.close();
      } catch (e) {
        error = e;
        conn.close();
      }
      assertTlsError(error, "AlertReceived");
      assert.equal(
        error.alert,
        version === "-tls1_3" ? "certificate_required" : "handshake_failure",
      );
    });
  }
});

Deno.test("startTls() rejects openssl s_server's bad certificates with the right code", async (t) => {
  const cases = [
    ["an expired certificate", "expired", "Expired"],
    ["a certificate not valid yet", "notyet", "NotValidYet"],
    ["a certificate for another name", "wrongname", "NotValidForName"],
    ["a self-signed certificate", "selfsigned", "UnknownIssuer"],
    ["a certificate for client auth only", "clientauth_only", "InvalidPurpose"],
  ] as const;
  for (const [what, name, code] of cases) {
    await t.step(what, async () => {
      await using server = await OpensslServer.start([
        "-cert",
        path(`${name}.pem`),
        "-key",
        path(`${name}.key`),
      ]);
      await assert.rejects(
        connectTls(server.port, trusting),
        (e) => {
          assertTlsError(e, code);
          return true;
        },
      );
      // openssl heard our alert.
      await server.stdout.waitFor("ERROR").catch(() => {});
    });
  }
});

// ---------------------------------------------------------------------------
// Our server against openssl s_client
// ---------------------------------------------------------------------------

Deno.test("acceptTls() serves openssl s_client", async (t) => {
  const cases = [
    { name: "TLS 1.3", args: [], v: "TLSv1.3", pair: ecdsa },
    { name: "TLS 1.2", args: ["-tls1_2"], v: "TLSv1.2", pair: ecdsa },
    { name: "TLS 1.2, RSA", args: ["-tls1_2"], v: "TLSv1.2", pair: rsa },
    { name: "ALPN", args: ["-alpn", "x-mimic"], v: "TLSv1.3", pair: rsa },
    {
      name: "a client certificate",
      args: ["-cert", path("client.pem"), "-key", path("client.key")],
      v: "TLSv1.3",
      pair: ecdsa,
      mtls: true,
    },
    {
      name: "a client certificate, TLS 1.2",
      args: [
        "-tls1_2",
        "-cert",
        path("client.pem"),
        "-key",
        path("client.key"),
      ],
      v: "TLSv1.2",
      pair: ecdsa,
      mtls: true,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = serveOnce(listener, echoLine, {
        ...c.pair,
        alpnProtocols: ["x-mimic"],
        clientCaCerts: "mtls" in c ? [ca] : undefined,
      });
      const out = await opensslClient(
        listener.addr.port,
        c.args,
        "hello from openssl\n",
      );
      const { flow, error } = await served;
      assert.equal(error, undefined, `${error}\n${out.stderr}`);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout, "echo: hello from openssl\n");
      assert.match(out.stderr, new RegExp(`Protocol version: ${c.v}`));
      const info = await flow!.handshake();
      assert.equal(info.protocol, c.v);
      assert.equal(info.serverName, "localhost");
      assert.equal(
        info.alpnProtocol,
        c.args.includes("-alpn") ? "x-mimic" : null,
      );
      if ("mtls" in c) {
        assert.deepEqual(info.peerCertificates[0], der(clientCert.cert));
      }
    });
  }
});

Deno.test("acceptTls() receives openssl's alert when s_client rejects our certificate", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serveOnce(listener, echoLine, selfSigned);
  const out = await opensslClient(listener.addr.port, [], "never sent\n");
  assert.notEqual(out.code, 0);
  const { error } = await served;
  assertTlsError(error, "AlertReceived");
  assert.match(error.alert!, /^(unknown_ca|bad_certificate)$/);
});

Deno.test("acceptTls() rejects openssl s_client without the required certificate", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serveOnce(listener, echoLine, {
    ...ecdsa,
    clientCaCerts: [ca],
  });
  const out = await opensslClient(listener.addr.port, ["-tls1_2"], "x\n");
  assert.notEqual(out.code, 0);
  const { error } = await served;
  assertTlsError(error, ["NoCertificatesPresented", "CertificateRequired"]);
});

Deno.test("acceptTls() rejects openssl s_client with no signature scheme in common", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serveOnce(listener, echoLine, rsa);
  const out = await opensslClient(
    listener.addr.port,
    ["-tls1_3", "-sigalgs", "ECDSA+SHA256"],
    "x\n",
  );
  assert.notEqual(out.code, 0);
  const { error } = await served;
  assertTlsError(error, "PeerIncompatible");
});

// ---------------------------------------------------------------------------
// Transports that fail mid-handshake
// ---------------------------------------------------------------------------

Deno.test("startTls() rejects a server that closes mid-handshake with UnexpectedEof", async (t) => {
  const cases = [
    // Reads the whole ClientHello, then closes: a clean end of stream.
    ["closes after the hello", 4096],
    // Closes with unread bytes: the kernel resets the connection (which
    // Deno reads as the end of stream).
    ["resets the connection", 1],
  ] as const;
  for (const [what, size] of cases) {
    await t.step(what, async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = (async () => {
        const conn = await listener.accept();
        await conn.read(new Uint8Array(size));
        if (size === 1) await new Promise((ok) => setTimeout(ok, 20));
        conn.close();
      })();
      await assert.rejects(
        connectTls(listener.addr.port, trusting),
        (e) => {
          assertTlsError(e, "UnexpectedEof");
          return true;
        },
      );
      await served;
    });
  }
});

Deno.test("startTls() rejects a server process killed mid-handshake with UnexpectedEof", async () => {
  // A TCP server in another process: it reads part of the ClientHello, then
  // dies with the rest unread.
  const script = `
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    console.log(listener.addr.port);
    const conn = await listener.accept();
    await conn.read(new Uint8Array(5));
    Deno.exit(3);
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const stdout = new Collector(child.stdout);
  try {
    await stdout.waitFor("\n");
    const port = Number(stdout.text.trim());
    await assert.rejects(connectTls(port, trusting), (e) => {
      assertTlsError(e, "UnexpectedEof");
      return true;
    });
    assert.equal((await child.status).code, 3);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await stdout.done;
  }
});
