// TLS for production peers (issue 9, engine part): cipher suite, version and
// key exchange group controls, the X25519MLKEM768 post-quantum hybrid,
// session resumption, NSS key logging and the keying material exporter,
// against real peers on loopback: Go's crypto/tls (tests/servers/go_tls),
// Deno's native TLS (Deno.listenTls / Deno.connectTls) and OpenSSL
// (s_server / s_client).
import assert from "node:assert/strict";
import type { Flow } from "../mod.ts";
import {
  acceptTls,
  startTls,
  type TlsClientOptions,
  TlsError,
  type TlsFlow,
  type TlsHandshakeInfo,
  type TlsServerOptions,
} from "../src/tls.ts";
import { clientSession, serverSession, type Session } from "../src/_engine.ts";
import { fixture, fixturePath as path } from "./_helpers.ts";
import { runGoTlsClient, startGoTlsServer } from "./servers/go_tls.ts";
import {
  opensslClient as sharedOpensslClient,
  OpensslServer,
} from "./servers/openssl.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ca = fixture("ca.pem");
const ecdsa = { cert: fixture("localhost.pem"), key: fixture("localhost.key") };
const trusting: TlsClientOptions = { hostname: "localhost", caCerts: [ca] };
const goServerFiles = {
  certFile: path("localhost.pem"),
  keyFile: path("localhost.key"),
};

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Our client over a fresh TCP connection; closes the connection on failure. */
async function connectTls(
  port: number,
  options: TlsClientOptions,
): Promise<TlsFlow> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return await startTls(conn, options);
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** Reads to the end of the flow (or an error), as text. */
async function readText(flow: Flow): Promise<string> {
  let text = "";
  const buf = new Uint8Array(4096);
  for (;;) {
    let n: number | null;
    try {
      n = await flow.read(buf);
    } catch {
      return text;
    }
    if (n === null) return text;
    text += decoder.decode(buf.subarray(0, n));
  }
}

/** Writes `text`, half-closes, reads the answer to the end. */
async function exchange(flow: TlsFlow, text: string): Promise<string> {
  await flow.write(encoder.encode(text));
  await flow.closeWrite();
  return await readText(flow);
}

interface Served {
  info?: TlsHandshakeInfo;
  flow?: TlsFlow;
  error?: unknown;
}

/**
 * Accepts `count` TCP connections one after the other and runs our server
 * on each; `handle` runs on the TLS flow (default: echo a line, close).
 */
function serve(
  listener: Deno.Listener,
  options: TlsServerOptions,
  count = 1,
  handle: (flow: TlsFlow) => Promise<void> = echoLine,
): Promise<Served[]> {
  return (async () => {
    const out: Served[] = [];
    for (let i = 0; i < count; i++) {
      const conn = await listener.accept();
      let flow: TlsFlow;
      try {
        flow = await acceptTls(conn, options);
      } catch (error) {
        conn.close();
        out.push({ error });
        continue;
      }
      const served: Served = { flow, info: await flow.handshake() };
      try {
        await handle(flow);
      } catch (error) {
        served.error = error;
      } finally {
        flow.close();
      }
      out.push(served);
    }
    return out;
  })();
}

/** Reads a line, answers "echo: <line>", sends close_notify, drains. */
async function echoLine(flow: TlsFlow): Promise<void> {
  let got = "";
  const buf = new Uint8Array(4096);
  while (!got.includes("\n")) {
    const n = await flow.read(buf);
    if (n === null) break;
    got += decoder.decode(buf.subarray(0, n));
  }
  await flow.write(encoder.encode(`echo: ${got}`));
  await flow.closeWrite();
  await flow.read(new Uint8Array(64)).catch(() => null);
}

// ---------------------------------------------------------------------------
// OpenSSL
// ---------------------------------------------------------------------------

/**
 * `openssl s_server` with the fixture certificate, as many connections as
 * `args` say (`-naccept`), answering lines reversed with `-rev`.
 */
function opensslServer(args: string[]): Promise<OpensslServer> {
  return OpensslServer.start(args, {
    rev: false,
    naccept: null,
    fixtureCert: true,
  });
}

/**
 * Our client sends a line to `openssl s_server` (without `-rev`), waits
 * until the server printed it (so it printed the connection's details
 * before), closes, and waits for the server to say it closed too.
 */
async function tellServer(
  server: OpensslServer,
  flow: TlsFlow,
): Promise<void> {
  const marker = `marker-${crypto.randomUUID()}`;
  await flow.write(encoder.encode(`${marker}\n`));
  await server.stdout.waitFor(new RegExp(marker));
  flow.close();
  await server.stdout.waitFor(/CONNECTION CLOSED/);
}

/** Our client sends a line to `openssl s_server -rev`, reads the answer. */
async function revLine(flow: TlsFlow): Promise<string> {
  await flow.write(encoder.encode("olleh\n"));
  let got = "";
  const buf = new Uint8Array(4096);
  while (!got.includes("\n")) {
    const n = await flow.read(buf);
    if (n === null) break;
    got += decoder.decode(buf.subarray(0, n));
  }
  return got;
}

/** `openssl s_client` against 127.0.0.1:port, its full output (not -brief). */
function opensslClient(
  port: number,
  args: string[],
  input = "hello\n",
): Promise<{ code: number; stdout: string; stderr: string }> {
  return sharedOpensslClient(port, args, input, { brief: false });
}

/** The NSS lines of an OpenSSL/Go key log file (comments dropped). */
async function keyLogFile(file: string): Promise<Set<string>> {
  const text = await Deno.readTextFile(file);
  return new Set(
    text.split("\n").filter((l) => l !== "" && !l.startsWith("#")),
  );
}

function lineSet(lines: string[]): Set<string> {
  for (const l of lines) assert.ok(l.endsWith("\n"), `no newline: ${l}`);
  return new Set(lines.map((l) => l.slice(0, -1)));
}

/** openssl's "Keying material: HEX" (lower-cased). */
function keyingMaterial(text: string): string[] {
  return [...text.matchAll(/Keying material: ([0-9A-F]+)/g)].map((m) =>
    m[1].toLowerCase()
  );
}

// ---------------------------------------------------------------------------
// In-memory engine sessions (for what peers do not report)
// ---------------------------------------------------------------------------

/** Runs a handshake between two engine sessions in memory. */
function handshakeInMemory(client: Session, server: Session): void {
  for (let i = 0; i < 20; i++) {
    const c = client.takeOutgoing();
    if (c !== null) assert.equal(server.feed(c), c.length);
    const s = server.takeOutgoing();
    if (s !== null) assert.equal(client.feed(s), s.length);
    if (
      c === null && s === null && !client.isHandshaking &&
      !server.isHandshaking
    ) return;
  }
  throw new Error("handshake did not finish in memory");
}

// ---------------------------------------------------------------------------
// X25519MLKEM768: Go restricted to it, both directions
// ---------------------------------------------------------------------------

Deno.test("startTls() negotiates X25519MLKEM768 with a Go server that allows only it", async () => {
  await using go = await startGoTlsServer({
    ...goServerFiles,
    curves: ["X25519MLKEM768"],
    exportLabel: "EXPERIMENTAL-mimic",
    exportLength: 48,
    exportContext: encoder.encode("ctx"),
  });
  const flow = await connectTls(go.port, trusting);
  const info = await flow.handshake();
  assert.equal(info.protocol, "TLSv1.3");
  assert.equal(info.keyExchangeGroup, "X25519MLKEM768");
  const ours = flow.exportKeyingMaterial(
    48,
    "EXPERIMENTAL-mimic",
    encoder.encode("ctx"),
  );
  assert.equal(await exchange(flow, "pq\n"), "pq\n");
  flow.close();
  const report = await go.next();
  assert.equal(report.error, undefined);
  assert.equal(report.group, "X25519MLKEM768");
  assert.equal(report.exporter, hex(ours));
});

Deno.test("acceptTls() negotiates X25519MLKEM768 with a Go client that offers only it", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serve(listener, ecdsa);
  const go = await runGoTlsClient(listener.addr.port, {
    caFile: path("ca.pem"),
    curves: ["X25519MLKEM768"],
    send: "hello go\n",
    exportLabel: "EXPERIMENTAL-mimic",
  });
  const [s] = await served;
  assert.equal(go.code, 0, go.stderr);
  assert.equal(go.reports[0].group, "X25519MLKEM768");
  assert.equal(go.reports[0].received, "echo: hello go\n");
  assert.equal(s.info?.keyExchangeGroup, "X25519MLKEM768");
  assert.equal(s.error, undefined);
});

Deno.test("startTls() falls back to x25519 with a Go server without ML-KEM, without a HelloRetryRequest", async () => {
  await using go = await startGoTlsServer({
    ...goServerFiles,
    curves: ["x25519"],
  });
  const flow = await connectTls(go.port, trusting);
  assert.equal((await flow.handshake()).keyExchangeGroup, "x25519");
  assert.equal(await exchange(flow, "x\n"), "x\n");
  flow.close();
  assert.equal((await go.next()).group, "x25519");

  // The same in memory, where the engine tells whether the server asked
  // for another key share: x25519 came with the first ClientHello
  // (hybrid_component), secp256r1 needs a HelloRetryRequest.
  for (
    const [group, hrr] of [["x25519", false], ["secp256r1", true]] as const
  ) {
    const client = await clientSession(trusting);
    const server = await serverSession({
      ...ecdsa,
      keyExchangeGroups: [group],
    });
    handshakeInMemory(client, server);
    const info = client.handshakeInfo();
    assert.equal(info.keyExchangeGroup, group);
    assert.equal(info.helloRetryRequest, hrr, group);
    client.free();
    server.free();
  }
});

Deno.test("Deno's native TLS negotiates X25519MLKEM768 with us, both directions", async (t) => {
  await t.step("startTls() -> Deno.listenTls", async () => {
    using listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      ...ecdsa,
    });
    const served = (async () => {
      using conn = await listener.accept();
      await conn.handshake();
      await conn.write(encoder.encode("native"));
      await conn.closeWrite();
      await conn.read(new Uint8Array(16)).catch(() => null);
    })();
    const flow = await connectTls(listener.addr.port, trusting);
    assert.equal((await flow.handshake()).keyExchangeGroup, "X25519MLKEM768");
    assert.equal(await readText(flow), "native");
    flow.close();
    await served;
  });
  await t.step("Deno.connectTls -> acceptTls()", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = serve(listener, ecdsa);
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port: listener.addr.port,
      caCerts: [ca],
    });
    await conn.write(encoder.encode("native\n"));
    assert.equal(await readText(conn), "echo: native\n");
    conn.close();
    const [s] = await served;
    assert.equal(s.info?.keyExchangeGroup, "X25519MLKEM768");
  });
});

// ---------------------------------------------------------------------------
// Controls: cipher suites, versions, groups
// ---------------------------------------------------------------------------

Deno.test("cipherSuites picks the suite with openssl, both directions", async (t) => {
  await t.step("our client, openssl s_server", async () => {
    await using server = await opensslServer([
      "-naccept",
      "1",
      "-ciphersuites",
      "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
    ]);
    const flow = await connectTls(server.port, {
      ...trusting,
      cipherSuites: ["TLS_AES_256_GCM_SHA384"],
    });
    assert.equal(
      (await flow.handshake()).cipherSuite,
      "TLS_AES_256_GCM_SHA384",
    );
    await tellServer(server, flow);
    assert.match(server.stdout.text, /CIPHER is TLS_AES_256_GCM_SHA384/);
  });
  await t.step("our client, no suite in common with s_server", async () => {
    await using server = await opensslServer([
      "-naccept",
      "1",
      "-ciphersuites",
      "TLS_AES_128_GCM_SHA256",
    ]);
    await assert.rejects(
      connectTls(server.port, {
        ...trusting,
        cipherSuites: ["TLS_CHACHA20_POLY1305_SHA256"],
      }),
      TlsError,
    );
  });
  await t.step("our server, openssl s_client", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = serve(listener, {
      ...ecdsa,
      cipherSuites: ["TLS_AES_256_GCM_SHA384"],
    });
    const out = await opensslClient(listener.addr.port, []);
    const [s] = await served;
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /New, TLSv1\.3, Cipher is TLS_AES_256_GCM_SHA384/);
    assert.equal(s.info?.cipherSuite, "TLS_AES_256_GCM_SHA384");
  });
  await t.step("our server, a TLS 1.2 suite", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = serve(listener, {
      ...ecdsa,
      maxVersion: "TLSv1.2",
      cipherSuites: ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
    });
    const out = await opensslClient(listener.addr.port, []);
    const [s] = await served;
    assert.equal(out.code, 0, out.stderr);
    assert.match(
      out.stdout,
      /New, TLSv1\.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384/,
    );
    assert.equal(s.info?.protocol, "TLSv1.2");
    assert.equal(
      s.info?.cipherSuite,
      "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    );
  });
});

Deno.test("minVersion and maxVersion hold against openssl, both directions", async (t) => {
  await t.step("our client maxVersion TLSv1.2", async () => {
    await using server = await opensslServer(["-naccept", "1", "-rev"]);
    const flow = await connectTls(server.port, {
      ...trusting,
      maxVersion: "TLSv1.2",
    });
    const info = await flow.handshake();
    assert.equal(info.protocol, "TLSv1.2");
    assert.equal(info.keyExchangeGroup, "x25519"); // the hybrid is TLS 1.3 only
    assert.equal(await revLine(flow), "hello\n");
    flow.close();
  });
  await t.step(
    "our client minVersion TLSv1.3 refuses s_server -tls1_2",
    async () => {
      await using server = await opensslServer([
        "-naccept",
        "1",
        "-tls1_2",
      ]);
      await assert.rejects(
        connectTls(server.port, { ...trusting, minVersion: "TLSv1.3" }),
        TlsError,
      );
    },
  );
  await t.step(
    "our server minVersion TLSv1.3 refuses s_client -tls1_2",
    async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = serve(listener, { ...ecdsa, minVersion: "TLSv1.3" });
      const out = await opensslClient(listener.addr.port, ["-tls1_2"]);
      const [s] = await served;
      assert.notEqual(out.code, 0);
      assert.ok(s.error instanceof TlsError, String(s.error));
    },
  );
  await t.step(
    "our server maxVersion TLSv1.2 serves s_client TLS 1.2",
    async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const served = serve(listener, { ...ecdsa, maxVersion: "TLSv1.2" });
      const out = await opensslClient(listener.addr.port, []);
      const [s] = await served;
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /New, TLSv1\.2, Cipher is/);
      assert.equal(s.info?.protocol, "TLSv1.2");
    },
  );
});

Deno.test("keyExchangeGroups picks the group with Go, both directions", async (t) => {
  await t.step("our client secp384r1 only, Go server", async () => {
    await using go = await startGoTlsServer(goServerFiles);
    const flow = await connectTls(go.port, {
      ...trusting,
      keyExchangeGroups: ["SECP384R1"], // case-insensitive
    });
    assert.equal((await flow.handshake()).keyExchangeGroup, "secp384r1");
    assert.equal(await exchange(flow, "g\n"), "g\n");
    flow.close();
    assert.equal((await go.next()).group, "secp384r1");
  });
  await t.step("our server secp256r1 only, Go client", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = serve(listener, {
      ...ecdsa,
      keyExchangeGroups: ["secp256r1"],
    });
    const go = await runGoTlsClient(listener.addr.port, {
      caFile: path("ca.pem"),
      send: "g\n",
    });
    const [s] = await served;
    assert.equal(go.code, 0, go.stderr);
    assert.equal(go.reports[0].group, "secp256r1");
    assert.equal(s.info?.keyExchangeGroup, "secp256r1");
  });
  await t.step("no group in common with Go fails the handshake", async () => {
    await using go = await startGoTlsServer({
      ...goServerFiles,
      curves: ["X25519MLKEM768"],
    });
    await assert.rejects(
      connectTls(go.port, { ...trusting, keyExchangeGroups: ["x25519"] }),
      TlsError,
    );
  });
});

Deno.test("bad controls are typed errors before any I/O", async () => {
  let touched = 0;
  const untouchable: Flow = {
    read: () => {
      touched++;
      return Promise.reject(new Error("read"));
    },
    write: () => {
      touched++;
      return Promise.reject(new Error("write"));
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
    readable: new ReadableStream(),
    writable: new WritableStream(),
  };
  const cases: [Partial<TlsClientOptions>, typeof Error, RegExp][] = [
    [
      { cipherSuites: ["TLS_RSA_WITH_RC4_128_MD5"] },
      TypeError,
      /"TLS_RSA_WITH_RC4_128_MD5"/,
    ],
    [{ keyExchangeGroups: ["x448"] }, TypeError, /"x448"/],
    [{ keyExchangeGroups: [] }, TypeError, /at least one/],
    [{ minVersion: "TLSv1.1" as "TLSv1.2" }, TypeError, /"TLSv1\.1"/],
    [{ maxVersion: "SSLv3" as "TLSv1.2" }, TypeError, /"SSLv3"/],
    [{ minVersion: "TLSv1.3", maxVersion: "TLSv1.2" }, RangeError, /above/],
    [
      { cipherSuites: ["TLS_AES_128_GCM_SHA256"], maxVersion: "TLSv1.2" },
      TypeError,
      /no cipher suite for TLSv1\.2/,
    ],
    [
      { keyExchangeGroups: ["X25519MLKEM768"], maxVersion: "TLSv1.2" },
      TypeError,
      /no group for TLSv1\.2/,
    ],
    [{ keyLog: "file" as unknown as () => void }, TypeError, /keyLog/],
    [{ resumption: "no" as unknown as boolean }, TypeError, /resumption/],
  ];
  for (const [bad, type, message] of cases) {
    await assert.rejects(
      startTls(untouchable, { ...trusting, ...bad }),
      (e: unknown) => e instanceof type && message.test((e as Error).message),
      JSON.stringify(bad),
    );
    const { resumption: _, ...serverBad } = bad;
    if (Object.keys(serverBad).length > 0) {
      await assert.rejects(
        acceptTls(untouchable, { ...ecdsa, ...serverBad }),
        (e: unknown) => e instanceof type && message.test((e as Error).message),
        JSON.stringify(serverBad),
      );
    }
  }
  assert.equal(touched, 0);
});

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

Deno.test("acceptTls() resumes openssl s_client's sessions (-sess_out / -sess_in), TLS 1.3 and 1.2", async (t) => {
  for (const version of ["-tls1_3", "-tls1_2"]) {
    await t.step(version, async () => {
      const dir = await Deno.makeTempDir();
      try {
        using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const served = serve(listener, ecdsa, 2);
        const sess = `${dir}/session.pem`;
        const first = await opensslClient(listener.addr.port, [
          version,
          "-sess_out",
          sess,
        ]);
        const second = await opensslClient(listener.addr.port, [
          version,
          "-sess_in",
          sess,
        ]);
        const [a, b] = await served;
        assert.equal(first.code, 0, first.stderr);
        assert.equal(second.code, 0, second.stderr);
        assert.match(first.stdout, /^New, TLSv1\.[23]/m);
        assert.match(second.stdout, /^Reused, TLSv1\.[23]/m);
        assert.equal(a.info?.resumed, false);
        assert.equal(b.info?.resumed, true);
        assert.match(second.stdout, /echo: hello/);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("startTls() resumes with openssl s_server, and not with resumption: false", async (t) => {
  for (const resumption of [true, false]) {
    await t.step(`resumption: ${resumption}`, async () => {
      await using server = await opensslServer(["-naccept", "2", "-rev"]);
      // A CA list of its own: its own config, so its own session cache.
      const options = {
        ...trusting,
        caCerts: [ca, fixture("selfsigned.pem")],
        alpnProtocols: [`resume-${resumption}`],
        resumption,
      };
      const infos: TlsHandshakeInfo[] = [];
      for (let i = 0; i < 2; i++) {
        const flow = await connectTls(server.port, options);
        infos.push(await flow.handshake());
        // Reading takes in the ticket, which comes before the answer.
        assert.equal(await revLine(flow), "hello\n");
        flow.close();
      }
      assert.equal(infos[0].resumed, false);
      assert.equal(infos[1].resumed, resumption);
    });
  }
});

Deno.test("a client resuming a ticket from another server of the same name still connects to ours (no HelloRetryRequest forced on a PSK)", async () => {
  // The ticket: from openssl, on TLS_AES_256_GCM_SHA384 and x25519 (openssl
  // 3.0 has no ML-KEM). Our server prefers the hybrid and AES-128 or
  // ChaCha20 (SHA-256): a HelloRetryRequest for the hybrid would make
  // rustls's client withdraw the PSK, which rustls's server refuses.
  await using other = await opensslServer([
    "-naccept",
    "1",
    "-rev",
    "-ciphersuites",
    "TLS_AES_256_GCM_SHA384",
  ]);
  const options = {
    ...trusting,
    caCerts: [ca, fixture("rsa.pem")],
    alpnProtocols: ["ticket-elsewhere"],
  };
  const first = await connectTls(other.port, options);
  assert.equal(await revLine(first), "hello\n"); // takes in the ticket
  first.close();
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serve(listener, {
    ...ecdsa,
    alpnProtocols: ["ticket-elsewhere"],
  });
  const flow = await connectTls(listener.addr.port, options);
  const info = await flow.handshake();
  assert.equal(info.resumed, false);
  assert.equal(await exchange(flow, "after\n"), "echo: after\n");
  flow.close();
  const [result] = await served;
  assert.equal(result.error, undefined, String(result.error));
});

Deno.test("sessions resume with Go's crypto/tls, both directions", async (t) => {
  await t.step("Go client -> acceptTls()", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = serve(listener, ecdsa, 2);
    const go = await runGoTlsClient(listener.addr.port, {
      caFile: path("ca.pem"),
      count: 2,
      send: "r\n",
    });
    const [a, b] = await served;
    assert.equal(go.code, 0, go.stderr);
    assert.deepEqual(go.reports.map((r) => r.resumed), [false, true]);
    assert.equal(a.info?.resumed, false);
    assert.equal(b.info?.resumed, true);
    assert.equal(b.info?.keyExchangeGroup, "X25519MLKEM768"); // psk_dhe_ke
  });
  await t.step("startTls() -> Go server", async () => {
    await using go = await startGoTlsServer({ ...goServerFiles, count: 2 });
    const options = {
      ...trusting,
      caCerts: [ca, fixture("selfsigned.pem"), fixture("ca.pem")],
    };
    const resumed: boolean[] = [];
    for (let i = 0; i < 2; i++) {
      const flow = await connectTls(go.port, options);
      resumed.push((await flow.handshake()).resumed);
      assert.equal(await exchange(flow, "r\n"), "r\n");
      flow.close();
    }
    assert.deepEqual(resumed, [false, true]);
    assert.deepEqual([(await go.next()).resumed, (await go.next()).resumed], [
      false,
      true,
    ]);
  });
});

Deno.test("Deno.connectTls does not resume across calls (a fresh client config each time)", async () => {
  // Documents Deno's behaviour: our server offers tickets (openssl and Go
  // resume above), but each Deno.connectTls starts with an empty cache.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serve(listener, ecdsa, 2);
  for (let i = 0; i < 2; i++) {
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port: listener.addr.port,
      caCerts: [ca],
    });
    await conn.write(encoder.encode("d\n"));
    assert.equal(await readText(conn), "echo: d\n");
    conn.close();
  }
  const [a, b] = await served;
  assert.equal(a.info?.resumed, false);
  assert.equal(b.info?.resumed, false);
});

// ---------------------------------------------------------------------------
// Key log
// ---------------------------------------------------------------------------

Deno.test("keyLog lines equal openssl's -keylogfile lines, both directions, TLS 1.3 and 1.2", async (t) => {
  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    await t.step(`our client, s_server, ${maxVersion}`, async () => {
      const dir = await Deno.makeTempDir();
      try {
        const file = `${dir}/keys.log`;
        await using server = await opensslServer([
          "-naccept",
          "1",
          "-keylogfile",
          file,
        ]);
        const lines: string[] = [];
        const flow = await connectTls(server.port, {
          ...trusting,
          maxVersion,
          keyLog: (line) => lines.push(line),
        });
        await tellServer(server, flow);
        const theirs = await keyLogFile(file);
        assert.equal(theirs.size, maxVersion === "TLSv1.3" ? 5 : 1);
        assert.deepEqual(lineSet(lines), theirs);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
    await t.step(`our server, s_client, ${maxVersion}`, async () => {
      const dir = await Deno.makeTempDir();
      try {
        const file = `${dir}/keys.log`;
        using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const lines: string[] = [];
        const served = serve(listener, {
          ...ecdsa,
          maxVersion,
          keyLog: (line) => lines.push(line),
        });
        const out = await opensslClient(listener.addr.port, [
          "-keylogfile",
          file,
        ]);
        await served;
        assert.equal(out.code, 0, out.stderr);
        const theirs = await keyLogFile(file);
        assert.equal(theirs.size, maxVersion === "TLSv1.3" ? 5 : 1);
        assert.deepEqual(lineSet(lines), theirs);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});

Deno.test("keyLog lines equal Go's KeyLogWriter lines over X25519MLKEM768", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/keys.log`;
    await using go = await startGoTlsServer({
      ...goServerFiles,
      curves: ["X25519MLKEM768"],
      keyLogFile: file,
    });
    const lines: string[] = [];
    const flow = await connectTls(go.port, {
      ...trusting,
      keyLog: (line) => lines.push(line),
    });
    assert.equal(await exchange(flow, "k\n"), "k\n");
    flow.close();
    await go.next();
    await go.close();
    // Go logs the four traffic secrets (no EXPORTER_SECRET).
    const theirs = await keyLogFile(file);
    assert.equal(theirs.size, 4);
    const ours = lineSet(lines);
    for (const line of theirs) assert.ok(ours.has(line), line);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keyLog: a throwing callback does not break the connection", async () => {
  const reported: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    reported.push(e.error);
    e.preventDefault();
  };
  globalThis.addEventListener("error", onError);
  try {
    const client = await clientSession({
      ...trusting,
      keyLog: () => {
        throw new Error("callback failed");
      },
    });
    const server = await serverSession(ecdsa);
    handshakeInMemory(client, server);
    assert.equal(client.handshakeInfo().protocol, "TLSv1.3");
    client.free();
    server.free();
    assert.ok(reported.length >= 1);
    assert.equal((reported[0] as Error).message, "callback failed");
  } finally {
    globalThis.removeEventListener("error", onError);
  }
});

// ---------------------------------------------------------------------------
// Exporter
// ---------------------------------------------------------------------------

Deno.test("exportKeyingMaterial equals openssl's -keymatexport, both directions, TLS 1.3 and 1.2", async (t) => {
  const label = "EXPERIMENTAL-mimic-test";
  const exportArgs = ["-keymatexport", label, "-keymatexportlen", "40"];
  for (const maxVersion of ["TLSv1.3", "TLSv1.2"] as const) {
    await t.step(`our client, s_server, ${maxVersion}`, async () => {
      await using server = await opensslServer([
        "-naccept",
        "1",
        ...exportArgs,
      ]);
      const flow = await connectTls(server.port, { ...trusting, maxVersion });
      const ours = hex(flow.exportKeyingMaterial(40, label));
      await tellServer(server, flow);
      assert.deepEqual(keyingMaterial(server.stdout.text), [ours]);
    });
    await t.step(`our server, s_client, ${maxVersion}`, async () => {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      let ours = "";
      const served = serve(listener, { ...ecdsa, maxVersion }, 1, (flow) => {
        ours = hex(flow.exportKeyingMaterial(40, label));
        return echoLine(flow);
      });
      const out = await opensslClient(listener.addr.port, exportArgs);
      await served;
      assert.equal(out.code, 0, out.stderr);
      assert.equal(ours.length, 80);
      assert.deepEqual(keyingMaterial(out.stdout), [ours]);
    });
  }
});

Deno.test("exportKeyingMaterial with a context equals Go's, TLS 1.2 (context vs none vs empty)", async () => {
  for (const context of [undefined, new Uint8Array(0), encoder.encode("c")]) {
    await using go = await startGoTlsServer({
      ...goServerFiles,
      max: "1.2",
      exportLabel: "EXPERIMENTAL-ctx",
      exportLength: 32,
      exportContext: context,
    });
    const flow = await connectTls(go.port, trusting);
    assert.equal((await flow.handshake()).protocol, "TLSv1.2");
    const ours = hex(
      flow.exportKeyingMaterial(32, "EXPERIMENTAL-ctx", context),
    );
    assert.equal(await exchange(flow, "e\n"), "e\n");
    flow.close();
    assert.equal((await go.next()).exporter, ours, String(context));
  }
});

Deno.test("exportKeyingMaterial: RFC 9266 tls-exporter binding agrees, and bad input is a typed error", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let serverBinding = "";
  const served = serve(listener, ecdsa, 1, (flow) => {
    serverBinding = hex(
      flow.exportKeyingMaterial(32, "EXPORTER-Channel-Binding"),
    );
    return echoLine(flow);
  });
  const flow = await connectTls(listener.addr.port, trusting);
  const binding = hex(
    flow.exportKeyingMaterial(32, "EXPORTER-Channel-Binding"),
  );
  for (const length of [0, -1, 1.5, NaN, 16385, 1e9]) {
    assert.throws(() => flow.exportKeyingMaterial(length, "x"), RangeError);
  }
  // TLS 1.3 with SHA-256: at most 255 * 32 bytes.
  assert.throws(() => flow.exportKeyingMaterial(8161, "x"), RangeError);
  assert.equal(flow.exportKeyingMaterial(8160, "x").length, 8160);
  for (
    const label of [
      "client finished",
      "server finished",
      "master secret",
      "extended master secret",
      "key expansion",
    ]
  ) {
    assert.throws(() => flow.exportKeyingMaterial(32, label), TypeError);
  }
  assert.throws(() => flow.exportKeyingMaterial(32, ""), RangeError);
  assert.throws(
    () => flow.exportKeyingMaterial(32, "x".repeat(250)),
    RangeError,
  );
  assert.throws(
    () => flow.exportKeyingMaterial(32, "x", new Uint8Array(65536)),
    RangeError,
  );
  assert.throws(
    () => flow.exportKeyingMaterial(32, "x", "ctx" as unknown as Uint8Array),
    TypeError,
  );
  // Different labels and contexts give different bytes.
  assert.notEqual(
    hex(flow.exportKeyingMaterial(32, "a")),
    hex(flow.exportKeyingMaterial(32, "b")),
  );
  assert.equal(await exchange(flow, "b\n"), "echo: b\n");
  await served;
  assert.equal(binding, serverBinding);
  flow.close();
  assert.throws(
    () => flow.exportKeyingMaterial(32, "EXPORTER-Channel-Binding"),
    (e: unknown) => e instanceof TlsError && e.code === "Closed",
  );
});

// ---------------------------------------------------------------------------
// Encrypted Client Hello (client)
// ---------------------------------------------------------------------------

Deno.test("startTls() with echConfigList: Go's ECH server accepts our encrypted ClientHello", async () => {
  await using go = await startGoTlsServer({
    ...goServerFiles,
    echPublicName: "public.example",
  });
  assert.ok(go.echConfigList);
  const flow = await connectTls(go.port, {
    ...trusting,
    echConfigList: go.echConfigList,
  });
  const info = await flow.handshake();
  assert.equal(info.protocol, "TLSv1.3");
  assert.equal(await exchange(flow, "secret name\n"), "secret name\n");
  flow.close();
  const report = await go.next();
  assert.equal(report.ech, true);
  assert.equal(report.serverName, "localhost"); // the inner, encrypted SNI
});

Deno.test("startTls() with echConfigList sends only the public name in the clear", async () => {
  await using go = await startGoTlsServer({
    ...goServerFiles,
    echPublicName: "public.example",
  });
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const captured = (async () => {
    using conn = await listener.accept();
    const buf = new Uint8Array(16384);
    let n = 0;
    while (n < 5 || n < 5 + ((buf[3] << 8) | buf[4])) {
      const got = await conn.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    return decoder.decode(buf.subarray(0, n));
  })();
  const attempt = connectTls(listener.addr.port, {
    ...trusting,
    echConfigList: go.echConfigList,
  }).then((f) => f.close(), () => {});
  const hello = await captured;
  await attempt;
  assert.ok(hello.includes("public.example"));
  assert.ok(!hello.includes("localhost"), "the real name leaked");
});

Deno.test("startTls() with echConfigList fails when the server cannot decrypt it", async () => {
  // Two servers, two keys: the list of one is useless to the other, which
  // answers as "localhost" (the public name) with its retry configs.
  await using a = await startGoTlsServer({
    ...goServerFiles,
    echPublicName: "localhost",
  });
  await using b = await startGoTlsServer({
    ...goServerFiles,
    echPublicName: "localhost",
  });
  await assert.rejects(
    connectTls(b.port, { ...trusting, echConfigList: a.echConfigList }),
    (e: unknown) =>
      e instanceof TlsError && e.code === "PeerIncompatible" &&
      /Encrypted ?Client ?Hello/i.test(e.message),
  );
  assert.equal((await b.next()).ech, false);
});

Deno.test("echConfigList: bad lists are a TypeError before any I/O", async () => {
  const never: Flow = {
    read: () => Promise.reject(new Error("no I/O expected")),
    write: () => Promise.reject(new Error("no I/O expected")),
    closeWrite: () => Promise.resolve(),
    close: () => {},
    readable: new ReadableStream(),
    writable: new WritableStream(),
  };
  for (
    const bad of [
      new Uint8Array(0),
      new Uint8Array([0, 3, 1, 2, 3]),
      "base64" as unknown as Uint8Array,
    ]
  ) {
    await assert.rejects(
      startTls(never, { ...trusting, echConfigList: bad }),
      TypeError,
    );
  }
  await assert.rejects(
    startTls(never, {
      ...trusting,
      maxVersion: "TLSv1.2",
      echConfigList: new Uint8Array([0, 1, 0]),
    }),
    /needs TLS 1\.3/,
  );
});
