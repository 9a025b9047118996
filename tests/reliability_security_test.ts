// Reliability: security defaults of our TLS client against `openssl
// s_server` on loopback. Verification is on by default: a self-signed
// certificate is UnknownIssuer, an expired one Expired, one for another name
// NotValidForName, a TLS 1.1-only server a TlsError — never a connection.
// `unsafelyIgnoreCertificateErrors: true` is the only way to reach the
// self-signed server.
import assert from "node:assert/strict";
import {
  startTls,
  type TlsClientOptions,
  TlsError,
  type TlsFlow,
} from "../src/tls.ts";
import { delay, fixture, readAll, within } from "./fuzz/util.ts";

const ca = fixture("ca.pem");
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

/** A free loopback port (there is a small race; retried by the caller). */
function freePort(): number {
  using l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return l.addr.port;
}

/** `openssl s_server -www` on 127.0.0.1 with a fixture's cert and key. */
async function sServer(
  name: string,
  extra: string[] = [],
): Promise<{ port: number } & AsyncDisposable> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = freePort();
    const child = new Deno.Command("openssl", {
      args: [
        "s_server",
        "-accept",
        `127.0.0.1:${port}`,
        "-cert",
        `${FIXTURES}${name}.pem`,
        "-key",
        `${FIXTURES}${name}.key`,
        "-www",
        "-quiet",
        ...extra,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const dispose = async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await stderr;
    };
    // Wait until it listens.
    for (let i = 0; i < 100; i++) {
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        conn.close();
        return { port, [Symbol.asyncDispose]: dispose };
      } catch {
        await delay(20);
      }
    }
    await dispose();
  }
  throw new Error(`openssl s_server with ${name} does not start`);
}

/** Connects our client; resolves to the TLS flow, or rejects. */
async function connectTo(
  port: number,
  options: TlsClientOptions,
): Promise<TlsFlow> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return await within(startTls(conn, options), 10_000, "startTls");
  } catch (error) {
    conn.close();
    throw error;
  }
}

async function assertRefused(
  port: number,
  options: TlsClientOptions,
  code: string | ((code: string) => boolean),
): Promise<void> {
  await assert.rejects(connectTo(port, options), (e) => {
    assert.ok(e instanceof TlsError, `expected a TlsError, got ${e}`);
    if (typeof code === "string") assert.equal(e.code, code, e.message);
    else assert.ok(code(e.code), `code ${e.code}: ${e.message}`);
    return true;
  });
}

/** A GET over the flow: s_server -www answers with a status page. */
async function get(flow: TlsFlow): Promise<string> {
  await flow.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
  return new TextDecoder().decode(await within(readAll(flow), 10_000, "GET"));
}

Deno.test("security: a self-signed server is UnknownIssuer, with the default roots and with our CA", async () => {
  await using server = await sServer("selfsigned");
  await assertRefused(server.port, { hostname: "localhost" }, "UnknownIssuer");
  await assertRefused(
    server.port,
    { hostname: "localhost", caCerts: [ca] },
    "UnknownIssuer",
  );
  await assertRefused(
    server.port,
    { hostname: "127.0.0.1", caCerts: [ca] },
    "UnknownIssuer",
  );
});

Deno.test("security: unsafelyIgnoreCertificateErrors is the only way to reach the self-signed server", async () => {
  await using server = await sServer("selfsigned");
  // Options that do not turn verification off.
  for (
    const options of [
      { hostname: "localhost" },
      { hostname: "localhost", unsafelyIgnoreCertificateErrors: false },
      { hostname: "localhost", caCerts: [] },
      { hostname: "localhost", alpnProtocols: ["http/1.1"] },
      { hostname: "localhost", caCerts: [ca], cert: undefined },
    ] as TlsClientOptions[]
  ) {
    await assert.rejects(connectTo(server.port, options), TlsError);
  }
  // Without a hostname and without the flag: refused before any I/O.
  await assert.rejects(connectTo(server.port, {}), TypeError);
  const flow = await connectTo(server.port, {
    hostname: "localhost",
    unsafelyIgnoreCertificateErrors: true,
  });
  try {
    assert.match(await get(flow), /^HTTP\/1\.0 200 ok/);
  } finally {
    flow.close();
  }
});

Deno.test("security: an expired certificate is Expired; one not yet valid is NotValidYet", async () => {
  {
    await using server = await sServer("expired");
    await assertRefused(
      server.port,
      { hostname: "localhost", caCerts: [ca] },
      "Expired",
    );
  }
  {
    await using server = await sServer("notyet");
    await assertRefused(
      server.port,
      { hostname: "localhost", caCerts: [ca] },
      "NotValidYet",
    );
  }
});

Deno.test("security: a certificate for another name is NotValidForName (DNS and IP)", async () => {
  await using server = await sServer("wrongname");
  for (const hostname of ["localhost", "127.0.0.1", "other.example"]) {
    await assertRefused(
      server.port,
      { hostname, caCerts: [ca] },
      "NotValidForName",
    );
  }
});

Deno.test("security: a TLS 1.1-only server is a TlsError, never a connection", async () => {
  await using server = await sServer("localhost", [
    "-tls1_1",
    "-cipher",
    "DEFAULT@SECLEVEL=0",
  ]);
  // Even with verification off: the version floor is not a certificate error.
  for (
    const options of [
      { hostname: "localhost", caCerts: [ca] },
      { hostname: "localhost", unsafelyIgnoreCertificateErrors: true },
    ] as TlsClientOptions[]
  ) {
    await assertRefused(
      server.port,
      options,
      (code) => code === "PeerIncompatible" || code === "AlertReceived",
    );
  }
});

Deno.test("security: the good certificate connects (the control)", async () => {
  await using server = await sServer("localhost");
  for (const hostname of ["localhost", "127.0.0.1"]) {
    const flow = await connectTo(server.port, { hostname, caCerts: [ca] });
    try {
      assert.match(await get(flow), /^HTTP\/1\.0 200 ok/);
    } finally {
      flow.close();
    }
  }
});
