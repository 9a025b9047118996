/**
 * Resolution: mimic's `unfold`, `connect` and `resolve`.
 *
 * @module
 */

import {
  type ArgData,
  type Binding,
  bindings,
  type Context,
  type Value,
} from "./context.ts";
import type { Flow } from "./flow.ts";
import { protocolOf } from "./protocol.ts";

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
  | { type: "connecting"; protocol: string }
  | { type: "connect-failed"; protocol: string; error: unknown }
  | { type: "connected"; protocol: string };

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
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
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
          all.map((a) => `${a.name}: ${describe(a.error)}`).join("; ")
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

interface Fold {
  readonly seq: number;
  readonly value: Value<unknown>;
  readonly args: readonly ArgData[];
  readonly k: (...xs: unknown[]) => unknown;
}

interface Unfolded {
  readonly cycle: readonly string[];
  readonly folds: readonly Attempt[];
}

const unfolded = new WeakMap<readonly Endpoint[], Unfolded>();

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

function asyncClose(this: Flow): Promise<void> {
  this.close();
  return Promise.resolve();
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
  if (signal === undefined) return Promise.resolve(x);
  if (signal.aborted) {
    // Abandoned: its rejection must not go unhandled (it would crash Deno).
    Promise.resolve(x).catch(() => {});
    throw signal.reason;
  }
  return new Promise<T>((ok, ko) => {
    const abort = () => ko(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    Promise.resolve(x).then(ok, ko).finally(() =>
      signal.removeEventListener("abort", abort)
    );
  });
}

function deps(
  args: readonly ArgData[],
  bound: Set<Value<unknown>>,
): Value<unknown>[] {
  const out: Value<unknown>[] = [];
  for (const a of args) {
    if (a.kind === "map") {
      out.push(...deps(a.args as unknown as ArgData[], bound));
    } else if (a.kind === "req" || bound.has(a.value)) out.push(a.value);
  }
  return out;
}

/**
 * Applies the fold functions of `ctx` in dependency order and lists the
 * candidates, sorted as {@linkcode connect} tries them.
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
export async function unfold(
  ctx: Context,
  options?: ResolveOptions,
): Promise<Endpoint[]> {
  const { signal, onEvent } = options ?? {};
  signal?.throwIfAborted();
  const all: readonly Binding[] = bindings(ctx);
  const plain = new Map<Value<unknown>, unknown>();
  const plains: Endpoint[] = [];
  const folds: Fold[] = [];
  const foldsOf = new Map<Value<unknown>, Fold[]>();
  for (let seq = 0; seq < all.length; seq++) {
    const b = all[seq];
    if ("x" in b) {
      plain.set(b.value, b.x);
      plains.push({ value: b.value, data: b.x });
    } else {
      const f = { seq, value: b.value, args: b.args, k: b.k };
      folds.push(f);
      const list = foldsOf.get(b.value);
      if (list === undefined) foldsOf.set(b.value, [f]);
      else list.push(f);
    }
  }
  plains.reverse();
  if (folds.length === 0) return sorted(plains, [], [], onEvent);

  // Topological order (Kahn), at the granularity of witnesses: a fold waits
  // until every fold of each witness it reads (with no plain value) is done.
  const bound = new Set<Value<unknown>>([...plain.keys(), ...foldsOf.keys()]);
  const waiting = new Map<Fold, number>();
  const waiters = new Map<Value<unknown>, Fold[]>();
  const pending = new Map<Value<unknown>, number>();
  for (const [v, list] of foldsOf) pending.set(v, list.length);
  const ready: Fold[] = [];
  for (const f of folds) {
    const on = new Set(
      deps(f.args, bound).filter((v) => !plain.has(v) && foldsOf.has(v)),
    );
    waiting.set(f, on.size);
    for (const v of on) {
      const list = waiters.get(v);
      if (list === undefined) waiters.set(v, [f]);
      else list.push(f);
    }
    if (on.size === 0) ready.push(f);
  }

  const produced = new Map<Value<unknown>, { seq: number; x: unknown }>();
  const lookup = (v: Value<unknown>): unknown => {
    if (plain.has(v)) return plain.get(v);
    return produced.has(v) ? produced.get(v)!.x : absent;
  };
  // Synchronous unless a `map` function returns a promise: most contexts
  // never pay for a microtask per fold.
  const evaluate = (
    args: readonly ArgData[],
    from = 0,
    xs: unknown[] = [],
  ): unknown[] | string | PromiseLike<unknown[] | string> => {
    for (let i = from; i < args.length; i++) {
      const a = args[i];
      if (a.kind === "map") {
        const inner = evaluate(a.args as unknown as ArgData[]);
        const apply = (ys: unknown[] | string) => {
          if (typeof ys === "string") return ys;
          const x = settle(a.k(...ys), signal);
          const next = (y: unknown) => evaluate(args, i + 1, [...xs, y]);
          return isThenable(x) ? x.then(next) : next(x);
        };
        return isThenable(inner) ? inner.then(apply) : apply(inner);
      }
      const x = lookup(a.value);
      if (x !== absent) xs.push(x);
      else if (a.kind === "req") {
        return `missing required value ${a.value.name}`;
      } else xs.push(a.kind === "dft" ? a.fallback : undefined);
    }
    return xs;
  };

  const computed: Endpoint[] = [];
  const failed: Attempt[] = [];
  // Process in insertion order among the ready ones: a min-heap would be
  // n log n; a sorted ready queue by seq is enough since releases are rare.
  let done = 0;
  while (ready.length > 0) {
    ready.sort((a, b) => b.seq - a.seq);
    const batch = ready.splice(0);
    batch.reverse();
    for (const f of batch) {
      done++;
      signal?.throwIfAborted();
      const name = f.value.name;
      try {
        let xs = evaluate(f.args);
        if (isThenable(xs)) xs = await xs;
        if (typeof xs === "string") {
          onEvent?.({ type: "fold-skipped", value: name, reason: xs });
        } else {
          let x = settle(f.k(...xs), signal);
          if (isThenable(x)) x = await x;
          onEvent?.({
            type: "fold-applied",
            value: name,
            produced: x !== undefined,
          });
          if (x !== undefined) {
            computed.push({ value: f.value, data: x });
            const last = produced.get(f.value);
            if (last === undefined || last.seq < f.seq) {
              produced.set(f.value, { seq: f.seq, x });
            }
          }
        }
      } catch (error) {
        if (signal?.aborted && error === signal.reason) throw error;
        failed.push({ name: `fold ${name}`, error });
        onEvent?.({ type: "fold-failed", value: name, error });
      }
      const left = pending.get(f.value)! - 1;
      pending.set(f.value, left);
      if (left === 0) {
        for (const g of waiters.get(f.value) ?? []) {
          const n = waiting.get(g)! - 1;
          waiting.set(g, n);
          if (n === 0) ready.push(g);
        }
      }
    }
  }

  let cycle: string[] = [];
  if (done < folds.length) {
    // What is left waits on a cycle or on something downstream of one; peel
    // off the folds nothing left waits for, to keep the cycle itself.
    const left = new Set(folds.filter((f) => waiting.get(f)! > 0));
    let changed = true;
    while (changed) {
      changed = false;
      for (const f of left) {
        const needed = [...left].some((g) =>
          g !== f && deps(g.args, bound).includes(f.value)
        ) || deps(f.args, bound).includes(f.value);
        if (!needed) {
          left.delete(f);
          changed = true;
        }
      }
    }
    cycle = [...new Set([...left].map((f) => f.value.name))];
    for (const f of folds) {
      if (waiting.get(f)! > 0) {
        onEvent?.({
          type: "fold-skipped",
          value: f.value.name,
          reason: "its arguments depend on a cycle",
        });
      }
    }
  }

  return sorted(plains, computed, cycle, onEvent, failed);
}

function rank(e: Endpoint): number {
  const p = protocolOf(e.value);
  if (p === undefined) return Infinity;
  return p.priority ?? Number.MAX_VALUE;
}

/** Rule 3: plain values, then computed ones, stably sorted by priority. */
function sorted(
  plains: Endpoint[],
  computed: Endpoint[],
  cycle: readonly string[],
  onEvent: ResolveOptions["onEvent"],
  folds: readonly Attempt[] = [],
): Endpoint[] {
  const all = computed.length === 0 ? plains : [...plains, ...computed];
  const endpoints = all.length < 2 ? all : all
    .map((e, i) => ({ e, i, r: rank(e) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map(({ e }) => e);
  onEvent?.({ type: "candidates", names: endpoints.map((e) => e.value.name) });
  if (cycle.length > 0 || folds.length > 0) {
    unfolded.set(endpoints, { cycle, folds });
  }
  return endpoints;
}

/**
 * Tries the candidates in order and resolves to the first flow that
 * connects; values that are no protocol's endpoint are skipped.
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
 * @returns The first flow that connects; it has `Symbol.asyncDispose`
 * (closing it) even when the protocol's flow did not.
 */
export async function connect(
  endpoints: readonly Endpoint[],
  options?: ResolveOptions,
): Promise<Flow & AsyncDisposable> {
  const { onEvent } = options ?? {};
  const signal = options?.signal ?? unabortableSignal();
  const attempts: Attempt[] = [];
  for (const { value, data } of endpoints) {
    signal.throwIfAborted();
    const p = protocolOf(value);
    if (p === undefined) {
      onEvent?.({
        type: "skipped",
        value: value.name,
        reason: "not an endpoint",
      });
      continue;
    }
    onEvent?.({ type: "connecting", protocol: p.name });
    let pending: Promise<Flow>;
    try {
      pending = p.connect(data, signal);
    } catch (error) {
      pending = Promise.reject(error);
    }
    try {
      // Only a caller's signal can abort: without one, skip the race.
      const flow = await (options?.signal ? settle(pending, signal) : pending);
      p.flows.add(flow);
      if (!(Symbol.asyncDispose in flow)) {
        // A plain assignment: cheaper than defineProperty on this hot path.
        (flow as Partial<AsyncDisposable>)[Symbol.asyncDispose] = asyncClose;
      }
      onEvent?.({ type: "connected", protocol: p.name });
      return flow as Flow & AsyncDisposable;
    } catch (error) {
      if (signal.aborted) {
        // A connect that ignores the signal must not leak its flow.
        pending.then((flow) => flow.close(), () => {});
        throw signal.reason;
      }
      attempts.push({ name: p.name, error });
      onEvent?.({ type: "connect-failed", protocol: p.name, error });
    }
  }
  // Aborted after the last attempt (or with no candidate at all): the
  // signal's reason, not NotFoundError.
  signal.throwIfAborted();
  const info = unfolded.get(endpoints);
  if (attempts.length === 0 && info !== undefined && info.cycle.length > 0) {
    throw new CycleError(info.cycle);
  }
  throw new NotFoundError(attempts, info?.folds);
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
  return unfold(ctx, options).then((endpoints) => connect(endpoints, options));
}
