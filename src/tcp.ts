/**
 * The `tcp` and `unix` protocols over {@linkcode Deno.connect}, and Happy
 * Eyeballs (RFC 8305) for host names.
 *
 * Add a {@linkcode TcpEndpoint} for {@linkcode tcp.endpoint} (or a
 * {@linkcode UnixEndpoint} for {@linkcode unix.endpoint}) to a context, and
 * {@linkcode resolve} connects it. The flow is the `Deno.TcpConn` (or
 * `Deno.UnixConn`) itself, with `Symbol.asyncDispose` so `await using` works.
 *
 * @example Resolve a TCP endpoint on loopback
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const ctx = empty.add(tcp.endpoint, {
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 * });
 * const flow = await resolve(ctx);
 * assert.ok(tcp.is(flow));
 * using _server = await listener.accept();
 * flow.close();
 * ```
 *
 * @module
 */

import { type Protocol, register } from "./protocol.ts";
import { neverAborts } from "./resolve.ts";

// The core's types this entry point's API mentions, so that its documentation
// stands alone (`deno doc --lint src/tcp.ts`).
export type { Flow } from "./flow.ts";
export type { Value } from "./context.ts";
export type { Protocol } from "./protocol.ts";

/**
 * Looks up the addresses of a host name for one record type; the default is
 * {@linkcode Deno.resolveDns} (with `localhost` answered locally).
 *
 * @param hostname The name to look up.
 * @param recordType `"AAAA"` for IPv6, `"A"` for IPv4.
 * @param signal Aborted when the lookup is no longer needed.
 * @returns The addresses, as IP literals.
 */
export type Lookup = (
  hostname: string,
  recordType: "A" | "AAAA",
  signal: AbortSignal,
) => Promise<string[]>;

/** Where the `tcp` protocol connects. */
export interface TcpEndpoint {
  /** An IP literal (`127.0.0.1`, `::1`, `[::1]`) or a host name. */
  hostname: string;
  /** The port, an integer with 0 < port < 65536. */
  port: number;
  /**
   * RFC 8305 "Connection Attempt Delay" in milliseconds: how long an attempt
   * runs before the next address is tried alongside it. At least 10.
   *
   * @default {250}
   */
  attemptDelay?: number;
  /** The resolver for host names; the default is {@linkcode Deno.resolveDns}. */
  lookup?: Lookup;
  /**
   * TCP no-delay (Nagle's algorithm off). Turn it off for bulk transfers
   * made of writes that are not multiples of the segment size.
   *
   * @default {true}
   */
  noDelay?: boolean;
}

/** Where the `unix` protocol connects. */
export interface UnixEndpoint {
  /** The path of the Unix domain socket. */
  path: string;
}

/** One step of {@linkcode connectHappyEyeballs}, for tracing and tests. */
export type AttemptEvent =
  /** A connection attempt to `address` started. */
  | { type: "start"; address: string }
  /** The attempt to `address` won: its connection is the result. */
  | { type: "connected"; address: string }
  /** The attempt to `address` failed with `error`. */
  | { type: "failed"; address: string; error: unknown }
  /** The attempt to `address` lost (or the race was aborted); it is closed. */
  | { type: "cancelled"; address: string };

/** The options of {@linkcode connectHappyEyeballs}. */
export interface HappyEyeballsOptions {
  /**
   * RFC 8305 "Connection Attempt Delay" in milliseconds. Values below 10 are
   * raised to 10, as RFC 8305 §5 requires.
   *
   * @default {250}
   */
  attemptDelay?: number;
  /**
   * RFC 8305 "Resolution Delay" in milliseconds: how long to wait for the
   * AAAA answer once the A answer is in.
   *
   * @default {50}
   */
  resolutionDelay?: number;
  /**
   * The resolver. The default is {@linkcode Deno.resolveDns}, except that
   * `localhost` and names under `.localhost` are answered locally with `::1`
   * and `127.0.0.1` (RFC 6761), without any query.
   */
  lookup?: Lookup;
  /** Aborts the lookups and the attempts; the promise rejects with its reason. */
  signal?: AbortSignal;
  /**
   * TCP no-delay on the connection (Nagle's algorithm off).
   *
   * @default {true}
   */
  noDelay?: boolean;
  /** Called at every attempt's start, win, failure and cancellation. */
  onAttempt?: (event: AttemptEvent) => void;
  /**
   * Connects to one address; the default is {@linkcode Deno.connect}. Meant
   * for testing (simulating slow or failing addresses); the signal is
   * aborted when the attempt loses.
   */
  connect?: (
    options: { hostname: string; port: number; signal: AbortSignal },
  ) => Promise<Deno.TcpConn>;
}

const DEFAULT_ATTEMPT_DELAY = 250;
const MIN_ATTEMPT_DELAY = 10;
const DEFAULT_RESOLUTION_DELAY = 50;

function typeName(x: unknown): string {
  return x === null ? "null" : Array.isArray(x) ? "array" : typeof x;
}

function fail(what: string, reason: string, Kind = TypeError): never {
  throw new Kind(`Cannot connect to ${what} endpoint: ${reason}`);
}

function checkPort(what: string, port: unknown): number {
  if (typeof port !== "number") {
    fail(what, `port must be a number, got ${typeName(port)}`);
  }
  if (!Number.isInteger(port) || port <= 0 || port >= 65536) {
    fail(what, `port must be an integer in 1..65535, got ${port}`, RangeError);
  }
  return port;
}

function checkHostname(what: string, hostname: unknown): string {
  if (typeof hostname !== "string") {
    fail(what, `hostname must be a string, got ${typeName(hostname)}`);
  }
  if (hostname === "") fail(what, "hostname must not be empty");
  return hostname;
}

function checkDelay(what: string, name: string, delay: unknown): number {
  if (typeof delay !== "number") {
    fail(what, `${name} must be a number, got ${typeName(delay)}`);
  }
  if (!(delay >= 0) || !Number.isFinite(delay)) {
    fail(what, `${name} must be a finite number ≥ 0, got ${delay}`, RangeError);
  }
  return delay;
}

function checkEndpoint(what: string, endpoint: unknown): void {
  if (typeof endpoint !== "object" || endpoint === null) {
    fail(what, `the endpoint must be an object, got ${typeName(endpoint)}`);
  }
}

function validateTcp(endpoint: unknown): TcpEndpoint {
  checkEndpoint("tcp", endpoint);
  const e = endpoint as Record<string, unknown>;
  checkHostname("tcp", e.hostname);
  checkPort("tcp", e.port);
  if (e.attemptDelay !== undefined) {
    checkDelay("tcp", "attemptDelay", e.attemptDelay);
  }
  if (e.lookup !== undefined && typeof e.lookup !== "function") {
    fail("tcp", `lookup must be a function, got ${typeName(e.lookup)}`);
  }
  if (e.noDelay !== undefined && typeof e.noDelay !== "boolean") {
    fail("tcp", `noDelay must be a boolean, got ${typeName(e.noDelay)}`);
  }
  return e as unknown as TcpEndpoint;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const IPV6 = /^[0-9a-f:.]*:[0-9a-f:.]*(%[0-9a-z_.-]+)?$/i;

/** The IP literal `hostname` spells (brackets removed), or undefined. */
function literal(hostname: string): string | undefined {
  const h = hostname.startsWith("[") && hostname.endsWith("]")
    ? hostname.slice(1, -1)
    : hostname;
  const v4 = IPV4.exec(h);
  if (v4 !== null) {
    return v4.slice(1).every((n) => Number(n) <= 255) ? h : undefined;
  }
  return IPV6.test(h) && h.includes(":") ? h : undefined;
}

function isLocalhost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, "");
  return h === "localhost" || h.endsWith(".localhost");
}

const defaultLookup: Lookup = async (hostname, recordType, signal) => {
  if (isLocalhost(hostname)) {
    return recordType === "AAAA" ? ["::1"] : ["127.0.0.1"];
  }
  return await Deno.resolveDns(hostname, recordType, { signal });
};

const defaultConnect = (
  options: { hostname: string; port: number; signal: AbortSignal },
): Promise<Deno.TcpConn> =>
  // A signal that can never abort is not worth Deno's cancel handle.
  Deno.connect(
    options.signal === never || neverAborts(options.signal)
      ? { hostname: options.hostname, port: options.port }
      : options,
  );

function asyncDispose(this: Deno.Conn): Promise<void> {
  // Deno's Symbol.dispose closes without throwing when already closed.
  this[Symbol.dispose]();
  return Promise.resolve();
}

function idempotentClose(this: Deno.Conn): void {
  // Deno's Symbol.dispose closes without throwing when already closed, as
  // the Flow contract asks of close().
  this[Symbol.dispose]();
}

/**
 * Gives a connection what every mimic flow has: `Symbol.asyncDispose`, and a
 * `close()` that is idempotent (Deno's throws `BadResource` the second time).
 */
function disposable<C extends Deno.Conn>(conn: C): C & AsyncDisposable {
  // Plain assignments (not defineProperty) keep this off the connect path.
  if (!(Symbol.asyncDispose in conn)) {
    (conn as Partial<AsyncDisposable>)[Symbol.asyncDispose] = asyncDispose;
  }
  conn.close = idempotentClose;
  return conn as C & AsyncDisposable;
}

function prepare(
  conn: Deno.TcpConn,
  noDelay: boolean | undefined,
): Deno.TcpConn & AsyncDisposable {
  if (noDelay !== false) conn.setNoDelay(true);
  return disposable(conn);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Runs `start` with a signal linked to `outer`; when `outer` aborts first,
 * rejects with its reason and closes the connection should it still come.
 * The connection is never tied to `outer` once it is returned.
 */
async function connectOnce<C extends Deno.Conn>(
  start: (signal: AbortSignal) => Promise<C>,
  outer: AbortSignal | undefined,
): Promise<C> {
  if (outer === undefined) return await start(new AbortController().signal);
  outer.throwIfAborted();
  const inner = new AbortController();
  const pending = start(inner.signal);
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      inner.abort(outer.reason);
      pending.then((conn) => conn.close(), () => {});
      reject(outer.reason);
    };
  });
  outer.addEventListener("abort", onAbort, { once: true });
  try {
    return await Promise.race([pending, aborted]);
  } finally {
    outer.removeEventListener("abort", onAbort);
  }
}

/**
 * Connects to `hostname:port` over TCP with Happy Eyeballs (RFC 8305).
 *
 * An IP literal (`127.0.0.1`, `::1`, `[::1]`) is connected directly, and
 * its error is the connect's own. A host name is looked up for AAAA and A
 * concurrently; attempts start as soon as the first answer comes (when A
 * comes first, after waiting up to the resolution delay, 50 ms, for AAAA).
 * Addresses are tried with the families interleaved, IPv6 first; a new
 * attempt starts every `attemptDelay` ms while earlier ones are pending, and
 * at once when one fails. The first connection wins; every other attempt is
 * aborted, and one that connects anyway is closed.
 *
 * The connection has TCP no-delay on (unless `noDelay: false`) and
 * `Symbol.asyncDispose`.
 *
 * Errors: a host name that resolves to no address rejects with
 * `Deno.errors.NotFound` ("Cannot resolve host …", the lookup errors as
 * `cause`); when every address fails, it rejects with an `AggregateError`
 * whose `errors` are the attempts' errors, in the order they started, and
 * whose message names each address; an aborted `signal` rejects with its
 * reason.
 *
 * @example Connect to localhost, whichever family listens
 * ```ts
 * import { connectHappyEyeballs } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using conn = await connectHappyEyeballs(
 *   "localhost",
 *   listener.addr.port,
 * );
 * assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
 * using _server = await listener.accept();
 * ```
 *
 * @example Inject a resolver
 * ```ts
 * import { connectHappyEyeballs } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const lookup = (_host: string, type: "A" | "AAAA") =>
 *   Promise.resolve(type === "A" ? ["127.0.0.1"] : []);
 * await using conn = await connectHappyEyeballs(
 *   "db.internal",
 *   listener.addr.port,
 *   { lookup },
 * );
 * assert.equal(conn.remoteAddr.port, listener.addr.port);
 * using _server = await listener.accept();
 * ```
 *
 * @param hostname An IP literal or a host name.
 * @param port The port, an integer with 0 < port < 65536.
 * @param options The delays, the resolver, a signal and a trace hook.
 * @returns The first connection that succeeds, with `Symbol.asyncDispose`.
 */
export function connectHappyEyeballs(
  hostname: string,
  port: number,
  options?: HappyEyeballsOptions,
): Promise<Deno.TcpConn & AsyncDisposable> {
  try {
    checkHostname("tcp", hostname);
    checkPort("tcp", port);
    if (options?.attemptDelay !== undefined) {
      checkDelay("tcp", "attemptDelay", options.attemptDelay);
    }
    if (options?.resolutionDelay !== undefined) {
      checkDelay("tcp", "resolutionDelay", options.resolutionDelay);
    }
  } catch (error) {
    return Promise.reject(error);
  }
  const connectTo = options?.connect ?? defaultConnect;
  const ip = literal(hostname);
  if (ip !== undefined) return connectLiteral(ip, port, connectTo, options);
  return new HappyEyeballs(hostname, port, connectTo, options).promise;
}

const never = new AbortController().signal;

/** Connects an IP literal directly: one attempt, its own error. */
async function connectLiteral(
  ip: string,
  port: number,
  connectTo: NonNullable<HappyEyeballsOptions["connect"]>,
  options: HappyEyeballsOptions | undefined,
): Promise<Deno.TcpConn & AsyncDisposable> {
  const onAttempt = options?.onAttempt;
  const signal = options?.signal ?? never;
  signal.throwIfAborted();
  onAttempt?.({ type: "start", address: ip });
  let conn: Deno.TcpConn;
  try {
    // Deno.connect's signal aborts the connect only, never the connection.
    conn = await connectTo({ hostname: ip, port, signal });
  } catch (error) {
    onAttempt?.({ type: "failed", address: ip, error });
    throw error;
  }
  onAttempt?.({ type: "connected", address: ip });
  try {
    return prepare(conn, options?.noDelay);
  } catch (error) {
    conn.close();
    throw error;
  }
}

interface Attempt {
  readonly address: string;
  readonly controller: AbortController;
}

/** The state of one Happy Eyeballs race. */
class HappyEyeballs {
  readonly promise: Promise<Deno.TcpConn & AsyncDisposable>;
  #hostname: string;
  #port: number;
  #connect: NonNullable<HappyEyeballsOptions["connect"]>;
  #attemptDelay: number;
  #resolutionDelay: number;
  #onAttempt: HappyEyeballsOptions["onAttempt"];
  #noDelay: boolean | undefined;
  #signal: AbortSignal | undefined;
  #lookups = new AbortController();
  #resolve!: (conn: Deno.TcpConn & AsyncDisposable) => void;
  #reject!: (error: unknown) => void;
  #done = false;
  /** Addresses not yet tried, in the order they will be. */
  #queue: string[] = [];
  /** The family of the last attempt started, to alternate. */
  #lastV6 = false;
  /** A answers held during the resolution delay. */
  #held: string[] | undefined;
  #answers = { A: false, AAAA: false };
  #lookupErrors: unknown[] = [];
  #pending = new Set<Attempt>();
  #errors: { address: string; error: unknown }[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #resolutionTimer: ReturnType<typeof setTimeout> | undefined;
  #onAbort = (): void => this.#finish(undefined, this.#signal!.reason);

  constructor(
    hostname: string,
    port: number,
    connect: NonNullable<HappyEyeballsOptions["connect"]>,
    options: HappyEyeballsOptions | undefined,
  ) {
    this.#hostname = hostname;
    this.#port = port;
    this.#connect = connect;
    this.#attemptDelay = Math.max(
      MIN_ATTEMPT_DELAY,
      options?.attemptDelay ?? DEFAULT_ATTEMPT_DELAY,
    );
    this.#resolutionDelay = options?.resolutionDelay ??
      DEFAULT_RESOLUTION_DELAY;
    this.#onAttempt = options?.onAttempt;
    this.#noDelay = options?.noDelay;
    this.#signal = options?.signal;
    this.promise = new Promise((ok, ko) => {
      this.#resolve = ok;
      this.#reject = ko;
    });
    if (this.#signal?.aborted) {
      this.#finish(undefined, this.#signal.reason);
      return;
    }
    this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
    const lookup = options?.lookup ?? defaultLookup;
    for (const type of ["AAAA", "A"] as const) {
      Promise.resolve()
        .then(() => lookup(hostname, type, this.#lookups.signal))
        .then(
          (addresses) => this.#answer(type, addresses, undefined),
          (error) => this.#answer(type, [], error),
        );
    }
  }

  #answer(type: "A" | "AAAA", addresses: string[], error: unknown): void {
    if (this.#done) return;
    this.#answers[type] = true;
    if (error !== undefined) this.#lookupErrors.push(error);
    if (type === "A" && !this.#answers.AAAA && addresses.length > 0) {
      // RFC 8305 §3: A first; give AAAA a short while to come.
      this.#held = [...addresses];
      this.#resolutionTimer = setTimeout(
        () => this.#release(),
        this.#resolutionDelay,
      );
      return;
    }
    this.#add(addresses);
    if (type === "AAAA") this.#release();
    this.#next();
  }

  /** Ends the resolution delay: the held A answers join the queue. */
  #release(): void {
    clearTimeout(this.#resolutionTimer);
    this.#resolutionTimer = undefined;
    if (this.#held === undefined) return;
    const held = this.#held;
    this.#held = undefined;
    this.#add(held);
    this.#next();
  }

  /** Merges new addresses into the queue, families interleaved. */
  #add(addresses: readonly string[]): void {
    if (addresses.length === 0) return;
    const all = [...this.#queue, ...addresses.map((a) => literal(a) ?? a)];
    const v6 = all.filter((a) => a.includes(":"));
    const v4 = all.filter((a) => !a.includes(":"));
    // Alternate from the family not tried last; IPv6 first at the start.
    const [first, second] = this.#lastV6 ? [v4, v6] : [v6, v4];
    const out: string[] = [];
    for (let i = 0; i < Math.max(first.length, second.length); i++) {
      if (i < first.length) out.push(first[i]);
      if (i < second.length) out.push(second[i]);
    }
    this.#queue = out;
  }

  /** Starts the next attempt if it is time to; settles when all is lost. */
  #next(): void {
    if (this.#done || this.#timer !== undefined) return;
    const address = this.#queue.shift();
    if (address === undefined) {
      const resolving = !this.#answers.A || !this.#answers.AAAA ||
        this.#held !== undefined;
      if (this.#pending.size === 0 && !resolving) this.#fail();
      return;
    }
    this.#lastV6 = address.includes(":");
    const attempt = { address, controller: new AbortController() };
    this.#pending.add(attempt);
    this.#onAttempt?.({ type: "start", address });
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#next();
    }, this.#attemptDelay);
    Promise.resolve()
      .then(() =>
        this.#connect({
          hostname: address,
          port: this.#port,
          signal: attempt.controller.signal,
        })
      )
      .then(
        (conn) => this.#won(attempt, conn),
        (error) => this.#failed(attempt, error),
      );
  }

  #won(attempt: Attempt, conn: Deno.TcpConn): void {
    this.#pending.delete(attempt);
    if (this.#done) {
      // Lost the race (or aborted) but connected anyway: no leaks.
      conn.close();
      return;
    }
    this.#onAttempt?.({ type: "connected", address: attempt.address });
    let prepared: Deno.TcpConn & AsyncDisposable;
    try {
      prepared = prepare(conn, this.#noDelay);
    } catch (error) {
      conn.close();
      this.#failed(attempt, error);
      return;
    }
    this.#finish(prepared, undefined);
  }

  #failed(attempt: Attempt, error: unknown): void {
    this.#pending.delete(attempt);
    if (this.#done) return;
    this.#errors.push({ address: attempt.address, error });
    this.#onAttempt?.({ type: "failed", address: attempt.address, error });
    // RFC 8305 §5: a failure starts the next attempt at once.
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#next();
  }

  #fail(): void {
    const target = `${this.#hostname}:${this.#port}`;
    if (this.#errors.length === 0) {
      const why = this.#lookupErrors.length === 0
        ? "no address"
        : this.#lookupErrors.map(describe).join("; ");
      this.#finish(
        undefined,
        new Deno.errors.NotFound(
          `Cannot resolve host ${this.#hostname}: ${why}`,
          {
            cause: this.#lookupErrors.length === 0
              ? undefined
              : new AggregateError(this.#lookupErrors, "Lookups failed"),
          },
        ),
      );
      return;
    }
    const list = this.#errors
      .map(({ address, error }) => `${address}: ${describe(error)}`)
      .join("; ");
    this.#finish(
      undefined,
      new AggregateError(
        this.#errors.map((e) => e.error),
        `Cannot connect to ${target}: every address failed (${list})`,
      ),
    );
  }

  #finish(
    conn: (Deno.TcpConn & AsyncDisposable) | undefined,
    error: unknown,
  ): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#resolutionTimer);
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#lookups.abort(new DOMException("Lookup cancelled", "AbortError"));
    for (const attempt of this.#pending) {
      attempt.controller.abort(
        new DOMException("Connection attempt lost", "AbortError"),
      );
      this.#onAttempt?.({ type: "cancelled", address: attempt.address });
    }
    if (conn !== undefined) this.#resolve(conn);
    else this.#reject(error);
  }
}

/**
 * The `tcp` protocol: connects a {@linkcode TcpEndpoint} with
 * {@linkcode connectHappyEyeballs}; the flow is the `Deno.TcpConn`, with TCP
 * no-delay on unless the endpoint says `noDelay: false`. An endpoint of the wrong shape fails that attempt with a
 * `TypeError` or `RangeError` naming what is wrong.
 *
 * @example Connect a name with an injected resolver
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const ctx = empty.add(tcp.endpoint, {
 *   hostname: "service.test",
 *   port: listener.addr.port,
 *   lookup: (_name, type) => Promise.resolve(type === "A" ? ["127.0.0.1"] : []),
 * });
 * const flow = await resolve(ctx);
 * assert.ok(tcp.is(flow));
 * using _server = await listener.accept();
 * flow.close();
 * ```
 */
export const tcp: Protocol<TcpEndpoint, Deno.TcpConn> = register(
  "tcp",
  (endpoint: TcpEndpoint, signal: AbortSignal): Promise<Deno.TcpConn> => {
    try {
      validateTcp(endpoint);
    } catch (error) {
      return Promise.reject(error);
    }
    return connectHappyEyeballs(endpoint.hostname, endpoint.port, {
      attemptDelay: endpoint.attemptDelay,
      lookup: endpoint.lookup,
      noDelay: endpoint.noDelay,
      signal,
    });
  },
);

/**
 * The `unix` protocol: connects a {@linkcode UnixEndpoint}, a Unix domain
 * socket's path; the flow is the `Deno.UnixConn`. An endpoint of the wrong
 * shape fails that attempt with a `TypeError`.
 *
 * @example Connect a Unix socket
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { unix } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/socket`;
 * using listener = Deno.listen({ transport: "unix", path });
 * const flow = await resolve(empty.add(unix.endpoint, { path }));
 * assert.ok(unix.is(flow));
 * using _server = await listener.accept();
 * flow.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export const unix: Protocol<UnixEndpoint, Deno.UnixConn> = register(
  "unix",
  (endpoint: UnixEndpoint, signal: AbortSignal): Promise<Deno.UnixConn> => {
    try {
      checkEndpoint("unix", endpoint);
      const path: unknown = endpoint.path;
      if (typeof path !== "string") {
        fail("unix", `path must be a string, got ${typeName(path)}`);
      }
      if (path === "") fail("unix", "path must not be empty");
    } catch (error) {
      return Promise.reject(error);
    }
    return connectOnce(
      () => Deno.connect({ transport: "unix", path: endpoint.path }),
      signal,
    ).then(disposable);
  },
);
