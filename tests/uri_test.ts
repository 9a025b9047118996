// Tests of ./uri: every scheme, the defaults, overriding values with
// replace(), the errors, resolution against real loopback listeners, and a
// seeded fuzz of random strings.
import assert from "node:assert/strict";
import {
  Context,
  empty,
  type Endpoint,
  NotFoundError,
  resolve,
  unfold,
  value,
} from "../mod.ts";
import { serve } from "../src/serve.ts";
import { tcp, unix } from "../src/tcp.ts";
import { tls, type TlsClientOptions, type TlsError } from "../src/tls.ts";
import {
  fromUri,
  host,
  path,
  port,
  query,
  scheme,
  tlsOptions,
  user,
} from "../src/uri.ts";

/** The values fromUri bound, for compact assertions. */
function valuesOf(ctx: Context): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (
    const [name, v] of Object.entries({ scheme, host, port, user, path, query })
  ) {
    const x = ctx.get(v as typeof scheme);
    if (x !== undefined) out[name] = x;
  }
  return out;
}

/** The transport endpoints resolution would try, as [protocol, data]. */
async function endpointsOf(ctx: Context): Promise<[string, unknown][]> {
  const all: Endpoint[] = await unfold(ctx);
  return all
    .filter((e) => e.value === tcp.endpoint || e.value === unix.endpoint)
    .map((e) => [e.value.name, e.data]);
}

Deno.test("fromUri() parses tcp:// URLs into a tcp endpoint", async () => {
  const ctx = fromUri("tcp://127.0.0.1:8080");
  assert.deepEqual(valuesOf(ctx), {
    scheme: "tcp",
    host: "127.0.0.1",
    port: 8080,
  });
  assert.deepEqual(await endpointsOf(ctx), [
    ["tcp", { hostname: "127.0.0.1", port: 8080 }],
  ]);
});

Deno.test("fromUri() normalises the scheme and the host", async () => {
  const ctx = fromUri("TCP://Example.COM:1/x?y=1#frag");
  assert.deepEqual(valuesOf(ctx), {
    scheme: "tcp",
    host: "example.com",
    port: 1,
    path: "/x",
    query: "y=1",
  });
  assert.equal(
    fromUri("tcp://müller.example:1").get(host),
    "xn--mller-kva.example",
  );
  assert.deepEqual(await endpointsOf(ctx), [
    ["tcp", { hostname: "example.com", port: 1 }],
  ]);
});

Deno.test("fromUri() removes the brackets of IPv6 hosts", async () => {
  const ctx = fromUri("tcp://[::1]:8080");
  assert.equal(ctx.get(host), "::1");
  assert.deepEqual(await endpointsOf(ctx), [
    ["tcp", { hostname: "::1", port: 8080 }],
  ]);
  assert.equal(fromUri("http://[0:0:0:0:0:0:0:1]/").get(host), "::1");
  assert.equal(fromUri("git@[::1]:repo.git").get(host), "::1");
});

Deno.test("fromUri() gives http:// and git:// their default ports", async () => {
  const http = fromUri("http://example.com");
  assert.deepEqual(valuesOf(http), {
    scheme: "http",
    host: "example.com",
    port: 80,
    path: "/",
  });
  assert.deepEqual(await endpointsOf(http), [
    ["tcp", { hostname: "example.com", port: 80 }],
  ]);
  assert.deepEqual(valuesOf(fromUri("http://bob:secret@h:8080/a/b%20c?q")), {
    scheme: "http",
    host: "h",
    port: 8080,
    user: "bob",
    path: "/a/b%20c",
    query: "q",
  });
  const git = fromUri("git://example.com/org/repo.git");
  assert.deepEqual(valuesOf(git), {
    scheme: "git",
    host: "example.com",
    port: 9418,
    path: "/org/repo.git",
  });
  assert.deepEqual(await endpointsOf(git), [
    ["tcp", { hostname: "example.com", port: 9418 }],
  ]);
  assert.equal(fromUri("git://h:1234/r").get(port), 1234);
});

Deno.test("fromUri() gives ssh:// values and no endpoint", async () => {
  const ctx = fromUri("ssh://git@example.com/~user/repo.git");
  assert.deepEqual(valuesOf(ctx), {
    scheme: "ssh",
    host: "example.com",
    port: 22,
    user: "git",
    path: "/~user/repo.git",
  });
  assert.deepEqual(await endpointsOf(ctx), []);
  assert.deepEqual(valuesOf(fromUri("ssh://h:2222/r")), {
    scheme: "ssh",
    host: "h",
    port: 2222,
    path: "/r",
  });
  assert.equal(fromUri("ssh://a%40b@h/r").get(user), "a@b");
});

Deno.test("fromUri() reads Git's scp-like addresses as ssh", async () => {
  const ctx = fromUri("git@github.com:org/repo.git");
  assert.deepEqual(valuesOf(ctx), {
    scheme: "ssh",
    host: "github.com",
    port: 22,
    user: "git",
    path: "org/repo.git",
  });
  assert.deepEqual(await endpointsOf(ctx), []);
  assert.deepEqual(valuesOf(fromUri("example.com:/srv/repo")), {
    scheme: "ssh",
    host: "example.com",
    port: 22,
    path: "/srv/repo",
  });
  // Git's [host:port]:path
  assert.deepEqual(valuesOf(fromUri("me@[example.com:2200]:repo")), {
    scheme: "ssh",
    host: "example.com",
    port: 2200,
    user: "me",
    path: "repo",
  });
  // The path may hold ':' and '@'.
  assert.equal(fromUri("host:a:b@c").get(path), "a:b@c");
});

Deno.test("fromUri() does not read drive letters or schemes as scp-like hosts", () => {
  assert.throws(() => fromUri("C:\\repo"), TypeError);
  assert.throws(() => fromUri("c:/repo"), TypeError);
  assert.throws(() => fromUri("tcp:host"), {
    name: "TypeError",
    message: "Cannot parse URL tcp:host: host is missing",
  });
  assert.equal(fromUri("unix:sock").get(scheme), "unix");
});

Deno.test("fromUri() parses unix: URLs into a unix endpoint", async () => {
  for (
    const [uri, file] of [
      ["unix:/tmp/s.sock", "/tmp/s.sock"],
      ["unix:///tmp/s.sock", "/tmp/s.sock"],
      ["unix://localhost/tmp/s.sock", "/tmp/s.sock"],
      ["unix:/tmp/a%20b/s.sock", "/tmp/a b/s.sock"],
      ["unix:relative.sock", "relative.sock"],
    ]
  ) {
    const ctx = fromUri(uri);
    assert.deepEqual(valuesOf(ctx), { scheme: "unix", path: file }, uri);
    assert.deepEqual(await endpointsOf(ctx), [["unix", { path: file }]], uri);
  }
});

Deno.test("fromUri() accepts a URL object", () => {
  assert.deepEqual(valuesOf(fromUri(new URL("tcp://127.0.0.1:9"))), {
    scheme: "tcp",
    host: "127.0.0.1",
    port: 9,
  });
  assert.equal(fromUri(new URL("unix:/tmp/a b")).get(path), "/tmp/a b");
});

Deno.test("fromUri() endpoints follow values replaced later", async () => {
  const ctx = fromUri("http://example.com/old");
  // A redirect: new host, port and path; resolution follows.
  const moved = ctx.replace(host, "127.0.0.1").replace(port, 8080).replace(
    path,
    "/new",
  );
  assert.deepEqual(await endpointsOf(moved), [
    ["tcp", { hostname: "127.0.0.1", port: 8080 }],
  ]);
  assert.equal(moved.get(path), "/new");
  // Replacing the scheme switches the transport.
  assert.deepEqual(await endpointsOf(ctx.replace(scheme, "ssh")), []);
  const unixified = ctx.replace(scheme, "unix").replace(path, "/tmp/s");
  assert.deepEqual(await endpointsOf(unixified), [["unix", {
    path: "/tmp/s",
  }]]);
  // add() works too: the most recent value wins.
  assert.deepEqual(await endpointsOf(ctx.add(port, 81)), [
    ["tcp", { hostname: "example.com", port: 81 }],
  ]);
});

Deno.test("fromUri() adds its fold functions once per context", async () => {
  const first = fromUri("tcp://127.0.0.1:1");
  const redirected = fromUri("http://127.0.0.2/", first);
  assert.deepEqual(await endpointsOf(redirected), [
    ["tcp", { hostname: "127.0.0.2", port: 80 }],
  ]);
  const later = fromUri("unix:/tmp/s", redirected);
  assert.deepEqual(await endpointsOf(later), [["unix", { path: "/tmp/s" }]]);
});

Deno.test("fromUri() keeps what base holds", async () => {
  const tag = value<string>("tag");
  const base = empty.add(tag, "kept").add(tcp.endpoint, {
    hostname: "127.0.0.9",
    port: 9,
  });
  const ctx = fromUri("tcp://127.0.0.1:1", base);
  assert.equal(ctx.get(tag), "kept");
  // Plain endpoints come first, then the ones fold functions compute.
  assert.deepEqual(await endpointsOf(ctx), [
    ["tcp", { hostname: "127.0.0.9", port: 9 }],
    ["tcp", { hostname: "127.0.0.1", port: 1 }],
  ]);
  // A value the new URL lacks keeps the base's.
  assert.equal(fromUri("ssh://h/r", fromUri("ssh://u@h/r")).get(user), "u");
});

Deno.test("fromUri() rejects malformed URLs with a TypeError naming them", () => {
  const cases: [string, string][] = [
    ["", 'Cannot parse URL "": scheme is missing'],
    ["localhost", "Cannot parse URL localhost: scheme is missing"],
    ["/tmp/sock", "Cannot parse URL /tmp/sock: scheme is missing"],
    ["foo://h:1", 'Cannot parse URL foo://h:1: scheme "foo" is not supported'],
    ["tcp://h", "Cannot parse URL tcp://h: port is missing"],
    ["tcp://h:", "Cannot parse URL tcp://h:: port is missing"],
    ["tcp://:80", "Cannot parse URL tcp://:80: host is missing"],
    ["tcp:///x", "Cannot parse URL tcp:///x: host is missing"],
    ["http://", "Cannot parse URL http://: host is missing"],
    ["tcp://h:x", "Cannot parse URL tcp://h:x: port is not a number"],
    ["tcp://h:-1", "Cannot parse URL tcp://h:-1: port is not a number"],
    ["tcp://h:1:2", "Cannot parse URL tcp://h:1:2: port is not a number"],
    ["tcp://a\\b:1", "Cannot parse URL tcp://a\\b:1: host is invalid"],
    ["tcp://[::1:80", "Cannot parse URL tcp://[::1:80: host is invalid"],
    ["tcp://[nope]:80", "Cannot parse URL tcp://[nope]:80: host is invalid"],
    [
      "http://1.2.3.4.5/",
      "Cannot parse URL http://1.2.3.4.5/: host is invalid",
    ],
    ["ssh://@h/r", "Cannot parse URL ssh://@h/r: user is empty"],
    ["host:", "Cannot parse URL host:: path is missing"],
    ["unix:", "Cannot parse URL unix:: path is missing"],
    ["unix://", "Cannot parse URL unix://: path is missing"],
    [
      "unix://h/s",
      "Cannot parse URL unix://h/s: a unix socket URL takes no host",
    ],
    ["unix:/a%00b", "Cannot parse URL unix:/a%00b: path contains a NUL byte"],
    [
      "tcp://h :1",
      "Cannot parse URL tcp://h :1: it contains a space or a control character",
    ],
  ];
  for (const [uri, message] of cases) {
    assert.throws(() => fromUri(uri), { name: "TypeError", message }, uri);
  }
});

Deno.test("fromUri() rejects ports out of range with a RangeError", () => {
  for (const p of ["0", "65536", "70000", "99999999999999999999999"]) {
    const uri = `tcp://h:${p}`;
    assert.throws(() => fromUri(uri), {
      name: "RangeError",
      message: `Cannot parse URL ${uri}: port is out of range`,
    });
  }
  assert.throws(() => fromUri("me@[h:0]:r"), RangeError);
  assert.equal(fromUri("tcp://h:65535").get(port), 65535);
  assert.equal(fromUri("tcp://h:1").get(port), 1);
});

// --- Against real loopback listeners ----------------------------------------

async function echo(flow: {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
}): Promise<void> {
  const buf = new Uint8Array(1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    await flow.write(buf.subarray(0, n));
  }
}

async function roundTrip(ctx: Context): Promise<string> {
  await using flow = await resolve(ctx);
  await flow.write(new TextEncoder().encode("hello"));
  await flow.closeWrite();
  const buf = new Uint8Array(16);
  let text = "";
  for (let n; (n = await flow.read(buf)) !== null;) {
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  return text;
}

Deno.test("resolve(fromUri(tcp://127.0.0.1:port)) connects a loopback listener", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using _server = serve(listener, echo);
  const ctx = fromUri(`tcp://127.0.0.1:${listener.addr.port}`);
  assert.equal(await roundTrip(ctx), "hello");
  const flow = await resolve(ctx);
  assert.ok(tcp.is(flow));
  flow.close();
});

Deno.test("resolve(fromUri(unix:path)) connects a Unix socket listener", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const socket = `${dir}/echo sock`;
    const listener = Deno.listen({ transport: "unix", path: socket });
    await using _server = serve(listener, echo);
    const encoded = `unix:${socket.replace(" ", "%20")}`;
    assert.equal(await roundTrip(fromUri(encoded)), "hello");
    assert.equal(
      await roundTrip(fromUri(`unix://${encoded.slice(5)}`)),
      "hello",
    );
    const flow = await resolve(fromUri(encoded));
    assert.ok(unix.is(flow));
    flow.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resolve(fromUri(...)) follows a replaced port to the listener", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using _server = serve(listener, echo);
  // Port 1 on loopback refuses; the replaced port is the one tried.
  const ctx = fromUri("tcp://127.0.0.1:1").replace(port, listener.addr.port);
  assert.equal(await roundTrip(ctx), "hello");
});

// --- Fuzz -------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so failures reproduce. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  "tcp",
  "TCP",
  "unix",
  "http",
  "https",
  "git",
  "ssh",
  "tls",
  "foo",
  "c",
  "://",
  ":",
  ":",
  "//",
  "/",
  "/",
  "@",
  "@",
  "[",
  "]",
  "::1",
  "[::1]",
  "%",
  "%20",
  "%00",
  "%zz",
  "?",
  "#",
  "\\",
  " ",
  "\t",
  "\n",
  "\0",
  "\u00e9",
  "\u{1f600}",
  "\ud800",
  "xn--",
  ".",
  "..",
  "-",
  "127.0.0.1",
  "localhost",
  "0",
  "1",
  "22",
  "80",
  "65535",
  "65536",
  "99999",
  "0x7f",
  "a",
  "b",
  "host",
  "user",
  "repo.git",
  "~",
];

Deno.test("fromUri() on random strings returns a Context or throws TypeError/RangeError", () => {
  const random = prng(0x5eed);
  const supported = new Set([
    "tcp",
    "http",
    "git",
    "ssh",
    "unix",
    "tls",
    "https",
  ]);
  for (let i = 0; i < 5000; i++) {
    let s = "";
    const n = Math.floor(random() * 10);
    for (let j = 0; j < n; j++) {
      s += random() < 0.8
        ? PIECES[Math.floor(random() * PIECES.length)]
        : String.fromCharCode(Math.floor(random() * 0x3000));
    }
    let ctx: Context;
    try {
      ctx = fromUri(s);
    } catch (e) {
      assert.ok(
        e instanceof TypeError || e instanceof RangeError,
        `${JSON.stringify(s)} threw ${e}`,
      );
      assert.ok(
        (e as Error).message.startsWith("Cannot parse URL "),
        (e as Error).message,
      );
      continue;
    }
    assert.ok(ctx instanceof Context, JSON.stringify(s));
    assert.ok(supported.has(ctx.get(scheme)!), JSON.stringify(s));
    const p = ctx.get(port);
    if (p !== undefined) {
      assert.ok(Number.isInteger(p) && p >= 1 && p <= 65535, JSON.stringify(s));
    }
    if (ctx.get(scheme) !== "unix") assert.ok(ctx.get(host), JSON.stringify(s));
  }
});

// --- TLS: tls:// and https:// -----------------------------------------------

const fixture = (name: string): Promise<string> =>
  Deno.readTextFile(new URL(`./fixtures/${name}`, import.meta.url));

/** The tls endpoints resolution would try, each with its `over` unfolded. */
async function tlsEndpointsOf(
  ctx: Context,
): Promise<{ options: TlsClientOptions; over: [string, unknown][] }[]> {
  const out = [];
  for (const e of await unfold(ctx)) {
    if (e.value !== tls.endpoint) continue;
    const { over, ...options } = e.data as TlsClientOptions & {
      over: Context;
    };
    out.push({ options, over: await endpointsOf(over) });
  }
  return out;
}

Deno.test("fromUri() parses tls:// URLs into a tls endpoint over tcp", async () => {
  const ctx = fromUri("tls://127.0.0.1:8443");
  assert.deepEqual(valuesOf(ctx), {
    scheme: "tls",
    host: "127.0.0.1",
    port: 8443,
  });
  assert.deepEqual(await endpointsOf(ctx), []);
  assert.deepEqual(await tlsEndpointsOf(ctx), [{
    options: { hostname: "127.0.0.1" },
    over: [["tcp", { hostname: "127.0.0.1", port: 8443 }]],
  }]);
  assert.deepEqual(await tlsEndpointsOf(fromUri("TLS://[::1]:1/x")), [{
    options: { hostname: "::1" },
    over: [["tcp", { hostname: "::1", port: 1 }]],
  }]);
  assert.throws(() => fromUri("tls://localhost"), {
    name: "TypeError",
    message: "Cannot parse URL tls://localhost: port is missing",
  });
  assert.throws(() => fromUri("tls://localhost:0"), RangeError);
});

Deno.test("fromUri() parses https:// URLs: port 443, path /, ALPN http/1.1", async () => {
  const ctx = fromUri("https://Example.com");
  assert.deepEqual(valuesOf(ctx), {
    scheme: "https",
    host: "example.com",
    port: 443,
    path: "/",
  });
  assert.deepEqual(await tlsEndpointsOf(ctx), [{
    options: { hostname: "example.com", alpnProtocols: ["http/1.1"] },
    over: [["tcp", { hostname: "example.com", port: 443 }]],
  }]);
  assert.deepEqual(valuesOf(fromUri("https://u@h:8443/a%20b?q=1#f")), {
    scheme: "https",
    host: "h",
    port: 8443,
    user: "u",
    path: "/a%20b",
    query: "q=1",
  });
  // Each endpoint gets its own ALPN list: mutating one changes no other.
  const [a] = await tlsEndpointsOf(ctx);
  a.options.alpnProtocols!.push("h2");
  const [b] = await tlsEndpointsOf(ctx);
  assert.deepEqual(b.options.alpnProtocols, ["http/1.1"]);
});

Deno.test("fromUri() merges tlsOptions into the tls endpoint", async () => {
  const ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
  const ctx = fromUri("https://localhost:8443/x").add(tlsOptions, {
    caCerts: [ca],
  });
  assert.deepEqual(await tlsEndpointsOf(ctx), [{
    options: {
      hostname: "localhost",
      alpnProtocols: ["http/1.1"],
      caCerts: [ca],
    },
    over: [["tcp", { hostname: "localhost", port: 8443 }]],
  }]);
  // In the base, before fromUri, works as well.
  const before = fromUri(
    "tls://127.0.0.1:1",
    empty.add(tlsOptions, { caCerts: [ca] }),
  );
  assert.deepEqual((await tlsEndpointsOf(before))[0].options, {
    hostname: "127.0.0.1",
    caCerts: [ca],
  });
  // A field given wins over the URL's: ALPN, the name to verify; a field
  // set to undefined overrides nothing. The most recent value counts.
  const custom = ctx.add(tlsOptions, {
    hostname: "example.test",
    alpnProtocols: ["h2"],
    cert: "c",
    key: "k",
    caCerts: undefined,
    unsafelyIgnoreCertificateErrors: true,
  });
  assert.deepEqual(await tlsEndpointsOf(custom), [{
    options: {
      hostname: "example.test",
      alpnProtocols: ["h2"],
      cert: "c",
      key: "k",
      unsafelyIgnoreCertificateErrors: true,
    },
    over: [["tcp", { hostname: "localhost", port: 8443 }]],
  }]);
  // The other schemes ignore it.
  const plain = fromUri("tcp://127.0.0.1:1").add(tlsOptions, { caCerts: [ca] });
  assert.deepEqual(await tlsEndpointsOf(plain), []);
  assert.deepEqual(await endpointsOf(plain), [
    ["tcp", { hostname: "127.0.0.1", port: 1 }],
  ]);
});

Deno.test("fromUri() tls endpoints follow redirects, keeping tlsOptions", async () => {
  const ca = "-----BEGIN CERTIFICATE-----\ny\n-----END CERTIFICATE-----\n";
  const ctx = fromUri("https://a.example/old").add(tlsOptions, {
    caCerts: [ca],
  });
  const moved = ctx.replace(host, "b.example").replace(port, 8443);
  assert.deepEqual(await tlsEndpointsOf(moved), [{
    options: {
      hostname: "b.example",
      alpnProtocols: ["http/1.1"],
      caCerts: [ca],
    },
    over: [["tcp", { hostname: "b.example", port: 8443 }]],
  }]);
  // https -> http: a tcp endpoint, no tls one.
  const down = ctx.replace(scheme, "http").replace(port, 80);
  assert.deepEqual(await tlsEndpointsOf(down), []);
  assert.deepEqual(await endpointsOf(down), [
    ["tcp", { hostname: "a.example", port: 80 }],
  ]);
  // http -> https, by replace or by fromUri on the context (folds reused).
  const up = fromUri("http://c.example/").replace(scheme, "https").replace(
    port,
    443,
  );
  assert.deepEqual((await tlsEndpointsOf(up)).map((e) => e.over), [
    [["tcp", { hostname: "c.example", port: 443 }]],
  ]);
  const again = fromUri("https://d.example:9443/new", ctx);
  assert.deepEqual(await tlsEndpointsOf(again), [{
    options: {
      hostname: "d.example",
      alpnProtocols: ["http/1.1"],
      caCerts: [ca],
    },
    over: [["tcp", { hostname: "d.example", port: 9443 }]],
  }]);
  assert.equal(again.get(path), "/new");
  // tls:// has no ALPN of its own, even after https.
  const raw = fromUri("tls://127.0.0.1:7", again);
  assert.deepEqual((await tlsEndpointsOf(raw))[0].options, {
    hostname: "127.0.0.1",
    caCerts: [ca],
  });
});

/** A Deno.listenTls server with the fixture certificate that echoes. */
async function listenTlsEcho(
  alpnProtocols?: string[],
): Promise<{ port: number; served: Promise<void>; close(): void }> {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: await fixture("localhost.pem"),
    key: await fixture("localhost.key"),
    alpnProtocols,
  });
  const conns = new Set<Promise<void>>();
  const served = (async () => {
    try {
      for await (const conn of listener) {
        const task = echo(conn).then(() => conn.closeWrite()).catch(() => {})
          .finally(() => {
            try {
              conn.close();
            } catch {
              // Closed already.
            }
          });
        conns.add(task);
        task.then(() => conns.delete(task));
      }
    } catch {
      // Closed.
    }
    await Promise.all(conns);
  })();
  return {
    port: listener.addr.port,
    served,
    close: () => listener.close(),
  };
}

Deno.test("resolve(fromUri(tls://...)) connects a Deno.listenTls server, trusting tlsOptions' CA", async () => {
  const server = await listenTlsEcho();
  try {
    const ca = await fixture("ca.pem");
    for (
      const uri of [
        `tls://127.0.0.1:${server.port}`,
        `tls://localhost:${server.port}`,
      ]
    ) {
      const ctx = fromUri(uri).add(tlsOptions, { caCerts: [ca] });
      assert.equal(await roundTrip(ctx), "hello", uri);
      await using flow = await resolve(ctx);
      assert.ok(tls.is(flow), uri);
      const info = await flow.handshake();
      assert.equal(info.protocol, "TLSv1.3");
      assert.equal(info.alpnProtocol, null);
    }
  } finally {
    server.close();
    await server.served;
  }
});

Deno.test("resolve(fromUri(tls://...)) without the CA fails: UnknownIssuer", async () => {
  const server = await listenTlsEcho();
  try {
    await assert.rejects(
      resolve(fromUri(`tls://127.0.0.1:${server.port}`)),
      NotFoundError,
    );
    try {
      await resolve(fromUri(`tls://localhost:${server.port}`));
      assert.fail("resolved without trusting the CA");
    } catch (e) {
      assert.ok(e instanceof NotFoundError, String(e));
      assert.deepEqual(
        e.attempts.map((a) => [a.name, (a.error as TlsError).code]),
        [["tls", "UnknownIssuer"]],
      );
    }
    // The wrong name: the certificate is not valid for wrong.example.
    const wrong = fromUri(`tls://127.0.0.1:${server.port}`).add(tlsOptions, {
      caCerts: [await fixture("ca.pem")],
      hostname: "wrong.example",
    });
    try {
      await resolve(wrong);
      assert.fail("resolved with a name the certificate is not valid for");
    } catch (e) {
      assert.ok(e instanceof NotFoundError, String(e));
      assert.equal((e.attempts[0].error as TlsError).code, "NotValidForName");
    }
  } finally {
    server.close();
    await server.served;
  }
});

Deno.test("resolve(fromUri(https://...)) negotiates ALPN http/1.1 and follows a redirect", async () => {
  const server = await listenTlsEcho(["h2", "http/1.1"]);
  try {
    const ca = await fixture("ca.pem");
    // Port 1 refuses; the redirect replaces it with the listener's.
    const ctx = fromUri("https://localhost:1/x").add(tlsOptions, {
      caCerts: [ca],
    }).replace(port, server.port);
    await using flow = await resolve(ctx);
    assert.ok(tls.is(flow));
    assert.equal((await flow.handshake()).alpnProtocol, "http/1.1");
    assert.equal(ctx.get(path), "/x");
  } finally {
    server.close();
    await server.served;
  }
});
