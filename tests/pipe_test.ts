import assert from "node:assert/strict";
import { empty, NotFoundError, resolve } from "../mod.ts";
import {
  listenPipe,
  pipe,
  type PipeFlow,
  PipeListener,
  pipeProtocol,
} from "../src/pipe.ts";
import {
  randomBytes,
  readAll,
  readAllRandomly,
  sha256,
  writeAllRandomly,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Resolves once every queued microtask and one macrotask ran. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("pipe() transfers several MiB byte-exact in both directions", async () => {
  const [a, b] = pipe();
  const toB = randomBytes(5 * 1024 * 1024 + 17);
  const toA = randomBytes(3 * 1024 * 1024 + 5);
  const [, , gotB, gotA] = await Promise.all([
    writeAllRandomly(a, toB),
    writeAllRandomly(b, toA),
    readAllRandomly(b),
    readAllRandomly(a),
  ]);
  assert.equal(gotB.length, toB.length);
  assert.equal(gotA.length, toA.length);
  assert.equal(await sha256(gotB), await sha256(new Uint8Array(toB)));
  assert.equal(await sha256(gotA), await sha256(new Uint8Array(toA)));
  a.close();
  b.close();
});

Deno.test("pipe() write copies, so the caller may reuse its buffer", async () => {
  const [a, b] = pipe();
  const buf = encoder.encode("first");
  await a.write(buf);
  buf.set(encoder.encode("XXXXX"));
  const out = new Uint8Array(16);
  const n = await b.read(out);
  assert.equal(decoder.decode(out.subarray(0, n!)), "first");
  a.close();
  b.close();
});

Deno.test("pipe() applies backpressure", async () => {
  const highWaterMark = 1000;
  const chunk = 300;
  const [a, b] = pipe({ highWaterMark });
  let accepted = 0;
  let done = false;
  const writer = (async () => {
    for (let i = 0; i < 20; i++) {
      accepted += await a.write(new Uint8Array(chunk).fill(i));
    }
    done = true;
    await a.closeWrite();
  })();
  await settle();
  await settle();
  assert.equal(done, false, "the writer waits while nobody reads");
  assert.ok(
    accepted <= highWaterMark + chunk,
    `accepted ${accepted} > highWaterMark + one chunk`,
  );
  assert.ok(accepted >= highWaterMark - chunk, `accepted only ${accepted}`);
  // Draining lets the writer finish, in order.
  const got: number[] = [];
  const buf = new Uint8Array(128);
  for (let n; (n = await b.read(buf)) !== null;) {
    got.push(...buf.subarray(0, n));
  }
  await writer;
  assert.equal(got.length, 20 * chunk);
  for (let i = 0; i < 20; i++) assert.equal(got[i * chunk], i);
  a.close();
  b.close();
});

Deno.test("pipe() accepts a write larger than highWaterMark piecewise", async () => {
  const [a, b] = pipe({ highWaterMark: 16 });
  const data = randomBytes(1000);
  let resolved = false;
  const write = a.write(data).then((n) => {
    resolved = true;
    return n;
  });
  await settle();
  assert.equal(resolved, false);
  const got = new Uint8Array(1000);
  let offset = 0;
  while (offset < 1000) {
    const n = await b.read(got.subarray(offset, offset + 7));
    assert.ok(n !== null && n <= 7);
    offset += n;
  }
  assert.equal(await write, 1000);
  assert.deepEqual(got, data);
  a.close();
  b.close();
});

Deno.test("pipe() with highWaterMark 0 hands bytes over directly", async () => {
  const [a, b] = pipe({ highWaterMark: 0 });
  let resolved = false;
  const write = a.write(encoder.encode("hello")).then(() => resolved = true);
  await settle();
  assert.equal(resolved, false, "nothing is buffered");
  const buf = new Uint8Array(3);
  assert.equal(await b.read(buf), 3);
  assert.equal(resolved, false);
  assert.equal(await b.read(buf), 2);
  await write;
  // A waiting read takes a write at once.
  const read = b.read(new Uint8Array(8));
  assert.equal(await a.write(encoder.encode("abc")), 3);
  assert.equal(await read, 3);
  a.close();
  b.close();
});

Deno.test("pipe() keeps concurrent writes in call order", async () => {
  const [a, b] = pipe({ highWaterMark: 4 });
  const writes = ["aaaaaa", "bb", "cccccccc"].map((s) =>
    a.write(encoder.encode(s))
  );
  const closed = Promise.all(writes).then(() => a.closeWrite());
  const text = await new Response(b.readable).text();
  await closed;
  assert.equal(text, "aaaaaabbcccccccc");
  a.close();
  b.close();
});

Deno.test("pipe() validates highWaterMark", () => {
  assert.throws(() => pipe({ highWaterMark: -1 }), RangeError);
  assert.throws(() => pipe({ highWaterMark: 1.5 }), RangeError);
  assert.throws(() => pipe({ highWaterMark: NaN }), RangeError);
  const [a, b] = pipe({ highWaterMark: Infinity });
  a.close();
  b.close();
});

Deno.test("pipe() half-closes", async () => {
  const [a, b] = pipe();
  await a.write(encoder.encode("last words"));
  await a.closeWrite();
  await a.closeWrite(); // harmless
  const buf = new Uint8Array(64);
  const n = await b.read(buf);
  assert.equal(decoder.decode(buf.subarray(0, n!)), "last words");
  assert.equal(await b.read(buf), null);
  assert.equal(await b.read(buf), null);
  // The other direction still works.
  await b.write(encoder.encode("reply"));
  await b.closeWrite();
  assert.equal(await new Response(a.readable).text(), "reply");
  // Flow contract rule 3: a write after closeWrite() is a BrokenPipe.
  await assert.rejects(a.write(encoder.encode("x")), (error: Error) => {
    assert.ok(error instanceof Deno.errors.BrokenPipe);
    assert.match(error.message, /^Cannot write to pipe flow: it is closed/);
    return true;
  });
  a.close();
  b.close();
});

Deno.test("pipe() delivers writes pending at closeWrite before end of flow", async () => {
  const [a, b] = pipe({ highWaterMark: 2 });
  const write = a.write(encoder.encode("pending"));
  await a.closeWrite();
  assert.equal(await new Response(b.readable).text(), "pending");
  assert.equal(await write, 7);
  a.close();
  b.close();
});

Deno.test("pipe() close wakes the peer's pending read with end of flow", async () => {
  const [a, b] = pipe();
  const read = b.read(new Uint8Array(8));
  a.close();
  assert.equal(await read, null);
  b.close();
});

Deno.test("pipe() close lets the peer read what was accepted", async () => {
  const [a, b] = pipe();
  await a.write(encoder.encode("bye"));
  a.close();
  assert.equal(await new Response(b.readable).text(), "bye");
  b.close();
});

Deno.test("pipe() close rejects its own pending read with Interrupted", async () => {
  const [a, b] = pipe();
  const read = a.read(new Uint8Array(8));
  a.close();
  await assert.rejects(read, Deno.errors.Interrupted); // Flow contract rule 4
  b.close();
});

Deno.test("pipe() close rejects the peer's pending and later writes with BrokenPipe", async () => {
  const [a, b] = pipe({ highWaterMark: 4 });
  const write = a.write(new Uint8Array(100));
  await settle();
  b.close();
  await assert.rejects(write, Deno.errors.BrokenPipe);
  await assert.rejects(a.write(new Uint8Array(1)), (error: Error) => {
    assert.ok(error instanceof Deno.errors.BrokenPipe);
    assert.match(error.message, /pipe flow/);
    return true;
  });
  a.close();
});

Deno.test("pipe() close rejects its own pending write with Interrupted", async () => {
  const [a, b] = pipe({ highWaterMark: 4 });
  const write = a.write(new Uint8Array(100));
  a.close();
  await assert.rejects(write, Deno.errors.Interrupted); // Flow contract rule 4
  b.close();
});

Deno.test("PipeFlow.write() rejects with BadResource after close", async () => {
  const [a, b] = pipe();
  a.close();
  a.close(); // idempotent
  // Flow contract rule 4: closeWrite() after close() is a BadResource.
  await assert.rejects(a.closeWrite(), Deno.errors.BadResource);
  await assert.rejects(a.write(new Uint8Array(1)), {
    name: "BadResource",
    message: "Cannot write to pipe flow: it is closed",
  });
  await assert.rejects(a.read(new Uint8Array(1)), {
    name: "BadResource",
    message: "Cannot read from pipe flow: it is closed",
  });
  b.close();
});

Deno.test("PipeFlow handles empty reads and writes", async () => {
  const [a, b] = pipe();
  assert.equal(await a.write(new Uint8Array(0)), 0);
  assert.equal(await b.read(new Uint8Array(0)), 0);
  a.close();
  b.close();
});

Deno.test("PipeFlow supports await using", async () => {
  const [a, b] = pipe();
  {
    await using inner = a;
    await inner.write(encoder.encode("x"));
  }
  const buf = new Uint8Array(4);
  assert.equal(await b.read(buf), 1);
  assert.equal(await b.read(buf), null);
  await assert.rejects(b.write(buf), Deno.errors.BrokenPipe);
  b.close();
});

Deno.test("PipeFlow.readable and writable pipe through", async () => {
  const [a, b] = pipe({ highWaterMark: 1024 });
  const data = randomBytes(300_000);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += 4096) {
    chunks.push(data.slice(i, i + 4096));
  }
  // b echoes through its own streams.
  const echo = b.readable.pipeTo(b.writable);
  const sent = ReadableStream.from(chunks).pipeTo(a.writable);
  const received = new Uint8Array(await new Response(a.readable).arrayBuffer());
  await Promise.all([echo, sent]);
  assert.equal(await sha256(received), await sha256(new Uint8Array(data)));
  a.close();
  b.close();
});

Deno.test("PipeFlow.readable supports BYOB readers", async () => {
  const [a, b] = pipe();
  await a.write(encoder.encode("byob"));
  await a.closeWrite();
  const reader = b.readable.getReader({ mode: "byob" });
  const first = await reader.read(new Uint8Array(16));
  assert.equal(decoder.decode(first.value), "byob");
  const second = await reader.read(new Uint8Array(16));
  assert.equal(second.done, true);
  reader.releaseLock();
  a.close();
  b.close();
});

Deno.test("PipeFlow.readable cancel ends the stream only", async () => {
  // Flow contract rule 5: cancelling readable touches neither the write side
  // nor the resource; read() keeps the same position.
  const [a, b] = pipe();
  await a.write(encoder.encode("kept"));
  const reader = b.readable.getReader();
  await reader.cancel();
  await a.write(encoder.encode(" more"));
  await a.closeWrite();
  assert.equal(decoder.decode(await readAll(b)), "kept more");
  // b can still write.
  await b.write(encoder.encode("still"));
  await b.closeWrite();
  assert.equal(await new Response(a.readable).text(), "still");
  a.close();
  b.close();
});

Deno.test("PipeFlow.writable abort closes the flow", async () => {
  const [a, b] = pipe();
  await a.writable.abort(new Error("boom"));
  await assert.rejects(a.write(new Uint8Array(1)), Deno.errors.BadResource);
  assert.equal(await b.read(new Uint8Array(1)), null);
  b.close();
});

Deno.test("PipeFlow.writable rejects chunks that are not bytes", async () => {
  const [a, b] = pipe();
  const writer = a.writable.getWriter();
  await assert.rejects(
    writer.write("text" as unknown as Uint8Array),
    TypeError,
  );
  a.close();
  b.close();
});

Deno.test("listenPipe() accepts connections in order", async () => {
  using listener = listenPipe({ name: "test" });
  assert.equal(listener.name, "test");
  const c1 = listener.connect();
  const c2 = listener.connect();
  const s1 = await listener.accept();
  const accepted = listener.accept();
  const s2 = await accepted;
  await c1.write(new Uint8Array([1]));
  await c2.write(new Uint8Array([2]));
  const buf = new Uint8Array(1);
  await s1.read(buf);
  assert.equal(buf[0], 1);
  await s2.read(buf);
  assert.equal(buf[0], 2);
  // A pending accept is served by a later connect.
  const pending = listener.accept();
  const c3 = listener.connect();
  const s3 = await pending;
  await s3.write(new Uint8Array([3]));
  await c3.read(buf);
  assert.equal(buf[0], 3);
  for (const flow of [c1, c2, c3, s1, s2, s3]) flow.close();
});

Deno.test("PipeListener.close() refuses connects and ends accepts", async () => {
  const listener = new PipeListener();
  const queued = listener.connect(); // never accepted
  const iteration = (async () => {
    const flows: PipeFlow[] = [];
    for await (const flow of listener) flows.push(flow);
    return flows;
  })();
  await settle();
  listener.close();
  listener.close(); // idempotent
  assert.equal(listener.closed, true);
  const accepted = await iteration;
  assert.equal(accepted.length, 1);
  accepted[0].close();
  assert.equal(await queued.read(new Uint8Array(1)), null);
  queued.close();
  assert.throws(() => listener.connect(), Deno.errors.ConnectionRefused);
  await assert.rejects(listener.accept(), Deno.errors.BadResource);
});

Deno.test("PipeListener.close() rejects a pending accept and closes the backlog", async () => {
  const listener = listenPipe();
  const pending = listener.accept();
  listener.close();
  await assert.rejects(pending, Deno.errors.BadResource);

  const other = listenPipe();
  const client = other.connect();
  await other[Symbol.asyncDispose]();
  assert.equal(await client.read(new Uint8Array(1)), null);
  await assert.rejects(client.write(new Uint8Array(1)), Deno.errors.BrokenPipe);
  client.close();
});

Deno.test("pipeProtocol connects through resolve()", async () => {
  using listener = listenPipe();
  const client = await resolve(empty.add(pipeProtocol.endpoint, listener));
  assert.equal(pipeProtocol.is(client), true);
  const server = await listener.accept();
  assert.equal(pipeProtocol.is(server), false);
  await client.write(encoder.encode("over resolve"));
  await client.closeWrite();
  assert.equal(await new Response(server.readable).text(), "over resolve");
  client.close();
  server.close();
});

Deno.test("pipeProtocol reports a closed listener as refused", async () => {
  const listener = listenPipe();
  listener.close();
  const error = await resolve(empty.add(pipeProtocol.endpoint, listener)).then(
    () => assert.fail("resolved"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof NotFoundError);
  assert.equal(error.attempts.length, 1);
  assert.ok(error.attempts[0].error instanceof Deno.errors.ConnectionRefused);
});

Deno.test("pipeProtocol honours an aborted signal", async () => {
  using listener = listenPipe();
  const controller = new AbortController();
  const reason = new Error("stop");
  controller.abort(reason);
  await assert.rejects(
    resolve(empty.add(pipeProtocol.endpoint, listener), {
      signal: controller.signal,
    }),
    (error) => error === reason,
  );
});
