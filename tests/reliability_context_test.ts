// Reliability: seeded random contexts (add / fold / replace / merge over a
// handful of witnesses and the endpoints of a few in-memory protocols) are
// checked against a reference model, then resolved. Resolution must connect
// the first candidate that can be connected, or reject with NotFoundError /
// CycleError (or the signal's reason, when aborted) — nothing else, and no
// hang. Reproduce a failure with FUZZ_SEED=<seed> (printed on failure);
// FUZZ_COUNT sets the number of cases.
import assert from "node:assert/strict";
import {
  type Arg,
  connect,
  type Context,
  CycleError,
  dft,
  empty,
  type Endpoint,
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
  type Value,
  value,
} from "../mod.ts";
import { bindings } from "../src/context.ts";
import { countFrom, Prng, seedFrom } from "./fuzz/prng.ts";

// --- The world: witnesses, protocols, flows ---------------------------------

/** An endpoint of one of the test protocols. */
interface Ep {
  readonly p: number;
  readonly id: number;
  readonly refuse: boolean;
}
type Val = number | Ep;

/** A flow that holds nothing: enough to see which endpoint connected. */
class FakeFlow implements Flow {
  closed = false;
  constructor(readonly ep: Ep) {}
  read(): Promise<number | null> {
    return Promise.resolve(null);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
  get readable(): ReadableStream<Uint8Array> {
    return new ReadableStream();
  }
  get writable(): WritableStream<Uint8Array> {
    return new WritableStream();
  }
}

/** Shared state of the case being run (the protocols are registered once). */
const world = {
  flows: [] as FakeFlow[],
  /** Steps taken by fold functions, map functions and connects. */
  steps: 0,
  /** Aborts `controller` when `steps` reaches it. */
  abortAt: Infinity,
  controller: undefined as AbortController | undefined,
  /** Calls of fold functions: `spec id|args`. */
  calls: [] as string[],
  recording: false,
};

function step(): void {
  world.steps++;
  if (world.steps === world.abortAt) {
    world.controller?.abort(new Error(`aborted at step ${world.steps}`));
  }
}

function refused(ep: Ep): Error {
  return new Deno.errors.ConnectionRefused(`refused ${ep.p}:${ep.id}`);
}

/** Four protocols: async, sync, without priority, throwing synchronously. */
const protocols = [
  register("fz0", async (ep: Ep) => {
    step();
    await null;
    if (ep.refuse) throw refused(ep);
    return track(new FakeFlow(ep));
  }, { priority: 1 }),
  register("fz1", (ep: Ep) => {
    step();
    return ep.refuse
      ? Promise.reject(refused(ep))
      : Promise.resolve(track(new FakeFlow(ep)));
  }, { priority: 1 }),
  register("fz2", async (ep: Ep) => {
    step();
    await null;
    await null;
    if (ep.refuse) throw refused(ep);
    return track(new FakeFlow(ep));
  }),
  register("fz3", (ep: Ep): Promise<FakeFlow> => {
    step();
    if (ep.refuse) throw new TypeError(`bad endpoint ${ep.id}`);
    return Promise.resolve(track(new FakeFlow(ep)));
  }, { priority: 0 }),
];

function track(flow: FakeFlow): FakeFlow {
  world.flows.push(flow);
  return flow;
}

const plainWitnesses = ["a", "b", "c", "d", "e"].map((n) => value<number>(n));
const witnesses: Value<Val>[] = [
  ...plainWitnesses,
  ...protocols.map((p) => p.endpoint as Value<Val>),
];
const protocolIndex = new Map<Value<unknown>, number>(
  protocols.map((p, i) => [p.endpoint, i]),
);
const rankOf = (v: Value<unknown>): number => {
  const i = protocolIndex.get(v);
  if (i === undefined) return Infinity;
  return protocols[i].priority ?? Number.MAX_VALUE;
};

// --- Values and their keys ----------------------------------------------------

function keyOf(x: unknown): string {
  if (x === undefined) return "u";
  if (typeof x === "number") return `n${x}`;
  if (Array.isArray(x)) return `[${x.map(keyOf).join(",")}]`;
  const ep = x as Ep;
  return `e${ep.p}.${ep.id}.${ep.refuse ? "r" : "o"}`;
}

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  }
  return h;
}

function make(w: Value<Val>, h: number): Val {
  const p = protocolIndex.get(w);
  if (p === undefined) return h % 1000;
  return Object.freeze({ p, id: h % 100000, refuse: h % 3 === 0 });
}

// --- Fold specifications --------------------------------------------------------

type Behaviour =
  | "sync"
  | "undefined"
  | "maybe"
  | "throw"
  | "async"
  | "async-undefined"
  | "async-throw";

type ArgSpec =
  | { kind: "req" | "opt"; w: Value<Val> }
  | { kind: "dft"; w: Value<Val>; fallback: Val }
  | { kind: "map"; args: ArgSpec[]; mode: "sync" | "async" | "throw" };

interface FoldSpec {
  id: number;
  w: Value<Val>;
  args: ArgSpec[];
  behaviour: Behaviour;
  k: (...xs: unknown[]) => unknown;
}

class Thrown extends Error {}

/** What fold `f` gives for the arguments `xs`: a value, undefined, or a throw. */
function outcome(
  f: FoldSpec,
  xs: unknown[],
): { value: Val | undefined } | { error: true } {
  const h = hash(`${f.id}|${keyOf(xs)}`);
  switch (f.behaviour) {
    case "undefined":
    case "async-undefined":
      return { value: undefined };
    case "throw":
    case "async-throw":
      return { error: true };
    case "maybe":
      return { value: h % 2 === 0 ? undefined : make(f.w, h) };
    default:
      return { value: make(f.w, h) };
  }
}

function mapValue(args: unknown[]): unknown[] {
  return ["m", ...args];
}

function toArg(a: ArgSpec): Arg<unknown> {
  switch (a.kind) {
    case "req":
      return req(a.w);
    case "opt":
      return opt(a.w);
    case "dft":
      return dft(a.w, a.fallback);
    case "map": {
      const mode = a.mode;
      return map(a.args.map(toArg), (...xs: unknown[]) => {
        step();
        if (mode === "throw") throw new Thrown("map threw");
        const v = mapValue(xs);
        return mode === "async" ? Promise.resolve(v) : v;
      });
    }
  }
}

let nextSpecId = 0;

function randomArg(rng: Prng, depth: number): ArgSpec {
  const w = rng.pick(witnesses);
  const r = rng.int(depth > 0 ? 8 : 10);
  if (r < 4) return { kind: "req", w };
  if (r < 6) return { kind: "opt", w };
  if (r < 8) return { kind: "dft", w, fallback: make(w, rng.u32()) };
  const args = Array.from(
    { length: rng.int(3) },
    () => randomArg(rng, depth + 1),
  );
  return {
    kind: "map",
    args,
    mode: rng.pick(["sync", "sync", "sync", "async", "throw"] as const),
  };
}

function randomFold(rng: Prng): FoldSpec {
  const spec: FoldSpec = {
    id: nextSpecId++,
    w: rng.pick(witnesses),
    args: Array.from({ length: rng.int(4) }, () => randomArg(rng, 0)),
    behaviour: rng.pick(
      [
        "sync",
        "sync",
        "sync",
        "undefined",
        "maybe",
        "throw",
        "async",
        "async-undefined",
        "async-throw",
      ] as const,
    ),
    k: () => undefined,
  };
  spec.k = (...xs: unknown[]) => {
    step();
    if (world.recording) world.calls.push(`${spec.id}|${keyOf(xs)}`);
    const out = outcome(spec, xs);
    const async = spec.behaviour.startsWith("async");
    if ("error" in out) {
      if (async) return Promise.reject(new Thrown(`fold ${spec.id} threw`));
      throw new Thrown(`fold ${spec.id} threw`);
    }
    return async ? Promise.resolve(out.value) : out.value;
  };
  return spec;
}

// --- The reference model ---------------------------------------------------------

type Entry = { plain: true; w: Value<Val>; x: Val } | {
  plain: false;
  spec: FoldSpec;
};

interface Model {
  ctx: Context;
  list: Entry[];
}

const ABSENT = Symbol("absent");
type Got = Val | unknown[] | undefined | typeof ABSENT;

interface Reference {
  /** Multiset of the calls expected, `spec id|args`. */
  calls: string[];
  /** Values produced by fold functions (multiset of keys). */
  produced: string[];
  /** How many fold or map functions threw. */
  failed: number;
  /** Some fold is stuck on a cycle. */
  cycle: boolean;
}

/** What unfold must do with `list`: a direct, recursive re-implementation. */
function reference(list: readonly Entry[]): Reference {
  const plain = new Map<Value<Val>, Val>();
  const foldsOf = new Map<Value<Val>, number[]>();
  list.forEach((e, i) => {
    if (e.plain) plain.set(e.w, e.x);
    else foldsOf.set(e.spec.w, [...(foldsOf.get(e.spec.w) ?? []), i]);
  });
  const bound = (w: Value<Val>) => plain.has(w) || foldsOf.has(w);
  const ref: Reference = { calls: [], produced: [], failed: 0, cycle: false };
  type W = { blocked: true } | { blocked: false; value: Got };
  type F = "blocked" | "done";
  const witnessMemo = new Map<Value<Val>, W>();
  const foldMemo = new Map<number, { state: F; value?: Val }>();
  const stack = new Set<Value<Val>>();

  const depsOf = (args: readonly ArgSpec[], out: Value<Val>[]) => {
    for (const a of args) {
      if (a.kind === "map") depsOf(a.args, out);
      else if (a.kind === "req" || bound(a.w)) out.push(a.w);
    }
    return out;
  };

  const evalWitness = (w: Value<Val>): W => {
    if (plain.has(w)) return { blocked: false, value: plain.get(w)! };
    const folds = foldsOf.get(w);
    if (folds === undefined) return { blocked: false, value: ABSENT };
    const memo = witnessMemo.get(w);
    if (memo !== undefined) return memo;
    if (stack.has(w)) {
      ref.cycle = true;
      return { blocked: true };
    }
    stack.add(w);
    let blocked = false;
    let value: Got = ABSENT;
    for (const i of folds) {
      const r = evalFold(i);
      if (r.state === "blocked") blocked = true;
      else if (r.value !== undefined) value = r.value;
    }
    stack.delete(w);
    const result: W = blocked ? { blocked: true } : { blocked: false, value };
    witnessMemo.set(w, result);
    return result;
  };

  // Evaluates arguments left to right; "skip" on a missing required value,
  // "fail" when a map function throws.
  const evalArgs = (
    args: readonly ArgSpec[],
    values: Map<Value<Val>, Got>,
  ): unknown[] | "skip" | "fail" => {
    const xs: unknown[] = [];
    for (const a of args) {
      if (a.kind === "map") {
        const inner = evalArgs(a.args, values);
        if (typeof inner === "string") return inner;
        if (a.mode === "throw") return "fail";
        xs.push(mapValue(inner));
        continue;
      }
      const x = values.get(a.w) ?? ABSENT;
      if (x !== ABSENT) xs.push(x);
      else if (a.kind === "req") return "skip";
      else xs.push(a.kind === "dft" ? a.fallback : undefined);
    }
    return xs;
  };

  const evalFold = (i: number): { state: F; value?: Val } => {
    const memo = foldMemo.get(i);
    if (memo !== undefined) return memo;
    const spec = (list[i] as { spec: FoldSpec }).spec;
    const values = new Map<Value<Val>, Got>();
    let blocked = false;
    for (const d of depsOf(spec.args, [])) {
      const r = evalWitness(d);
      if (r.blocked) blocked = true;
      else values.set(d, r.value);
    }
    let result: { state: F; value?: Val };
    if (blocked) {
      result = { state: "blocked" };
    } else {
      const xs = evalArgs(spec.args, values);
      if (xs === "fail") {
        ref.failed++;
        result = { state: "done" };
      } else if (xs === "skip") {
        result = { state: "done" };
      } else {
        ref.calls.push(`${spec.id}|${keyOf(xs)}`);
        const out = outcome(spec, xs);
        if ("error" in out) {
          ref.failed++;
          result = { state: "done" };
        } else {
          if (out.value !== undefined) ref.produced.push(keyOf(out.value));
          result = { state: "done", value: out.value };
        }
      }
    }
    foldMemo.set(i, result);
    return result;
  };

  // Every fold function is applied, even for a witness with a plain value
  // (whose readers use the plain value and never wait for the folds).
  list.forEach((e, i) => {
    if (e.plain) return;
    if (plain.has(e.spec.w)) evalFold(i);
    else evalWitness(e.spec.w);
  });
  return ref;
}

function lastPlain(list: readonly Entry[], w: Value<Val>): Val | undefined {
  for (let i = list.length - 1; i >= 0; i--) {
    const e = list[i];
    if (e.plain && e.w === w) return e.x;
  }
  return undefined;
}

/** Checks a context against its model: `get` and the bindings, in order. */
function checkModel(m: Model): void {
  for (const w of witnesses) {
    assert.equal(keyOf(m.ctx.get(w)), keyOf(lastPlain(m.list, w)), w.name);
  }
  const bs = bindings(m.ctx);
  assert.equal(bs.length, m.list.length, "binding count");
  bs.forEach((b, i) => {
    const e = m.list[i];
    if (e.plain) {
      assert.ok("x" in b && b.value === e.w && b.x === e.x, `binding ${i}`);
    } else {
      assert.ok(
        "k" in b && b.value === e.spec.w && b.k === e.spec.k,
        `fold binding ${i}`,
      );
    }
  });
}

function snapshot(ctx: Context): string {
  return witnesses.map((w) => keyOf(ctx.get(w))).join(" ") +
    `#${bindings(ctx).length}`;
}

/** Builds a random context and its model, checking each step. */
function randomModel(rng: Prng, ops: number, depth = 0): Model {
  let m: Model = { ctx: empty, list: [] };
  for (let i = 0; i < ops; i++) {
    const before = snapshot(m.ctx);
    const r = rng.int(10);
    const w = rng.pick(witnesses);
    let next: Model;
    if (r < 4) {
      const x = make(w, rng.u32());
      next = {
        ctx: m.ctx.add(w, x),
        list: [...m.list, { plain: true, w, x }],
      };
    } else if (r < 5) {
      const x = make(w, rng.u32());
      next = {
        ctx: m.ctx.replace(w, x),
        list: [
          ...m.list.filter((e) => !(e.plain && e.w === w)),
          { plain: true, w, x },
        ],
      };
    } else if (r < 9 || depth > 0) {
      const spec = randomFold(rng);
      next = {
        ctx: m.ctx.fold(spec.w, spec.args.map(toArg), spec.k),
        list: [...m.list, { plain: false, spec }],
      };
    } else {
      const other = rng.chance(0.2) ? m : randomModel(rng, rng.int(4), 1);
      next = {
        ctx: m.ctx.merge(other.ctx),
        list: [...m.list, ...other.list],
      };
    }
    assert.equal(snapshot(m.ctx), before, "the receiver changed");
    checkModel(next);
    m = next;
  }
  return m;
}

function describeArg(a: ArgSpec): string {
  if (a.kind === "map") {
    return `map[${a.mode}](${a.args.map(describeArg).join(", ")})`;
  }
  if (a.kind === "dft") return `dft(${a.w.name}, ${keyOf(a.fallback)})`;
  return `${a.kind}(${a.w.name})`;
}

/** The model's bindings, one a line, to show a failing case. */
function describeModel(list: readonly Entry[]): string {
  return list.map((e, i) =>
    e.plain
      ? `${i}: add ${e.w.name} = ${keyOf(e.x)}`
      : `${i}: fold#${e.spec.id} ${e.spec.w.name} [${
        e.spec.args.map(describeArg).join(", ")
      }] ${e.spec.behaviour}`
  ).join("\n");
}

// --- One case -------------------------------------------------------------------

const HANG_MS = 5000;

async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} hangs (over ${HANG_MS} ms)`)),
      HANG_MS,
    );
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

function sortedEqual(actual: string[], expected: string[], what: string) {
  assert.deepEqual([...actual].sort(), [...expected].sort(), what);
}

/** What connect must do with these candidates, without a signal. */
function expectedConnect(endpoints: readonly Endpoint[]) {
  const attempts: string[] = [];
  for (const e of endpoints) {
    const p = protocolIndex.get(e.value);
    if (p === undefined) continue;
    const ep = e.data as Ep;
    if (!ep.refuse) return { flow: keyOf(ep), attempts };
    attempts.push(protocols[p].name);
  }
  return { flow: undefined, attempts };
}

interface Stats {
  connected: number;
  notFound: number;
  cycle: number;
  aborted: number;
  candidates: number;
}

async function settleMicrotasks(): Promise<void> {
  for (let i = 0; i < 8; i++) await null;
}

let current: readonly Entry[] = [];

async function runCase(seed: number, stats: Stats): Promise<void> {
  const rng = new Prng(seed);
  const m = randomModel(rng, rng.range(1, 12));
  const ref = reference(m.list);
  current = m.list;

  // unfold against the reference.
  world.flows = [];
  world.steps = 0;
  world.abortAt = Infinity;
  world.controller = undefined;
  world.calls = [];
  world.recording = true;
  const all = await bounded(unfold(m.ctx), "unfold");
  // The candidates, without the report unfold appends when fold functions
  // threw or form a cycle (it carries them to connect()).
  const endpoints = all.filter((e) => e.value !== unfoldReport);
  assert.ok(
    all.length - endpoints.length <= 1 && (
      all.length === endpoints.length || all.at(-1)!.value === unfoldReport
    ),
  );
  world.recording = false;
  sortedEqual(world.calls, ref.calls, "fold functions called, with arguments");
  stats.candidates += endpoints.length;
  // Candidates: plain values (most recent first) then computed, stably
  // sorted by priority.
  const plains = m.list.filter((e) => e.plain).reverse() as {
    w: Value<Val>;
    x: Val;
  }[];
  const expectedPlain = plains.map((e) => `${e.w.name}=${keyOf(e.x)}`);
  const ranks = endpoints.map((e) => rankOf(e.value));
  for (let i = 1; i < ranks.length; i++) {
    assert.ok(ranks[i - 1] <= ranks[i], "candidates sorted by priority");
  }
  sortedEqual(
    endpoints.map((e) => keyOf(e.data)),
    [...plains.map((e) => keyOf(e.x)), ...ref.produced],
    "candidates",
  );
  // Within one rank, the plain values come first, most recent first.
  for (const r of new Set(ranks)) {
    const got = endpoints.filter((e) => rankOf(e.value) === r).map((e) =>
      `${e.value.name}=${keyOf(e.data)}`
    );
    const want = expectedPlain.filter((_, i) => rankOf(plains[i].w) === r);
    assert.deepEqual(got.slice(0, want.length), want, `plain order, rank ${r}`);
  }

  // connect these candidates: the first that can be, or NotFound / Cycle.
  const expected = expectedConnect(endpoints);
  const events: ResolveEvent[] = [];
  const check = async (p: Promise<Flow>, what: string) => {
    try {
      const flow = await bounded(p, what);
      assert.ok(flow instanceof FakeFlow, `${what}: a flow of ours`);
      assert.equal(keyOf(flow.ep), expected.flow, `${what}: which endpoint`);
      assert.ok(protocols[flow.ep.p].is(flow), `${what}: is()`);
      flow.close();
      return "connected";
    } catch (error) {
      if (error instanceof CycleError) {
        assert.equal(expected.flow, undefined, `${what}: CycleError`);
        assert.equal(expected.attempts.length, 0, `${what}: CycleError`);
        assert.ok(ref.cycle, `${what}: CycleError without a cycle`);
        assert.ok(error.values.length > 0);
        return "cycle";
      }
      if (error instanceof NotFoundError) {
        assert.equal(expected.flow, undefined, `${what}: ${error.message}`);
        assert.deepEqual(
          error.attempts.map((a) => a.name),
          expected.attempts,
          `${what}: attempts`,
        );
        assert.ok(
          !ref.cycle || expected.attempts.length > 0,
          `${what}: NotFoundError with a cycle and no attempt`,
        );
        return "notFound";
      }
      throw error;
    }
  };
  // A copy of the array keeps what unfold reported (no side channel).
  const outcome1 = await check(connect([...all]), "connect");
  world.calls = [];
  world.flows = [];
  const outcome2 = await check(
    resolve(m.ctx, { onEvent: (e) => events.push(e) }),
    "resolve",
  );
  assert.equal(outcome2, outcome1);
  stats[outcome1]++;
  if (outcome1 !== "connected") {
    assert.equal(
      events.filter((e) => e.type === "fold-failed").length,
      ref.failed,
      "fold-failed events",
    );
  }
  await settleMicrotasks();
  assert.ok(world.flows.every((f) => f.closed), "a flow was left open");

  // The same context, aborted at a random step (or never, past the end).
  const total = world.steps;
  world.flows = [];
  world.steps = 0;
  world.abortAt = rng.range(1, total + 1);
  world.controller = new AbortController();
  const signal = world.controller.signal;
  try {
    const flow = await bounded(resolve(m.ctx, { signal }), "aborted resolve");
    assert.ok(!signal.aborted, "connected although aborted");
    flow.close();
  } catch (error) {
    if (signal.aborted) {
      assert.equal(error, signal.reason, "rejects with the signal's reason");
      stats.aborted++;
    } else {
      assert.ok(
        error instanceof NotFoundError || error instanceof CycleError,
        `unexpected ${error}`,
      );
    }
  }
  await settleMicrotasks();
  assert.ok(
    world.flows.every((f) => f.closed),
    "a flow was left open after abort",
  );
}

Deno.test("resolve() on random contexts: connects the right endpoint, or NotFoundError / CycleError", async () => {
  const seed = seedFrom(0x5eed);
  const count = countFrom(20_000);
  const rng = new Prng(seed);
  const stats: Stats = {
    connected: 0,
    notFound: 0,
    cycle: 0,
    aborted: 0,
    candidates: 0,
  };
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const caseSeed = rng.u32();
    try {
      await runCase(caseSeed, stats);
    } catch (error) {
      console.error(
        `context fuzz: case ${i} failed; reproduce with FUZZ_SEED=${seed} ` +
          `(case seed ${caseSeed}); its bindings:\n${describeModel(current)}`,
      );
      throw error;
    }
  }
  const ms = performance.now() - start;
  console.log(
    `context fuzz: ${count} cases (seed ${seed}) in ${ms.toFixed(0)} ms: ` +
      JSON.stringify(stats),
  );
  // Every outcome is exercised.
  assert.ok(stats.connected > 0 && stats.notFound > 0 && stats.cycle > 0);
  assert.ok(stats.aborted > 0);
});
