// Known issues found by the TLS fuzzer (tests/fuzz/tls_fuzz.ts), pinned so
// a change upstream is noticed: each test asserts today's behaviour and
// says what the fixed one is.
import assert from "node:assert/strict";
import {
  clientSession,
  serverSession,
  type Session,
  TlsError,
} from "../src/_engine.ts";
import { fixture } from "./_helpers.ts";

function pump(c: Session, s: Session): void {
  for (let i = 0; i < 50; i++) {
    const a = c.takeOutgoing();
    if (a !== null) s.feed(a);
    const b = s.takeOutgoing();
    if (b !== null) c.feed(b);
    if (a === null && b === null) return;
  }
}

// rustls 0.23.46 disagrees with itself: its client, holding a TLS 1.3
// ticket of a SHA-384 suite, answers a HelloRetryRequest that picked a
// SHA-256 suite with a second ClientHello without the PSK (RFC 8446
// 4.1.2 lets it drop incompatible PSKs; s2n and OpenSSL clients do the
// same), and its server refuses a second ClientHello that withdraws the
// PSK offer (rustls PR #3259, "MissingPskExtensionInSecondClientHello").
// So a client that resumed with a server, which then picks another suite
// hash and needs another key share, fails the handshake instead of
// falling back to a full one. The fixed behaviour: the second handshake
// completes, not resumed. The fuzzer met it on its acceptor path (an SNI
// function choosing other suites for the same name).
Deno.test("known issue: a resumed client after a HelloRetryRequest with another suite hash fails (rustls 0.23.46)", async () => {
  const ecdsa = {
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
  };
  // Its own options, so its own ticket store (configs are cached by options).
  const client = {
    hostname: "localhost",
    caCerts: [fixture("ca.pem")],
    alpnProtocols: ["known-issue-hrr-psk"],
  };
  {
    const c = await clientSession(client);
    const s = await serverSession({
      ...ecdsa,
      cipherSuites: ["TLS_AES_256_GCM_SHA384"],
    });
    pump(c, s);
    assert.equal(c.handshakeInfo().cipherSuite, "TLS_AES_256_GCM_SHA384");
    c.read(new Uint8Array(16)); // the tickets are in
    c.free();
    s.free();
  }
  const c = await clientSession(client);
  const s = await serverSession({
    ...ecdsa,
    cipherSuites: ["TLS_AES_128_GCM_SHA256"],
    keyExchangeGroups: ["secp384r1"], // not the client's first: a retry
  });
  try {
    let error: unknown;
    try {
      pump(c, s);
    } catch (e) {
      error = e;
    }
    assert.ok(
      error instanceof TlsError,
      "fixed upstream? The handshake now completes: turn this test around",
    );
    assert.equal(error.code, "ProtocolViolation");
    assert.match(error.message, /MissingPskExtensionInSecondClientHello/);
    // The failure is clean: sticky, with an alert for the client.
    assert.ok(s.status.failed);
    assert.throws(() => s.feed(new Uint8Array([22])), TlsError);
    const alert = s.takeOutgoing();
    assert.ok(alert !== null && alert[0] === 21, "no alert to the client");
    assert.throws(
      () => c.feed(alert),
      (e) => e instanceof TlsError && e.alert === "missing_extension",
    );
  } finally {
    c.free();
    s.free();
  }
});
