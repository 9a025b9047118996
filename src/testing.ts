/**
 * A test PKI, as PEM strings, for tests and examples: a CA, a server
 * certificate for `localhost`, `127.0.0.1` and `::1`, and a client
 * certificate, each with its private key.
 *
 * **For tests and examples only: the private keys are public.** They are
 * published with this package and anyone can read them, so a peer that
 * trusts {@linkcode testPki}`.ca` trusts anyone. Never put `testPki.ca` in
 * the `caCerts` of a program that talks to real peers, and never serve
 * real traffic with `testPki.server`.
 *
 * The certificates are ECDSA P-256 with SHA-256, valid from 2026-11-28 to
 * 2126-11-04, the same as this repository's `tests/fixtures` (`ca.pem`,
 * `localhost.pem`, `localhost.key`, `client.pem`, `client.key`; a test keeps
 * them equal). This entry point has no dependency and uses no `Deno` API.
 *
 * @example TLS over an in-memory pipe, both ends ours
 * ```ts
 * import { acceptTls, startTls } from "@mimic/mimic/tls";
 * import { pipe } from "@mimic/mimic/pipe";
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const [client, server] = await Promise.all([
 *   startTls(a, { hostname: "localhost", caCerts: [testPki.ca] }),
 *   acceptTls(b, testPki.server),
 * ]);
 * const { peerCertificate } = await client.handshake();
 * assert.equal(peerCertificate?.subject, "CN=localhost");
 * client.close();
 * server.close();
 * ```
 *
 * @module
 */

/** A certificate and its private key, PEM. */
export interface TestIdentity {
  /** The certificate, PEM (`-----BEGIN CERTIFICATE-----`). */
  readonly cert: string;
  /** Its private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Public! */
  readonly key: string;
}

/** The shape of {@linkcode testPki}. */
export interface TestPki {
  /** The CA certificate (`CN=mimic test CA`), PEM: for `caCerts` and `clientCaCerts`. */
  readonly ca: string;
  /**
   * A server certificate issued by the CA (`CN=localhost`; SANs
   * `DNS:localhost`, `IP:127.0.0.1`, `IP:::1`; extended key usage
   * serverAuth) and its key: usable as `TlsServerOptions` as it is.
   */
  readonly server: TestIdentity;
  /**
   * A client certificate issued by the CA (`CN=client.mimic.test`; extended
   * key usage clientAuth) and its key, for mutual TLS.
   */
  readonly client: TestIdentity;
}

/**
 * The test PKI. **For tests and examples only: the private keys are
 * public** (see the module documentation). Frozen.
 *
 * @example Mutual TLS: the server requires a client certificate
 * ```ts
 * import { acceptTls, startTls } from "@mimic/mimic/tls";
 * import { pipe } from "@mimic/mimic/pipe";
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const [client, server] = await Promise.all([
 *   startTls(a, { hostname: "localhost", caCerts: [testPki.ca], ...testPki.client }),
 *   acceptTls(b, { ...testPki.server, clientCaCerts: [testPki.ca] }),
 * ]);
 * const { peerCertificate } = await server.handshake();
 * assert.equal(peerCertificate?.subject, "CN=client.mimic.test");
 * client.close();
 * server.close();
 * ```
 *
 * @example Deno's own TLS with the same certificates
 * ```ts
 * import { testPki } from "@mimic/mimic/testing";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...testPki.server });
 * const served = listener.accept().then(async (conn) => {
 *   await conn.write(new TextEncoder().encode("hi"));
 *   conn.close();
 * });
 * const conn = await Deno.connectTls({
 *   hostname: "localhost",
 *   port: listener.addr.port,
 *   caCerts: [testPki.ca],
 * });
 * assert.equal(await new Response(conn.readable).text(), "hi");
 * await served;
 * ```
 */
export const testPki: TestPki = Object.freeze({
  ca: `-----BEGIN CERTIFICATE-----
MIIBdjCCARygAwIBAgIUBF/TJ2ToifiNTPx48Bct3UNxtiMwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNbWltaWMgdGVzdCBDQTAgFw0yNjExMjgwNjM1MzVaGA8yMTI2
MTEwNDA2MzUzNVowGDEWMBQGA1UEAwwNbWltaWMgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABIgorGDBoPFBoOCJ4u39DiwVdQ8ZHRkZ7/lEzl6x89Vm
t9BY7RGaa09/EgrTw6GjWDTlYuSA85nMXP+Y6swLRKqjQjBAMA8GA1UdEwEB/wQF
MAMBAf8wDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSRPGEQfYeaD5JSoHzhdnk5
DDW4ZDAKBggqhkjOPQQDAgNIADBFAiEAqeFGaRJUfByMPljFfZWcV+fr11s20bDX
VXZ32owKjKcCIBR5of0Yjw+5FJ+32iFl2dXhsz3WRVLh7Ff+CFfeR2+E
-----END CERTIFICATE-----
`,
  server: Object.freeze({
    cert: `-----BEGIN CERTIFICATE-----
MIIBwjCCAWmgAwIBAgICEAAwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNbWltaWMg
dGVzdCBDQTAgFw0yNjExMjgwNjM1MzVaGA8yMTI2MTEwNDA2MzUzNVowFDESMBAG
A1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEL2fjFYsE
j3fC3Adl8TEQhgJOzr359xEF7lFKPDyUUsYbDoMI408NywtnRU226VSLCwvoS7kf
C4BJAKfImgaLIaOBpDCBoTAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIFoDAT
BgNVHSUEDDAKBggrBgEFBQcDATAsBgNVHREEJTAjgglsb2NhbGhvc3SHBH8AAAGH
EAAAAAAAAAAAAAAAAAAAAAEwHQYDVR0OBBYEFI21/xxNFA263l0Pk/IB5rGxMsC2
MB8GA1UdIwQYMBaAFJE8YRB9h5oPklKgfOF2eTkMNbhkMAoGCCqGSM49BAMCA0cA
MEQCIGj44RLTsUT+Hd9nfY/ngsMlPetMIQ/ROaaiKL+qbXVQAiBoec7qE7V1EBRl
puFXQXNkrMJga7FxQdgPZ//t+zJxWA==
-----END CERTIFICATE-----
`,
    key: `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTvfPSN7NWFNwIpRQ
lMtppPJfJWa3122igDTc0IgUKlShRANCAAQvZ+MViwSPd8LcB2XxMRCGAk7Ovfn3
EQXuUUo8PJRSxhsOgwjjTw3LC2dFTbbpVIsLC+hLuR8LgEkAp8iaBosh
-----END PRIVATE KEY-----
`,
  }),
  client: Object.freeze({
    cert: `-----BEGIN CERTIFICATE-----
MIIBuzCCAWGgAwIBAgICEAYwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNbWltaWMg
dGVzdCBDQTAgFw0yNjExMjgwNjM1MzVaGA8yMTI2MTEwNDA2MzUzNVowHDEaMBgG
A1UEAwwRY2xpZW50Lm1pbWljLnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AASPqVU5rdyJa3IXPPMxMm/9qwAmiLqyoqhwy5WRPXY/XUjF0yapYBldcBF3I5NC
BFBfPrAuwXJQg3/vBZz1YrXUo4GUMIGRMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/
BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMCMBwGA1UdEQQVMBOCEWNsaWVudC5t
aW1pYy50ZXN0MB0GA1UdDgQWBBSCpzmaBYUKyyOYeKaefzjx9rYQKjAfBgNVHSME
GDAWgBSRPGEQfYeaD5JSoHzhdnk5DDW4ZDAKBggqhkjOPQQDAgNIADBFAiEA8Uv3
NJu+URXC9hkYvwTiBIjhCE5tDxsvpUWqS9ZY3hQCIDDFjqQz74r65lO22T1wt3bi
8PRJ/1989ql1cTEK8XBz
-----END CERTIFICATE-----
`,
    key: `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWPrFftaaKiCnekKT
f9YG4/xQ9jmIPB7roMAytzbig++hRANCAASPqVU5rdyJa3IXPPMxMm/9qwAmiLqy
oqhwy5WRPXY/XUjF0yapYBldcBF3I5NCBFBfPrAuwXJQg3/vBZz1YrXU
-----END PRIVATE KEY-----
`,
  }),
});
