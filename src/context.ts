/**
 * Values, contexts and fold arguments: mimic's `Mimic.make`, `ctx` and `Fun`.
 *
 * @module
 */

/**
 * A witness for values of type `T`: a typed key into a {@linkcode Context}.
 * Two witnesses with the same name are different; identity is the object.
 */
export interface Value<T> {
  /** The name, for traces and error messages. */
  readonly name: string;
  /** Carries `T` for type inference only; never set. */
  readonly "~type"?: T;
}

/**
 * Makes a fresh witness.
 *
 * @example Make a witness and bind it
 * ```ts
 * import { empty, value } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const port = value<number>("port");
 * assert.equal(empty.add(port, 80).get(port), 80);
 * ```
 *
 * @param name The name shown in traces and errors.
 * @returns A new witness, distinct from every other.
 */
export function value<T>(name: string): Value<T> {
  return Object.freeze({ name });
}

/** An argument of a fold function: built by {@linkcode req}, {@linkcode opt}, {@linkcode dft} or {@linkcode map}. */
export interface Arg<T> {
  /** Which kind of argument this is. */
  readonly kind: "req" | "opt" | "dft" | "map";
  /** Carries `T` for type inference only; never set. */
  readonly "~type"?: T;
}

/** Maps a tuple of arguments to the tuple of the values they give. */
export type ArgTypes<A extends readonly Arg<unknown>[]> = {
  -readonly [K in keyof A]: A[K] extends Arg<infer T> ? T : never;
};

/** The internal shape of an argument. */
export type ArgData =
  | { kind: "req" | "opt"; value: Value<unknown> }
  | { kind: "dft"; value: Value<unknown>; fallback: unknown }
  | {
    kind: "map";
    args: readonly Arg<unknown>[];
    k: (...xs: unknown[]) => unknown;
  };

/**
 * A required argument: while `v` has no value, the fold function is not applied.
 *
 * @example A required host
 * ```ts
 * import { empty, req, value } from "@mimic/mimic";
 *
 * const host = value<string>("host");
 * const url = value<string>("url");
 * const ctx = empty.fold(url, [req(host)], (h) => `http://${h}/`);
 * ```
 *
 * @param v The witness to read.
 * @returns The argument.
 */
export function req<T>(v: Value<T>): Arg<T> {
  return { kind: "req", value: v } as ArgData as Arg<T>;
}

/**
 * An optional argument: `undefined` when `v` has no value.
 *
 * @example An optional user
 * ```ts
 * import { empty, opt, req, value } from "@mimic/mimic";
 *
 * const host = value<string>("host");
 * const user = value<string>("user");
 * const address = value<string>("address");
 * const ctx = empty.fold(address, [opt(user), req(host)], (u, h) =>
 *   u === undefined ? h : `${u}@${h}`);
 * ```
 *
 * @param v The witness to read.
 * @returns The argument.
 */
export function opt<T>(v: Value<T>): Arg<T | undefined> {
  return { kind: "opt", value: v } as ArgData as Arg<T | undefined>;
}

/**
 * An argument with a default: `fallback` when `v` has no value.
 *
 * @example A port that defaults to 80
 * ```ts
 * import { dft, empty, req, value } from "@mimic/mimic";
 *
 * const host = value<string>("host");
 * const port = value<number>("port");
 * const target = value<string>("target");
 * const ctx = empty.fold(target, [req(host), dft(port, 80)], (h, p) => `${h}:${p}`);
 * ```
 *
 * @param v The witness to read.
 * @param fallback The value used when `v` has none.
 * @returns The argument.
 */
export function dft<T>(v: Value<T>, fallback: T): Arg<T> {
  return { kind: "dft", value: v, fallback } as ArgData as Arg<T>;
}

/**
 * An argument computed from other arguments; it is absent when one of their
 * required values is.
 *
 * @example Upper-case a host before use
 * ```ts
 * import { empty, map, req, value } from "@mimic/mimic";
 *
 * const host = value<string>("host");
 * const name = value<string>("name");
 * const ctx = empty.fold(name, [map([req(host)], (h) => h.toUpperCase())], (h) => h);
 * ```
 *
 * @param args The arguments `k` takes.
 * @param k Computes the argument's value (may be async).
 * @returns The argument.
 */
export function map<const A extends readonly Arg<unknown>[], T>(
  args: A,
  k: (...xs: ArgTypes<A>) => T | Promise<T>,
): Arg<T> {
  return { kind: "map", args, k } as unknown as Arg<T>;
}

/** One binding of a context: a plain value or a fold function. */
export type Binding =
  | { readonly value: Value<unknown>; readonly x: unknown }
  | {
    readonly value: Value<unknown>;
    readonly args: readonly ArgData[];
    readonly k: (...xs: unknown[]) => unknown;
  };

/** A persistent list cell, newest first. */
interface Cell {
  readonly binding: Binding;
  readonly next: Cell | undefined;
}

const bindingsOf = new WeakMap<Context, Cell | undefined>();

/** The bindings of `ctx`, oldest first (for the resolver). */
export function bindings(ctx: Context): Binding[] {
  const out: Binding[] = [];
  for (let c = bindingsOf.get(ctx); c !== undefined; c = c.next) {
    out.push(c.binding);
  }
  return out.reverse();
}

/** The bindings of `ctx`, newest first (the resolver's fast path). */
export function bindingsNewestFirst(ctx: Context): Binding[] {
  const out: Binding[] = [];
  for (let c = bindingsOf.get(ctx); c !== undefined; c = c.next) {
    out.push(c.binding);
  }
  return out;
}

function make(head: Cell | undefined): Context {
  const ctx = Object.create(Context.prototype) as Context;
  bindingsOf.set(ctx, head);
  return ctx;
}

function fromList(list: readonly Binding[], head?: Cell): Context {
  for (const binding of list) head = { binding, next: head };
  return make(head);
}

/**
 * An immutable set of bindings, mimic's `ctx`: plain values and fold
 * functions that compute values from others. Every method returns a new
 * context; the receiver is never changed.
 *
 * @example Build a context
 * ```ts
 * import { empty, req, value } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const host = value<string>("host");
 * const port = value<number>("port");
 * const ctx = empty.add(host, "example.com").add(port, 80).add(port, 8080);
 * assert.equal(ctx.get(port), 8080);
 * assert.equal(ctx.replace(port, 1).get(port), 1);
 * ```
 */
export class Context {
  private constructor() {
    bindingsOf.set(this, undefined);
  }

  /**
   * Appends a plain value for `v`; older bindings stay.
   *
   * @param v The witness.
   * @param x The value.
   * @returns The new context.
   */
  add<T>(v: Value<T>, x: T): Context {
    return make({ binding: { value: v, x }, next: bindingsOf.get(this) });
  }

  /**
   * Drops `v`'s plain values, keeps its fold functions, and adds `x`.
   *
   * @param v The witness.
   * @param x The value.
   * @returns The new context.
   */
  replace<T>(v: Value<T>, x: T): Context {
    const kept = bindings(this).filter((b) => b.value !== v || !("x" in b));
    return fromList([...kept, { value: v, x }]);
  }

  /**
   * The most recently added plain value of `v`.
   *
   * @param v The witness.
   * @returns The value, or `undefined` when `v` has no plain value.
   */
  get<T>(v: Value<T>): T | undefined {
    for (let c = bindingsOf.get(this); c !== undefined; c = c.next) {
      if (c.binding.value === v && "x" in c.binding) return c.binding.x as T;
    }
    return undefined;
  }

  /**
   * Adds a way to compute `v` from other values; {@linkcode unfold} applies it
   * once its required arguments are available.
   *
   * @param v The witness computed.
   * @param args The arguments `k` takes.
   * @param k Computes the value; `undefined` adds nothing (may be async).
   * @returns The new context.
   */
  fold<T, const A extends readonly Arg<unknown>[]>(
    v: Value<T>,
    args: A,
    k: (...xs: ArgTypes<A>) => T | undefined | Promise<T | undefined>,
  ): Context {
    const binding = {
      value: v,
      args: args as unknown as readonly ArgData[],
      k: k as (...xs: unknown[]) => unknown,
    };
    return make({ binding, next: bindingsOf.get(this) });
  }

  /**
   * Merges two contexts: for every witness, this context's bindings, then
   * `other`'s (which are so the more recent ones).
   *
   * @param other The context whose bindings come after.
   * @returns The new context.
   */
  merge(other: Context): Context {
    return fromList(bindings(other), bindingsOf.get(this));
  }
}

/**
 * The context with no binding.
 *
 * @example Start from nothing
 * ```ts
 * import { empty, value } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * assert.equal(empty.get(value<number>("port")), undefined);
 * ```
 */
export const empty: Context = make(undefined);
