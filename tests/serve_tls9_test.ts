// Issue 9, items 7 and 8, on the serve side: handshakeTimeout drops idle
// clients, `tls` may be a function of the ClientHello, and a TLS handler
// sees the client's address. Peers: raw TCP clients, Deno.connectTls,
// Deno.startTls, openssl s_client.
import assert from "node:assert/strict";
import { serve } from "../src/serve.ts";
import { type ClientHelloInfo, TlsError } from "../src/tls.ts";
import { fixture, fixturePath } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ca = fixture("ca.pem");
const localhost = {
  cert: fixture("localhost.pem"),
  key: fixture("localhost.key"),
};
const wrongname = {
  cert: fixture("wrongname.pem"),
  key: fixture("wrongname.key"),
};

/** Resolves once `n` errors were reported, or rejects after `ms`. */
function errorsCollector(n: number, ms = 60_000) {
  const errors: unknown[] = [];
  let ok!: () => void;
  const all = new Promise<void>((resolve) => ok = resolve);
  let timer: ReturnType<typeof setTimeout>;
  const bounded = Promise.race([
    all,
    new Promise<never>((_, ko) => {
      timer = setTimeout(
        () => ko(new Error(`only ${errors.length} of ${n} errors: ${errors}`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  return {
    errors,
    onError: (e: unknown) => {
      errors.push(e);
      if (errors.length === n) ok();
    },
    all: bounded,
  };
}

/**
 * One complete TLS client first, so the engine is loaded (on a loaded
 * machine that takes a while) before the timed clients come.
 */
async function warmUp(port: number, hostname = "localhost"): Promise<void> {
  const conn = await Deno.connectTls({ hostname, port, caCerts: [ca] });
  try {
    await conn.handshake();
    await conn.write(encoder.encode("warm"));
    await new Response(conn.readable).arrayBuffer();
  } catch {
    conn.close();
  }
}

/** `p`, or a rejection after `ms` (a bound for when the feature is broken). */
async function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, ko) => {
        timer = setTimeout(() => ko(new Error(`not within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads until end of flow or a reset; true when the server dropped us. */
async function dropped(conn: Deno.Conn): Promise<boolean> {
  const buf = new Uint8Array(1024);
  try {
    while ((await conn.read(buf)) !== null) {
      // The server sends nothing to a client without a ClientHello.
    }
    return true;
  } catch (error) {
    return error instanceof Deno.errors.ConnectionReset;
  }
}

Deno.test("serve({ handshakeTimeout }): 50 idle clients are dropped, a real client is served meanwhile", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const reported = errorsCollector(50);
  await using _server = serve(listener, async (flow) => {
    const buf = new Uint8Array(64);
    const n = await flow.read(buf);
    await flow.write(buf.subarray(0, n ?? 0));
    await flow.closeWrite();
  }, { tls: localhost, handshakeTimeout: 3000, onError: reported.onError });
  const port = listener.addr.port;
  await warmUp(port);
  const idle: Deno.Conn[] = [];
  for (let i = 0; i < 50; i++) {
    idle.push(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  // Meanwhile, a client that does its handshake is served.
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [ca],
  });
  await conn.write(encoder.encode("ping"));
  assert.equal(await new Response(conn.readable).text(), "ping");
  // Every idle client is dropped, and each drop is reported.
  const drops = await within(60_000, Promise.all(idle.map(dropped)));
  assert.deepEqual(drops, Array(50).fill(true));
  await reported.all;
  for (const e of reported.errors) {
    assert.ok(e instanceof TlsError, `not a TlsError: ${e}`);
    assert.equal(e.code, "HandshakeTimeout");
    assert.match(e.message, /did not finish it within 3000 ms/);
  }
  for (const c of idle) c.close();
});

Deno.test("serve({ handshakeTimeout }): a client stuck mid-handshake and a tls function that never settles are dropped", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const reported = errorsCollector(2);
  let calls = 0;
  await using _server = serve(listener, () => {}, {
    tls: (hello) => {
      calls++;
      // "never.example" gets no answer at all.
      if (hello.serverName === "never.example") return new Promise(() => {});
      return localhost;
    },
    handshakeTimeout: 3000,
    onError: reported.onError,
  });
  const port = listener.addr.port;
  await warmUp(port, "localhost");
  // Half a ClientHello record, then silence.
  const half = await Deno.connect({ hostname: "127.0.0.1", port });
  await half.write(new Uint8Array([22, 3, 1, 0, 200, 1, 0]));
  // A full ClientHello for a name the function never answers.
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const never = await Deno.startTls(tcp, {
    hostname: "never.example",
    caCerts: [ca],
  });
  await assert.rejects(
    within(60_000, never.handshake()),
    (e) => !(e instanceof Error && e.message.startsWith("not within")),
  );
  never.close();
  assert.equal(await within(60_000, dropped(half)), true);
  await reported.all;
  assert.deepEqual(
    reported.errors.map((e) => (e as TlsError).code),
    ["HandshakeTimeout", "HandshakeTimeout"],
  );
  assert.equal(calls, 2); // the warm-up's, and never.example's
  half.close();
});

Deno.test("serve({ tls: fn }): certificates by SNI, for Deno.startTls and openssl s_client", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hellos: ClientHelloInfo[] = [];
  const reported: unknown[] = [];
  await using _server = serve(listener, async (flow) => {
    await flow.write(encoder.encode("served\n"));
    await flow.closeWrite();
  }, {
    tls: async (hello) => {
      hellos.push(hello);
      await Promise.resolve();
      return hello.serverName === "wrong.example" ? wrongname : localhost;
    },
    onError: (e) => reported.push(e),
  });
  const port = listener.addr.port;
  for (const name of ["wrong.example", "localhost"]) {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    const conn = await Deno.startTls(tcp, { hostname: name, caCerts: [ca] });
    assert.equal(await new Response(conn.readable).text(), "served\n");
  }
  const out = await new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "wrong.example",
      "-verify_hostname",
      "wrong.example",
      "-CAfile",
      fixturePath("ca.pem"),
      "-verify_return_error",
      "-ign_eof",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const text = decoder.decode(out.stdout) + decoder.decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /subject=CN\s?=\s?wrong\.example/);
  assert.match(text, /served/);
  assert.deepEqual(hellos.map((h) => h.serverName), [
    "wrong.example",
    "localhost",
    "wrong.example",
  ]);
  assert.deepEqual(reported, []);
});

Deno.test("serve({ tls }): the handler sees the client's address", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using _server = serve(listener, async (flow) => {
    const remote = flow.remoteAddr as Deno.NetAddr | undefined;
    const local = flow.localAddr as Deno.NetAddr | undefined;
    await flow.write(
      encoder.encode(
        `${remote?.hostname}:${remote?.port} ${local?.hostname}:${local?.port}`,
      ),
    );
    await flow.closeWrite();
  }, { tls: localhost });
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port: listener.addr.port,
    caCerts: [ca],
  });
  const text = await new Response(conn.readable).text();
  const mine = conn.localAddr as Deno.NetAddr;
  assert.equal(
    text,
    `127.0.0.1:${mine.port} 127.0.0.1:${listener.addr.port}`,
  );
});

Deno.test("serve(): a bad handshakeTimeout is a TypeError", () => {
  for (const bad of [0, -1, NaN, "10" as unknown as number]) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      assert.throws(
        () =>
          serve(listener, () => {}, { tls: localhost, handshakeTimeout: bad }),
        (e) => e instanceof TypeError && /handshakeTimeout/.test(e.message),
      );
    } finally {
      listener.close();
    }
  }
});
