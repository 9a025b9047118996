// Tests of the TLS pump (src/tls.ts) against the real engine: our client and
// our server over in-memory pipes, TLS inside TLS, failures of every kind, and
// the `tls` protocol over TCP and over pipes.
import assert from "node:assert/strict";
import { empty, type Flow, NotFoundError, resolve } from "../mod.ts";
import { listenPipe, pipe, type PipeFlow, pipeProtocol } from "../src/pipe.ts";
import { tcp } from "../src/tcp.ts";
import {
  acceptTls,
  startTls,
  tls,
  type TlsClientOptions,
  TlsError,
  type TlsFlow,
  type TlsServerOptions,
} from "../src/tls.ts";
import {
  delay,
  der,
  fixture,
  randomBytes,
  readAllRandomly as readAll,
  readExactly,
  sha256,
  writeAllRandomly as writeRandomly,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ca = fixture("ca.pem");
const ecdsa = { cert: fixture("localhost.pem"), key: fixture("localhost.key") };
const rsa = { cert: fixture("rsa.pem"), key: fixture("rsa.key") };
const clientCert = { cert: fixture("client.pem"), key: fixture("client.key") };
const selfSigned = {
  cert: fixture("selfsigned.pem"),
  key: fixture("selfsigned.key"),
};
const wrongName = {
  cert: fixture("wrongname.pem"),
  key: fixture("wrongname.key"),
};
const trusting: TlsClientOptions = { hostname: "localhost", caCerts: [ca] };

interface Connected {
  client: TlsFlow;
  server: TlsFlow;
  a: PipeFlow;
  b: PipeFlow;
  close(): void;
}

/** Our client and our server over a pipe; both must succeed. */
async function connectPair(
  clientOptions: TlsClientOptions = trusting,
  serverOptions: TlsServerOptions = ecdsa,
  highWaterMark?: number,
): Promise<Connected> {
  const [a, b] = pipe({ highWaterMark });
  const [client, server] = await Promise.allSettled([
    startTls(a, clientOptions),
    acceptTls(b, serverOptions),
  ]);
  if (client.status === "rejected" || server.status === "rejected") {
    if (client.status === "fulfilled") client.value.close();
    if (server.status === "fulfilled") server.value.close();
    a.close();
    b.close();
    throw client.status === "rejected"
      ? client.reason
      : (server as PromiseRejectedResult).reason;
  }
  return {
    client: client.value,
    server: server.value,
    a,
    b,
    close() {
      client.value.close();
      server.value.close();
    },
  };
}

/** Our client and our server over a pipe, both outcomes kept. */
async function attempt(
  clientOptions: TlsClientOptions,
  serverOptions: TlsServerOptions,
): Promise<{
  client: PromiseSettledResult<TlsFlow>;
  server: PromiseSettledResult<TlsFlow>;
  close(): void;
}> {
  const [a, b] = pipe();
  const [client, server] = await Promise.allSettled([
    startTls(a, clientOptions),
    acceptTls(b, serverOptions),
  ]);
  return {
    client,
    server,
    close() {
      if (client.status === "fulfilled") client.value.close();
      if (server.status === "fulfilled") server.value.close();
      a.close();
      b.close();
    },
  };
}

function assertTlsError(
  error: unknown,
  code: string | string[],
): asserts error is TlsError {
  assert.ok(error instanceof TlsError, `not a TlsError: ${error}`);
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(
    codes.includes(error.code),
    `code ${error.code} (${error.message}) is not one of ${codes}`,
  );
}

/** A flow that fails the test if it is used at all. */
class UntouchableFlow implements Flow {
  read(): Promise<number | null> {
    throw new Error("read before the options were checked");
  }
  write(): Promise<number> {
    throw new Error("write before the options were checked");
  }
  closeWrite(): Promise<void> {
    throw new Error("closeWrite before the options were checked");
  }
  close(): void {
    throw new Error("close of a flow the caller owns");
  }
  get readable(): ReadableStream<Uint8Array> {
    throw new Error("unused");
  }
  get writable(): WritableStream<Uint8Array> {
    throw new Error("unused");
  }
}

/** Wraps a flow and counts the bytes its writes accepted. */
class CountingFlow implements Flow {
  readonly inner: Flow;
  written = 0;
  constructor(inner: Flow) {
    this.inner = inner;
  }
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  async write(p: Uint8Array): Promise<number> {
    const n = await this.inner.write(p);
    this.written += n;
    return n;
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
  get readable(): ReadableStream<Uint8Array> {
    return this.inner.readable;
  }
  get writable(): WritableStream<Uint8Array> {
    return this.inner.writable;
  }
}

Deno.test("startTls() and acceptTls() handshake TLS 1.3 over a pipe", async () => {
  const { client, server, close } = await connectPair();
  const info = await client.handshake();
  assert.equal(info.protocol, "TLSv1.3");
  assert.match(info.cipherSuite, /^TLS_(AES|CHACHA20)_\w+$/);
  assert.equal(info.alpnProtocol, null);
  assert.equal(info.serverName, "localhost");
  assert.deepEqual(info.peerCertificates[0], der(ecdsa.cert));
  const serverInfo = await server.handshake();
  assert.equal(serverInfo.protocol, "TLSv1.3");
  assert.equal(serverInfo.serverName, "localhost");
  assert.deepEqual(serverInfo.peerCertificates, []);

  await client.write(encoder.encode("ping"));
  assert.equal(decoder.decode(await readExactly(server, 4)), "ping");
  await server.write(encoder.encode("pong"));
  assert.equal(decoder.decode(await readExactly(client, 4)), "pong");
  close();
});

Deno.test("startTls() and acceptTls() work with ECDSA and RSA certificates, TLS 1.3 and 1.2", async (t) => {
  for (const [name, pair] of [["ECDSA", ecdsa], ["RSA", rsa]] as const) {
    for (const tls12 of [false, true]) {
      await t.step(`${name}, ${tls12 ? "TLS 1.2" : "TLS 1.3"}`, async () => {
        // `_tls12Only` is the engine's testing switch, passed through.
        const only12 = { _tls12Only: tls12 } as Record<string, unknown>;
        const { client, server, close } = await connectPair(
          { ...trusting, ...only12 },
          { ...pair, ...only12 },
        );
        const info = await client.handshake();
        assert.equal(info.protocol, tls12 ? "TLSv1.2" : "TLSv1.3");
        if (tls12) {
          assert.match(
            info.cipherSuite,
            name === "RSA" ? /^TLS_ECDHE_RSA_WITH_/ : /^TLS_ECDHE_ECDSA_WITH_/,
          );
        }
        assert.deepEqual(info.peerCertificates[0], der(pair.cert));
        const data = randomBytes(100_000);
        const [, got] = await Promise.all([
          writeRandomly(client, data),
          readAll(server),
        ]);
        assert.deepEqual(got, data);
        close();
      });
    }
  }
});

Deno.test("startTls() negotiates ALPN", async () => {
  const { client, server, close } = await connectPair(
    { ...trusting, alpnProtocols: ["h2", "http/1.1"] },
    { ...ecdsa, alpnProtocols: ["http/1.1", "x-other"] },
  );
  assert.equal((await client.handshake()).alpnProtocol, "http/1.1");
  assert.equal((await server.handshake()).alpnProtocol, "http/1.1");
  close();
});

Deno.test("acceptTls() refuses a client whose ALPN protocols do not overlap", async () => {
  const { client, server, close } = await attempt(
    { ...trusting, alpnProtocols: ["h2"] },
    { ...ecdsa, alpnProtocols: ["http/1.1"] },
  );
  assert.equal(server.status, "rejected");
  assertTlsError(server.reason, "NoApplicationProtocol");
  assert.equal(client.status, "rejected");
  assertTlsError(client.reason, "AlertReceived");
  assert.equal(client.reason.alert, "no_application_protocol");
  close();
});

Deno.test("acceptTls() verifies a required client certificate", async () => {
  const { client, server, close } = await connectPair(
    { ...trusting, ...clientCert },
    { ...ecdsa, clientCaCerts: [ca] },
  );
  const info = await server.handshake();
  assert.deepEqual(info.peerCertificates[0], der(clientCert.cert));
  await client.write(encoder.encode("hi"));
  assert.equal(decoder.decode(await readExactly(server, 2)), "hi");
  close();
});

Deno.test("acceptTls() rejects a client without the required certificate", async () => {
  const { client, server, close } = await attempt(trusting, {
    ...ecdsa,
    clientCaCerts: [ca],
  });
  assert.equal(server.status, "rejected");
  assertTlsError(server.reason, [
    "NoCertificatesPresented",
    "CertificateRequired",
  ]);
  // In TLS 1.3 the client finishes first and hears the alert on its first read.
  const error = client.status === "rejected"
    ? client.reason
    : await client.value.read(new Uint8Array(1)).then(
      () => assert.fail("read succeeded"),
      (e) => e,
    );
  assertTlsError(error, "AlertReceived");
  assert.equal(error.alert, "certificate_required");
  close();
});

Deno.test("acceptTls() rejects a client certificate from an unknown issuer", async () => {
  const { client, server, close } = await attempt(
    { ...trusting, ...selfSigned },
    { ...ecdsa, clientCaCerts: [ca] },
  );
  assert.equal(server.status, "rejected");
  assertTlsError(server.reason, ["UnknownIssuer", "InvalidPurpose"]);
  const error = client.status === "rejected"
    ? client.reason
    : await client.value.read(new Uint8Array(1)).then(
      () => assert.fail("read succeeded"),
      (e) => e,
    );
  assertTlsError(error, "AlertReceived");
  close();
});

Deno.test("startTls() rejects an unknown issuer, a wrong name, and tells the server", async (t) => {
  const cases = [
    ["an unknown issuer", selfSigned, "UnknownIssuer", "unknown_ca"],
    ["a wrong name", wrongName, "NotValidForName", "bad_certificate"],
  ] as const;
  for (const [what, pair, code, alert] of cases) {
    await t.step(what, async () => {
      const { client, server, close } = await attempt(trusting, pair);
      assert.equal(client.status, "rejected");
      assertTlsError(client.reason, code);
      assert.equal(server.status, "rejected");
      assertTlsError(server.reason, "AlertReceived");
      assert.equal(server.reason.alert, alert);
      close();
    });
  }
});

Deno.test("startTls() verifies an IP address as an IP SAN", async () => {
  const { client, close } = await connectPair({
    hostname: "127.0.0.1",
    caCerts: [ca],
  });
  assert.equal((await client.handshake()).protocol, "TLSv1.3");
  close();
  const refused = await attempt(
    { hostname: "127.0.0.2", caCerts: [ca] },
    ecdsa,
  );
  assert.equal(refused.client.status, "rejected");
  assertTlsError(refused.client.reason, "NotValidForName");
  refused.close();
});

Deno.test("startTls() with unsafelyIgnoreCertificateErrors accepts any certificate", async () => {
  const { client, close } = await connectPair(
    { unsafelyIgnoreCertificateErrors: true },
    selfSigned,
  );
  assert.deepEqual(
    (await client.handshake()).peerCertificates[0],
    der(selfSigned.cert),
  );
  close();
});

Deno.test("TlsFlow transfers 8 MiB of random bytes both ways at once", async () => {
  const { client, server, close } = await connectPair();
  const up = randomBytes(8 * 1024 * 1024);
  const down = randomBytes(8 * 1024 * 1024 + 13);
  const [, , gotUp, gotDown] = await Promise.all([
    writeRandomly(client, up),
    writeRandomly(server, down),
    readAll(server),
    readAll(client),
  ]);
  assert.equal(gotUp.length, up.length);
  assert.equal(gotDown.length, down.length);
  assert.equal(await sha256(gotUp), await sha256(up));
  assert.equal(await sha256(gotDown), await sha256(down));
  close();
});

Deno.test("TlsFlow delivers to a reader with tiny buffers", async () => {
  // A slow reader leaves plaintext in the engine: feed() takes fewer bytes
  // than given, and the rest must be fed later, in order.
  const { client, server, close } = await connectPair();
  const data = randomBytes(300_000);
  const [, got] = await Promise.all([
    writeRandomly(client, data),
    readAll(server, 97),
  ]);
  assert.equal(await sha256(got), await sha256(data));
  close();
});

Deno.test("TlsFlow serialises concurrent writes in call order", async () => {
  const { client, server, close } = await connectPair();
  const chunks = Array.from(
    { length: 200 },
    (_, i) => new Uint8Array(1 + (i * 7919) % 40_000).fill(i),
  );
  const writes = chunks.map((c) => client.write(c));
  const closed = client.closeWrite();
  const [got] = await Promise.all([readAll(server), ...writes, closed]);
  let offset = 0;
  for (const chunk of chunks) {
    assert.deepEqual(got.subarray(offset, offset + chunk.length), chunk);
    offset += chunk.length;
  }
  assert.equal(offset, got.length);
  for (const [i, n] of (await Promise.all(writes)).entries()) {
    assert.equal(n, chunks[i].length);
  }
  close();
});

Deno.test("TlsFlow.closeWrite() sends close_notify: the peer reads null and can still write", async () => {
  const { client, server, close } = await connectPair();
  await client.write(encoder.encode("request"));
  await client.closeWrite();
  assert.equal(decoder.decode(await readAll(server)), "request");
  assert.equal(await server.read(new Uint8Array(8)), null);
  await assert.rejects(
    client.write(encoder.encode("more")),
    (e: Error) =>
      e instanceof Deno.errors.BrokenPipe &&
      /closed for writing/.test(e.message),
  );
  await client.closeWrite(); // idempotent
  await server.write(encoder.encode("response"));
  await server.closeWrite();
  assert.equal(decoder.decode(await readAll(client)), "response");
  assert.equal(await client.read(new Uint8Array(8)), null);
  close();
});

Deno.test("TlsFlow.read() rejects a truncation with UnexpectedEof", async () => {
  const { client, server, b, close } = await connectPair();
  await server.write(encoder.encode("partial"));
  b.close(); // the transport ends without close_notify
  assert.equal(decoder.decode(await readExactly(client, 7)), "partial");
  await assert.rejects(
    client.read(new Uint8Array(8)),
    (e) => e instanceof TlsError && e.code === "UnexpectedEof",
  );
  // The error sticks.
  await assert.rejects(
    client.read(new Uint8Array(8)),
    (e) => e instanceof TlsError && e.code === "UnexpectedEof",
  );
  close();
});

Deno.test("TlsFlow.close() sends close_notify and closes the flow it wraps", async () => {
  const { client, server, a } = await connectPair();
  await client.write(encoder.encode("bye"));
  client.close();
  client.close(); // idempotent
  assert.equal(decoder.decode(await readAll(server)), "bye");
  await assert.rejects(a.write(new Uint8Array(1)), Deno.errors.BadResource);
  server.close();
});

Deno.test("TlsFlow.close() right after closeWrite() still sends close_notify", async () => {
  const { client, server } = await connectPair();
  await client.write(encoder.encode("last"));
  const closing = client.closeWrite();
  client.close();
  // The pending closeWrite is interrupted, but close() says close_notify.
  await assert.rejects(closing, Deno.errors.Interrupted);
  assert.equal(decoder.decode(await readAll(server)), "last");
  server.close();
});

Deno.test("TlsFlow rejects a write or a read after close with BadResource", async () => {
  const { client, close } = await connectPair();
  client.close();
  await assert.rejects(
    client.write(encoder.encode("late")),
    (e: Error) =>
      e instanceof Deno.errors.BadResource &&
      e.message === "Cannot write to TLS flow: it is closed",
  );
  await assert.rejects(
    client.read(new Uint8Array(8)),
    (e: Error) =>
      e instanceof Deno.errors.BadResource &&
      e.message === "Cannot read from TLS flow: it is closed",
  );
  await assert.rejects(client.closeWrite(), Deno.errors.BadResource);
  close();
});

Deno.test("TlsFlow.close() rejects a pending read with Interrupted", async () => {
  const { client, close } = await connectPair();
  const read = client.read(new Uint8Array(8));
  const queued = client.read(new Uint8Array(8));
  await delay(10);
  client.close();
  await assert.rejects(read, Deno.errors.Interrupted);
  await assert.rejects(queued, Deno.errors.Interrupted);
  close();
});

Deno.test("TlsFlow applies backpressure: a writer stalls while the peer does not read", async () => {
  const [a, b] = pipe();
  const counting = new CountingFlow(a);
  const [client, server] = await Promise.all([
    startTls(counting, trusting),
    acceptTls(b, ecdsa),
  ]);
  const before = counting.written;
  let finished = false;
  const write = client.write(new Uint8Array(8 * 1024 * 1024)).then(
    () => {
      finished = true;
    },
    (error) => error,
  );
  await delay(300);
  assert.equal(finished, false, "the write completed while nobody read");
  const sent = counting.written - before;
  assert.ok(sent < 512 * 1024, `${sent} bytes left while nobody read`);
  // Full duplex: the stalled writer does not stop the other direction.
  await server.write(encoder.encode("still here"));
  assert.equal(decoder.decode(await readExactly(client, 10)), "still here");
  // Closing fails the stalled write, never silently.
  client.close();
  const error = await write;
  assert.ok(error instanceof Deno.errors.Interrupted, `${error}`);
  server.close();
});

Deno.test("TlsFlow readable and writable streams echo", async () => {
  const { client, server, close } = await connectPair();
  const echo = server.readable.pipeTo(server.writable);
  const chunks = Array.from({ length: 50 }, () => randomBytes(10_000));
  const [, got] = await Promise.all([
    ReadableStream.from(chunks).pipeTo(client.writable),
    new Response(client.readable).bytes(),
    echo,
  ]);
  const all = new Uint8Array(500_000);
  chunks.forEach((c, i) => all.set(c, i * 10_000));
  assert.deepEqual(got, all);
  close();
});

Deno.test("TlsFlow.readable cancelled ends the stream only: reads go on from there, writes too", async () => {
  const { client, server, close } = await connectPair();
  await server.write(encoder.encode("first"));
  for await (const chunk of client.readable) {
    assert.equal(decoder.decode(chunk), "first");
    break; // cancels the stream
  }
  await server.write(encoder.encode("second"));
  assert.equal(decoder.decode(await readExactly(client, 6)), "second");
  await client.write(encoder.encode("still writing"));
  assert.equal(decoder.decode(await readExactly(server, 13)), "still writing");
  close();
});

Deno.test("TlsFlow reads and writes nothing for empty buffers", async () => {
  const { client, server, close } = await connectPair();
  assert.equal(await client.write(new Uint8Array(0)), 0);
  assert.equal(await client.read(new Uint8Array(0)), 0);
  await client.write(encoder.encode("x"));
  assert.equal(decoder.decode(await readExactly(server, 1)), "x");
  close();
});

Deno.test("TlsFlow.write() rejects when the transport fails, and keeps rejecting", async () => {
  const { client, server, b } = await connectPair();
  b.close(); // the peer's transport is gone
  await assert.rejects(
    client.write(new Uint8Array(100_000)),
    Deno.errors.BrokenPipe,
  );
  await assert.rejects(
    client.write(new Uint8Array(10)),
    Deno.errors.BrokenPipe,
  );
  client.close();
  server.close();
});

Deno.test("TlsFlow supports await using", async () => {
  const [a, b] = pipe();
  const server = acceptTls(b, ecdsa);
  {
    await using client = await startTls(a, trusting);
    await client.write(encoder.encode("x"));
  }
  const flow = await server;
  assert.equal(decoder.decode(await readAll(flow)), "x");
  flow.close();
});

Deno.test("startTls() runs TLS inside TLS over a pipe", async () => {
  const outer = await connectPair();
  const [client, server] = await Promise.all([
    startTls(outer.client, { hostname: "127.0.0.1", caCerts: [ca] }),
    acceptTls(outer.server, rsa),
  ]);
  assert.deepEqual(
    (await client.handshake()).peerCertificates[0],
    der(rsa.cert),
  );
  const up = randomBytes(1024 * 1024);
  const down = randomBytes(512 * 1024);
  const [, , gotUp, gotDown] = await Promise.all([
    writeRandomly(client, up),
    writeRandomly(server, down),
    readAll(server),
    readAll(client),
  ]);
  assert.equal(await sha256(gotUp), await sha256(up));
  assert.equal(await sha256(gotDown), await sha256(down));
  client.close();
  server.close();
  // Closing the inner flows closed the outer ones.
  await assert.rejects(
    outer.client.write(new Uint8Array(1)),
    Deno.errors.BadResource,
  );
  outer.close();
});

Deno.test("startTls() rejects with the signal's reason when aborted mid-handshake", async () => {
  const [a, b] = pipe();
  const controller = new AbortController();
  const reason = new Error("stop");
  const started = startTls(a, { ...trusting, signal: controller.signal });
  // The ClientHello is sent, the server never answers.
  const hello = new Uint8Array(4096);
  assert.ok((await b.read(hello))! > 0);
  assert.equal(hello[0], 22); // a handshake record
  controller.abort(reason);
  await assert.rejects(started, (e) => e === reason);
  a.close();
  b.close();
});

Deno.test("acceptTls() rejects with the signal's reason when aborted mid-handshake", async () => {
  const [a, b] = pipe();
  const signal = AbortSignal.timeout(50);
  await assert.rejects(
    acceptTls(b, { ...ecdsa, signal }),
    (e) => e instanceof DOMException && e.name === "TimeoutError",
  );
  a.close();
  b.close();
});

Deno.test("startTls() rejects an already aborted signal before any I/O", async () => {
  const reason = new Error("never");
  await assert.rejects(
    startTls(new UntouchableFlow(), {
      ...trusting,
      signal: AbortSignal.abort(reason),
    }),
    (e) => e === reason,
  );
});

Deno.test("startTls() rejects garbage from the peer with BadInput and sends an alert", async () => {
  const [a, b] = pipe();
  const started = startTls(a, trusting);
  assert.ok((await b.read(new Uint8Array(4096)))! > 0);
  await b.write(encoder.encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
  await assert.rejects(
    started,
    (e) => e instanceof TlsError && e.code === "BadInput",
  );
  const alert = new Uint8Array(64);
  const n = await b.read(alert);
  assert.ok(n !== null && n >= 7, "no alert was sent");
  assert.equal(alert[0], 21); // an alert record
  a.close();
  b.close();
});

Deno.test("acceptTls() rejects garbage from the peer with BadInput", async () => {
  const [a, b] = pipe();
  const accepted = acceptTls(b, ecdsa);
  await a.write(encoder.encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  await assert.rejects(
    accepted,
    (e) => e instanceof TlsError && e.code === "BadInput",
  );
  a.close();
  b.close();
});

Deno.test("startTls() rejects a peer that closes mid-handshake with UnexpectedEof", async (t) => {
  for (const how of ["close", "closeWrite"] as const) {
    await t.step(how, async () => {
      const [a, b] = pipe();
      const started = startTls(a, trusting);
      assert.ok((await b.read(new Uint8Array(4096)))! > 0);
      if (how === "close") b.close();
      else await b.closeWrite();
      await assert.rejects(
        started,
        (e) => e instanceof TlsError && e.code === "UnexpectedEof",
      );
      a.close();
      b.close();
    });
  }
});

Deno.test("startTls() rejects a transport failing mid-handshake with UnexpectedEof and its cause", async () => {
  const [a, b] = pipe();
  const reset = new Deno.errors.ConnectionReset("Connection reset by peer");
  let reads = 0;
  const failing: Flow = {
    read: () =>
      ++reads === 1 ? Promise.reject(reset) : a.read(new Uint8Array(1)),
    write: (p) => a.write(p),
    closeWrite: () => a.closeWrite(),
    close: () => a.close(),
    readable: a.readable,
    writable: a.writable,
  };
  await assert.rejects(startTls(failing, trusting), (e) => {
    assertTlsError(e, "UnexpectedEof");
    assert.equal(e.cause, reset);
    return true;
  });
  a.close();
  b.close();
});

Deno.test("acceptTls() rejects a client that closes before its hello with UnexpectedEof", async () => {
  const [a, b] = pipe();
  const accepted = acceptTls(b, ecdsa);
  await a.closeWrite();
  await assert.rejects(
    accepted,
    (e) => e instanceof TlsError && e.code === "UnexpectedEof",
  );
  a.close();
  b.close();
});

Deno.test("startTls() and acceptTls() reject bad options with TypeError before any I/O", async (t) => {
  const flow = new UntouchableFlow();
  const badPem =
    "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
  await t.step("malformed CA PEM", async () => {
    await assert.rejects(
      startTls(flow, { hostname: "localhost", caCerts: [badPem] }),
      TypeError,
    );
  });
  await t.step("a CA with no certificate", async () => {
    await assert.rejects(
      startTls(flow, { hostname: "localhost", caCerts: ["hello"] }),
      TypeError,
    );
  });
  await t.step("a client cert without its key", async () => {
    await assert.rejects(
      startTls(flow, { ...trusting, cert: clientCert.cert }),
      TypeError,
    );
  });
  await t.step("no hostname", async () => {
    await assert.rejects(startTls(flow, { caCerts: [ca] }), TypeError);
  });
  await t.step("a malformed server key", async () => {
    await assert.rejects(
      acceptTls(flow, {
        cert: ecdsa.cert,
        key: "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
      }),
      TypeError,
    );
  });
  await t.step("a server without cert", async () => {
    await assert.rejects(
      acceptTls(flow, { key: ecdsa.key } as TlsServerOptions),
      TypeError,
    );
  });
});

Deno.test("tls resolves TLS over tcp", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const flow = await acceptTls(conn, { ...ecdsa, alpnProtocols: ["echo"] });
    const got = await readAll(flow);
    await flow.write(got);
    await flow.closeWrite();
    return flow;
  })();
  const ctx = empty.add(tls.endpoint, {
    hostname: "localhost",
    caCerts: [ca],
    alpnProtocols: ["echo"],
    over: empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  });
  const flow = await resolve(ctx);
  assert.ok(tls.is(flow));
  assert.equal((await flow.handshake()).alpnProtocol, "echo");
  await flow.write(encoder.encode("over tcp"));
  await flow.closeWrite();
  assert.equal(decoder.decode(await readAll(flow)), "over tcp");
  flow.close();
  (await served).close();
});

Deno.test("tls closes the inner flow when the handshake fails", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const error = await acceptTls(conn, wrongName).then(
      () => assert.fail("accepted"),
      (e) => e,
    );
    // The client closed its TCP connection: end of stream.
    const n = await conn.read(new Uint8Array(64));
    conn.close();
    return { error, n };
  })();
  const ctx = empty.add(tls.endpoint, {
    hostname: "localhost",
    caCerts: [ca],
    over: empty.add(tcp.endpoint, {
      hostname: "127.0.0.1",
      port: listener.addr.port,
    }),
  });
  const error = await resolve(ctx).then(
    () => assert.fail("resolved"),
    (e) => e,
  );
  assert.ok(error instanceof NotFoundError);
  assertTlsError(error.attempts[0].error, "NotValidForName");
  const { error: serverError, n } = await served;
  assertTlsError(serverError, "AlertReceived");
  assert.equal(n, null);
});

Deno.test("tls fails the attempt without a hostname, before connecting", async () => {
  const listener = listenPipe();
  const ctx = empty.add(tls.endpoint, {
    caCerts: [ca],
    over: empty.add(pipeProtocol.endpoint, listener),
  });
  const error = await resolve(ctx).then(
    () => assert.fail("resolved"),
    (e) => e,
  );
  assert.ok(error instanceof NotFoundError);
  assert.ok(error.attempts[0].error instanceof TypeError);
  listener.close();
});

Deno.test("tls resolves TLS inside TLS over a pipe", async () => {
  const listener = listenPipe();
  const served = (async () => {
    const flow = await listener.accept();
    const outer = await acceptTls(flow, ecdsa);
    const inner = await acceptTls(outer, rsa);
    await inner.write(await readAll(inner));
    await inner.closeWrite();
    return inner;
  })();
  const ctx = empty.add(tls.endpoint, {
    hostname: "127.0.0.1",
    caCerts: [ca],
    over: empty.add(tls.endpoint, {
      hostname: "localhost",
      caCerts: [ca],
      over: empty.add(pipeProtocol.endpoint, listener),
    }),
  });
  const flow = await resolve(ctx);
  assert.ok(tls.is(flow));
  assert.deepEqual((await flow.handshake()).peerCertificates[0], der(rsa.cert));
  const data = randomBytes(200_000);
  const [, got] = await Promise.all([writeRandomly(flow, data), readAll(flow)]);
  assert.equal(await sha256(got), await sha256(data));
  flow.close();
  (await served).close();
  listener.close();
});

Deno.test("tls rejects with the signal's reason when resolution is aborted", async () => {
  const listener = listenPipe();
  const controller = new AbortController();
  const ctx = empty.add(tls.endpoint, {
    ...trusting,
    over: empty.add(pipeProtocol.endpoint, listener),
  });
  const resolving = resolve(ctx, { signal: controller.signal });
  const server = await listener.accept(); // connected; the server never answers
  controller.abort(new Error("enough"));
  await assert.rejects(resolving, { message: "enough" });
  // The inner flow was closed: the server end reads the hello, then the end.
  await readAll(server);
  server.close();
  listener.close();
});
