// The engine's SIMD ChaCha20-Poly1305 (wasm/src/chacha.rs) against ring's,
// inside the engine, and on the wire against Deno's own TLS.
import assert from "node:assert/strict";
import {
  _engineSelfTestForTesting,
  clientSession,
  serverSession,
} from "../src/_engine.ts";
import { startTls } from "../src/tls.ts";
import { fixture } from "./_helpers.ts";

Deno.test("engine: SIMD ChaCha20-Poly1305 agrees with ring's", async () => {
  for (let i = 0; i < 3; i++) {
    assert.equal(await _engineSelfTestForTesting(), 0);
  }
});

Deno.test("engine: TLS 1.3 ChaCha20-Poly1305 bulk, engine to engine", async () => {
  const c = await clientSession({
    hostname: "localhost",
    caCerts: [fixture("ca.pem")],
  });
  const s = await serverSession({
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
  });
  try {
    for (let i = 0; i < 10 && (c.isHandshaking || s.isHandshaking); i++) {
      let o = c.takeOutgoing();
      if (o) s.feed(o);
      o = s.takeOutgoing();
      if (o) c.feed(o);
    }
    assert.equal(c.handshakeInfo().cipherSuite, "TLS_CHACHA20_POLY1305_SHA256");
    const data = new Uint8Array(300_001);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
    const got = new Uint8Array(data.length);
    let off = 0, recv = 0;
    const buf = new Uint8Array(70_000);
    while (off < data.length || recv < data.length) {
      off += c.write(data.subarray(off, off + 50_000));
      const tls = c.takeOutgoing();
      let fed = 0;
      while (tls && fed < tls.length) {
        fed += s.feed(tls.subarray(fed));
        for (let n; (n = s.read(buf)) && n > 0;) {
          got.set(buf.subarray(0, n), recv);
          recv += n;
        }
      }
    }
    assert.deepEqual(got, data);
  } finally {
    c.free();
    s.free();
  }
});

Deno.test("tls: ChaCha20-Poly1305 both ways against Deno.listenTls", async () => {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
  });
  const size = 3 * 1024 * 1024 + 17;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + (i >> 11)) & 0xff;
  const served = listener.accept().then(async (conn) => {
    // Echo everything back, then close_notify.
    const buf = new Uint8Array(100_000);
    let total = 0;
    while (total < size) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let o = 0; o < n;) o += await conn.write(buf.subarray(o, n));
      total += n;
    }
    await conn.closeWrite();
    conn.close();
  });
  const tcp = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  await using flow = await startTls(tcp, {
    hostname: "localhost",
    caCerts: [fixture("ca.pem")],
  });
  assert.equal(
    (await flow.handshake()).cipherSuite,
    "TLS_CHACHA20_POLY1305_SHA256",
  );
  const [, echoed] = await Promise.all([
    flow.write(data),
    new Response(flow.readable).bytes(),
  ]);
  assert.deepEqual(echoed, data);
  await served;
});
