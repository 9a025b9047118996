// Proxy routing and schemes in `./uri`: curl's environment rules
// (`proxyFromEnv`, table-driven), `fromUri(url, { proxy })` endpoint shapes,
// `defineScheme`, and connections through real proxies: tinyproxy (with and
// without BasicAuth), stunnel in front of tinyproxy (an https:// proxy, TLS
// inside TLS), Dante (with and without RFC 1929 credentials) and OpenSSH's
// `ssh -D`. Only loopback is used.
import assert from "node:assert/strict";
import {
  type Endpoint,
  type Flow,
  NotFoundError,
  resolve,
  unfold,
} from "../mod.ts";
import { socks, type SocksEndpoint, SocksError } from "../src/socks.ts";
import { tcp } from "../src/tcp.ts";
import { tls, TlsError } from "../src/tls.ts";
import { tunnel, TunnelError } from "../src/tunnel.ts";
import {
  defineScheme,
  fromUri,
  host,
  port,
  proxy,
  proxyFromEnv,
  tlsOptions,
} from "../src/uri.ts";
import { randomBytes, roundTrip } from "./_helpers.ts";
import { startDante } from "./servers/dante.ts";
import { startEchoServer, startTlsEchoOnce } from "./servers/echo.ts";
import { startSshd } from "./servers/sshd.ts";
import { startSshSocks } from "./servers/ssh_socks.ts";
import { startStunnel } from "./servers/stunnel.ts";
import { startTinyproxy } from "./servers/tinyproxy.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const certPath = new URL("localhost.pem", fixtures).pathname;
const keyPath = new URL("localhost.key", fixtures).pathname;
const ca = await Deno.readTextFile(new URL("ca.pem", fixtures));
const cert = await Deno.readTextFile(certPath);
const key = await Deno.readTextFile(keyPath);

// --- proxyFromEnv: curl's rules --------------------------------------------

/** Whether fromUri knows a scheme. */
function knows(name: string): boolean {
  try {
    fromUri(`${name}://h/`);
    return true;
  } catch {
    return false;
  }
}

Deno.test("proxyFromEnv() picks the variable curl picks", async (t) => {
  const P = "http://p:1";
  const Q = "http://q:2";
  const R = "http://r:3";
  const cases: [string, Record<string, string>, string | undefined][] = [
    ["http://h/", { http_proxy: P }, P],
    ["http://h/", { HTTP_PROXY: P }, undefined], // lower case only (httpoxy)
    ["http://h/", { HTTP_PROXY: P, all_proxy: Q }, Q],
    ["https://h/", { https_proxy: P }, P],
    ["https://h/", { HTTPS_PROXY: P }, P],
    ["https://h/", { https_proxy: P, HTTPS_PROXY: Q }, P],
    ["https://h/", { http_proxy: P }, undefined],
    ["https://h/", { all_proxy: Q, ALL_PROXY: R }, Q],
    ["https://h/", { ALL_PROXY: R }, R],
    ["https://h/", { https_proxy: "", ALL_PROXY: R }, R], // empty is unset
    ["https://h/", { https_proxy: "  ", all_proxy: Q }, Q],
    ["tcp://h:1", { tcp_proxy: P }, P],
    ["tcp://h:1", { TCP_PROXY: P }, P],
    ["tcp://h:1", { http_proxy: P }, undefined],
    ["redis://h", { REDIS_PROXY: P, all_proxy: Q }, P],
    ["tls://h:1", { all_proxy: "socks5h://s:1080" }, "socks5h://s:1080"],
    ["git://h/r", { all_proxy: "p:3128" }, "http://p:3128"], // no scheme: http
    ["unix:/run/s.sock", { all_proxy: P }, undefined],
    ["https://h/", {}, undefined],
  ];
  // ws: and wss: read http's and https's variables (once ./uri knows them).
  if (knows("ws")) {
    cases.push(
      ["ws://h/", { http_proxy: P, ws_proxy: Q }, P],
      ["wss://h/", { HTTPS_PROXY: P }, P],
    );
  }
  for (const [url, env, expected] of cases) {
    await t.step(`${url} ${JSON.stringify(env)}`, () => {
      assert.equal(proxyFromEnv(url, env), expected);
    });
  }
});

Deno.test("proxyFromEnv() honours no_proxy as curl does", async (t) => {
  const P = "http://p:1";
  // [url, no_proxy, goes direct]
  const cases: [string, string, boolean][] = [
    ["https://example.com/", "*", true],
    ["https://example.com/", " * ", true],
    ["https://example.com/", "example.com", true],
    ["https://EXAMPLE.com./", "example.com", true],
    ["https://www.example.com/", "example.com", true],
    ["https://www.example.com/", ".example.com", true],
    ["https://example.com/", ".example.com", true],
    ["https://a.b.example.com/", "example.com.", true],
    ["https://notexample.com/", "example.com", false],
    ["https://example.com.evil/", "example.com", false],
    ["https://example.com/", "www.example.com", false],
    ["https://www.example.com/", "*.example.com", true], // extension
    ["https://example.com/", "other.org, example.com", true],
    ["https://example.com/", "other.org example.com", true],
    ["https://example.com/", "other.org,,example.com,", true],
    ["https://example.com/", "localhost,*", true], // extension
    ["https://localhost/", "localhost", true],
    ["https://localhost/", "127.0.0.1", false], // names are not resolved
    ["https://127.0.0.1/", "127.0.0.1", true],
    ["https://127.0.0.1/", "localhost", false],
    ["https://127.0.0.2/", "127.0.0.1", false],
    ["https://10.1.2.3/", "10.0.0.0/8", true],
    ["https://11.1.2.3/", "10.0.0.0/8", false],
    ["https://192.168.7.9/", "192.168.4.0/22", true],
    ["https://192.168.8.9/", "192.168.4.0/22", false],
    ["https://1.2.3.4/", "0.0.0.0/0", true],
    ["https://[::1]/", "::1", true],
    ["https://[::1]/", "[::1]", true], // extension
    ["https://[::1]/", "::2", false],
    ["https://[fe80::1]/", "fe80::/10", true],
    ["https://[fec0::1]/", "fe80::/10", false],
    ["https://[::1]/", "127.0.0.1", false],
    ["https://127.0.0.1/", "::1", false],
    ["https://example.com:8443/", "example.com:8443", true], // extension
    ["https://example.com/", "example.com:8443", false],
    ["https://127.0.0.1:8080/", "127.0.0.1:8080", true],
    ["https://[::1]:8080/", "[::1]:8080", true],
    ["https://[::1]:8081/", "[::1]:8080", false],
    // Malformed patterns are skipped; the others still count.
    ["https://10.1.2.3/", "10.0.0.0/33", false],
    ["https://10.1.2.3/", "10.0.0.0/x,10.1.2.3", true],
    ["https://10.1.2.3/", "10.0.0.0/8/8", false],
    ["https://example.com/", "example.com:99999", false],
    ["https://example.com/", "example.com:http", false],
    ["https://[::1]/", "[::1", false],
    ["https://[::1]/", "::1/129", false],
    ["https://example.com/", "*.", false],
    ["https://example.com/", "ex*.com", false],
    ["https://example.com/", ".", false],
    ["https://example.com/", "[::1,example.com", true],
  ];
  for (const [url, noProxy, direct] of cases) {
    await t.step(`${url} no_proxy=${JSON.stringify(noProxy)}`, () => {
      assert.equal(
        proxyFromEnv(url, { https_proxy: P, no_proxy: noProxy }),
        direct ? undefined : P,
      );
    });
  }
  await t.step("NO_PROXY when no_proxy is unset or empty", () => {
    const env = { https_proxy: P, NO_PROXY: "example.com" };
    assert.equal(proxyFromEnv("https://example.com/", env), undefined);
    assert.equal(
      proxyFromEnv("https://example.com/", { ...env, no_proxy: "" }),
      undefined,
    );
    assert.equal(
      proxyFromEnv("https://example.com/", { ...env, no_proxy: "other" }),
      P,
    );
  });
});

Deno.test("proxyFromEnv() reads Deno.env by default", () => {
  const names = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
  const saved = names.map((n) => Deno.env.get(n));
  const savedNoProxy = [Deno.env.get("no_proxy"), Deno.env.get("NO_PROXY")];
  try {
    for (const n of [...names, "no_proxy", "NO_PROXY"]) Deno.env.delete(n);
    Deno.env.set("HTTPS_PROXY", "socks5://127.0.0.1:9");
    Deno.env.set("NO_PROXY", ".local");
    assert.equal(proxyFromEnv("https://a.example/"), "socks5://127.0.0.1:9");
    assert.equal(proxyFromEnv("https://a.local/"), undefined);
  } finally {
    names.forEach((n, i) =>
      saved[i] === undefined ? Deno.env.delete(n) : Deno.env.set(n, saved[i]!)
    );
    ["no_proxy", "NO_PROXY"].forEach((n, i) =>
      savedNoProxy[i] === undefined
        ? Deno.env.delete(n)
        : Deno.env.set(n, savedNoProxy[i]!)
    );
  }
});

Deno.test("proxyFromEnv() rejects a URL fromUri rejects", () => {
  assert.throws(() => proxyFromEnv("nope://h", {}), TypeError);
  assert.throws(() => proxyFromEnv("tcp://h", {}), TypeError);
});

// --- fromUri(url, { proxy }): the endpoints --------------------------------

/** The one endpoint of a protocol among what `ctx` unfolds to. */
async function only(
  ctx: ReturnType<typeof fromUri>,
  value: Endpoint["value"],
): Promise<unknown> {
  const all = await unfold(ctx);
  const found = all.filter((e) => e.value === value);
  assert.equal(found.length, 1, `one ${value.name} endpoint`);
  return found[0].data;
}

async function endpointNames(ctx: ReturnType<typeof fromUri>) {
  return (await unfold(ctx)).map((e) => e.value.name).filter((n) =>
    ["tcp", "tls", "tunnel", "socks", "unix"].includes(n)
  );
}

Deno.test("fromUri() routes through each kind of proxy", async (t) => {
  await t.step("no proxy: tcp", async () => {
    const ctx = fromUri("tcp://h:1");
    assert.deepEqual(await endpointNames(ctx), ["tcp"]);
    assert.deepEqual(await only(ctx, tcp.endpoint), { hostname: "h", port: 1 });
  });
  await t.step("http:// proxy: tunnel over tcp", async () => {
    const ctx = fromUri("tcp://h:1", { proxy: "http://p:3128" });
    assert.deepEqual(await endpointNames(ctx), ["tunnel"]);
    const e = await only(ctx, tunnel.endpoint) as {
      proxy: ReturnType<typeof fromUri>;
      target: unknown;
      headers?: unknown;
    };
    assert.deepEqual(e.target, { hostname: "h", port: 1 });
    assert.equal(e.headers, undefined);
    assert.deepEqual(await only(e.proxy, tcp.endpoint), {
      hostname: "p",
      port: 3128,
    });
  });
  await t.step("a proxy without a scheme or port: http, port 80", async () => {
    const ctx = fromUri("tcp://h:1", { proxy: "p" });
    const e = await only(ctx, tunnel.endpoint) as {
      proxy: ReturnType<typeof fromUri>;
    };
    assert.deepEqual(await only(e.proxy, tcp.endpoint), {
      hostname: "p",
      port: 80,
    });
  });
  await t.step("credentials: Proxy-Authorization: Basic, UTF-8", async () => {
    const ctx = fromUri("tcp://h:1", {
      proxy: new URL("http://al%20ice:p%C3%A4ss%3Aw@p:3128"),
    });
    const e = await only(ctx, tunnel.endpoint) as { headers: unknown };
    const bytes = new TextEncoder().encode("al ice:päss:w");
    assert.deepEqual(e.headers, {
      "Proxy-Authorization": `Basic ${btoa(String.fromCharCode(...bytes))}`,
    });
  });
  await t.step("https:// proxy: tunnel over tls over tcp", async () => {
    const ctx = fromUri("https://target.example/x", {
      proxy: "https://p.example",
      proxyTls: { caCerts: ["CA"] },
    });
    assert.deepEqual(await endpointNames(ctx), ["tls"]);
    const outer = await only(ctx, tls.endpoint) as {
      hostname: string;
      over: ReturnType<typeof fromUri>;
    };
    assert.equal(outer.hostname, "target.example");
    const e = await only(outer.over, tunnel.endpoint) as {
      proxy: ReturnType<typeof fromUri>;
      target: unknown;
    };
    assert.deepEqual(e.target, { hostname: "target.example", port: 443 });
    const toProxy = await only(e.proxy, tls.endpoint) as {
      over: ReturnType<typeof fromUri>;
    };
    const { over, ...options } = toProxy;
    assert.deepEqual(options, { caCerts: ["CA"], hostname: "p.example" });
    assert.deepEqual(await only(over, tcp.endpoint), {
      hostname: "p.example",
      port: 443,
    });
  });
  for (
    const [url, resolveMode] of [
      ["socks5h://u:pw@s", "proxy"],
      ["socks5://u:pw@s:1081", "local"],
    ] as const
  ) {
    await t.step(`${url}: socks, resolve ${resolveMode}`, async () => {
      const ctx = fromUri("git://[::1]/repo", { proxy: url });
      assert.deepEqual(await endpointNames(ctx), ["socks"]);
      const e = await only(ctx, socks.endpoint) as SocksEndpoint;
      assert.deepEqual(e.target, { hostname: "::1", port: 9418 });
      assert.equal(e.resolve, resolveMode);
      assert.equal(e.username, "u");
      assert.equal(e.password, "pw");
      assert.deepEqual(await only(e.proxy, tcp.endpoint), {
        hostname: "s",
        port: url.startsWith("socks5h") ? 1080 : 1081,
      });
    });
  }
  await t.step("unix: never goes through a proxy", async () => {
    const ctx = fromUri("unix:/run/x.sock", { proxy: "http://p:1" });
    assert.deepEqual(await endpointNames(ctx), ["unix"]);
  });
  await t.step("replacing the proxy value changes the route", async () => {
    const ctx = fromUri("tcp://h:1", { proxy: "http://p:1" });
    assert.deepEqual(await endpointNames(ctx.replace(proxy, "")), ["tcp"]);
    assert.deepEqual(
      await endpointNames(ctx.replace(proxy, "socks5h://s")),
      ["socks"],
    );
  });
  await t.step("a redirect keeps the base's proxy", async () => {
    const ctx = fromUri("tcp://h:1", { proxy: "socks5h://s" });
    const moved = fromUri("tcp://other:2", ctx);
    const e = await only(moved, socks.endpoint) as SocksEndpoint;
    assert.deepEqual(e.target, { hostname: "other", port: 2 });
    const direct = fromUri("tcp://other:2", { base: ctx, proxy: "" });
    assert.deepEqual(await endpointNames(direct), ["tcp"]);
  });
});

Deno.test("fromUri() rejects malformed proxy URLs, the password masked", async (t) => {
  const cases: [string, typeof TypeError, string][] = [
    ["ftp://p", TypeError, 'ftp://p: scheme "ftp" is not a proxy scheme'],
    ["socks4://p", TypeError, 'scheme "socks4" is not a proxy scheme'],
    ["constructor://p", TypeError, 'scheme "constructor" is not a proxy'],
    ["http://u:secret@p:99999", RangeError, "u:****@p:99999: port is out"],
    ["http://u:secret@", TypeError, "http://u:****@: host is missing"],
    ["http://p/path", TypeError, "takes no path, query or fragment"],
    ["http://p:x", TypeError, "port is not a number"],
    ["http://:pw@p", TypeError, "user is empty"],
    ["http://p q", TypeError, "a space or a control character"],
  ];
  for (const [url, Kind, message] of cases) {
    await t.step(url, () => {
      assert.throws(() => fromUri("tcp://h:1", { proxy: url }), (e: Error) => {
        assert.ok(e instanceof Kind, String(e));
        assert.ok(
          e.message.startsWith("Cannot parse proxy URL "),
          e.message,
        );
        assert.ok(e.message.includes(message), e.message);
        assert.ok(!e.message.includes("secret"), e.message);
        return true;
      });
    });
  }
});

// --- Schemes -----------------------------------------------------------------

Deno.test("fromUri() knows the common schemes and their ports", async (t) => {
  const cases: [string, number, boolean][] = [
    ["postgres", 5432, false],
    ["postgresql", 5432, false],
    ["mysql", 3306, false],
    ["mariadb", 3306, false],
    ["mongodb", 27017, false],
    ["redis", 6379, false],
    ["rediss", 6380, true],
    ["memcached", 11211, false],
    ["nats", 4222, false],
    ["mqtt", 1883, false],
    ["mqtts", 8883, true],
    ["amqp", 5672, false],
    ["amqps", 5671, true],
    ["ldap", 389, false],
    ["ldaps", 636, true],
    ["smtp", 25, false],
    ["smtps", 465, true],
    ["imap", 143, false],
    ["imaps", 993, true],
    ["pop3", 110, false],
    ["pop3s", 995, true],
    ["ftp", 21, false],
    ["ftps", 990, true],
    ["irc", 6667, false],
    ["ircs", 6697, true],
    ["telnet", 23, false],
    ["nntp", 119, false],
    ["nntps", 563, true],
    ["http", 80, false],
    ["https", 443, true],
    ["git", 9418, false],
  ];
  for (const [name, defaultPort, secure] of cases) {
    await t.step(
      `${name}: ${defaultPort}${secure ? ", TLS" : ""}`,
      async () => {
        const ctx = fromUri(`${name}://db.example/x`);
        assert.equal(ctx.get(port), defaultPort);
        assert.deepEqual(await endpointNames(ctx), [secure ? "tls" : "tcp"]);
        if (secure) {
          const e = await only(ctx, tls.endpoint) as {
            hostname: string;
            over: ReturnType<typeof fromUri>;
          };
          assert.equal(e.hostname, "db.example");
          assert.deepEqual(await only(e.over, tcp.endpoint), {
            hostname: "db.example",
            port: defaultPort,
          });
        }
        assert.equal(fromUri(`${name}://db.example:1234`).get(port), 1234);
      },
    );
  }
  await t.step(
    "tcp://, tls:// still need a port; ssh:// has no transport",
    async () => {
      assert.throws(() => fromUri("tcp://h"), TypeError);
      assert.throws(() => fromUri("tls://h"), TypeError);
      assert.deepEqual(await endpointNames(fromUri("ssh://h/r")), []);
    },
  );
});

Deno.test("defineScheme() adds a scheme every context understands", async (t) => {
  const before = fromUri("tcp://h:1");
  await t.step("a TCP scheme", async () => {
    defineScheme("mimic-test-kv", { port: 7777 });
    const ctx = fromUri("MIMIC-TEST-KV://kv.example");
    assert.equal(ctx.get(port), 7777);
    assert.deepEqual(await only(ctx, tcp.endpoint), {
      hostname: "kv.example",
      port: 7777,
    });
  });
  await t.step("a TLS scheme, with tlsOptions and a proxy", async () => {
    defineScheme("mimic-test-kvs", { port: 7778, tls: true });
    const ctx = fromUri("mimic-test-kvs://kv.example", {
      proxy: "socks5h://127.0.0.1:1080",
    }).add(tlsOptions, { caCerts: ["CA"] });
    const e = await only(ctx, tls.endpoint) as {
      over: ReturnType<typeof fromUri>;
      caCerts: string[];
    };
    assert.deepEqual(e.caCerts, ["CA"]);
    const s = await only(e.over, socks.endpoint) as SocksEndpoint;
    assert.deepEqual(s.target, { hostname: "kv.example", port: 7778 });
  });
  await t.step(
    "a context made before, redirected to the new scheme",
    async () => {
      const moved = fromUri("mimic-test-kv://kv2.example", before);
      assert.deepEqual(await only(moved, tcp.endpoint), {
        hostname: "kv2.example",
        port: 7777,
      });
    },
  );
  await t.step("a user's scheme may be redefined", async () => {
    defineScheme("mimic-test-kv", { port: 7779, tls: true });
    assert.deepEqual(
      await endpointNames(fromUri("mimic-test-kv://kv.example")),
      ["tls"],
    );
    assert.equal(fromUri("mimic-test-kv://kv.example").get(port), 7779);
  });
  await t.step("not an scp-like address any more", () => {
    assert.equal(fromUri("mimic-test-kv://h").get(host), "h");
  });
  await t.step("bad definitions are TypeErrors", () => {
    const bad: [string, unknown, RegExp][] = [
      [
        "https",
        { port: 8443 },
        /^Cannot define scheme "https": it is built in$/,
      ],
      ["HTTP", { port: 8080 }, /"http": it is built in$/],
      ["redis", { port: 1 }, /built in/],
      ["tcp", { port: 1 }, /built in/],
      ["unix", { port: 1 }, /built in/],
      ["", { port: 1 }, /^Cannot define scheme "": a scheme is a letter/],
      ["1abc", { port: 1 }, /a scheme is a letter/],
      ["a b", { port: 1 }, /a scheme is a letter/],
      ["a:b", { port: 1 }, /a scheme is a letter/],
      ["ok", { port: 0 }, /port must be an integer in 1-65535, got 0$/],
      ["ok", { port: 65536 }, /got 65536$/],
      ["ok", { port: 1.5 }, /got 1.5$/],
      ["ok", { port: "80" }, /got string$/],
      ["ok", {}, /got undefined$/],
      ["ok", { port: 1, tls: "yes" }, /tls must be a boolean, got string$/],
      ["ok", null, /options must be an object$/],
    ];
    for (const [name, options, message] of bad) {
      assert.throws(
        () => defineScheme(name, options as { port: number }),
        (e: Error) => e instanceof TypeError && message.test(e.message),
        `${name} ${JSON.stringify(options)}`,
      );
    }
    assert.throws(() => fromUri("ok://h"), TypeError); // nothing was defined
  });
});

// --- Through real proxies ------------------------------------------------------

async function assertEchoes(flow: Flow, size = 300_000): Promise<void> {
  const data = randomBytes(size);
  assert.deepEqual(await roundTrip(flow, data, 65536), data);
  await flow.closeWrite();
  assert.equal(await flow.read(new Uint8Array(16)), null);
}

/** The first attempt's error, through nested resolutions. */
function rootCause(error: unknown): unknown {
  while (error instanceof NotFoundError && error.attempts.length > 0) {
    error = error.attempts[0].error;
  }
  return error;
}

/** A TLS echo once, reached by `https://localhost:port` through `proxyUrl`. */
async function assertTlsThrough(
  proxyUrl: string,
  proxyOptions?: { caCerts: string[] },
): Promise<void> {
  const echo = startTlsEchoOnce(cert, key);
  const ctx = fromUri(`https://localhost:${echo.port}/`, {
    proxy: proxyUrl,
    proxyTls: proxyOptions,
  }).add(tlsOptions, { caCerts: [ca], alpnProtocols: [] });
  const flow = await resolve(ctx);
  assert.ok(tls.is(flow));
  const data = randomBytes(200_000);
  assert.deepEqual(await roundTrip(flow, data, 65536), data);
  flow.close();
  await echo.served;
}

Deno.test("fromUri() through tinyproxy (http://), with and without BasicAuth", async (t) => {
  const echo = startEchoServer();
  const open = await startTinyproxy();
  const guarded = await startTinyproxy({
    basicAuth: { user: "mimic", password: "s3cret" },
  });
  try {
    await t.step("tcp:// through http://", async () => {
      const flow = await resolve(
        fromUri(`tcp://127.0.0.1:${echo.port}`, {
          proxy: `http://127.0.0.1:${open.port}`,
        }),
      );
      assert.ok(tunnel.is(flow));
      await using _ = flow;
      await assertEchoes(flow);
    });
    await t.step("https:// (TLS inside the tunnel)", async () => {
      await assertTlsThrough(`http://127.0.0.1:${open.port}`);
    });
    await t.step("credentials in the proxy URL", async () => {
      await using flow = await resolve(
        fromUri(`tcp://localhost:${echo.port}`, {
          proxy: `http://mimic:s3cret@127.0.0.1:${guarded.port}`,
        }),
      );
      await assertEchoes(flow);
    });
    await t.step(
      "no credentials: 407; wrong ones: 401 (tinyproxy)",
      async () => {
        for (const [userinfo, status] of [["", 407], ["mimic:wrong@", 401]]) {
          const error = await resolve(
            fromUri(`tcp://127.0.0.1:${echo.port}`, {
              proxy: `http://${userinfo}127.0.0.1:${guarded.port}`,
            }),
          ).then(() => undefined, (e) => e);
          const cause = rootCause(error);
          assert.ok(cause instanceof TunnelError, String(error));
          assert.equal(cause.status, status);
        }
      },
    );
    await t.step("proxyFromEnv feeds fromUri", async () => {
      const env = { http_proxy: `127.0.0.1:${open.port}`, no_proxy: "" };
      const url = `http://127.0.0.1:${echo.port}/`;
      await using flow = await resolve(
        fromUri(url, { proxy: proxyFromEnv(url, env) }),
      );
      assert.ok(tunnel.is(flow));
      await assertEchoes(flow, 10_000);
      const direct = await resolve(
        fromUri(url, {
          proxy: proxyFromEnv(url, { ...env, no_proxy: "127.0.0.0/8" }),
        }),
      );
      assert.ok(tcp.is(direct));
      direct.close();
    });
  } finally {
    await guarded.close();
    await open.close();
    await echo.close();
  }
});

Deno.test("fromUri() through stunnel in front of tinyproxy (https://)", async (t) => {
  const echo = startEchoServer();
  const proxyServer = await startTinyproxy({
    basicAuth: { user: "mimic", password: "s3cret" },
  });
  const stunnel = await startStunnel({
    connectPort: proxyServer.port,
    cert: certPath,
    key: keyPath,
  });
  const proxyUrl = `https://mimic:s3cret@localhost:${stunnel.port}`;
  try {
    await t.step("tcp:// through https:// with credentials", async () => {
      await using flow = await resolve(
        fromUri(`tcp://127.0.0.1:${echo.port}`, {
          proxy: proxyUrl,
          proxyTls: { caCerts: [ca] },
        }),
      );
      await assertEchoes(flow);
    });
    await t.step("https:// through https:// (TLS inside TLS)", async () => {
      await assertTlsThrough(proxyUrl, { caCerts: [ca] });
    });
    await t.step("the proxy's certificate is verified", async () => {
      const error = await resolve(
        fromUri(`tcp://127.0.0.1:${echo.port}`, { proxy: proxyUrl }),
      ).then(() => undefined, (e) => e);
      const cause = rootCause(error);
      assert.ok(cause instanceof TlsError, String(cause));
      assert.equal(cause.code, "UnknownIssuer");
    });
  } finally {
    await stunnel.close();
    await proxyServer.close();
    await echo.close();
  }
});

Deno.test("fromUri() through Dante (socks5://, socks5h://, with and without credentials)", async (t) => {
  const echo = startEchoServer();
  const echo6 = startEchoServer("::1");
  const plain = await startDante();
  const guarded = await startDante({ auth: { password: "p@ss wörd" } });
  const userinfo = `${encodeURIComponent(guarded.user!)}:${
    encodeURIComponent(guarded.password!)
  }@`;
  try {
    for (
      const [name, proxyUrl] of [
        ["socks5h://", `socks5h://127.0.0.1:${plain.port}`],
        ["socks5://", `socks5://127.0.0.1:${plain.port}`],
        [
          "socks5h:// with credentials",
          `socks5h://${userinfo}127.0.0.1:${guarded.port}`,
        ],
        [
          "socks5:// with credentials",
          `socks5://${userinfo}127.0.0.1:${guarded.port}`,
        ],
      ]
    ) {
      await t.step(`${name} to localhost, ::1 and TLS`, async () => {
        await using flow = await resolve(
          fromUri(`tcp://localhost:${echo.port}`, { proxy: proxyUrl }),
        );
        assert.ok(socks.is(flow));
        await assertEchoes(flow);
        await using six = await resolve(
          fromUri(`tcp://[::1]:${echo6.port}`, { proxy: proxyUrl }),
        );
        await assertEchoes(six, 10_000);
        await assertTlsThrough(proxyUrl);
      });
    }
    await t.step("wrong credentials: SocksError", async () => {
      const error = await resolve(
        fromUri(`tcp://127.0.0.1:${echo.port}`, {
          proxy: `socks5h://${guarded.user}:wrong@127.0.0.1:${guarded.port}`,
        }),
      ).then(() => undefined, (e) => e);
      const cause = rootCause(error);
      assert.ok(cause instanceof SocksError, String(error));
      assert.equal(cause.code, "AuthenticationFailed");
    });
  } finally {
    await guarded.close();
    await plain.close();
    await echo6.close();
    await echo.close();
  }
});

Deno.test("fromUri() through OpenSSH's ssh -D (socks5h://)", async () => {
  await using sshd = await startSshd();
  const server = await startSshSocks(sshd);
  const echo = startEchoServer();
  try {
    const proxyUrl = `socks5h://127.0.0.1:${server.port}`;
    await using flow = await resolve(
      fromUri(`tcp://localhost:${echo.port}`, { proxy: proxyUrl }),
    );
    await assertEchoes(flow);
    await assertTlsThrough(proxyUrl);
  } finally {
    await echo.close();
    await server.close();
  }
});
