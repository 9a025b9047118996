// Issue 9, item 7: the peer's certificate, parsed (src/_x509.ts), compared
// with `openssl x509` on the fixtures and on certificates made by openssl
// and Go's crypto/x509, and seen through handshakes with Deno's native TLS.
import assert from "node:assert/strict";
import {
  parseCertificate,
  type PeerCertificate,
  peerCertificate,
  sha256,
} from "../src/_x509.ts";
import { acceptTls, startTls } from "../src/tls.ts";
import {
  der,
  fixture,
  fixturePath,
  randomBytes,
  sha256 as webSha256,
} from "./_helpers.ts";

const decoder = new TextDecoder();
const NAMEOPT = "esc_2253,esc_ctrl,utf8,sep_comma_plus_space,sname";

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local" },
  }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  }
  return decoder.decode(out.stdout);
}

/** What `openssl x509` says of a PEM file, in PeerCertificate's terms. */
async function openssl(pemPath: string): Promise<PeerCertificate> {
  const text = await run("openssl", [
    "x509",
    "-in",
    pemPath,
    "-noout",
    "-subject",
    "-issuer",
    "-serial",
    "-fingerprint",
    "-sha256",
    "-dates",
    "-ext",
    "subjectAltName",
    "-nameopt",
    NAMEOPT,
  ]);
  const field = (name: string) =>
    text.match(new RegExp(`^${name}=(.*)$`, "m"))?.[1] ?? "";
  const sanLine = text.match(/Subject Alternative Name: *\n\s+(.*)/)?.[1];
  return {
    subject: field("subject"),
    issuer: field("issuer"),
    serialNumber: field("serial"),
    fingerprint256: field("sha256 Fingerprint"),
    validFrom: new Date(field("notBefore")),
    validTo: new Date(field("notAfter")),
    subjectAltNames: sanLine === undefined ? [] : sanLine.split(", "),
  };
}

/** Our SAN strings as OpenSSL prints them. */
function asOpenssl(san: string): string {
  const ip = san.match(/^IP:(.*:.*)$/);
  if (ip) {
    // Expand "::" and print the 8 groups as OpenSSL does.
    const [head, tail] = ip[1].split("::");
    const h = head ? head.split(":") : [];
    const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
    const groups = tail === undefined
      ? h
      : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
    return `IP Address:${
      groups.map((g) => parseInt(g, 16).toString(16).toUpperCase()).join(":")
    }`;
  }
  return san
    .replace(/^IP:/, "IP Address:")
    .replace(/^RID:/, "Registered ID:")
    .replace(
      /^DirName:(.*)$/,
      (_, n: string) => `DirName:/${n.split(", ").join("/")}`,
    );
}

async function assertLikeOpenssl(pemPath: string): Promise<PeerCertificate> {
  const ours = parseCertificate(der(await Deno.readTextFile(pemPath)));
  const theirs = await openssl(pemPath);
  assert.equal(ours.subject, theirs.subject, `subject of ${pemPath}`);
  assert.equal(ours.issuer, theirs.issuer, `issuer of ${pemPath}`);
  assert.equal(ours.serialNumber, theirs.serialNumber, `serial of ${pemPath}`);
  assert.equal(ours.fingerprint256, theirs.fingerprint256);
  assert.equal(ours.validFrom.getTime(), theirs.validFrom.getTime());
  assert.equal(ours.validTo.getTime(), theirs.validTo.getTime());
  assert.deepEqual(ours.subjectAltNames.map(asOpenssl), theirs.subjectAltNames);
  return ours;
}

Deno.test("sha256 (sync) equals WebCrypto's", async () => {
  for (
    const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 447, 448, 1000, 100_000]
  ) {
    const data = randomBytes(n);
    const ours = Array.from(
      sha256(data),
      (b) => b.toString(16).padStart(2, "0"),
    )
      .join("");
    assert.equal(ours, await webSha256(data), `length ${n}`);
  }
  // FIPS 180-2 test vector.
  assert.equal(
    Array.from(
      sha256(new TextEncoder().encode("abc")),
      (b) => b.toString(16).padStart(2, "0"),
    ).join(""),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("parseCertificate() agrees with openssl x509 on every fixture", async () => {
  const names = [
    "ca.pem",
    "localhost.pem",
    "rsa.pem",
    "expired.pem",
    "notyet.pem",
    "wrongname.pem",
    "clientauth_only.pem",
    "client.pem",
    "selfsigned.pem",
  ];
  for (const name of names) await assertLikeOpenssl(fixturePath(name));
  const expired = parseCertificate(der(fixture("expired.pem")));
  assert.equal(expired.validFrom.toISOString(), "2000-01-01T00:00:00.000Z");
  assert.equal(expired.validTo.toISOString(), "2001-01-01T00:00:00.000Z");
  const notyet = parseCertificate(der(fixture("notyet.pem")));
  // GeneralizedTime (2050 and later).
  assert.equal(notyet.validTo.toISOString(), "2110-01-01T00:00:00.000Z");
  assert.deepEqual(
    parseCertificate(der(fixture("localhost.pem"))).subjectAltNames,
    ["DNS:localhost", "IP:127.0.0.1", "IP:::1"],
  );
});

Deno.test("parseCertificate() agrees with openssl x509 on a certificate with every kind of name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mimic-x509-" });
  try {
    await Deno.writeTextFile(
      `${dir}/req.cnf`,
      "[req]\ndistinguished_name=dn\n[dn]\n[dir_sect]\nCN=dir name\nO=Org\n",
    );
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${dir}/k.pem`,
      "-config",
      `${dir}/req.cnf`,
      "-utf8",
      "-subj",
      '/C=US/ST=Some\\, State/O=mimic test+OU=unit/CN=Zoë "q" <x>/emailAddress=a@b.example/DC=example',
      "-addext",
      "subjectAltName=DNS:a.example,DNS:*.b.example,IP:10.0.0.1,IP:2001:db8::1,IP:fe80::1:0:0:2,URI:https://x.example/p?q=1,email:me@x.example,RID:1.2.3.4,dirName:dir_sect",
      "-set_serial",
      "0x80a1b2c3d4e5f60718293a4b5c6d7e8f",
      "-days",
      "3",
      "-out",
      `${dir}/c.pem`,
    ]);
    const c = await assertLikeOpenssl(`${dir}/c.pem`);
    assert.equal(
      c.subject,
      'C=US, ST=Some\\, State, OU=unit + O=mimic test, CN=Zoë \\"q\\" \\<x\\>, emailAddress=a@b.example, DC=example',
    );
    assert.equal(c.serialNumber, "80A1B2C3D4E5F60718293A4B5C6D7E8F");
    assert.deepEqual(c.subjectAltNames, [
      "DNS:a.example",
      "DNS:*.b.example",
      "IP:10.0.0.1",
      "IP:2001:db8::1",
      "IP:fe80::1:0:0:2",
      "URI:https://x.example/p?q=1",
      "email:me@x.example",
      "RID:1.2.3.4",
      "DirName:CN=dir name, O=Org",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const GO_CERT = `package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"
)

func main() {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	serial, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	u, _ := url.Parse("spiffe://mimic.test/go")
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Country: []string{"FR"}, Organization: []string{"mimic test"},
			OrganizationalUnit: []string{"go"}, CommonName: "go.mimic.test",
		},
		NotBefore:      time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC),
		NotAfter:       time.Date(2061, 1, 2, 3, 4, 5, 0, time.UTC),
		DNSNames:       []string{"go.mimic.test", "localhost"},
		IPAddresses:    []net.IP{net.ParseIP("192.0.2.7"), net.ParseIP("::1")},
		EmailAddresses: []string{"gopher@mimic.test"},
		URIs:           []*url.URL{u},
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	d, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	pem.Encode(os.Stdout, &pem.Block{Type: "CERTIFICATE", Bytes: d})
}
`;

Deno.test("parseCertificate() agrees with openssl x509 on a certificate made by Go's crypto/x509", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mimic-x509-go-" });
  try {
    await Deno.writeTextFile(`${dir}/main.go`, GO_CERT);
    const pem = await run("/usr/local/go/bin/go", ["run", "main.go"], dir);
    await Deno.writeTextFile(`${dir}/c.pem`, pem);
    const c = await assertLikeOpenssl(`${dir}/c.pem`);
    assert.equal(c.subject, "C=FR, O=mimic test, OU=go, CN=go.mimic.test");
    assert.equal(c.subject, c.issuer);
    assert.equal(c.validFrom.toISOString(), "2024-02-29T12:34:56.000Z");
    assert.equal(c.validTo.toISOString(), "2061-01-02T03:04:05.000Z");
    assert.equal(
      BigInt(`0x${c.serialNumber}`),
      123456789012345678901234567890n,
    );
    assert.deepEqual(c.subjectAltNames, [
      "DNS:go.mimic.test",
      "DNS:localhost",
      "email:gopher@mimic.test",
      "IP:192.0.2.7",
      "IP:::1",
      "URI:spiffe://mimic.test/go",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("peerCertificate in the handshake info, from Deno.listenTls and from Deno.connectTls's client certificate", async () => {
  const ca = fixture("ca.pem");
  const expected = await openssl(fixturePath("localhost.pem"));
  {
    using listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: fixture("localhost.pem"),
      key: fixture("localhost.key"),
    });
    const served = listener.accept().then(async (conn) => {
      await conn.handshake();
      await conn.closeWrite();
      conn.close();
    });
    const tcp = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    const flow = await startTls(tcp, { hostname: "localhost", caCerts: [ca] });
    const info = await flow.handshake();
    assert.equal(info.peerCertificate?.subject, "CN=localhost");
    assert.equal(info.peerCertificate?.issuer, "CN=mimic test CA");
    assert.equal(info.peerCertificate?.fingerprint256, expected.fingerprint256);
    flow.close();
    await served;
  }
  {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const client = Deno.connectTls({
      hostname: "localhost",
      port: listener.addr.port,
      caCerts: [ca],
      cert: fixture("client.pem"),
      key: fixture("client.key"),
    }).then(async (conn) => {
      await new Response(conn.readable).arrayBuffer();
    });
    const conn = await listener.accept();
    const flow = await acceptTls(conn, {
      cert: fixture("localhost.pem"),
      key: fixture("localhost.key"),
      clientCaCerts: [ca],
    });
    const info = await flow.handshake();
    const theirs = await openssl(fixturePath("client.pem"));
    assert.deepEqual(info.peerCertificate, {
      ...theirs,
      subjectAltNames: ["DNS:client.mimic.test"],
    });
    await flow.closeWrite();
    flow.close();
    await client;
  }
});

Deno.test("peerCertificate() is null for no certificate or one that is not X.509; parseCertificate() throws", () => {
  assert.equal(peerCertificate(undefined), null);
  const good = der(fixture("localhost.pem"));
  for (
    const bad of [
      new Uint8Array(),
      new Uint8Array([0x30]),
      new Uint8Array([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
      good.subarray(0, good.length - 10),
      new Uint8Array([0x04, 0x00]),
      randomBytes(300),
    ]
  ) {
    assert.equal(peerCertificate(bad), null);
    assert.throws(() => parseCertificate(bad), Error);
  }
});
