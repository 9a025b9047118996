// Tests of the SOCKS5 client (`./socks`) against real servers: OpenSSH's
// dynamic forwarding (`ssh -D` to the test sshd) and Dante (`danted`), with
// and without username/password; targets are TCP echo servers on 127.0.0.1
// and ::1 and the name "localhost"; TLS over SOCKS over TLS through stunnel
// in front of Dante. Fake servers over in-memory pipes cover every failure:
// garbage, each reply code, a close at each step of the handshake. Only
// loopback is used.
import assert from "node:assert/strict";
import { type Context, empty, errors, type Flow, resolve } from "../mod.ts";
import { pipe, type PipeFlow } from "../src/pipe.ts";
import {
  connectSocks,
  type ConnectSocksOptions,
  socks,
  SocksError,
  type SocksErrorCode,
  SocksFlow,
} from "../src/socks.ts";
import { tcp } from "../src/tcp.ts";
import { startTls, tls } from "../src/tls.ts";
import {
  concat,
  randomBytes,
  readAll,
  readExactly,
  roundTrip,
} from "./_helpers.ts";
import { type Dante, startDante } from "./servers/dante.ts";
import { startEchoServer, startTlsEchoOnce } from "./servers/echo.ts";
import { freePort, type Server } from "./servers/_util.ts";
import { startSshd } from "./servers/sshd.ts";
import { startSshSocks } from "./servers/ssh_socks.ts";
import { startStunnel } from "./servers/stunnel.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const fixtures = new URL("./fixtures/", import.meta.url);
const certPath = new URL("localhost.pem", fixtures).pathname;
const keyPath = new URL("localhost.key", fixtures).pathname;
const ca = await Deno.readTextFile(new URL("ca.pem", fixtures));

function tcpContext(port: number): Context {
  return empty.add(tcp.endpoint, { hostname: "127.0.0.1", port });
}

/** Echoes `size` random bytes through `flow`, half-closes, expects end of flow. */
async function assertEchoes(flow: Flow, size = 300_000): Promise<void> {
  const data = randomBytes(size);
  assert.deepEqual(await roundTrip(flow, data, 65536), data);
  await flow.closeWrite();
  assert.equal(await flow.read(new Uint8Array(16)), null);
}

interface Target {
  name: string;
  hostname: string;
  port: number;
  resolve?: "proxy" | "local";
}

/** The echo targets every real server is tried with. */
function targets(v4: Server, v6: Server): Target[] {
  return [
    { name: "IPv4 127.0.0.1", hostname: "127.0.0.1", port: v4.port },
    { name: "IPv6 ::1", hostname: "::1", port: v6.port },
    { name: "IPv6 [::1] (brackets)", hostname: "[::1]", port: v6.port },
    {
      name: "name localhost (socks5h: the server resolves)",
      hostname: "localhost",
      port: v4.port,
    },
    {
      name: "name localhost (resolve: local)",
      hostname: "localhost",
      port: v4.port,
      resolve: "local",
    },
  ];
}

/** Tries every target through a real SOCKS server on `port`. */
async function exerciseServer(
  t: Deno.TestContext,
  port: number,
  credentials: Pick<ConnectSocksOptions, "username" | "password">,
): Promise<void> {
  const v4 = startEchoServer();
  const v6 = startEchoServer("::1");
  try {
    for (const target of targets(v4, v6)) {
      await t.step(`connectSocks to ${target.name}`, async () => {
        const proxy = await Deno.connect({ hostname: "127.0.0.1", port });
        await using flow = await connectSocks(proxy, target, {
          ...credentials,
          resolve: target.resolve,
        });
        assert.ok(flow instanceof SocksFlow);
        assert.deepEqual({ ...flow.remoteAddr }, {
          transport: "tcp",
          hostname: "127.0.0.1",
          port,
        });
        assert.equal(typeof flow.bound.hostname, "string");
        await assertEchoes(flow);
      });
    }
    await t.step("the socks protocol through resolve()", async () => {
      const flow = await resolve(empty.add(socks.endpoint, {
        proxy: tcpContext(port),
        target: { hostname: "localhost", port: v4.port },
        ...credentials,
      }));
      assert.ok(socks.is(flow));
      await using _ = flow;
      await assertEchoes(flow, 1_000_000);
    });
    await t.step("readable and writable", async () => {
      const proxy = await Deno.connect({ hostname: "127.0.0.1", port });
      await using flow = await connectSocks(proxy, {
        hostname: "::1",
        port: v6.port,
      }, credentials);
      const data = randomBytes(200_000);
      const [, echoed] = await Promise.all([
        new Blob([data]).stream().pipeTo(flow.writable),
        new Response(flow.readable).bytes(),
      ]);
      assert.deepEqual(echoed, data);
    });
  } finally {
    await v4.close();
    await v6.close();
  }
}

Deno.test("socks through OpenSSH's dynamic forwarding (ssh -D)", async (t) => {
  await using sshd = await startSshd();
  const server = await startSshSocks(sshd);
  try {
    await exerciseServer(t, server.port, {});
    await t.step("credentials are offered, not required", async () => {
      const echo = startEchoServer();
      try {
        const proxy = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        await using flow = await connectSocks(proxy, {
          hostname: "127.0.0.1",
          port: echo.port,
        }, { username: "nobody", password: "unused" });
        await assertEchoes(flow, 1000);
      } finally {
        await echo.close();
      }
    });
    await t.step(
      "a closed port: ssh closes without a reply (UnexpectedEof)",
      async () => {
        const proxy = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        const error = await connectSocks(proxy, {
          hostname: "127.0.0.1",
          port: freePort(),
        }).then(() => undefined, (e) => e);
        assert.ok(error instanceof SocksError, String(error));
        assert.match(error.message, /^Cannot connect to 127\.0\.0\.1:\d+ /);
        // OpenSSH closes the connection without a reply when its connect fails.
        assert.equal(error.code, "UnexpectedEof");
        assert.match(error.message, /instead of answering CONNECT$/);
      },
    );
  } finally {
    await server.close();
  }
});

Deno.test("socks through Dante without authentication", async (t) => {
  const blocked = freePort();
  await using dante = await startDante({ blockPorts: [blocked] });
  await exerciseServer(t, dante.port, {});
  await t.step("a closed port: reply 5, connection refused", async () => {
    const proxy = await Deno.connect({
      hostname: "127.0.0.1",
      port: dante.port,
    });
    const error = await connectSocks(proxy, {
      hostname: "127.0.0.1",
      port: freePort(),
    }).then(() => undefined, (e) => e);
    assert.ok(error instanceof SocksError, String(error));
    assert.equal(error.reply, 5);
    assert.equal(error.code, "ConnectionRefused");
    assert.match(error.message, /connection refused \(reply 5\)$/);
  });
  await t.step("a port its rules block: reply 2, not allowed", async () => {
    const proxy = await Deno.connect({
      hostname: "127.0.0.1",
      port: dante.port,
    });
    const error = await connectSocks(proxy, {
      hostname: "127.0.0.1",
      port: blocked,
    }).then(() => undefined, (e) => e);
    assert.ok(error instanceof SocksError, String(error));
    assert.equal(error.reply, 2);
    assert.equal(error.code, "NotAllowed");
    assert.match(
      error.message,
      /connection not allowed by ruleset \(reply 2\)$/,
    );
  });
});

Deno.test("socks through Dante with username/password (RFC 1929)", async (t) => {
  let dante: Dante;
  try {
    dante = await startDante({ auth: { password: "pa ss:wörd" } });
  } catch (error) {
    throw new Error(`Cannot start Dante with authentication: ${error}`);
  }
  await using _ = dante;
  const credentials = { username: dante.user!, password: dante.password! };
  await exerciseServer(t, dante.port, credentials);
  const echo = startEchoServer();
  const tryWith = async (options: ConnectSocksOptions) => {
    const proxy = await Deno.connect({
      hostname: "127.0.0.1",
      port: dante.port,
    });
    return await connectSocks(proxy, {
      hostname: "127.0.0.1",
      port: echo.port,
    }, options).then(() => undefined, (e) => e);
  };
  try {
    await t.step("a wrong password: AuthenticationFailed", async () => {
      const error = await tryWith({ ...credentials, password: "wrong" });
      assert.ok(error instanceof SocksError, String(error));
      assert.equal(error.code, "AuthenticationFailed");
      assert.equal(error.reply, -1);
      assert.match(error.message, /rejected the username and password/);
    });
    await t.step("no credentials: NoAcceptableMethods", async () => {
      const error = await tryWith({});
      assert.ok(error instanceof SocksError, String(error));
      assert.equal(error.code, "NoAcceptableMethods");
      assert.match(error.message, /may need a username and password/);
    });
  } finally {
    await echo.close();
  }
});

Deno.test("TLS over SOCKS over TLS: stunnel in front of Dante, then a TLS echo", async (t) => {
  await using dante = await startDante();
  const stunnel = await startStunnel({
    connectPort: dante.port,
    cert: certPath,
    key: keyPath,
  });
  try {
    const toSocksServer = empty.add(tls.endpoint, {
      hostname: "localhost",
      caCerts: [ca],
      over: tcpContext(stunnel.port),
    });
    const cert = await Deno.readTextFile(certPath);
    const key = await Deno.readTextFile(keyPath);
    await t.step("with startTls over connectSocks", async () => {
      const echo = startTlsEchoOnce(cert, key);
      const proxy = await resolve(toSocksServer);
      const through = await connectSocks(proxy, {
        hostname: "localhost",
        port: echo.port,
      });
      await using flow = await startTls(through, {
        hostname: "localhost",
        caCerts: [ca],
      });
      const data = randomBytes(500_000);
      assert.deepEqual(await roundTrip(flow, data, 65536), data);
      flow.close();
      await echo.served;
    });
    await t.step(
      "as one context: tls over socks over tls over tcp",
      async () => {
        const echo = startTlsEchoOnce(cert, key);
        const flow = await resolve(empty.add(tls.endpoint, {
          hostname: "localhost",
          caCerts: [ca],
          over: empty.add(socks.endpoint, {
            proxy: toSocksServer,
            target: { hostname: "127.0.0.1", port: echo.port },
          }),
        }));
        assert.ok(tls.is(flow));
        const data = randomBytes(200_000);
        assert.deepEqual(await roundTrip(flow, data, 65536), data);
        flow.close();
        await echo.served;
      },
    );
  } finally {
    await stunnel.close();
  }
});

// --- Fake servers over pipes ---------------------------------------------

/** What a fake server receives and answers. */
interface Fake {
  /** Runs the client's call while `script` plays the server; returns both outcomes. */
  run<T>(
    client: (flow: PipeFlow) => Promise<T>,
    script: (server: PipeFlow) => Promise<void>,
  ): Promise<{ result?: T; error?: unknown }>;
}

const fake: Fake = {
  async run(client, script) {
    const [a, b] = pipe();
    const served = script(b).catch((e) => {
      // The client closes on failure: the server's writes may fail.
      if (!(e instanceof Error)) throw e;
    });
    try {
      const result = await client(a);
      return { result };
    } catch (error) {
      return { error };
    } finally {
      await served;
      b.close();
    }
  },
};

/** Reads `n` bytes and checks them. */
async function expect(server: PipeFlow, bytes: number[]): Promise<void> {
  const got = await readExactly(server, bytes.length);
  assert.deepEqual([...got], bytes);
}

/** The greeting without credentials, answered with "no authentication". */
async function greet(server: PipeFlow): Promise<void> {
  await expect(server, [5, 1, 0]);
  await server.write(Uint8Array.of(5, 0));
}

/** CONNECT 127.0.0.1:7. */
const CONNECT_V4 = [5, 1, 0, 1, 127, 0, 0, 1, 0, 7];
const SUCCESS_V4 = [5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39];

function connectV4(flow: Flow, options?: ConnectSocksOptions) {
  return connectSocks(flow, { hostname: "127.0.0.1", port: 7 }, options);
}

function assertSocksError(
  error: unknown,
  code: SocksErrorCode,
  message?: RegExp,
): asserts error is SocksError {
  assert.ok(error instanceof SocksError, `expected SocksError, got ${error}`);
  assert.equal(error.name, "SocksError");
  assert.equal(error.code, code);
  if (message !== undefined) assert.match(error.message, message);
}

Deno.test("connectSocks sends RFC 1928 requests for each address type", async (t) => {
  const cases: [string, ConnectSocksOptions | undefined, number[]][] = [
    ["127.0.0.1", undefined, [1, 127, 0, 0, 1]],
    ["::1", undefined, [4, ...new Array(15).fill(0), 1]],
    ["[2001:db8::ff00:42:8329]", undefined, [
      4,
      0x20,
      0x01,
      0x0d,
      0xb8,
      0,
      0,
      0,
      0,
      0,
      0,
      0xff,
      0,
      0,
      0x42,
      0x83,
      0x29,
    ]],
    ["example.com", undefined, [3, 11, ...encoder.encode("example.com")]],
    ["bücher.example", undefined, [
      3,
      21,
      ...encoder.encode("xn--bcher-kva.example"),
    ]],
    [
      "localhost",
      { resolve: "local", lookup: () => Promise.resolve(["::1"]) },
      [
        4,
        ...new Array(15).fill(0),
        1,
      ],
    ],
    ["localhost", { resolve: "local" }, [1, 127, 0, 0, 1]],
  ];
  for (const [hostname, options, dst] of cases) {
    await t.step(`${hostname} ${JSON.stringify(options ?? {})}`, async () => {
      const { result, error } = await fake.run(
        (flow) => connectSocks(flow, { hostname, port: 443 }, options),
        async (server) => {
          await greet(server);
          await expect(server, [5, 1, 0, ...dst, 1, 187]);
          await server.write(Uint8Array.of(...SUCCESS_V4));
        },
      );
      assert.equal(error, undefined);
      assert.deepEqual(result!.bound, { hostname: "127.0.0.1", port: 12345 });
      result!.close();
    });
  }
});

Deno.test("connectSocks authenticates with RFC 1929", async () => {
  const { result, error } = await fake.run(
    (flow) => connectV4(flow, { username: "alice", password: "sésame" }),
    async (server) => {
      await expect(server, [5, 2, 0, 2]);
      await server.write(Uint8Array.of(5, 2));
      const password = [...encoder.encode("sésame")];
      await expect(server, [
        1,
        5,
        ...encoder.encode("alice"),
        password.length,
        ...password,
      ]);
      await server.write(Uint8Array.of(1, 0));
      await expect(server, CONNECT_V4);
      await server.write(Uint8Array.of(...SUCCESS_V4));
    },
  );
  assert.equal(error, undefined);
  result!.close();
});

Deno.test("connectSocks loses no byte the target sends right after the reply", async (t) => {
  const replies: [string, number[], { hostname: string; port: number }][] = [
    ["IPv4", SUCCESS_V4, { hostname: "127.0.0.1", port: 12345 }],
    ["IPv6", [5, 0, 0, 4, ...new Array(15).fill(0), 1, 0, 80], {
      hostname: "::1",
      port: 80,
    }],
    ["domain", [5, 0, 0, 3, 4, ...encoder.encode("host"), 1, 0], {
      hostname: "host",
      port: 256,
    }],
  ];
  for (const [name, reply, bound] of replies) {
    await t.step(name, async () => {
      const payload = randomBytes(100_000);
      const { result, error } = await fake.run(
        async (flow) => {
          const socksFlow = await connectV4(flow);
          return { socksFlow, read: await readAll(socksFlow) };
        },
        async (server) => {
          await greet(server);
          await expect(server, CONNECT_V4);
          // The reply and the target's bytes in one write.
          await server.write(concat([Uint8Array.of(...reply), payload]));
          await server.closeWrite();
        },
      );
      assert.equal(error, undefined);
      assert.deepEqual(result!.socksFlow.bound, bound);
      assert.deepEqual(result!.read, payload);
      result!.socksFlow.close();
    });
  }
});

Deno.test("connectSocks gives a typed error for each RFC 1928 reply code", async (t) => {
  const names = [
    "general SOCKS server failure",
    "connection not allowed by ruleset",
    "network unreachable",
    "host unreachable",
    "connection refused",
    "TTL expired",
    "command not supported",
    "address type not supported",
  ];
  const codes: SocksErrorCode[] = [
    "GeneralFailure",
    "NotAllowed",
    "NetworkUnreachable",
    "HostUnreachable",
    "ConnectionRefused",
    "TtlExpired",
    "CommandNotSupported",
    "AddressTypeNotSupported",
  ];
  for (let reply = 1; reply <= 8; reply++) {
    await t.step(`reply ${reply}`, async () => {
      let closed = false;
      const { error } = await fake.run(connectV4, async (server) => {
        await greet(server);
        await expect(server, CONNECT_V4);
        await server.write(Uint8Array.of(5, reply, 0, 1, 0, 0, 0, 0, 0, 0));
        closed = (await server.read(new Uint8Array(1))) === null;
      });
      assertSocksError(error, codes[reply - 1]);
      assert.equal(error.reply, reply);
      assert.equal(
        error.message,
        `Cannot connect to 127.0.0.1:7 through the SOCKS server: ${
          names[reply - 1]
        } (reply ${reply})`,
      );
      assert.ok(closed, "the flow is closed on failure");
    });
  }
});

Deno.test("connectSocks rejects servers that break the protocol", async (t) => {
  const cases: [
    string,
    (server: PipeFlow) => Promise<void>,
    SocksErrorCode,
    RegExp,
    ConnectSocksOptions?,
  ][] = [
    [
      "an HTTP answer to the greeting",
      async (server) => {
        await expect(server, [5, 1, 0]);
        await server.write(encoder.encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
      },
      "ProtocolViolation",
      /does not speak SOCKS5: .*0x48 0x54 \("HT"\)/,
    ],
    [
      "a SOCKS4 answer",
      async (server) => {
        await expect(server, [5, 1, 0]);
        await server.write(Uint8Array.of(0, 0x5b));
      },
      "ProtocolViolation",
      /does not speak SOCKS5/,
    ],
    [
      "no acceptable method",
      async (server) => {
        await expect(server, [5, 1, 0]);
        await server.write(Uint8Array.of(5, 0xff));
      },
      "NoAcceptableMethods",
      /accepts no method offered/,
    ],
    [
      "a method not offered",
      async (server) => {
        await expect(server, [5, 1, 0]);
        await server.write(Uint8Array.of(5, 2));
      },
      "ProtocolViolation",
      /chose method 0x02, which was not offered/,
    ],
    [
      "a rejected password",
      async (server) => {
        await expect(server, [5, 2, 0, 2]);
        await server.write(Uint8Array.of(5, 2));
        await readExactly(server, 1 + 1 + 1 + 1 + 1);
        await server.write(Uint8Array.of(1, 1));
      },
      "AuthenticationFailed",
      /for "u" \(status 1\)$/,
      {
        username: "u",
        password: "p",
      },
    ],
    [
      "garbage as the authentication answer",
      async (server) => {
        await expect(server, [5, 2, 0, 2]);
        await server.write(Uint8Array.of(5, 2));
        await readExactly(server, 5);
        await server.write(Uint8Array.of(0x7f, 0));
      },
      "ProtocolViolation",
      /answered the username and password with 0x7f/,
      {
        username: "u",
        password: "p",
      },
    ],
    [
      "garbage as the reply",
      async (server) => {
        await greet(server);
        await expect(server, CONNECT_V4);
        await server.write(encoder.encode("nope"));
      },
      "ProtocolViolation",
      /answered CONNECT with .*"nope"/,
    ],
    [
      "an unassigned reply code",
      async (server) => {
        await greet(server);
        await expect(server, CONNECT_V4);
        await server.write(Uint8Array.of(5, 9, 0, 1));
      },
      "ProtocolViolation",
      /unassigned reply 9$/,
    ],
    [
      "an unknown address type in the reply",
      async (server) => {
        await greet(server);
        await expect(server, CONNECT_V4);
        await server.write(Uint8Array.of(5, 0, 0, 7, 1, 2, 3, 4));
      },
      "ProtocolViolation",
      /unknown address type 7$/,
    ],
    [
      "a close before choosing a method",
      async (server) => {
        await expect(server, [5, 1, 0]);
        await server.closeWrite();
      },
      "UnexpectedEof",
      /closed the connection instead of choosing a method$/,
    ],
    [
      "a close after one byte of the method",
      async (server) => {
        await expect(server, [5, 1, 0]);
        await server.write(Uint8Array.of(5));
        await server.closeWrite();
      },
      "UnexpectedEof",
      /\(after 1 of 2 bytes\)$/,
    ],
    [
      "a close during authentication",
      async (server) => {
        await expect(server, [5, 2, 0, 2]);
        await server.write(Uint8Array.of(5, 2));
        await readExactly(server, 5);
        server.close();
      },
      "UnexpectedEof",
      /during authentication$/,
      {
        username: "u",
        password: "p",
      },
    ],
    [
      "a close instead of the reply",
      async (server) => {
        await greet(server);
        await expect(server, CONNECT_V4);
        server.close();
      },
      "UnexpectedEof",
      /instead of answering CONNECT$/,
    ],
    [
      "a close in the middle of the bound address",
      async (server) => {
        await greet(server);
        await expect(server, CONNECT_V4);
        await server.write(Uint8Array.of(5, 0, 0, 4, 0, 0, 0));
        await server.closeWrite();
      },
      "UnexpectedEof",
      /in its reply \(after 3 of 16 bytes\)$/,
    ],
  ];
  for (const [name, script, code, message, options] of cases) {
    await t.step(name, async () => {
      const { error } = await fake.run((f) => connectV4(f, options), script);
      assertSocksError(error, code, message);
      assert.equal(error.reply, -1);
      assert.match(error.message, /^Cannot connect to 127\.0\.0\.1:7 /);
    });
  }
});

Deno.test("connectSocks over a real TCP connection to a fake server that closes", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    const conn = await listener.accept();
    await readExactly(conn, 3);
    await conn.write(Uint8Array.of(5, 0));
    await readExactly(conn, CONNECT_V4.length);
    await conn.write(Uint8Array.of(5, 0, 0));
    conn.close();
  })();
  const proxy = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  const error = await connectV4(proxy).then(() => undefined, (e) => e);
  await serving;
  assertSocksError(error, "UnexpectedEof", /\(after 3 of 4 bytes\)$/);
});

Deno.test("connectSocks checks its input before sending anything", async (t) => {
  const cases: [
    string,
    { hostname: string; port: number },
    ConnectSocksOptions,
    typeof TypeError,
    RegExp,
  ][] = [
    [
      "a port out of range",
      { hostname: "h", port: 65536 },
      {},
      RangeError,
      /port is out of range$/,
    ],
    [
      "an empty host",
      { hostname: "", port: 1 },
      {},
      TypeError,
      /host name is missing$/,
    ],
    [
      "a zone",
      { hostname: "fe80::1%eth0", port: 1 },
      {},
      TypeError,
      /zones are not supported/,
    ],
    [
      "a name of 256 bytes",
      { hostname: "a".repeat(256), port: 1 },
      {},
      TypeError,
      /host name must be 1 to 255 bytes, got 256$/,
    ],
    [
      "an empty username",
      { hostname: "h", port: 1 },
      { username: "" },
      TypeError,
      /username must be 1 to 255 bytes, got 0$/,
    ],
    [
      "a password of 256 bytes",
      { hostname: "h", port: 1 },
      { username: "u", password: "é".repeat(128) },
      TypeError,
      /password must be 0 to 255 bytes, got 256$/,
    ],
    [
      "a password without username",
      { hostname: "h", port: 1 },
      { password: "p" },
      TypeError,
      /a password needs a username$/,
    ],
    [
      "a bad resolve",
      { hostname: "h", port: 1 },
      { resolve: "dns" as unknown as "proxy" },
      TypeError,
      /resolve must be "proxy" or "local"/,
    ],
  ];
  for (const [name, target, options, Kind, message] of cases) {
    await t.step(name, async () => {
      const [a, b] = pipe();
      await assert.rejects(connectSocks(a, target, options), (e: Error) => {
        assert.ok(e instanceof Kind, String(e));
        assert.match(e.message, message);
        return true;
      });
      // Nothing was sent, and the flow is closed.
      assert.equal(await b.read(new Uint8Array(1)), null);
      b.close();
    });
  }
  await t.step("a name that cannot be resolved locally: NotFound", async () => {
    const [a, b] = pipe();
    await assert.rejects(
      connectSocks(a, { hostname: "nowhere", port: 1 }, {
        resolve: "local",
        lookup: () => Promise.reject(new Error("no such host")),
      }),
      (e: Error) => {
        assert.ok(e instanceof errors.NotFound, String(e));
        assert.equal(e.message, "Cannot resolve host nowhere: no such host");
        return true;
      },
    );
    b.close();
  });
});

Deno.test("connectSocks is aborted by its signal while the server is silent", async () => {
  const controller = new AbortController();
  const reason = new Error("given up");
  const { error } = await fake.run(
    (flow) => connectV4(flow, { signal: controller.signal }),
    async (server) => {
      await expect(server, [5, 1, 0]);
      controller.abort(reason);
      // The client closes: the server reads end of flow.
      assert.equal(await server.read(new Uint8Array(1)), null);
    },
  );
  assert.equal(error, reason);
});

Deno.test("a SocksFlow keeps the Flow contract (over TCP to a fake server)", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = (async () => {
    const b = await listener.accept();
    await readExactly(b, 3);
    await b.write(Uint8Array.of(5, 0));
    await readExactly(b, CONNECT_V4.length);
    await b.write(Uint8Array.of(...SUCCESS_V4));
    return b;
  })();
  const flow = await connectV4(
    await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
  );
  using b = await accepted;
  assert.deepEqual({ ...flow.remoteAddr }, { ...listener.addr });
  assert.equal(flow.localAddr?.transport, "tcp");
  assert.equal(await flow.read(new Uint8Array(0)), 0);
  assert.equal(await flow.write(new Uint8Array(0)), 0);
  await flow.write(encoder.encode("ping"));
  assert.equal(decoder.decode(await readExactly(b, 4)), "ping");
  await flow.closeWrite();
  assert.equal(await b.read(new Uint8Array(1)), null);
  await b.write(encoder.encode("pong"));
  assert.equal(decoder.decode(await readExactly(flow, 4)), "pong");
  const pending = flow.read(new Uint8Array(4));
  flow.close();
  flow.close();
  await assert.rejects(pending, errors.Interrupted);
  await assert.rejects(flow.read(new Uint8Array(1)), errors.BadResource);
  await assert.rejects(flow.write(new Uint8Array(1)), errors.BadResource);
  await assert.rejects(flow.closeWrite(), errors.BadResource);
  flow[Symbol.dispose]();
  await flow[Symbol.asyncDispose]();
  assert.equal(await b.read(new Uint8Array(1)), null);
});

Deno.test("connectSocks and proxyFromEnv run on Node (no Deno global)", async () => {
  const node = ["/usr/bin/node", "/usr/local/bin/node"].find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  });
  assert.ok(node !== undefined, "Node is needed for this test");
  const dir = await Deno.makeTempDir({ prefix: "mimic-socks-node-" });
  try {
    const socksUrl = import.meta.resolve("../src/socks.ts");
    const uriUrl = import.meta.resolve("../src/uri.ts");
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      `import { connectSocks, SocksError } from "${socksUrl}";
import { proxyFromEnv } from "${uriUrl}";
// A scripted server: each write is answered with the next reply.
function scripted(replies: number[][]) {
  let pending = new Uint8Array(0);
  const sent: number[][] = [];
  return {
    sent,
    read(p: Uint8Array) {
      const n = Math.min(p.length, pending.length);
      if (n === 0) return Promise.resolve(null);
      p.set(pending.subarray(0, n));
      pending = pending.subarray(n);
      return Promise.resolve(n);
    },
    write(p: Uint8Array) {
      sent.push([...p]);
      const r = replies.shift();
      if (r) pending = Uint8Array.from([...pending, ...r]);
      return Promise.resolve(p.length);
    },
    closeWrite: () => Promise.resolve(),
    close() {},
    readable: new ReadableStream(),
    writable: new WritableStream(),
  };
}
const out: unknown[] = [typeof (globalThis as { Deno?: unknown }).Deno];
try {
  await connectSocks(scripted([[5, 0], [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]]), { hostname: "h", port: 7 });
} catch (e) {
  out.push(e instanceof SocksError, (e as SocksError).reply, (e as Error).message);
}
const s = scripted([[5, 0], [5, 0, 0, 1, 1, 2, 3, 4, 0, 80]]);
const f = await connectSocks(s, { hostname: "localhost", port: 7 }, { resolve: "local" });
out.push(f.bound, s.sent[1]);
process.env.https_proxy = "socks5h://127.0.0.1:1080";
process.env.no_proxy = ".internal";
out.push(proxyFromEnv("https://x.example/"), proxyFromEnv("https://a.internal/") ?? null);
console.log(JSON.stringify(out));
`,
    );
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--platform",
        "node",
        "-o",
        `${dir}/main.mjs`,
        `${dir}/main.ts`,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(bundle.success, decoder.decode(bundle.stderr));
    const run = await new Deno.Command(node, {
      args: [`${dir}/main.mjs`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(run.success, decoder.decode(run.stderr));
    assert.deepEqual(JSON.parse(decoder.decode(run.stdout)), [
      "undefined",
      true,
      5,
      "Cannot connect to h:7 through the SOCKS server: connection refused (reply 5)",
      { hostname: "1.2.3.4", port: 80 },
      [5, 1, 0, 1, 127, 0, 0, 1, 0, 7],
      "socks5h://127.0.0.1:1080",
      null,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectSocks on random server bytes: a SocksFlow or a SocksError, never a hang", async () => {
  // A server that answers each write with random bytes (often a valid
  // prefix), then ends: every outcome must be typed.
  const rand = (n: number) => Math.floor(Math.random() * n);
  const pickByte = () => [0, 1, 2, 3, 4, 5, 0xff][rand(7)];
  let succeeded = 0;
  for (let i = 0; i < 2000; i++) {
    let pending: number[] = [];
    let closed = false;
    const flow: Flow = {
      read(p) {
        if (closed) return Promise.reject(new errors.BadResource("closed"));
        const n = Math.min(p.length, pending.length);
        if (n === 0) return Promise.resolve(null);
        p.set(pending.slice(0, n));
        pending = pending.slice(n);
        return Promise.resolve(n);
      },
      write(p) {
        const answer = Array.from(
          { length: rand(12) },
          () => rand(4) === 0 ? rand(256) : pickByte(),
        );
        pending.push(...answer);
        return Promise.resolve(p.length);
      },
      closeWrite: () => Promise.resolve(),
      close() {
        closed = true;
      },
      readable: new ReadableStream(),
      writable: new WritableStream(),
    };
    const options: ConnectSocksOptions = rand(2) === 0
      ? {}
      : { username: "u", password: "p" };
    try {
      const result = await connectSocks(flow, {
        hostname: ["127.0.0.1", "::1", "example.com"][rand(3)],
        port: 443,
      }, options);
      succeeded++;
      result.close();
    } catch (error) {
      assert.ok(error instanceof SocksError, String(error));
      assert.ok(closed, "the flow is closed on failure");
    }
  }
  assert.ok(succeeded < 2000);
});
