// Tests of the core: values, contexts, fold functions and resolution. The
// cases of mimic's own suite (test/test.ml) come first, then every numbered
// rule of the API's "Semantics" section.
import assert from "node:assert/strict";
import {
  connect,
  type Context,
  CycleError,
  dft,
  empty,
  type Flow,
  map,
  NotFoundError,
  opt,
  register,
  req,
  resolve,
  type ResolveEvent,
  unfold,
  unfoldReport,
  value,
} from "../mod.ts";

/** A flow over two byte queues, enough to check which endpoint connected. */
class MemoryFlow implements Flow {
  readonly label: string;
  input: Uint8Array[];
  output: Uint8Array[] = [];
  closed = false;
  constructor(label: string, input: string[] = []) {
    this.label = label;
    this.input = input.map((s) => new TextEncoder().encode(s));
  }
  read(p: Uint8Array): Promise<number | null> {
    const chunk = this.input.shift();
    if (chunk === undefined) return Promise.resolve(null);
    const n = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, n));
    if (n < chunk.length) this.input.unshift(chunk.subarray(n));
    return Promise.resolve(n);
  }
  write(p: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new Error("closed"));
    this.output.push(p.slice());
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
  get readable(): ReadableStream<Uint8Array> {
    throw new Error("unused");
  }
  get writable(): WritableStream<Uint8Array> {
    throw new Error("unused");
  }
  // Rule 8: with both disposers, resolve() returns this object itself (a
  // flow without them is wrapped: see conformance_test.ts).
  [Symbol.dispose](): void {
    this.close();
  }
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

// A protocol that "connects" to a label, failing for labels starting "!".
function memory(name: string, priority?: number) {
  return register<string, MemoryFlow>(name, (label) => {
    if (label.startsWith("!")) {
      return Promise.reject(new Error(`refused ${label}`));
    }
    return Promise.resolve(new MemoryFlow(label));
  }, { priority });
}

async function labelOf(ctx: Context): Promise<string> {
  const flow = await resolve(ctx);
  assert.ok(flow instanceof MemoryFlow);
  return flow.label;
}

// --- mimic's test.ml ------------------------------------------------------

Deno.test("context holds values (mimic: test_values)", () => {
  const a = value<number>("a");
  const b = value<string>("b");
  const ctx = empty.add(a, 1).add(b, "x");
  assert.equal(ctx.get(a), 1);
  assert.equal(ctx.get(b), "x");
  assert.equal(empty.get(a), undefined);
  // Identity is the object, not the name.
  assert.equal(ctx.get(value<number>("a")), undefined);
});

Deno.test("fold functions compute values (mimic: test_functions)", async () => {
  const proto = memory("fn");
  const host = value<string>("host");
  const port = value<number>("port");
  const ctx = empty
    .add(host, "h")
    .fold(proto.endpoint, [req(host), dft(port, 80)], (h, p) => `${h}:${p}`);
  assert.equal(await labelOf(ctx), "h:80");
  assert.equal(await labelOf(ctx.add(port, 8080)), "h:8080");
});

Deno.test("fold functions run in topological order (mimic: test_topological_order)", async () => {
  const proto = memory("topo");
  const a = value<string>("a");
  const b = value<string>("b");
  const c = value<string>("c");
  // Added in the reverse of their dependency order.
  const ctx = empty
    .fold(proto.endpoint, [req(c)], (x) => `${x}!`)
    .fold(c, [req(b)], (x) => `${x}c`)
    .fold(b, [req(a)], (x) => `${x}b`)
    .add(a, "a");
  assert.equal(await labelOf(ctx), "abc!");
});

Deno.test("priority decides the order (mimic: test_priority)", async () => {
  const low = memory("low", 10);
  const high = memory("high", 1);
  const none = memory("none");
  const ctx = empty
    .add(none.endpoint, "none")
    .add(low.endpoint, "low")
    .add(high.endpoint, "high");
  assert.equal(await labelOf(ctx), "high");
  const order = (await unfold(ctx)).map((e) => e.data);
  assert.deepEqual(order, ["high", "low", "none"]);
});

Deno.test("the most recent value wins (mimic: test_recent_values)", async () => {
  const proto = memory("recent");
  const host = value<string>("host");
  const ctx = empty
    .add(host, "old")
    .fold(proto.endpoint, [req(host)], (h) => h)
    .add(host, "new");
  assert.equal(await labelOf(ctx), "new");
  assert.equal(await labelOf(ctx.replace(host, "replaced")), "replaced");
});

Deno.test("in-memory input and output flows (mimic: test_input_output)", async () => {
  const input = register<string[], MemoryFlow>(
    "input",
    (lines) => Promise.resolve(new MemoryFlow("in", lines)),
  );
  const flow = await resolve(empty.add(input.endpoint, ["hello ", "world"]));
  assert.ok(input.is(flow));
  const buf = new Uint8Array(64);
  let text = "";
  for (let n; (n = await flow.read(buf)) !== null;) {
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  assert.equal(text, "hello world");
  await flow.write(new TextEncoder().encode("out"));
  assert.equal(new TextDecoder().decode(flow.output[0]), "out");
});

// --- contexts ---------------------------------------------------------------

Deno.test("Context is immutable", () => {
  const a = value<number>("a");
  const one = empty.add(a, 1);
  const two = one.add(a, 2);
  assert.equal(one.get(a), 1);
  assert.equal(two.get(a), 2);
  assert.equal(two.replace(a, 3).get(a), 3);
  assert.equal(two.get(a), 2);
  assert.equal(empty.get(a), undefined);
});

Deno.test("Context.replace() keeps fold functions", async () => {
  const proto = memory("replace");
  const host = value<string>("host");
  const ctx = empty
    .add(host, "a")
    .add(proto.endpoint, "plain")
    .fold(proto.endpoint, [req(host)], (h) => `fold ${h}`)
    .replace(proto.endpoint, "replaced");
  const datas = (await unfold(ctx))
    .filter((e) => e.value === proto.endpoint)
    .map((e) => e.data);
  assert.deepEqual(datas, ["replaced", "fold a"]);
});

Deno.test("Context.merge() puts the other's bindings last", () => {
  const a = value<number>("a");
  const b = value<number>("b");
  const left = empty.add(a, 1).add(b, 1);
  const right = empty.add(a, 2);
  const merged = left.merge(right);
  assert.equal(merged.get(a), 2);
  assert.equal(merged.get(b), 1);
  assert.equal(right.merge(left).get(a), 1);
  assert.equal(left.get(a), 1);
});

Deno.test("fold arguments infer their types", async () => {
  const proto = memory("types");
  const host = value<string>("host");
  const port = value<number>("port");
  const user = value<string>("user");
  const ctx = empty.add(host, "h").fold(
    proto.endpoint,
    [req(host), dft(port, 22), opt(user), map([req(port)], (p) => p * 2)],
    (h, p, u, twice) => {
      // These assignments fail to type-check if inference is lost.
      const hs: string = h;
      const pn: number = p;
      const us: string | undefined = u;
      const tn: number = twice;
      return `${hs}:${pn}:${us}:${tn}`;
    },
  );
  // `map` needs port, which is absent: the fold is not applied.
  await assert.rejects(resolve(ctx), NotFoundError);
  assert.equal(await labelOf(ctx.add(port, 2)), "h:2:undefined:4");
});

// --- Semantics, rule by rule -------------------------------------------------

Deno.test("rule 1: fold functions apply in dependency order, over opt, dft and map too", async () => {
  const proto = memory("rule1");
  const a = value<string>("a");
  const b = value<string>("b");
  const c = value<string>("c");
  const ctx = empty
    .fold(
      proto.endpoint,
      [opt(a), dft(b, "B?"), map([req(c)], (x) => x)],
      (x, y, z) => `${x}${y}${z}`,
    )
    .fold(a, [req(c)], (x) => `a${x}`)
    .fold(b, [req(c)], (x) => `b${x}`)
    .add(c, "c");
  assert.equal(await labelOf(ctx), "acbcc");
});

Deno.test("rule 1: a fold whose required input never comes is not applied", async () => {
  const proto = memory("rule1b");
  const missing = value<string>("missing");
  const events: ResolveEvent[] = [];
  const ctx = empty.fold(proto.endpoint, [req(missing)], (x) => x);
  const error = await resolve(ctx, { onEvent: (e) => events.push(e) }).catch((
    e,
  ) => e);
  assert.ok(error instanceof NotFoundError);
  assert.deepEqual(error.attempts, []);
  assert.deepEqual(events[0], {
    type: "fold-skipped",
    value: "rule1b",
    reason: "missing required value missing",
  });
});

Deno.test("rule 1: undefined adds nothing and a throw is kept and reported", async () => {
  const proto = memory("rule1c");
  const boom = new Error("boom");
  const events: ResolveEvent[] = [];
  const ctx = empty
    .fold(proto.endpoint, [], () => undefined)
    .fold(proto.endpoint, [], () => {
      throw boom;
    });
  // No candidate: only the report that carries the failure to connect().
  const endpoints = await unfold(ctx);
  assert.deepEqual(endpoints.map((e) => e.value), [unfoldReport]);
  const copied = await connect([...endpoints]).catch((e) => e);
  assert.ok(copied instanceof NotFoundError);
  assert.deepEqual(copied.folds, [{ name: "fold rule1c", error: boom }]);
  const error = await resolve(ctx, { onEvent: (e) => events.push(e) }).catch((
    e,
  ) => e);
  assert.ok(error instanceof NotFoundError);
  assert.deepEqual(error.folds, [{ name: "fold rule1c", error: boom }]);
  assert.match(error.message, /fold rule1c: boom/);
  assert.ok(events.some((e) => e.type === "fold-failed" && e.error === boom));
  assert.ok(events.some((e) => e.type === "fold-applied" && !e.produced));
});

Deno.test("rule 2: the most recent plain value beats fold functions", async () => {
  const proto = memory("rule2");
  const a = value<string>("a");
  const ctx = empty
    .fold(a, [], () => "fold1")
    .fold(a, [], () => "fold2")
    .fold(proto.endpoint, [req(a)], (x) => x);
  assert.equal(await labelOf(ctx), "fold2");
  assert.equal(await labelOf(ctx.add(a, "plain1").add(a, "plain2")), "plain2");
});

Deno.test("rule 3: candidates are plain (newest first), then computed, then sorted", async () => {
  const p1 = memory("r3-p1", 1);
  const p2 = memory("r3-p2", 2);
  const none = memory("r3-none");
  const other = value<string>("r3-other");
  const ctx = empty
    .add(other, "x")
    .add(none.endpoint, "none-old")
    .add(p2.endpoint, "p2")
    .fold(p1.endpoint, [], () => "p1-computed")
    .add(none.endpoint, "none-new")
    .add(p1.endpoint, "p1-a")
    .add(p1.endpoint, "p1-b");
  const datas = (await unfold(ctx)).map((e) => e.data);
  assert.deepEqual(datas, [
    "p1-b",
    "p1-a",
    "p1-computed",
    "p2",
    "none-new",
    "none-old",
    "x",
  ]);
});

Deno.test("rule 4: connect skips non-endpoints and lists every failure in order", async () => {
  const first = memory("r4-first", 1);
  const second = memory("r4-second", 2);
  const events: ResolveEvent[] = [];
  const ctx = empty
    .add(value<string>("plain"), "skip me")
    .add(second.endpoint, "!two")
    .add(first.endpoint, "!one");
  const error = await resolve(ctx, { onEvent: (e) => events.push(e) }).catch((
    e,
  ) => e);
  assert.ok(error instanceof NotFoundError);
  assert.deepEqual(error.attempts.map((a) => a.name), [
    "r4-first",
    "r4-second",
  ]);
  assert.match(
    error.message,
    /r4-first: refused !one; r4-second: refused !two/,
  );
  assert.deepEqual(events.map((e) => e.type), [
    "candidates",
    "connecting",
    "connect-failed",
    "connecting",
    "connect-failed",
    "skipped",
  ]);
  assert.equal(await labelOf(ctx.add(second.endpoint, "ok")), "ok");
});

Deno.test("rule 4: a cycle rejects with CycleError naming its values", async () => {
  const proto = memory("r4-cycle");
  const a = value<string>("a");
  const b = value<string>("b");
  const ctx = empty
    .fold(a, [req(b)], (x) => x)
    .fold(b, [req(a)], (x) => x)
    .fold(proto.endpoint, [req(a)], (x) => x);
  const error = await resolve(ctx).catch((e) => e);
  assert.ok(error instanceof CycleError);
  assert.deepEqual([...error.values].sort(), ["a", "b"]);
  // A plain value breaks the cycle.
  assert.equal(await labelOf(ctx.add(b, "b")), "b");
  // Something connectable wins over a cycle.
  assert.equal(await labelOf(ctx.add(proto.endpoint, "direct")), "direct");
});

Deno.test("rule 5: an aborted signal stops a fold that never resolves", async () => {
  const proto = memory("r5");
  const controller = new AbortController();
  const ctx = empty.fold(
    proto.endpoint,
    [],
    () => new Promise<string>(() => {}),
  );
  const pending = resolve(ctx, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("gave up")), 10);
  await assert.rejects(pending, { message: "gave up" });
});

Deno.test("rule 5: a connect in flight gets the signal, and a late flow is closed", async () => {
  const controller = new AbortController();
  let seen: AbortSignal | undefined;
  let late: MemoryFlow | undefined;
  const slow = register<string, MemoryFlow>("r5-slow", (label, signal) => {
    seen = signal;
    return new Promise((ok) =>
      setTimeout(() => {
        late = new MemoryFlow(label);
        ok(late);
      }, 30)
    );
  });
  const pending = resolve(empty.add(slow.endpoint, "x"), {
    signal: controller.signal,
  });
  setTimeout(() => controller.abort(), 5);
  await assert.rejects(
    pending,
    (e) => e instanceof DOMException && e.name === "AbortError",
  );
  assert.equal(seen?.aborted, true);
  await new Promise((ok) => setTimeout(ok, 50));
  assert.equal(late?.closed, true);
});

Deno.test("rule 5: an already aborted signal rejects before any work", async () => {
  let called = false;
  const proto = memory("r5-pre");
  const ctx = empty.fold(proto.endpoint, [], () => {
    called = true;
    return "x";
  });
  await assert.rejects(resolve(ctx, { signal: AbortSignal.abort() }));
  assert.equal(called, false);
});

Deno.test("resolve() of the empty context names the problem", async () => {
  await assert.rejects(resolve(empty), {
    name: "NotFoundError",
    message:
      "Cannot resolve: the context has no endpoint of a registered protocol",
  });
});

Deno.test("connect() accepts endpoints built by hand", async () => {
  const proto = memory("by-hand");
  const flow = await connect([{ value: proto.endpoint, data: "hand" }]);
  assert.ok(flow instanceof MemoryFlow && flow.label === "hand");
});

Deno.test("a connect that throws synchronously is an attempt, not a crash", async () => {
  const bad = register<unknown, Flow>("sync-throw", () => {
    throw new TypeError("bad endpoint");
  });
  const error = await resolve(empty.add(bad.endpoint, 1)).catch((e) => e);
  assert.ok(error instanceof NotFoundError);
  assert.ok(error.attempts[0].error instanceof TypeError);
});

Deno.test("async fold functions are awaited", async () => {
  const proto = memory("async");
  const a = value<string>("a");
  const ctx = empty
    .fold(a, [], async () => {
      await new Promise((ok) => setTimeout(ok, 1));
      return "later";
    })
    .fold(proto.endpoint, [req(a)], (x) => Promise.resolve(x));
  assert.equal(await labelOf(ctx), "later");
});
