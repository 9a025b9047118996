/**
 * The sans-IO RFC 6455 codec (src/_rfc6455.ts) on its own: frames encoded
 * and decoded in every length form, fed whole and byte by byte;
 * fragmentation with control frames between fragments; every violation of
 * section 5 a peer can commit, with the close code the RFC prescribes; and
 * the handshake's accept key (the RFC's own example) and request checks.
 */

import assert from "node:assert/strict";
import {
  acceptFor,
  checkUpgradeRequest,
  closePayload,
  encodeFrame,
  FrameDecoder,
  type FrameEvent,
  frameHeader,
  Opcode,
  parseHead,
} from "../src/_rfc6455.ts";
import { randomBytes } from "./_helpers.ts";

const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);
const enc = new TextEncoder();

function server(maxMessageSize = 1 << 24): FrameDecoder {
  return new FrameDecoder({ role: "server", maxMessageSize });
}
function client(maxMessageSize = 1 << 24): FrameDecoder {
  return new FrameDecoder({ role: "client", maxMessageSize });
}

/** A client frame (masked), for a server decoder. */
function cf(opcode: number, payload: Uint8Array | string, fin = true) {
  return encodeFrame(
    opcode,
    typeof payload === "string" ? enc.encode(payload) : payload,
    MASK,
    fin,
  );
}

function feedAll(d: FrameDecoder, ...frames: Uint8Array[]): FrameEvent[] {
  return frames.flatMap((f) => d.feed(f));
}

function failCode(events: FrameEvent[]): number | undefined {
  const last = events.at(-1);
  return last?.type === "fail" ? last.code : undefined;
}

Deno.test("rfc6455: the RFC's example frames decode", () => {
  // RFC 6455 section 5.7: "Hello", unmasked and masked.
  const unmasked = new Uint8Array([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
  const [a] = client().feed(unmasked);
  assert.equal(a.type, "message");
  assert.equal(
    new TextDecoder().decode((a as { data: Uint8Array }).data),
    "Hello",
  );
  const masked = new Uint8Array([
    0x81,
    0x85,
    0x37,
    0xfa,
    0x21,
    0x3d,
    0x7f,
    0x9f,
    0x4d,
    0x51,
    0x58,
  ]);
  assert.deepEqual(cf(Opcode.Text, "Hello"), masked);
  const [b] = server().feed(masked);
  assert.deepEqual(b, {
    type: "message",
    binary: false,
    data: enc.encode("Hello"),
  });
  // Fragmented "Hel" + "lo", and a 256-byte binary message's header.
  const d = client();
  assert.deepEqual(
    d.feed(new Uint8Array([0x01, 0x03, 0x48, 0x65, 0x6c])),
    [],
  );
  assert.deepEqual(d.feed(new Uint8Array([0x80, 0x02, 0x6c, 0x6f])), [
    { type: "message", binary: false, data: enc.encode("Hello") },
  ]);
  assert.deepEqual(
    frameHeader(Opcode.Binary, 256, null),
    new Uint8Array([0x82, 0x7e, 0x01, 0x00]),
  );
  assert.deepEqual(
    frameHeader(Opcode.Binary, 65536, null),
    new Uint8Array([0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]),
  );
});

Deno.test("rfc6455: every length form round-trips, whole and byte by byte", () => {
  for (const n of [0, 1, 125, 126, 127, 65535, 65536, 200_000]) {
    const payload = randomBytes(n);
    const frame = cf(Opcode.Binary, payload);
    const whole = server().feed(frame);
    assert.deepEqual(
      whole,
      [{ type: "message", binary: true, data: payload }],
      `n=${n}`,
    );
    if (n <= 65536) {
      const d = server();
      const events: FrameEvent[] = [];
      for (let i = 0; i < frame.length; i++) {
        events.push(...d.feed(frame.subarray(i, i + 1)));
      }
      assert.deepEqual(events, whole, `n=${n} byte by byte`);
    }
  }
});

Deno.test("rfc6455: control frames between fragments", () => {
  const d = server();
  const events = feedAll(
    d,
    cf(Opcode.Binary, "ab", false),
    cf(Opcode.Ping, "p1"),
    cf(Opcode.Continuation, "cd", false),
    cf(Opcode.Pong, ""),
    cf(Opcode.Continuation, "ef"),
  );
  assert.deepEqual(events.map((e) => e.type), ["ping", "pong", "message"]);
  assert.deepEqual(events[0], { type: "ping", data: enc.encode("p1") });
  assert.deepEqual(events[2], {
    type: "message",
    binary: true,
    data: enc.encode("abcdef"),
  });
  // A close frame ends the decoder: what follows is ignored.
  const closing = feedAll(
    d,
    cf(Opcode.Close, closePayload(1001, "bye")),
    cf(Opcode.Binary, "late"),
  );
  assert.deepEqual(closing, [{ type: "close", code: 1001, reason: "bye" }]);
  assert.ok(d.done);
  assert.deepEqual(server().feed(cf(Opcode.Close, new Uint8Array(0))), [
    { type: "close", code: 1005, reason: "" },
  ]);
});

Deno.test("rfc6455: UTF-8 is checked across fragments", () => {
  const e = enc.encode("h\u00e9llo \u{1f600}");
  // Split inside the two-byte and the four-byte characters.
  const ok = feedAll(
    server(),
    cf(Opcode.Text, e.subarray(0, 2), false),
    cf(Opcode.Continuation, e.subarray(2, 9), false),
    cf(Opcode.Continuation, e.subarray(9)),
  );
  assert.deepEqual(ok, [{ type: "message", binary: false, data: e }]);
  // Invalid at once: fails on the first fragment, before the message ends.
  const bad = server().feed(
    cf(Opcode.Text, new Uint8Array([0xce, 0xba, 0xff]), false),
  );
  assert.equal(failCode(bad), 1007);
  // Truncated at the end of the message.
  assert.equal(
    failCode(server().feed(cf(Opcode.Text, e.subarray(0, 2)))),
    1007,
  );
  // An encoded surrogate (CESU-8) is not UTF-8.
  assert.equal(
    failCode(
      server().feed(cf(Opcode.Text, new Uint8Array([0xed, 0xa0, 0x80]))),
    ),
    1007,
  );
  // Binary messages are not checked.
  assert.equal(
    server().feed(cf(Opcode.Binary, new Uint8Array([0xff])))[0].type,
    "message",
  );
});

Deno.test("rfc6455: the message size limit gives 1009 before buffering", () => {
  assert.deepEqual(
    server(100).feed(cf(Opcode.Binary, randomBytes(100)))[0].type,
    "message",
  );
  // The header alone is enough to refuse a frame too big.
  const header = frameHeader(Opcode.Binary, 2 ** 40, MASK);
  assert.equal(failCode(server(100).feed(header)), 1009);
  // Fragments that add up to too much.
  const events = feedAll(
    server(100),
    cf(Opcode.Binary, randomBytes(60), false),
    cf(Opcode.Continuation, randomBytes(60)),
  );
  assert.equal(failCode(events), 1009);
});

Deno.test("rfc6455: violations of section 5 give 1002", () => {
  const cases: [string, FrameDecoder, Uint8Array][] = [
    [
      "unmasked client frame",
      server(),
      encodeFrame(Opcode.Binary, enc.encode("x"), null),
    ],
    ["masked server frame", client(), cf(Opcode.Binary, "x")],
    [
      "RSV1 set",
      server(),
      (() => {
        const f = cf(Opcode.Binary, "x");
        f[0] |= 0x40;
        return f;
      })(),
    ],
    ["opcode 3", server(), cf(3, "x")],
    ["opcode 0xb", server(), cf(0xb, "x")],
    ["fragmented ping", server(), cf(Opcode.Ping, "x", false)],
    ["ping of 126 bytes", server(), cf(Opcode.Ping, randomBytes(126))],
    ["continuation without a message", server(), cf(Opcode.Continuation, "x")],
    ["close with one byte", server(), cf(Opcode.Close, new Uint8Array([3]))],
    ["close code 1005", server(), cf(Opcode.Close, closePayload(1005))],
    ["close code 999", server(), cf(Opcode.Close, closePayload(999))],
    ["close code 2999", server(), cf(Opcode.Close, closePayload(2999))],
    [
      "64-bit length with its top bit",
      client(),
      new Uint8Array([0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1]),
    ],
  ];
  for (const [name, d, bytes] of cases) {
    const events = d.feed(bytes);
    assert.equal(failCode(events), 1002, name);
    assert.ok(d.done, name);
    assert.deepEqual(
      d.feed(cf(Opcode.Binary, "more")),
      [],
      `${name}: ignored after`,
    );
  }
  // A new data frame inside a fragmented message.
  const events = feedAll(
    server(),
    cf(Opcode.Binary, "a", false),
    cf(Opcode.Text, "b"),
  );
  assert.equal(failCode(events), 1002);
  // A close reason that is not UTF-8.
  const reason = new Uint8Array([0x03, 0xe8, 0xff]);
  assert.equal(failCode(server().feed(cf(Opcode.Close, reason))), 1007);
});

Deno.test("rfc6455: the accept key of the RFC's example", async () => {
  assert.equal(
    await acceptFor("dGhlIHNhbXBsZSBub25jZQ=="),
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
  );
});

Deno.test("rfc6455: upgrade requests are checked", () => {
  const req = (lines: string[]) =>
    checkUpgradeRequest(parseHead(lines.join("\r\n"))!);
  const good = [
    "GET /chat HTTP/1.1",
    "Host: server.example.com",
    "Upgrade: websocket",
    "Connection: keep-alive, Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
  ];
  const ok = req(good);
  assert.ok(ok.ok);
  assert.equal(ok.key, "dGhlIHNhbXBsZSBub25jZQ==");
  assert.equal(ok.target, "/chat");
  const status = (lines: string[]) => {
    const c = req(lines);
    return c.ok ? 101 : c.status;
  };
  assert.equal(status(["GET / HTTP/1.1", "Host: h"]), 426);
  assert.equal(
    status(good.map((l) => l.replace("Version: 13", "Version: 8"))),
    426,
  );
  const v8 = req(good.map((l) => l.replace("Version: 13", "Version: 8")));
  assert.ok(!v8.ok && v8.headers["Sec-WebSocket-Version"] === "13");
  assert.equal(status(good.map((l) => l.replace("GET", "POST"))), 400);
  assert.equal(status(good.map((l) => l.replace("HTTP/1.1", "HTTP/1.0"))), 400);
  assert.equal(status(good.filter((l) => !l.startsWith("Host"))), 400);
  assert.equal(
    status(good.filter((l) => !l.startsWith("Sec-WebSocket-Key"))),
    400,
  );
  assert.equal(
    status(good.map((l) => l.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="))),
    400,
  );
  assert.equal(
    status(good.map((l) => l.replace("keep-alive, Upgrade", "close"))),
    400,
  );
  assert.equal(parseHead("GET / HTTP/1.1\r\nno colon here"), null);
});

Deno.test("rfc6455: random bytes never throw, and fail only with 1002, 1007 or 1009", () => {
  for (let i = 0; i < 3000; i++) {
    const d = i % 2 === 0 ? server(4096) : client(4096);
    const bytes = randomBytes(1 + (i % 300));
    // Start most inputs with a plausible header so parsing goes deeper.
    if (i % 3 !== 0) bytes[0] = (bytes[0] & 0x8f) | (i % 5 === 0 ? 0x40 : 0);
    if (i % 3 !== 0) bytes[1] = i % 2 === 0 ? bytes[1] | 0x80 : bytes[1] & 0x7f;
    const events: FrameEvent[] = [];
    for (let at = 0; at < bytes.length; at += 1 + (i % 7)) {
      events.push(...d.feed(bytes.subarray(at, at + 1 + (i % 7))));
    }
    const fails = events.filter((e) => e.type === "fail");
    assert.ok(fails.length <= 1);
    if (fails.length === 1) {
      assert.ok(
        [1002, 1007, 1009].includes(fails[0].code),
        `code ${fails[0].code}`,
      );
      assert.equal(events.at(-1), fails[0], "nothing after a failure");
    }
  }
});
