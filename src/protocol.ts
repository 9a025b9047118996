/**
 * Protocols: mimic's `register` and `repr`.
 *
 * @module
 */

import { type Value, value } from "./context.ts";
import type { Flow } from "./flow.ts";
import { authority } from "./_util.ts";

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
  /** mimic's `repr`: true for flows this protocol connected (or the wrapper resolution made of one). */
  is(flow: Flow): flow is F;
  /**
   * A printable description of one of its endpoints, as in traces
   * (`connecting`, `connect-failed` and `connected` events): the
   * `describe` given to {@linkcode register}, else a default (see there).
   */
  describe(endpoint: E): string;
}

/** Options of {@linkcode register}. */
export interface RegisterOptions<E> {
  /** Lower numbers are tried first; without one, after every prioritised protocol. */
  priority?: number;
  /**
   * Describes an endpoint for traces and errors, e.g. `tcp 127.0.0.1:80`.
   * Default: the protocol's name, followed by the endpoint's `url`, `path`
   * or `hostname:port` when it has one, or by the endpoint itself when it is
   * a string. It must not throw (a throw falls back to the name).
   */
  describe?: (endpoint: E) => string;
}

/** What the resolver knows of a registered protocol. */
export interface Registered {
  readonly name: string;
  readonly priority: number | undefined;
  readonly connect: (endpoint: unknown, signal: AbortSignal) => Promise<Flow>;
  readonly flows: WeakSet<Flow>;
  readonly describe: (endpoint: unknown) => string;
}

/** The default description of an endpoint: the name and what identifies it. */
function describeDefault(name: string, endpoint: unknown): string {
  if (typeof endpoint === "string") return `${name} ${endpoint}`;
  if (typeof endpoint !== "object" || endpoint === null) return name;
  const e = endpoint as Record<string, unknown>;
  if (typeof e.url === "string" || e.url instanceof URL) {
    return `${name} ${e.url}`;
  }
  if (typeof e.path === "string") return `${name} ${e.path}`;
  if (typeof e.hostname === "string" && typeof e.port === "number") {
    return `${name} ${authority(e.hostname, e.port)}`;
  }
  return name;
}

const registry = new WeakMap<Value<unknown>, Registered>();

/** The protocol whose endpoint `v` is, if any. */
export function protocolOf(v: Value<unknown>): Registered | undefined {
  return registry.get(v);
}

/**
 * Registers a protocol: a name, how to connect to one of its endpoints, an
 * optional priority and an optional description of endpoints for traces.
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
 * @param options `priority`: lower numbers are tried first; `describe`:
 * a printable description of an endpoint.
 * @returns The protocol.
 */
export function register<E, F extends Flow>(
  name: string,
  connect: (endpoint: E, signal: AbortSignal) => Promise<F>,
  options?: RegisterOptions<E>,
): Protocol<E, F> {
  const endpoint = value<E>(name);
  const flows = new WeakSet<Flow>();
  const priority = options?.priority;
  const custom = options?.describe;
  const describe = (e: unknown): string => {
    if (custom !== undefined) {
      try {
        return String(custom(e as E));
      } catch {
        return name;
      }
    }
    return describeDefault(name, e);
  };
  registry.set(endpoint, {
    name,
    priority,
    connect: connect as Registered["connect"],
    flows,
    describe,
  });
  return Object.freeze({
    name,
    priority,
    endpoint,
    is: (flow: Flow): flow is F => flows.has(flow),
    describe: describe as (endpoint: E) => string,
  });
}
