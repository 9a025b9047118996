/**
 * Protocols: mimic's `register` and `repr`.
 *
 * @module
 */

import { type Value, value } from "./context.ts";
import type { Flow } from "./flow.ts";

/**
 * A transport that {@linkcode resolve} can pick: add a value for its
 * `endpoint` to a context to make it a candidate.
 */
export interface Protocol<E, F extends Flow> {
  /** The name given to {@linkcode register}. */
  readonly name: string;
  /** Lower numbers are tried first; `undefined` after every prioritised one. */
  readonly priority: number | undefined;
  /** The witness whose values are this protocol's endpoints. */
  readonly endpoint: Value<E>;
  /** mimic's `repr`: true for flows this protocol connected. */
  is(flow: Flow): flow is F;
}

/** What the resolver knows of a registered protocol. */
export interface Registered {
  readonly name: string;
  readonly priority: number | undefined;
  readonly connect: (endpoint: unknown, signal: AbortSignal) => Promise<Flow>;
  readonly flows: WeakSet<Flow>;
}

const registry = new WeakMap<Value<unknown>, Registered>();

/** The protocol whose endpoint `v` is, if any. */
export function protocolOf(v: Value<unknown>): Registered | undefined {
  return registry.get(v);
}

/**
 * Registers a protocol: a name, how to connect to one of its endpoints, and
 * an optional priority.
 *
 * @example A protocol over `Deno.connect`
 * ```ts
 * import { empty, register, resolve } from "@mimic/mimic";
 *
 * const tcp = register("my-tcp", (addr: { hostname: string; port: number }) =>
 *   Deno.connect(addr));
 * const ctx = empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 80 });
 * ```
 *
 * @param name The protocol's name, for traces and errors.
 * @param connect Connects to an endpoint; receives the resolution's signal.
 * @param options `priority`: lower numbers are tried first.
 * @returns The protocol.
 */
export function register<E, F extends Flow>(
  name: string,
  connect: (endpoint: E, signal: AbortSignal) => Promise<F>,
  options?: { priority?: number },
): Protocol<E, F> {
  const endpoint = value<E>(name);
  const flows = new WeakSet<Flow>();
  const priority = options?.priority;
  registry.set(endpoint, {
    name,
    priority,
    connect: connect as Registered["connect"],
    flows,
  });
  return Object.freeze({
    name,
    priority,
    endpoint,
    is: (flow: Flow): flow is F => flows.has(flow),
  });
}
