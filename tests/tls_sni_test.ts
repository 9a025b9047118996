// Issue 9, item 3: one server, several names (acceptTls with a function of
// the ClientHello, over rustls's Acceptor), and optional client
// authentication. Peers: openssl s_client, Deno.connectTls, our startTls.
import assert from "node:assert/strict";
import {
  acceptTls,
  type ClientHelloInfo,
  startTls,
  type TlsClientOptions,
  TlsError,
  type TlsFlow,
  type TlsServerOptions,
} from "../src/tls.ts";
import { pipe } from "../src/pipe.ts";
import { _engineStatsForTesting } from "../src/_engine.ts";
import { delay, fixture, fixturePath, readAll } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ca = fixture("ca.pem");
const localhost = {
  cert: fixture("localhost.pem"),
  key: fixture("localhost.key"),
};
const clientCert = { cert: fixture("client.pem"), key: fixture("client.key") };

/** A second leaf, for "other.mimic.test" only, signed by the fixtures' CA. */
async function makeOtherCert(): Promise<
  { cert: string; key: string; dir: string }
> {
  const dir = await Deno.makeTempDir({ prefix: "mimic-sni-" });
  const run = async (args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`openssl ${args[0]}: ${decoder.decode(out.stderr)}`);
    }
  };
  await run([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    `${dir}/other.key`,
  ]);
  await run([
    "req",
    "-new",
    "-key",
    `${dir}/other.key`,
    "-subj",
    "/CN=other.mimic.test/O=mimic test",
    "-out",
    `${dir}/other.csr`,
  ]);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "basicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\n" +
      "extendedKeyUsage=serverAuth\n" +
      "subjectAltName=DNS:other.mimic.test\n",
  );
  await run([
    "x509",
    "-req",
    "-in",
    `${dir}/other.csr`,
    "-CA",
    fixturePath("ca.pem"),
    "-CAkey",
    fixturePath("ca.key"),
    "-set_serial",
    "0x2a",
    "-days",
    "2",
    "-sha256",
    "-extfile",
    `${dir}/ext.cnf`,
    "-out",
    `${dir}/other.pem`,
  ]);
  return {
    cert: await Deno.readTextFile(`${dir}/other.pem`),
    key: await Deno.readTextFile(`${dir}/other.key`),
    dir,
  };
}

const other = await makeOtherCert();
addEventListener("unload", () => {
  try {
    Deno.removeSync(other.dir, { recursive: true });
  } catch {
    // Already gone.
  }
});

/** The options for a name: other.mimic.test's, else localhost's. */
function byName(hello: ClientHelloInfo): TlsServerOptions {
  return hello.serverName === "other.mimic.test" ? other : localhost;
}

/**
 * A TCP server accepting TLS with `options` on every connection: it writes
 * "hello <SNI>" and closes. Records the ClientHellos and the errors.
 */
function sniServer(
  options: (
    hello: ClientHelloInfo,
  ) => TlsServerOptions | Promise<TlsServerOptions>,
  count: number,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hellos: ClientHelloInfo[] = [];
  const errors: unknown[] = [];
  const done = (async () => {
    for (let i = 0; i < count; i++) {
      const conn = await listener.accept();
      let flow: TlsFlow | undefined;
      try {
        flow = await acceptTls(conn, (hello) => {
          hellos.push(hello);
          return options(hello);
        }, { signal: AbortSignal.timeout(20_000) });
        const info = await flow.handshake();
        await flow.write(encoder.encode(`hello ${info.serverName}\n`));
        await flow.closeWrite();
        // Waits for the client to go (close_notify or EOF).
        await flow.read(new Uint8Array(64)).catch(() => null);
      } catch (error) {
        errors.push(error);
      } finally {
        if (flow) flow.close();
        else conn.close();
      }
    }
    listener.close();
  })();
  return { port: (listener.addr as Deno.NetAddr).port, hellos, errors, done };
}

/** `openssl s_client` against 127.0.0.1:port; stdout and stderr together. */
async function sClient(
  port: number,
  args: string[],
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-CAfile",
      fixturePath("ca.pem"),
      "-verify_return_error",
      "-ign_eof",
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  try {
    await child.stdin.close();
    const { code, stdout, stderr } = await child.output();
    return { code, out: decoder.decode(stdout) + decoder.decode(stderr) };
  } finally {
    clearTimeout(timer);
  }
}

async function ourClient(
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

Deno.test("acceptTls(fn): openssl s_client gets the certificate of the name it asks for", async () => {
  const server = sniServer(byName, 2);
  const a = await sClient(server.port, [
    "-servername",
    "other.mimic.test",
    "-verify_hostname",
    "other.mimic.test",
    "-alpn",
    "h2,http/1.1",
    "-ciphersuites",
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
    "-sigalgs",
    "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:ed25519",
  ]);
  assert.equal(a.code, 0, a.out);
  assert.match(a.out, /subject=CN\s?=\s?other\.mimic\.test/);
  assert.match(a.out, /Verify return code: 0 \(ok\)/);
  assert.match(a.out, /hello other\.mimic\.test/);
  const b = await sClient(server.port, [
    "-servername",
    "localhost",
    "-verify_hostname",
    "localhost",
  ]);
  assert.equal(b.code, 0, b.out);
  assert.match(b.out, /subject=CN\s?=\s?localhost/);
  assert.match(b.out, /hello localhost/);
  await server.done;
  assert.deepEqual(server.errors, []);
  // What openssl offered, as it offered it.
  const [first, second] = server.hellos;
  assert.equal(first.serverName, "other.mimic.test");
  assert.deepEqual(first.alpnProtocols, ["h2", "http/1.1"]);
  assert.deepEqual(
    first.cipherSuites.filter((s) => /^TLS_(AES|CHACHA)/.test(s)),
    ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"],
  );
  assert.deepEqual(first.signatureSchemes, [
    "ecdsa_secp256r1_sha256",
    "rsa_pss_rsae_sha256",
    "ed25519",
  ]);
  assert.equal(second.serverName, "localhost");
  assert.deepEqual(second.alpnProtocols, []);
  // openssl's default TLS 1.3 suites, then TLS 1.2 ones.
  assert.ok(second.cipherSuites.includes("TLS_AES_128_GCM_SHA256"));
  assert.ok(
    second.cipherSuites.includes("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
  );
  assert.ok(second.signatureSchemes.includes("ecdsa_secp256r1_sha256"));
});

Deno.test("acceptTls(fn): Deno.startTls and our startTls, sync and async functions", async (t) => {
  const fns = {
    sync: byName,
    async: async (hello: ClientHelloInfo) => {
      await delay(20);
      return byName(hello);
    },
  };
  for (const [kind, fn] of Object.entries(fns)) {
    await t.step(kind, async () => {
      const server = sniServer(fn, 4);
      for (const name of ["other.mimic.test", "localhost"]) {
        // Deno's native TLS client (Deno.startTls: SNI for a name that
        // does not resolve, over a TCP connection to 127.0.0.1).
        const tcp = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        const conn = await Deno.startTls(tcp, {
          hostname: name,
          caCerts: [ca],
        });
        assert.equal(
          await new Response(conn.readable).text(),
          `hello ${name}\n`,
        );
      }
      for (const name of ["other.mimic.test", "localhost"]) {
        const flow = await ourClient(server.port, {
          hostname: name,
          caCerts: [ca],
          alpnProtocols: ["x-mimic"],
        });
        const info = await flow.handshake();
        assert.ok(info.peerCertificate);
        assert.equal(
          info.peerCertificate.subject,
          name === "localhost"
            ? "CN=localhost"
            : "CN=other.mimic.test, O=mimic test",
        );
        assert.equal(decoder.decode(await readAll(flow)), `hello ${name}\n`);
        flow.close();
      }
      await server.done;
      assert.deepEqual(server.errors, []);
      assert.deepEqual(server.hellos.map((h) => h.serverName), [
        "other.mimic.test",
        "localhost",
        "other.mimic.test",
        "localhost",
      ]);
      assert.deepEqual(server.hellos[2].alpnProtocols, ["x-mimic"]);
    });
  }
});

Deno.test("acceptTls(fn): a wrong choice fails the client's verification", async () => {
  // Always localhost's certificate: a client asking for other.mimic.test refuses it.
  const server = sniServer(() => localhost, 1);
  await assert.rejects(
    ourClient(server.port, { hostname: "other.mimic.test", caCerts: [ca] }),
    (e) => e instanceof TlsError && e.code === "NotValidForName",
  );
  await server.done;
  assert.equal(server.errors.length, 1);
});

/** A pipe pair with our client started on one end. */
function clientOverPipe(options: TlsClientOptions = {}) {
  const [a, b] = pipe();
  const client = startTls(a, {
    hostname: "localhost",
    caCerts: [ca],
    ...options,
  });
  client.catch(() => {});
  return { a, b, client };
}

Deno.test("acceptTls(fn): a function that throws rejects with its error, after a handshake_failure alert", async () => {
  for (const kind of ["sync", "async"]) {
    const { a, b, client } = clientOverPipe();
    const thrown = new Error("no certificate for you");
    await assert.rejects(
      acceptTls(
        b,
        kind === "sync"
          ? () => {
            throw thrown;
          }
          : () => Promise.reject(thrown),
      ),
      (e) => e === thrown,
    );
    await assert.rejects(
      client,
      (e) =>
        e instanceof TlsError && e.code === "AlertReceived" &&
        e.alert === "handshake_failure",
    );
    a.close();
    b.close();
  }
});

Deno.test("acceptTls(fn): garbage from the function is a TypeError, and the client is told", async () => {
  const garbage: unknown[] = [
    undefined,
    null,
    42,
    "cert",
    {},
    { cert: localhost.cert },
    { cert: 1, key: 2 },
    [localhost.cert, localhost.key],
    { ...localhost, signal: "soon" },
  ];
  for (const value of garbage) {
    const { a, b, client } = clientOverPipe();
    await assert.rejects(
      acceptTls(b, () => value as TlsServerOptions),
      (e) =>
        e instanceof TypeError &&
        /ClientHello function/.test(e.message),
      `for ${JSON.stringify(value)}`,
    );
    await assert.rejects(client, TlsError);
    a.close();
    b.close();
  }
  // Malformed PEM is the engine's TypeError, naming the section.
  const { a, b, client } = clientOverPipe();
  await assert.rejects(
    acceptTls(b, () => ({
      cert: "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
      key: localhost.key,
    })),
    (e) =>
      e instanceof TypeError &&
      /cert: the 1st PEM section \(CERTIFICATE\) is malformed/.test(e.message),
  );
  await assert.rejects(client, TlsError);
  a.close();
  b.close();
});

Deno.test("acceptTls(fn): a function that never settles is ended by the signal; nothing leaks", async () => {
  // Warm the engine, then measure its heap around many abandoned handshakes.
  {
    const { a, b, client } = clientOverPipe();
    const flow = await acceptTls(b, () => localhost);
    (await client).close();
    flow.close();
    a.close();
  }
  const before = _engineStatsForTesting()!.heapBytes;
  for (let i = 0; i < 30; i++) {
    const { a, b } = clientOverPipe();
    const reason = new Error(`stop ${i}`);
    const controller = new AbortController();
    const accepted = acceptTls(b, () => new Promise<never>(() => {}), {
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(reason), 5);
    await assert.rejects(accepted, (e) => e === reason);
    a.close();
    b.close();
  }
  // Also aborted while still waiting for the ClientHello.
  for (let i = 0; i < 10; i++) {
    const [, b] = pipe();
    const reason = new Error("idle");
    const controller = new AbortController();
    const accepted = acceptTls(b, () => localhost, {
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(reason), 5);
    await assert.rejects(accepted, (e) => e === reason);
    b.close();
  }
  const after = _engineStatsForTesting()!.heapBytes;
  assert.ok(
    after - before < 64 * 1024,
    `the engine's heap grew by ${
      after - before
    } bytes over 40 abandoned acceptors`,
  );
});

Deno.test("acceptTls(fn): a peer that closes before its ClientHello, or sends no TLS", async () => {
  {
    const [a, b] = pipe();
    const accepted = acceptTls(b, () => localhost);
    await a.write(new Uint8Array([22, 3, 1]));
    await a.closeWrite();
    await assert.rejects(
      accepted,
      (e) => e instanceof TlsError && e.code === "UnexpectedEof",
    );
    a.close();
    b.close();
  }
  {
    const [a, b] = pipe();
    let called = false;
    const accepted = acceptTls(b, () => {
      called = true;
      return localhost;
    });
    await a.write(encoder.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await assert.rejects(
      accepted,
      (e) =>
        e instanceof TlsError && e.code === "BadInput" &&
        e.message ===
          'the peer does not speak TLS: it sent "GET / HTTP/1.1\\r\\nHost: x\\r..."',
    );
    assert.equal(called, false);
    a.close();
    b.close();
  }
});

Deno.test("clientAuth: optional accepts clients with and without a certificate; a wrong one is refused", async (t) => {
  const optional: TlsServerOptions = {
    ...localhost,
    clientCaCerts: [ca],
    clientAuth: "optional",
  };
  /** Accepts one connection; resolves to the client certificate's subject or null. */
  const serveOnce = (options: TlsServerOptions) => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const result = (async () => {
      const conn = await listener.accept();
      listener.close();
      try {
        const flow = await acceptTls(conn, options);
        const info = await flow.handshake();
        await flow.write(encoder.encode("ok\n"));
        await flow.closeWrite();
        await flow.read(new Uint8Array(16)).catch(() => null);
        flow.close();
        return info.peerCertificate?.subject ?? null;
      } catch (error) {
        conn.close();
        throw error;
      }
    })();
    result.catch(() => {});
    return { port: (listener.addr as Deno.NetAddr).port, result };
  };
  const certArgs = [
    "-cert",
    fixturePath("client.pem"),
    "-key",
    fixturePath("client.key"),
  ];
  const base = ["-servername", "localhost", "-verify_hostname", "localhost"];

  await t.step("openssl s_client without and with a certificate", async () => {
    let s = serveOnce(optional);
    let r = await sClient(s.port, base);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /ok/);
    assert.equal(await s.result, null);
    s = serveOnce(optional);
    r = await sClient(s.port, [...base, ...certArgs]);
    assert.equal(r.code, 0, r.out);
    assert.equal(await s.result, "CN=client.mimic.test");
  });

  await t.step("Deno.connectTls without and with a certificate", async () => {
    let s = serveOnce(optional);
    let conn = await Deno.connectTls({
      hostname: "localhost",
      port: s.port,
      caCerts: [ca],
    });
    assert.equal(await new Response(conn.readable).text(), "ok\n");
    assert.equal(await s.result, null);
    s = serveOnce(optional);
    conn = await Deno.connectTls({
      hostname: "localhost",
      port: s.port,
      caCerts: [ca],
      cert: clientCert.cert,
      key: clientCert.key,
    });
    assert.equal(await new Response(conn.readable).text(), "ok\n");
    assert.equal(await s.result, "CN=client.mimic.test");
  });

  await t.step("a certificate from another CA is still refused", async () => {
    const s = serveOnce(optional);
    const r = await sClient(s.port, [
      ...base,
      "-cert",
      fixturePath("selfsigned.pem"),
      "-key",
      fixturePath("selfsigned.key"),
    ]);
    assert.notEqual(r.code, 0, r.out);
    await assert.rejects(
      s.result,
      (e) => e instanceof TlsError && e.code === "UnknownIssuer",
    );
  });

  await t.step(
    "required (the default) refuses a client without one",
    async () => {
      for (const clientAuth of [undefined, "required"] as const) {
        const s = serveOnce({ ...localhost, clientCaCerts: [ca], clientAuth });
        const r = await sClient(s.port, base);
        assert.notEqual(r.code === 0 && /ok/.test(r.out), true, r.out);
        await assert.rejects(
          s.result,
          (e) => e instanceof TlsError && e.code === "NoCertificatesPresented",
        );
      }
    },
  );

  await t.step("bad values are TypeErrors before any I/O", async () => {
    const [, b] = pipe();
    await assert.rejects(
      acceptTls(b, { ...localhost, clientAuth: "optional" }),
      (e) =>
        e instanceof TypeError &&
        /clientAuth needs clientCaCerts/.test(e.message),
    );
    await assert.rejects(
      acceptTls(b, {
        ...localhost,
        clientCaCerts: [ca],
        clientAuth: "maybe" as "optional",
      }),
      (e) => e instanceof TypeError && /"maybe"/.test(e.message),
    );
    b.close();
  });
});

Deno.test("acceptTls(fn): bytes that arrive with the ClientHello carry over to the connection", async (t) => {
  /**
   * Relays our client to acceptTls(fn), with `extra` appended to the
   * client's first write (its ClientHello), in the same write.
   */
  const relayed = async (extra: number[]) => {
    const [clientEnd, relayA] = pipe();
    const [relayB, serverEnd] = pipe();
    const client = startTls(clientEnd, {
      hostname: "localhost",
      caCerts: [ca],
    });
    client.catch(() => {});
    const server = acceptTls(serverEnd, () => localhost);
    server.catch(() => {});
    const buf = new Uint8Array(16384);
    const n = (await relayA.read(buf))!;
    const first = new Uint8Array(n + extra.length);
    first.set(buf.subarray(0, n));
    first.set(extra, n);
    await relayB.write(first);
    const pump = async (from: typeof relayA, to: typeof relayA) => {
      const b = new Uint8Array(16384);
      try {
        for (let m; (m = await from.read(b)) !== null;) {
          await to.write(b.subarray(0, m));
        }
        await to.closeWrite();
      } catch {
        // One side went away.
      }
    };
    const pumps = Promise.all([pump(relayA, relayB), pump(relayB, relayA)]);
    const close = async () => {
      relayA.close();
      relayB.close();
      clientEnd.close();
      serverEnd.close();
      await pumps;
    };
    return { client, server, close };
  };

  await t.step(
    "a ChangeCipherSpec (middlebox compatibility): the handshake completes",
    async () => {
      const r = await relayed([20, 3, 3, 0, 1, 1]);
      const [c, sv] = await Promise.all([r.client, r.server]);
      await c.write(encoder.encode("after"));
      await c.closeWrite();
      assert.equal(decoder.decode(await readAll(sv)), "after");
      c.close();
      sv.close();
      await r.close();
    },
  );

  await t.step("a bogus record: the connection sees it and fails", async () => {
    // Application data before any key: were it lost, the handshake would complete.
    const r = await relayed([23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    await assert.rejects(r.server, TlsError);
    await r.close();
  });
});
