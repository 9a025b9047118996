// The client's cache of verified certificate chains (wasm/src/verify_cache.rs):
// a chain accepted once for a name is accepted again without re-verifying the
// CA's signature, but only the same chain for the same name and trust anchors,
// and only while the time lies within the validity of its certificates;
// anything else is verified in full. The engine's clock is Date.now(), so the
// tests move it.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { pipe } from "../src/pipe.ts";
import {
  acceptTls,
  startTls,
  type TlsClientOptions,
  TlsError,
  type TlsServerOptions,
} from "../src/tls.ts";
import { fixture } from "./_helpers.ts";

const ca = fixture("ca.pem");
const ecdsa = { cert: fixture("localhost.pem"), key: fixture("localhost.key") };
const rsa = { cert: fixture("rsa.pem"), key: fixture("rsa.key") };
const wrongName = {
  cert: fixture("wrongname.pem"),
  key: fixture("wrongname.key"),
};
const selfSigned = {
  cert: fixture("selfsigned.pem"),
  key: fixture("selfsigned.key"),
};

/** The validity of a PEM certificate, in ms since the epoch. */
function validity(pem: string): { notBefore: number; notAfter: number } {
  const c = new X509Certificate(pem);
  return {
    notBefore: Date.parse(c.validFrom),
    notAfter: Date.parse(c.validTo),
  };
}

let configs = 0;
/**
 * Client options of a config (and so a verifier and its cache) of its own:
 * the engine caches configs by their options. The client never reads, so it
 * stores no session tickets (a resumed session verifies no certificate).
 */
function freshClient(hostname = "localhost"): TlsClientOptions {
  return { hostname, caCerts: [ca + "\n".repeat(++configs)] };
}

/** One handshake over a pipe: null on success, else the client's error. */
async function handshake(
  client: TlsClientOptions,
  server: TlsServerOptions,
  nowMs?: number,
): Promise<unknown> {
  const realNow = Date.now;
  if (nowMs !== undefined) Date.now = () => nowMs;
  const [a, b] = pipe();
  try {
    const [c, s] = await Promise.allSettled([
      startTls(a, client),
      acceptTls(b, server),
    ]);
    if (c.status === "fulfilled") c.value.close();
    if (s.status === "fulfilled") s.value.close();
    return c.status === "fulfilled" ? null : c.reason;
  } finally {
    Date.now = realNow;
    a.close();
    b.close();
  }
}

function assertTlsError(e: unknown, code: string): void {
  assert.ok(e instanceof TlsError, `expected TlsError ${code}, got ${e}`);
  assert.equal(e.code, code);
}

Deno.test("verify cache: the same chain and name handshake again", async () => {
  const client = freshClient();
  for (let i = 0; i < 5; i++) {
    assert.equal(await handshake(client, ecdsa), null);
  }
});

Deno.test("verify cache: another name for a cached chain is verified in full", async () => {
  const client = freshClient();
  assert.equal(await handshake(client, ecdsa), null);
  // Same config (same trust anchors, same cache), the chain cached for
  // "localhost": another name still fails.
  const other = { ...client, hostname: "other.example" };
  assertTlsError(await handshake(other, ecdsa), "NotValidForName");
  assertTlsError(await handshake(other, ecdsa), "NotValidForName");
  assert.equal(await handshake(client, ecdsa), null);
});

Deno.test("verify cache: another chain for a cached name is verified in full", async () => {
  const client = freshClient();
  assert.equal(await handshake(client, ecdsa), null);
  assertTlsError(await handshake(client, wrongName), "NotValidForName");
  assertTlsError(await handshake(client, selfSigned), "UnknownIssuer");
  // A different valid chain for the name is verified and accepted.
  assert.equal(await handshake(client, rsa), null);
  assert.equal(await handshake(client, ecdsa), null);
});

Deno.test("verify cache: other trust anchors do not share the cache", async () => {
  const client = freshClient();
  assert.equal(await handshake(client, ecdsa), null);
  // Trusting only the self-signed certificate: the cached CA chain fails.
  const untrusting = { hostname: "localhost", caCerts: [selfSigned.cert] };
  assertTlsError(await handshake(untrusting, ecdsa), "UnknownIssuer");
});

Deno.test("verify cache: an expired or not yet valid leaf is rejected even when cached", async () => {
  const { notBefore, notAfter } = validity(ecdsa.cert);
  const client = freshClient();
  assert.equal(await handshake(client, ecdsa), null); // cached now
  // The bounds are inclusive, as in webpki.
  assert.equal(await handshake(client, ecdsa, notAfter), null);
  assert.equal(await handshake(client, ecdsa, notBefore), null);
  assertTlsError(await handshake(client, ecdsa, notAfter + 1000), "Expired");
  assertTlsError(
    await handshake(client, ecdsa, notBefore - 1000),
    "NotValidYet",
  );
  // Far outside too, and still valid again afterwards.
  assertTlsError(
    await handshake(client, ecdsa, notAfter + 86_400_000),
    "Expired",
  );
  assert.equal(await handshake(client, ecdsa), null);
  // Expiry found while not cached (a fresh config) is the same error.
  assertTlsError(
    await handshake(freshClient(), ecdsa, notAfter + 1000),
    "Expired",
  );
});
