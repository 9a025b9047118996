/**
 * Resolution: mimic's `unfold`, `connect` and `resolve`.
 *
 * @module
 */

import {
  type ArgData,
  type Binding,
  bindingsNewestFirst,
  type Context,
  type Value,
  value,
} from "./context.ts";
import type { Flow } from "./flow.ts";
import { protocolOf } from "./protocol.ts";
import { abortable, closeQuietly, messageOf, typeName } from "./_util.ts";

/** A candidate found by {@linkcode unfold}: a value and its witness. */
export interface Endpoint {
  /** The witness (for a protocol, its `endpoint`). */
  readonly value: Value<unknown>;
  /** The value bound or computed. */
  readonly data: unknown;
}

/** One step of a resolution, reported to {@linkcode ResolveOptions.onEvent}. */
export type ResolveEvent =
  | { type: "fold-applied"; value: string; produced: boolean }
  | { type: "fold-skipped"; value: string; reason: string }
  | { type: "fold-failed"; value: string; error: unknown }
  | { type: "candidates"; names: string[] }
  | { type: "skipped"; value: string; reason: string }
  /** `endpoint`: the protocol's description of it, e.g. `tcp 127.0.0.1:80` (see `register`). */
  | { type: "connecting"; protocol: string; endpoint: string }
  | {
    type: "connect-failed";
    protocol: string;
    endpoint: string;
    error: unknown;
  }
  | { type: "connected"; protocol: string; endpoint: string };

/** Options of {@linkcode resolve}, {@linkcode unfold} and {@linkcode connect}. */
export interface ResolveOptions {
  /** Aborts fold functions' waits and connects; resolution rejects with its reason. */
  signal?: AbortSignal;
  /** Receives a trace of what resolution did, for logging. */
  onEvent?: (event: ResolveEvent) => void;
}

/** One failed attempt: a protocol's connect, or a fold function that threw. */
export interface Attempt {
  /** The protocol's name, or `fold <value>` for a fold function. */
  name: string;
  /** What it threw. */
  error: unknown;
  /** For a connect: the protocol's description of the endpoint, e.g. `tcp 127.0.0.1:80`. */
  endpoint?: string;
}

/**
 * Nothing could be connected. `attempts` lists every failed connect, in
 * order; `folds` lists the fold functions that threw.
 *
 * @example Catch it
 * ```ts
 * import { empty, NotFoundError, resolve } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(resolve(empty), NotFoundError);
 * ```
 */
export class NotFoundError extends Error {
  /** Every failed connect, in order. */
  readonly attempts: readonly Attempt[];
  /** Every fold function that threw, in the order applied. */
  readonly folds: readonly Attempt[];

  /**
   * Makes the error.
   *
   * @param attempts Every failed connect.
   * @param folds Every fold function that threw.
   */
  constructor(attempts: readonly Attempt[], folds: readonly Attempt[] = []) {
    const all = [...attempts, ...folds];
    super(
      all.length === 0
        ? "Cannot resolve: the context has no endpoint of a registered protocol"
        : `Cannot resolve: ${
          all.map((a) => `${a.name}: ${messageOf(a.error)}`).join("; ")
        }`,
      { cause: all.length === 1 ? all[0].error : undefined },
    );
    this.name = "NotFoundError";
    this.attempts = attempts;
    this.folds = folds;
  }
}

/**
 * Nothing could be connected, and some fold functions could not run because
 * they depend on each other in a cycle.
 *
 * @example Catch it
 * ```ts
 * import { CycleError, empty, req, resolve, value } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const a = value<number>("a");
 * const b = value<number>("b");
 * const ctx = empty.fold(a, [req(b)], (x) => x).fold(b, [req(a)], (x) => x);
 * await assert.rejects(resolve(ctx), CycleError);
 * ```
 */
export class CycleError extends Error {
  /** The names of the values in the cycle. */
  readonly values: readonly string[];

  /**
   * Makes the error.
   *
   * @param values The names of the values in the cycle.
   */
  constructor(values: readonly string[]) {
    super(`Cannot resolve: fold functions form a cycle: ${values.join(", ")}`);
    this.name = "CycleError";
    this.values = values;
  }
}

/**
 * What {@linkcode unfold} found wrong, carried to {@linkcode connect} inside
 * the candidates themselves (as the endpoint of {@linkcode unfoldReport},
 * last), so that `connect([...await unfold(ctx)])` still reports them.
 */
export interface UnfoldReport {
  /** The names of the values whose fold functions form a cycle. */
  readonly cycle: readonly string[];
  /** The fold functions that threw, in the order applied. */
  readonly folds: readonly Attempt[];
}

/**
 * The witness of the {@linkcode UnfoldReport} that {@linkcode unfold}
 * appends, last, to its candidates when fold functions threw or form a
 * cycle. It is no protocol's endpoint: {@linkcode connect} reads it instead
 * of trying it.
 *
 * @example Tell the report from the candidates
 * ```ts
 * import { empty, unfold, unfoldReport, value } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const broken = empty.fold(value<string>("x"), [], () => {
 *   throw new Error("boom");
 * });
 * const all = await unfold(broken);
 * const last = all.at(-1)!;
 * assert.equal(last.value, unfoldReport);
 * assert.equal((last.data as { folds: unknown[] }).folds.length, 1);
 * ```
 */
export const unfoldReport: Value<UnfoldReport> = value<UnfoldReport>(
  "unfold-report",
);

interface Fold {
  readonly seq: number;
  readonly value: Value<unknown>;
  readonly args: readonly ArgData[];
  readonly k: (...xs: unknown[]) => unknown;
}

/** Why a fold function was not applied: a typed result, not a sentinel. */
class Skipped {
  constructor(readonly reason: string) {}
}

const absent = Symbol("absent");

const unabortable = new WeakSet<AbortSignal>();

/**
 * Whether `signal` is one {@linkcode connect} made because its caller gave
 * none: nobody holds its controller, so it never aborts. Internal: lets a
 * protocol skip the cost of arming a cancellation (e.g. `Deno.connect`'s).
 */
export function neverAborts(signal: AbortSignal): boolean {
  return unabortable.has(signal);
}

function unabortableSignal(): AbortSignal {
  const signal = new AbortController().signal;
  unabortable.add(signal);
  return signal;
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return typeof (x as PromiseLike<unknown> | null)?.then === "function";
}

/** Awaits `x` if it is a promise, racing the signal; plain values stay synchronous. */
function settle<T>(
  x: T | PromiseLike<T>,
  signal?: AbortSignal,
): T | Promise<T> {
  if (!isThenable(x)) return x;
  return abortable(Promise.resolve(x), signal);
}

// --- Step 1: partition --------------------------------------------------

/** The bindings of a context, split as the later steps need them. */
interface Partition {
  /** The most recent plain value of each witness. */
  readonly plain: Map<Value<unknown>, unknown>;
  /** Every plain value, newest first: the first candidates. */
  readonly plains: Endpoint[];
  /** Every fold function, oldest first. */
  readonly folds: Fold[];
  /** The fold functions of each witness. */
  readonly foldsOf: Map<Value<unknown>, Fold[]>;
}

/** Splits the bindings (newest first) into plain values and fold functions. */
function partition(newestFirst: readonly Binding[]): Partition {
  const plain = new Map<Value<unknown>, unknown>();
  const plains: Endpoint[] = [];
  const folds: Fold[] = [];
  const foldsOf = new Map<Value<unknown>, Fold[]>();
  const n = newestFirst.length;
  for (let i = 0; i < n; i++) {
    const b = newestFirst[i];
    if ("x" in b) {
      if (!plain.has(b.value)) plain.set(b.value, b.x);
      plains.push({ value: b.value, data: b.x });
    } else {
      folds.push({ seq: n - 1 - i, value: b.value, args: b.args, k: b.k });
    }
  }
  folds.reverse();
  for (const f of folds) {
    const list = foldsOf.get(f.value);
    if (list === undefined) foldsOf.set(f.value, [f]);
    else list.push(f);
  }
  return { plain, plains, folds, foldsOf };
}

// --- Step 2: dependency order -------------------------------------------

/**
 * The witnesses `args` read (rule 1): every `req`, every `opt`/`dft` whose
 * witness is bound, and those inside `map`.
 */
function dependencies(
  args: readonly ArgData[],
  bound: ReadonlySet<Value<unknown>>,
): Value<unknown>[] {
  const out: Value<unknown>[] = [];
  for (const a of args) {
    if (a.kind === "map") {
      out.push(...dependencies(a.args as unknown as ArgData[], bound));
    } else if (a.kind === "req" || bound.has(a.value)) out.push(a.value);
  }
  return out;
}

/**
 * Kahn's topological order at the granularity of witnesses: a fold function
 * is ready once every fold function of each witness it reads (and that has
 * no plain value) is done. Ready ones run in the order they were added.
 */
class Schedule {
  readonly bound: ReadonlySet<Value<unknown>>;
  #waiting = new Map<Fold, number>();
  #waiters = new Map<Value<unknown>, Fold[]>();
  #pending = new Map<Value<unknown>, number>();
  #ready: Fold[] = [];

  constructor(p: Partition) {
    this.bound = new Set([...p.plain.keys(), ...p.foldsOf.keys()]);
    for (const [v, list] of p.foldsOf) this.#pending.set(v, list.length);
    for (const f of p.folds) {
      const on = new Set(
        dependencies(f.args, this.bound).filter((v) =>
          !p.plain.has(v) && p.foldsOf.has(v)
        ),
      );
      this.#waiting.set(f, on.size);
      for (const v of on) {
        const list = this.#waiters.get(v);
        if (list === undefined) this.#waiters.set(v, [f]);
        else list.push(f);
      }
      if (on.size === 0) this.#ready.push(f);
    }
  }

  /** The fold functions ready now, oldest first. */
  take(): Fold[] {
    return this.#ready.splice(0).sort((a, b) => a.seq - b.seq);
  }

  /** `f` is done: release what waited only for its witness. */
  done(f: Fold): void {
    const left = this.#pending.get(f.value)! - 1;
    this.#pending.set(f.value, left);
    if (left > 0) return;
    for (const g of this.#waiters.get(f.value) ?? []) {
      const n = this.#waiting.get(g)! - 1;
      this.#waiting.set(g, n);
      if (n === 0) this.#ready.push(g);
    }
  }

  /** The fold functions still waiting: they depend on a cycle. */
  stuck(): Fold[] {
    return [...this.#waiting].filter(([, n]) => n > 0).map(([f]) => f);
  }
}

// --- Step 3: evaluation -------------------------------------------------

/** Looks a witness up: its most recent plain value, else the newest fold's result. */
type Lookup = (v: Value<unknown>) => unknown;

/**
 * The values of `args`, or why the function is skipped. Synchronous unless
 * a `map` function returns a promise: most contexts never pay for a
 * microtask per fold.
 */
function evaluate(
  args: readonly ArgData[],
  lookup: Lookup,
  signal: AbortSignal | undefined,
  from = 0,
  xs: unknown[] = [],
): unknown[] | Skipped | PromiseLike<unknown[] | Skipped> {
  for (let i = from; i < args.length; i++) {
    const a = args[i];
    if (a.kind === "map") {
      const inner = evaluate(a.args as unknown as ArgData[], lookup, signal);
      const apply = (ys: unknown[] | Skipped) => {
        if (ys instanceof Skipped) return ys;
        const x = settle(a.k(...ys), signal);
        const next = (y: unknown) =>
          evaluate(args, lookup, signal, i + 1, [...xs, y]);
        return isThenable(x) ? x.then(next) : next(x);
      };
      return isThenable(inner) ? inner.then(apply) : apply(inner);
    }
    const x = lookup(a.value);
    if (x !== absent) xs.push(x);
    else if (a.kind === "req") {
      return new Skipped(`missing required value ${a.value.name}`);
    } else xs.push(a.kind === "dft" ? a.fallback : undefined);
  }
  return xs;
}

/** The outcome of applying one fold function. */
type Applied =
  | { kind: "produced"; x: unknown }
  | { kind: "nothing" }
  | { kind: "skipped"; reason: string }
  | { kind: "failed"; error: unknown };

/** Applies `f`: evaluates its arguments, calls it, and says what came of it. */
async function apply(
  f: Fold,
  lookup: Lookup,
  signal: AbortSignal | undefined,
): Promise<Applied> {
  try {
    let xs = evaluate(f.args, lookup, signal);
    if (isThenable(xs)) xs = await xs;
    if (xs instanceof Skipped) return { kind: "skipped", reason: xs.reason };
    let x = settle(f.k(...xs), signal);
    if (isThenable(x)) x = await x;
    return x === undefined ? { kind: "nothing" } : { kind: "produced", x };
  } catch (error) {
    if (signal?.aborted && error === signal.reason) throw error;
    return { kind: "failed", error };
  }
}

// --- Step 4: cycle ------------------------------------------------------

/**
 * The names of the values in the cycle among `stuck` (the fold functions
 * left waiting): peel off those nothing left waits for, downstream of it.
 */
function cycleOf(
  stuck: readonly Fold[],
  bound: ReadonlySet<Value<unknown>>,
): string[] {
  const left = new Set(stuck);
  const reads = new Map(stuck.map((f) => [f, dependencies(f.args, bound)]));
  let changed = true;
  while (changed) {
    changed = false;
    for (const f of left) {
      const needed = [...left].some((g) => reads.get(g)!.includes(f.value));
      if (!needed) {
        left.delete(f);
        changed = true;
      }
    }
  }
  return [...new Set([...left].map((f) => f.value.name))];
}

/**
 * Applies the fold functions of `ctx` in dependency order and lists the
 * candidates, sorted as {@linkcode connect} tries them. When fold functions
 * threw or form a cycle, the last element is an {@linkcode unfoldReport}
 * endpoint that carries them to `connect` (which never tries it): copying
 * the array (`[...endpoints]`) keeps it.
 *
 * @example List the candidates
 * ```ts
 * import { dft, empty, req, unfold, value } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const host = value<string>("host");
 * const port = value<number>("port");
 * const addr = value<string>("addr");
 * const ctx = empty.add(host, "localhost")
 *   .fold(addr, [req(host), dft(port, 80)], (h, p) => `${h}:${p}`);
 * const endpoints = await unfold(ctx);
 * assert.deepEqual(endpoints.map((e) => e.data), ["localhost", "localhost:80"]);
 * ```
 *
 * @param ctx The context.
 * @param options A signal and a trace hook.
 * @returns The candidates, in the order they are tried.
 */
export function unfold(
  ctx: Context,
  options?: ResolveOptions,
): Promise<Endpoint[]> {
  try {
    options?.signal?.throwIfAborted();
    const plains = plainCandidates(ctx, options);
    if (plains !== undefined) return Promise.resolve(plains);
    return evaluateAll(partition(bindingsNewestFirst(ctx)), options);
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * The fast path: the sorted candidates of a context of plain values (which
 * has nothing to evaluate), or undefined when it has fold functions.
 */
function plainCandidates(
  ctx: Context,
  options: ResolveOptions | undefined,
): Endpoint[] | undefined {
  const plains: Endpoint[] = [];
  for (const b of bindingsNewestFirst(ctx)) {
    if (!("x" in b)) return undefined;
    plains.push({ value: b.value, data: b.x });
  }
  return sorted(plains, [], [], [], options?.onEvent);
}

/** Steps 2 to 4: applies every fold function that can be, in order. */
async function evaluateAll(
  p: Partition,
  options: ResolveOptions | undefined,
): Promise<Endpoint[]> {
  const { signal, onEvent } = options ?? {};
  const schedule = new Schedule(p);
  const produced = new Map<Value<unknown>, { seq: number; x: unknown }>();
  const lookup: Lookup = (v) => {
    if (p.plain.has(v)) return p.plain.get(v);
    return produced.has(v) ? produced.get(v)!.x : absent;
  };
  const computed: Endpoint[] = [];
  const failed: Attempt[] = [];
  for (let batch = schedule.take(); batch.length > 0; batch = schedule.take()) {
    for (const f of batch) {
      signal?.throwIfAborted();
      const value = f.value.name;
      const outcome = await apply(f, lookup, signal);
      switch (outcome.kind) {
        case "skipped":
          onEvent?.({ type: "fold-skipped", value, reason: outcome.reason });
          break;
        case "failed":
          failed.push({ name: `fold ${value}`, error: outcome.error });
          onEvent?.({ type: "fold-failed", value, error: outcome.error });
          break;
        case "nothing":
          onEvent?.({ type: "fold-applied", value, produced: false });
          break;
        case "produced": {
          onEvent?.({ type: "fold-applied", value, produced: true });
          computed.push({ value: f.value, data: outcome.x });
          const last = produced.get(f.value);
          if (last === undefined || last.seq < f.seq) {
            produced.set(f.value, { seq: f.seq, x: outcome.x });
          }
        }
      }
      schedule.done(f);
    }
  }
  const stuck = schedule.stuck();
  for (const f of stuck) {
    onEvent?.({
      type: "fold-skipped",
      value: f.value.name,
      reason: "its arguments depend on a cycle",
    });
  }
  const cycle = stuck.length === 0 ? [] : cycleOf(stuck, schedule.bound);
  return sorted(p.plains, computed, cycle, failed, onEvent);
}

function rank(e: Endpoint): number {
  const p = protocolOf(e.value);
  if (p === undefined) return Infinity;
  return p.priority ?? Number.MAX_VALUE;
}

/**
 * Rule 3: plain values, then computed ones, stably sorted by priority; the
 * report last, when there is something to report.
 */
function sorted(
  plains: Endpoint[],
  computed: Endpoint[],
  cycle: readonly string[],
  folds: readonly Attempt[],
  onEvent: ResolveOptions["onEvent"],
): Endpoint[] {
  const all = computed.length === 0 ? plains : [...plains, ...computed];
  const endpoints = all.length < 2 ? all : all
    .map((e, i) => ({ e, i, r: rank(e) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map(({ e }) => e);
  onEvent?.({ type: "candidates", names: endpoints.map((e) => e.value.name) });
  if (cycle.length > 0 || folds.length > 0) {
    const report: UnfoldReport = { cycle, folds };
    endpoints.push({ value: unfoldReport, data: report });
  }
  return endpoints;
}

// --- connect ------------------------------------------------------------

function isFlow(x: unknown): x is Flow {
  const f = x as Partial<Flow> | null;
  return typeof f === "object" && f !== null &&
    typeof f.read === "function" && typeof f.write === "function" &&
    typeof f.closeWrite === "function" && typeof f.close === "function";
}

/**
 * A protocol's flow that lacks `Symbol.dispose`/`Symbol.asyncDispose`
 * (Flow contract rule 8), wrapped instead of mutated (rule 9): a proxy that
 * forwards every property to the flow (methods bound to it, so its own
 * extras such as a TLS flow's `handshake()` keep working, and `instanceof`
 * holds) and adds the disposers. Its target is a fresh object, so a frozen
 * flow meets no proxy invariant.
 */
function wrapDisposable(flow: Flow): Flow & AsyncDisposable {
  const bound = new Map<PropertyKey, unknown>();
  const dispose = (): void => closeQuietly(flow);
  const asyncDispose = (): Promise<void> => {
    const own = (flow as Partial<AsyncDisposable>)[Symbol.asyncDispose];
    if (typeof own === "function") return Promise.resolve(own.call(flow));
    dispose();
    return Promise.resolve();
  };
  const own = new Map<PropertyKey, unknown>([
    [Symbol.dispose, dispose],
    [Symbol.asyncDispose, asyncDispose],
    ["close", dispose],
  ]);
  return new Proxy({}, {
    get(_, key) {
      if (own.has(key)) return own.get(key);
      const x = Reflect.get(flow, key, flow);
      if (typeof x !== "function") return x;
      let f = bound.get(key);
      if (f === undefined || (f as { raw?: unknown }).raw !== x) {
        f = Object.assign(x.bind(flow), { raw: x });
        bound.set(key, f);
      }
      return f;
    },
    has: (_, key) => own.has(key) || key in flow,
    getPrototypeOf: () => Object.getPrototypeOf(flow),
    set: () => false,
  }) as Flow & AsyncDisposable;
}

/** The flow as returned: itself when it keeps rule 8, else a wrapper. */
function disposable(flow: Flow): Flow & AsyncDisposable {
  const f = flow as Partial<AsyncDisposable & Disposable>;
  if (
    typeof f[Symbol.asyncDispose] === "function" &&
    typeof f[Symbol.dispose] === "function"
  ) {
    return flow as Flow & AsyncDisposable;
  }
  return wrapDisposable(flow);
}

/**
 * Tries the candidates in order and resolves to the first flow that
 * connects; values that are no protocol's endpoint are skipped. The flow is
 * the protocol's own object, never modified; one that lacks
 * `Symbol.dispose` or `Symbol.asyncDispose` is wrapped in a flow that has
 * them (and the protocol's `is()` recognises the wrapper). A protocol that
 * resolves to something that is not a flow fails its attempt with a
 * `TypeError`.
 *
 * @example Connect what unfold found
 * ```ts
 * import { connect, empty, NotFoundError, unfold } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(connect(await unfold(empty)), NotFoundError);
 * ```
 *
 * @param endpoints The candidates, as {@linkcode unfold} sorts them.
 * @param options A signal and a trace hook.
 * @returns The first flow that connects, with `Symbol.asyncDispose`.
 */
export function connect(
  endpoints: readonly Endpoint[],
  options?: ResolveOptions,
): Promise<Flow & AsyncDisposable> {
  const signal = options?.signal ?? unabortableSignal();
  return attempt({ endpoints, options, signal, attempts: [] }, 0);
}

/** The state of one {@linkcode connect}: what it tries, what failed. */
interface Connecting {
  readonly endpoints: readonly Endpoint[];
  readonly options: ResolveOptions | undefined;
  readonly signal: AbortSignal;
  readonly attempts: Attempt[];
  report?: UnfoldReport;
}

/**
 * Tries the candidates from `i` on. A promise chain rather than an async
 * loop: a connect that succeeds at once costs no extra turn.
 */
function attempt(
  c: Connecting,
  i: number,
): Promise<Flow & AsyncDisposable> {
  const { endpoints, options, signal } = c;
  const onEvent = options?.onEvent;
  for (; i < endpoints.length; i++) {
    if (signal.aborted) return Promise.reject(signal.reason);
    const { value, data } = endpoints[i];
    if (value === unfoldReport) {
      c.report = data as UnfoldReport;
      continue;
    }
    const p = protocolOf(value);
    if (p === undefined) {
      onEvent?.({
        type: "skipped",
        value: value.name,
        reason: "not an endpoint",
      });
      continue;
    }
    const endpoint = onEvent === undefined ? "" : p.describe(data);
    onEvent?.({ type: "connecting", protocol: p.name, endpoint });
    let pending: Promise<Flow>;
    try {
      pending = p.connect(data, signal);
    } catch (error) {
      pending = Promise.reject(error);
    }
    const next = i + 1;
    const failed = (error: unknown): Promise<Flow & AsyncDisposable> => {
      if (signal.aborted) {
        // A connect that ignores the signal must not leak its flow.
        pending.then((flow) => closeQuietly(flow), () => {});
        return Promise.reject(signal.reason);
      }
      c.attempts.push({
        name: p.name,
        error,
        endpoint: endpoint || p.describe(data),
      });
      onEvent?.({ type: "connect-failed", protocol: p.name, endpoint, error });
      return attempt(c, next);
    };
    // Only a caller's signal can abort: without one, skip the race.
    const raced = options?.signal ? abortable(pending, signal) : pending;
    return raced.then((flow): Flow & AsyncDisposable | Promise<never> => {
      if (signal.aborted) {
        closeQuietly(flow);
        return Promise.reject(signal.reason);
      }
      if (!isFlow(flow)) {
        closeQuietly(flow as { close?(): void } as { close(): void });
        return failed(
          new TypeError(
            `Cannot connect with ${p.name}: it resolved to ${
              typeName(flow)
            }, not a flow`,
          ),
        ) as Promise<never>;
      }
      const result = disposable(flow);
      p.flows.add(flow);
      if (result !== flow) p.flows.add(result);
      onEvent?.({ type: "connected", protocol: p.name, endpoint });
      return result;
    }, failed);
  }
  // Aborted after the last attempt (or with no candidate at all): the
  // signal's reason, not NotFoundError.
  if (signal.aborted) return Promise.reject(signal.reason);
  const report = c.report;
  if (
    c.attempts.length === 0 && report !== undefined && report.cycle.length > 0
  ) {
    return Promise.reject(new CycleError(report.cycle));
  }
  return Promise.reject(new NotFoundError(c.attempts, report?.folds));
}

/**
 * Unfolds `ctx` and connects the first candidate that can be: mimic's one
 * entry point.
 *
 * @example Resolve a context to a flow
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 *
 * const ctx = empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 8080 });
 * await using flow = await resolve(ctx);
 * await flow.write(new TextEncoder().encode("ping\n"));
 * ```
 *
 * @param ctx The context.
 * @param options A signal and a trace hook.
 * @returns The connected flow.
 */
export function resolve(
  ctx: Context,
  options?: ResolveOptions,
): Promise<Flow & AsyncDisposable> {
  let plains: Endpoint[] | undefined;
  try {
    options?.signal?.throwIfAborted();
    plains = plainCandidates(ctx, options);
  } catch (error) {
    return Promise.reject(error);
  }
  // A context of plain values: connect at once, without a turn through
  // unfold's promise.
  if (plains !== undefined) return connect(plains, options);
  return unfold(ctx, options).then((endpoints) => connect(endpoints, options));
}
