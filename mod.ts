/**
 * mimic for Deno: instantiate a transport flow from dynamic values.
 *
 * A program says what it has (a URL, a host and port, a socket path, TLS
 * settings) in a typed {@linkcode Context}; {@linkcode resolve} picks and
 * connects the right transport and hands back one {@linkcode Flow}. The
 * protocol code above it never knows whether it runs over TCP, a Unix
 * socket, an in-memory pipe, TLS, or TLS inside TLS.
 *
 * This core uses no `Deno.*` API; transports live in their own entry points
 * (`./tcp`, `./tls`, `./pipe`, `./process`, `./websocket`, `./tunnel`,
 * `./socks`), with `./serve` for the accept side, `./uri` to turn a URL into
 * a context, `./node` for the Node ecosystem's streams and HTTP stacks, and
 * `./testing` for a test PKI (a CA, a `localhost` server certificate and a
 * client certificate as PEM strings: for tests and examples only, their
 * private keys are public).
 *
 * @example Resolve a context made of values and fold functions
 * ```ts
 * import { dft, empty, register, req, resolve, value } from "@mimic/mimic";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * // A toy protocol: its endpoint is the flow itself.
 * const given = register("given", (flow: ReturnType<typeof pipe>[0]) =>
 *   Promise.resolve(flow));
 * const [client, server] = pipe();
 * const name = value<string>("name");
 * const ctx = empty
 *   .add(name, "local")
 *   .fold(given.endpoint, [req(name), dft(value<number>("n"), 1)], (n) =>
 *     n === "local" ? client : undefined);
 * const flow = await resolve(ctx);
 * assert.ok(given.is(flow));
 * flow.close();
 * server.close();
 * ```
 *
 * @module
 */

export {
  type Addr,
  type Flow,
  flowFromReader,
  flowFromStreams,
  type FlowSource,
  SourceFlow,
  type SourceFlowOptions,
  type StreamsFlowOptions,
} from "./src/flow.ts";
export {
  type Arg,
  type ArgTypes,
  Context,
  dft,
  empty,
  map,
  opt,
  req,
  type Value,
  value,
} from "./src/context.ts";
export {
  type Protocol,
  register,
  type RegisterOptions,
} from "./src/protocol.ts";
export {
  type Attempt,
  connect,
  CycleError,
  type Endpoint,
  NotFoundError,
  resolve,
  type ResolveEvent,
  type ResolveOptions,
  unfold,
  type UnfoldReport,
  unfoldReport,
} from "./src/resolve.ts";
export { errors, type IoErrorClass, type IoErrors } from "./src/errors.ts";
