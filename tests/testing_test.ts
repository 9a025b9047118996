// The published test PKI (src/testing.ts, `@mimic/mimic/testing`): its
// constants must stay equal to tests/fixtures, and work with real peers.
import assert from "node:assert/strict";
import { testPki } from "../src/testing.ts";
import { acceptTls } from "../src/tls.ts";

const fixture = (name: string): Promise<string> =>
  Deno.readTextFile(new URL(`./fixtures/${name}`, import.meta.url));

Deno.test("testPki equals the files in tests/fixtures", async () => {
  assert.equal(testPki.ca, await fixture("ca.pem"));
  assert.equal(testPki.server.cert, await fixture("localhost.pem"));
  assert.equal(testPki.server.key, await fixture("localhost.key"));
  assert.equal(testPki.client.cert, await fixture("client.pem"));
  assert.equal(testPki.client.key, await fixture("client.key"));
});

Deno.test("testPki is frozen", () => {
  assert.ok(Object.isFrozen(testPki));
  assert.ok(Object.isFrozen(testPki.server));
  assert.ok(Object.isFrozen(testPki.client));
  assert.throws(() => {
    (testPki as { ca: string }).ca = "";
  }, TypeError);
});

Deno.test("testPki works with Deno's native TLS client, mutual TLS", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept().then((conn) =>
    acceptTls(conn, { ...testPki.server, clientCaCerts: [testPki.ca] })
      .catch((error) => {
        conn.close();
        throw error;
      })
  );
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port: listener.addr.port,
    caCerts: [testPki.ca],
    cert: testPki.client.cert,
    key: testPki.client.key,
  });
  await using server = await accepted;
  const info = await server.handshake();
  assert.equal(info.peerCertificate?.subject, "CN=client.mimic.test");
  assert.equal(info.peerCertificate?.issuer, "CN=mimic test CA");
  await server.write(new TextEncoder().encode("ok"));
  await server.closeWrite();
  assert.equal(await new Response(conn.readable).text(), "ok");
});
