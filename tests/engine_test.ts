// Tests of the TLS engine binding (src/_engine.ts): rustls in wasm, sans-IO.
// Run: deno test --allow-all tests/engine_test.ts

import assert from "node:assert/strict";
import {
  _engineStatsForTesting,
  _trapEngineForTesting,
  clientSession,
  type EngineClientOptions,
  type EngineServerOptions,
  serverSession,
  type Session,
  TlsError,
} from "../src/_engine.ts";
import { fixture, fixturePath } from "./_helpers.ts";

const CA = fixture("ca.pem");
const enc = new TextEncoder();
const dec = new TextDecoder();

/** DER of the first certificate in a PEM. */
function der(pem: string): Uint8Array {
  const b64 = pem.split("-----BEGIN CERTIFICATE-----")[1]
    .split("-----END CERTIFICATE-----")[0].replace(/\s+/g, "");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function server(name: string, extra: Partial<EngineServerOptions> = {}) {
  return serverSession({
    cert: fixture(`${name}.pem`),
    key: fixture(`${name}.key`),
    ...extra,
  });
}

/** Shuttles bytes both ways until neither side has anything to send. */
function pump(a: Session, b: Session): void {
  for (let i = 0; i < 100; i++) {
    let moved = false;
    const ab = a.takeOutgoing();
    if (ab) {
      assert.equal(b.feed(ab), ab.length);
      moved = true;
    }
    const ba = b.takeOutgoing();
    if (ba) {
      assert.equal(a.feed(ba), ba.length);
      moved = true;
    }
    if (!moved) return;
  }
  throw new Error("pump did not settle");
}

/**
 * Runs a handshake; returns the error each side raised (undefined if none).
 * After a failure, the failing side's alert is delivered to the other side.
 */
function handshake(c: Session, s: Session): {
  client?: unknown;
  server?: unknown;
} {
  const errors: { client?: unknown; server?: unknown } = {};
  const sides: [Session, Session, "client" | "server"][] = [
    [c, s, "server"],
    [s, c, "client"],
  ];
  for (let i = 0; i < 50; i++) {
    let moved = false;
    for (const [from, to, toName] of sides) {
      if (errors[toName] !== undefined) continue;
      let out: Uint8Array | null;
      try {
        out = from.takeOutgoing();
      } catch {
        out = null;
      }
      if (!out) continue;
      moved = true;
      try {
        to.feed(out);
      } catch (e) {
        errors[toName] = e;
      }
    }
    if (!moved) break;
  }
  return errors;
}

function readAll(s: Session): string {
  const buf = new Uint8Array(65536);
  let text = "";
  for (;;) {
    const n = s.read(buf);
    if (n === null || n === 0) return text;
    text += dec.decode(buf.subarray(0, n));
  }
}

function assertTlsError(e: unknown, code: string, alert?: string): void {
  assert.ok(e instanceof TlsError, `expected TlsError ${code}, got ${e}`);
  assert.equal(e.name, "TlsError");
  assert.equal(e.code, code, `${e.code}: ${e.message}`);
  if (alert !== undefined) assert.equal(e.alert, alert);
}

async function clientFails(
  serverName: string,
  options: EngineClientOptions,
  code: string,
  serverAlert?: string,
): Promise<void> {
  const s = await server(serverName);
  const c = await clientSession(options);
  try {
    const errors = handshake(c, s);
    assertTlsError(errors.client, code);
    if (serverAlert) {
      assertTlsError(errors.server, "AlertReceived", serverAlert);
    }
  } finally {
    c.free();
    s.free();
  }
}

Deno.test("engine: TLS 1.3 handshake (ECDSA P-256), ALPN, data both ways, close_notify", async () => {
  const s = await server("localhost", { alpnProtocols: ["h2", "http/1.1"] });
  const c = await clientSession({
    hostname: "localhost",
    caCerts: [CA],
    alpnProtocols: ["http/1.1"],
  });
  assert.equal(c.isHandshaking, true);
  assert.equal(c.wantsWrite, true); // ClientHello ready
  pump(c, s);
  assert.equal(c.isHandshaking, false);
  assert.equal(s.isHandshaking, false);

  const ci = c.handshakeInfo();
  assert.equal(ci.protocol, "TLSv1.3");
  assert.match(
    ci.cipherSuite,
    /^TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$/,
  );
  assert.equal(ci.alpnProtocol, "http/1.1");
  assert.equal(ci.serverName, "localhost");
  assert.equal(ci.peerCertificates.length, 1);
  assert.deepEqual(ci.peerCertificates[0], der(fixture("localhost.pem")));
  const si = s.handshakeInfo();
  assert.equal(si.protocol, "TLSv1.3");
  assert.equal(si.cipherSuite, ci.cipherSuite);
  assert.equal(si.alpnProtocol, "http/1.1");
  assert.equal(si.serverName, "localhost");
  assert.deepEqual(si.peerCertificates, []);

  assert.equal(c.write(enc.encode("ping")), 4);
  pump(c, s);
  assert.equal(readAll(s), "ping");
  assert.equal(s.read(new Uint8Array(10)), 0); // nothing more yet
  assert.equal(s.write(enc.encode("pong")), 4);
  pump(c, s);
  assert.equal(readAll(c), "pong");

  c.closeNotify();
  pump(c, s);
  assert.equal(s.read(new Uint8Array(10)), null);
  assert.equal(s.read(new Uint8Array(10)), null);
  s.closeNotify();
  pump(c, s);
  assert.equal(c.read(new Uint8Array(10)), null);
  c.free();
  s.free();
  c.free(); // idempotent
  assert.throws(() => c.read(new Uint8Array(1)), (e) => {
    assertTlsError(e, "Closed");
    return true;
  });
});

Deno.test("engine: TLS 1.2 with RSA-2048 (PKCS#1 key)", async () => {
  const s = await serverSession({
    cert: fixture("rsa.pem"),
    key: fixture("rsa_pkcs1.key"),
    _tls12Only: true,
  });
  const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
  pump(c, s);
  const info = c.handshakeInfo();
  assert.equal(info.protocol, "TLSv1.2");
  assert.match(info.cipherSuite, /^TLS_ECDHE_RSA_WITH_/);
  assert.equal(s.handshakeInfo().protocol, "TLSv1.2");
  assert.equal(info.alpnProtocol, null);
  c.write(enc.encode("over 1.2"));
  pump(c, s);
  assert.equal(readAll(s), "over 1.2");
  c.free();
  s.free();
});

Deno.test("engine: RSA PKCS#8 key over TLS 1.3, SEC1 EC key", async () => {
  for (const [cert, key] of [["rsa", "rsa"], ["localhost", "localhost_sec1"]]) {
    const s = await serverSession({
      cert: fixture(`${cert}.pem`),
      key: fixture(`${key}.key`),
    });
    const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
    pump(c, s);
    assert.equal(c.handshakeInfo().protocol, "TLSv1.3");
    c.free();
    s.free();
  }
});

Deno.test("engine: IP address hostnames are verified as IP SANs, no SNI", async () => {
  for (const hostname of ["127.0.0.1", "::1", "[::1]"]) {
    const s = await server("localhost");
    const c = await clientSession({ hostname, caCerts: [CA] });
    pump(c, s);
    assert.equal(c.isHandshaking, false, hostname);
    assert.equal(c.handshakeInfo().serverName, null);
    assert.equal(s.handshakeInfo().serverName, null);
    c.free();
    s.free();
  }
  // Not in the certificate.
  await clientFails(
    "localhost",
    { hostname: "127.0.0.2", caCerts: [CA] },
    "NotValidForName",
  );
});

Deno.test("engine: a self-signed certificate trusted through caCerts", async () => {
  const s = await server("selfsigned");
  const c = await clientSession({
    hostname: "localhost",
    caCerts: [fixture("selfsigned.pem")],
  });
  pump(c, s);
  assert.equal(c.isHandshaking, false);
  c.free();
  s.free();
});

Deno.test("engine: certificate errors", async () => {
  // Default roots (webpki-roots) do not know the test CA.
  await clientFails(
    "localhost",
    { hostname: "localhost" },
    "UnknownIssuer",
    "unknown_ca",
  );
  await clientFails(
    "selfsigned",
    { hostname: "localhost", caCerts: [CA] },
    "UnknownIssuer",
  );
  await clientFails(
    "wrongname",
    { hostname: "localhost", caCerts: [CA] },
    "NotValidForName",
  );
  await clientFails(
    "localhost",
    { hostname: "example.com", caCerts: [CA] },
    "NotValidForName",
  );
  await clientFails(
    "expired",
    { hostname: "localhost", caCerts: [CA] },
    "Expired",
  );
  await clientFails(
    "notyet",
    { hostname: "localhost", caCerts: [CA] },
    "NotValidYet",
  );
  await clientFails(
    "clientauth_only",
    { hostname: "localhost", caCerts: [CA] },
    "InvalidPurpose",
  );
});

Deno.test("engine: unsafelyIgnoreCertificateErrors accepts bad certificates", async () => {
  for (const name of ["selfsigned", "expired", "wrongname"]) {
    const s = await server(name);
    const c = await clientSession({
      hostname: "localhost",
      unsafelyIgnoreCertificateErrors: true,
    });
    pump(c, s);
    assert.equal(c.isHandshaking, false, name);
    c.write(enc.encode("x"));
    pump(c, s);
    assert.equal(readAll(s), "x");
    c.free();
    s.free();
  }
});

Deno.test("engine: ALPN mismatch", async () => {
  const s = await server("localhost", { alpnProtocols: ["h2"] });
  const c = await clientSession({
    hostname: "localhost",
    caCerts: [CA],
    alpnProtocols: ["http/1.1"],
  });
  const errors = handshake(c, s);
  assertTlsError(errors.server, "NoApplicationProtocol");
  assertTlsError(errors.client, "AlertReceived", "no_application_protocol");
  c.free();
  s.free();
});

Deno.test("engine: mutual TLS", async () => {
  const serverOptions = { clientCaCerts: [CA] };
  // With a client certificate.
  {
    const s = await server("localhost", serverOptions);
    const c = await clientSession({
      hostname: "localhost",
      caCerts: [CA],
      cert: fixture("client.pem"),
      key: fixture("client.key"),
    });
    pump(c, s);
    assert.equal(s.isHandshaking, false);
    assert.deepEqual(s.handshakeInfo().peerCertificates, [
      der(fixture("client.pem")),
    ]);
    c.write(enc.encode("authenticated"));
    pump(c, s);
    assert.equal(readAll(s), "authenticated");
    c.free();
    s.free();
  }
  // Without: the server requires one.
  {
    const s = await server("localhost", serverOptions);
    const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
    const errors = handshake(c, s);
    assertTlsError(errors.server, "NoCertificatesPresented");
    assertTlsError(errors.client, "AlertReceived", "certificate_required");
    c.free();
    s.free();
  }
  // A client certificate from an unknown issuer.
  {
    const s = await server("localhost", serverOptions);
    const c = await clientSession({
      hostname: "localhost",
      caCerts: [CA],
      cert: fixture("selfsigned.pem"),
      key: fixture("selfsigned.key"),
    });
    const errors = handshake(c, s);
    assertTlsError(errors.server, "UnknownIssuer");
    c.free();
    s.free();
  }
});

Deno.test("engine: garbage input is BadInput and the alert can be sent", async () => {
  const s = await server("localhost");
  assert.throws(
    () => s.feed(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
    (e) => {
      assertTlsError(e, "BadInput");
      return true;
    },
  );
  const alert = s.takeOutgoing();
  assert.ok(alert !== null && alert[0] === 21, "an alert record is pending");
  // The error sticks.
  assert.throws(() => s.feed(new Uint8Array([22, 3, 1])), TlsError);
  s.free();

  const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
  c.takeOutgoing();
  assert.throws(() => c.feed(new Uint8Array(64).fill(0x17)), (e) => {
    assertTlsError(e, "BadInput");
    return true;
  });
  c.free();
});

Deno.test("engine: malformed options are TypeErrors before any I/O", async () => {
  const bad: EngineClientOptions[] = [
    { caCerts: ["not a PEM"] },
    {
      caCerts: [
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
      ],
    },
    {
      caCerts: [
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      ],
    },
    { cert: fixture("client.pem") },
    { cert: fixture("client.pem"), key: "no key here" },
    { cert: fixture("client.pem"), key: fixture("client.pem") },
    { cert: "garbage", key: fixture("client.key") },
    { alpnProtocols: [""] },
    { hostname: "not a valid host name!" },
    // deno-lint-ignore no-explicit-any
    { caCerts: "x" as any },
  ];
  for (const options of bad) {
    await assert.rejects(
      clientSession(options),
      TypeError,
      JSON.stringify(options),
    );
  }
  const badServer: EngineServerOptions[] = [
    { cert: "", key: fixture("localhost.key") },
    { cert: fixture("localhost.pem"), key: "" },
    { cert: fixture("localhost.pem"), key: fixture("localhost.pem") },
    {
      cert: fixture("localhost.pem"),
      key: "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n",
    },
    // The key does not match the certificate.
    { cert: fixture("localhost.pem"), key: fixture("rsa.key") },
    {
      cert: fixture("localhost.pem"),
      key: fixture("localhost.key"),
      clientCaCerts: [],
    },
    {
      cert: fixture("localhost.pem"),
      key: fixture("localhost.key"),
      clientCaCerts: ["x"],
    },
  ];
  for (const options of badServer) {
    await assert.rejects(serverSession(options), TypeError);
  }
});

Deno.test("engine: transport EOF without close_notify is UnexpectedEof", async () => {
  const s = await server("localhost");
  const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
  pump(c, s);
  c.write(enc.encode("partial"));
  pump(c, s);
  s.feedEof();
  const buf = new Uint8Array(100);
  assert.equal(s.read(buf), 7); // buffered data first
  assert.throws(() => s.read(buf), (e) => {
    assertTlsError(e, "UnexpectedEof");
    return true;
  });
  c.free();
  s.free();
});

Deno.test("engine: backpressure on received plaintext and outgoing TLS", async () => {
  const s = await server("localhost");
  const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
  pump(c, s);
  // Writes stop being accepted once the outgoing buffer limit is reached.
  const big = new Uint8Array(1 << 20).fill(7);
  const accepted = c.write(big);
  assert.ok(accepted > 0 && accepted < big.length, `accepted ${accepted}`);
  const wire = c.takeOutgoing()!;
  assert.ok(wire.length > accepted);
  // The server consumes only part of it until its plaintext is read.
  let off = s.feed(wire);
  assert.ok(off < wire.length, `consumed ${off} of ${wire.length}`);
  let received = 0;
  const buf = new Uint8Array(65536);
  for (let i = 0; i < 1000 && (off < wire.length || received < accepted); i++) {
    const n = s.read(buf);
    assert.ok(n !== null);
    received += n;
    if (off < wire.length) off += s.feed(wire.subarray(off));
  }
  assert.equal(off, wire.length);
  assert.equal(received, accepted);
  c.free();
  s.free();
});

Deno.test("engine: trap containment", async () => {
  const s = await server("localhost");
  const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
  pump(c, s);
  _trapEngineForTesting();
  for (
    const f of [
      () => c.write(enc.encode("x")),
      () => s.takeOutgoing(),
      () => c.read(new Uint8Array(1)),
    ]
  ) {
    assert.throws(f, (e) => {
      assertTlsError(e, "EngineFailure");
      assert.match((e as Error).message, /mimic_debug_trap/); // the panic message
      return true;
    });
  }
  c.free();
  s.free();
  // New sessions get a fresh instance.
  const s2 = await server("localhost");
  const c2 = await clientSession({ hostname: "localhost", caCerts: [CA] });
  pump(c2, s2);
  c2.write(enc.encode("alive"));
  pump(c2, s2);
  assert.equal(readAll(s2), "alive");
  c2.free();
  s2.free();
});

Deno.test("engine: client session against Deno.listenTls", async () => {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
    alpnProtocols: ["echo"],
  });
  const served = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(1024);
    const n = await conn.read(buf);
    await conn.write(enc.encode(`echo:${dec.decode(buf.subarray(0, n!))}`));
    conn.close();
  })();
  const tcp = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  const c = await clientSession({
    hostname: "localhost",
    caCerts: [CA],
    alpnProtocols: ["echo"],
  });
  const buf = new Uint8Array(65536);
  const flush = async () => {
    for (let out = c.takeOutgoing(); out; out = c.takeOutgoing()) {
      for (let off = 0; off < out.length;) {
        off += await tcp.write(out.subarray(off));
      }
    }
  };
  const receive = async (): Promise<boolean> => {
    const n = await tcp.read(buf);
    if (n === null) {
      c.feedEof();
      return false;
    }
    assert.equal(c.feed(buf.subarray(0, n)), n);
    return true;
  };
  await flush();
  while (c.isHandshaking) {
    assert.ok(await receive(), "EOF during handshake");
    await flush();
  }
  const info = c.handshakeInfo();
  assert.equal(info.protocol, "TLSv1.3");
  assert.equal(info.alpnProtocol, "echo");
  assert.equal(info.serverName, "localhost");
  assert.deepEqual(info.peerCertificates, [der(fixture("localhost.pem"))]);
  c.write(enc.encode("hi"));
  await flush();
  let text = "";
  const plain = new Uint8Array(1024);
  for (;;) {
    let n: number | null = 0;
    try {
      n = c.read(plain);
    } catch (e) {
      // Deno's close() may or may not send close_notify first.
      assertTlsError(e, "UnexpectedEof");
      n = null;
    }
    if (n === null) break;
    if (n > 0) {
      text += dec.decode(plain.subarray(0, n));
      continue;
    }
    if (!await receive()) continue;
    await flush();
  }
  assert.equal(text, "echo:hi");
  c.free();
  tcp.close();
  await served;
  listener.close();
});

Deno.test("engine: memory per idle established connection", async () => {
  const N = 1000;
  // Warm up (configs built, allocator settled).
  const warm: Session[] = [];
  for (let i = 0; i < 4; i++) {
    const s = await server("localhost");
    const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
    pump(c, s);
    warm.push(c, s);
  }
  const before = _engineStatsForTesting()!;
  const sessions: Session[] = [];
  for (let i = 0; i < N; i++) {
    const s = await server("localhost");
    const c = await clientSession({ hostname: "localhost", caCerts: [CA] });
    pump(c, s);
    c.write(enc.encode("hello"));
    pump(c, s);
    assert.equal(readAll(s), "hello");
    sessions.push(c, s);
  }
  const after = _engineStatsForTesting()!;
  const perPair = (after.heapBytes - before.heapBytes) / N;
  const memPerPair = (after.memoryBytes - before.memoryBytes) / N;
  console.log(
    `idle memory: ${Math.round(perPair)} B heap per client+server pair ` +
      `(${Math.round(memPerPair)} B linear memory growth per pair)`,
  );
  assert.ok(perPair / 2 <= 64 * 1024, `per connection ${perPair / 2} B`);
  for (const s of [...sessions, ...warm]) s.free();
});

Deno.test({
  name: "engine: server session against openssl s_client (TLS 1.2 and 1.3)",
  ignore: !hasOpenssl(),
  fn: async () => {
    for (const version of ["-tls1_2", "-tls1_3"]) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const child = new Deno.Command("openssl", {
        args: [
          "s_client",
          "-connect",
          `127.0.0.1:${listener.addr.port}`,
          version,
          "-CAfile",
          fixturePath("ca.pem"),
          "-servername",
          "localhost",
          "-verify_return_error",
          "-alpn",
          "echo",
          "-quiet",
          "-ign_eof",
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const tcp = await listener.accept();
      const s = await server("rsa", { alpnProtocols: ["echo"] });
      const buf = new Uint8Array(65536);
      const flush = async () => {
        for (let out = s.takeOutgoing(); out; out = s.takeOutgoing()) {
          for (let off = 0; off < out.length;) {
            off += await tcp.write(out.subarray(off));
          }
        }
      };
      const stdin = child.stdin.getWriter();
      let sentInput = false;
      let text = "";
      const plain = new Uint8Array(1024);
      while (!text.includes("\n")) {
        const n = await tcp.read(buf);
        assert.ok(n !== null, "openssl closed early");
        s.feed(buf.subarray(0, n));
        await flush();
        if (!s.isHandshaking && !sentInput) {
          await stdin.write(enc.encode("hello\n"));
          sentInput = true;
        }
        for (let r = s.read(plain); r; r = s.read(plain)) {
          text += dec.decode(plain.subarray(0, r));
        }
      }
      assert.equal(text, "hello\n");
      const info = s.handshakeInfo();
      assert.equal(
        info.protocol,
        version === "-tls1_2" ? "TLSv1.2" : "TLSv1.3",
      );
      assert.equal(info.alpnProtocol, "echo");
      assert.equal(info.serverName, "localhost");
      s.write(enc.encode("HELLO\n"));
      s.closeNotify();
      await flush();
      tcp.close();
      await stdin.close();
      const out = await child.output();
      assert.equal(dec.decode(out.stdout), "HELLO\n");
      s.free();
      listener.close();
    }
  },
});

function hasOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
