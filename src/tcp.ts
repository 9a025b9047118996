/**
 * The `tcp` and `unix` protocols over {@linkcode Deno.connect}, and Happy
 * Eyeballs (RFC 8305) for host names.
 *
 * Deno first, but not Deno only: where `Deno.connect` does not exist (Node,
 * Bun) the same protocols connect through `node:net` and look names up
 * through `node:dns` (loaded on first use), and return the same
 * {@linkcode TcpFlow} / {@linkcode UnixFlow}; so `fromUri("https://...")`
 * contexts resolve there too. Importing this module references no `Deno`
 * global; in a browser, a connect rejects with a `TypeError`.
 *
 * Add a {@linkcode TcpEndpoint} for {@linkcode tcp.endpoint} (or a
 * {@linkcode UnixEndpoint} for {@linkcode unix.endpoint}) to a context, and
 * {@linkcode resolve} connects it. The flow is a {@linkcode TcpFlow} (or
 * {@linkcode UnixFlow}): the package's own flow over the `Deno.TcpConn`,
 * keeping the Flow contract (`writable.close()` half-closes, cancelling
 * `readable` leaves the connection open, typed errors, dispose).
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

import { type Addr, SourceFlow } from "./flow.ts";
import { type Protocol, register } from "./protocol.ts";
import { neverAborts } from "./resolve.ts";
import { errors } from "./errors.ts";
import { connectNet, lookupNet } from "./_net_conn.ts";
import {
  abortable,
  authority,
  checkHostPort,
  messageOf,
  naming,
  typeName,
} from "./_util.ts";

// The core's types this entry point's API mentions, so that its documentation
// stands alone (`deno doc --lint src/tcp.ts`).
export type { Addr, Flow, SourceFlow } from "./flow.ts";
export type { Value } from "./context.ts";
export type { Protocol } from "./protocol.ts";

/**
 * Looks up the addresses of a host name for one record type; the default is
 * {@linkcode Deno.resolveDns} (with `localhost` answered locally; off Deno,
 * `node:dns`'s `lookup`).
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
  /** The resolver for host names; the default is {@linkcode Deno.resolveDns} (off Deno, `node:dns`). */
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
   * Connects to one address; the default is {@linkcode Deno.connect} (off
   * Deno, `node:net`). Meant for testing (simulating slow or failing
   * addresses); the signal is aborted when the attempt loses.
   */
  connect?: (
    options: { hostname: string; port: number; signal: AbortSignal },
  ) => Promise<Deno.TcpConn>;
}

const DEFAULT_ATTEMPT_DELAY = 250;
const MIN_ATTEMPT_DELAY = 10;
const DEFAULT_RESOLUTION_DELAY = 50;

function fail(what: string, reason: string, Kind = TypeError): never {
  throw new Kind(`Cannot connect to ${what} endpoint: ${reason}`);
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

function validateTcp(endpoint: unknown): TcpEndpoint {
  checkHostPort("tcp", endpoint);
  const e = endpoint as Record<string, unknown>;
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

/**
 * Whether `Deno.connect` exists: elsewhere (Node, Bun) connections and
 * lookups go through `node:net` and `node:dns`, loaded on first use.
 */
const onDeno = typeof (globalThis as { Deno?: { connect?: unknown } }).Deno
  ?.connect === "function";

const defaultLookup: Lookup = async (hostname, recordType, signal) => {
  if (isLocalhost(hostname)) {
    return recordType === "AAAA" ? ["::1"] : ["127.0.0.1"];
  }
  if (!onDeno) return await lookupNet(hostname, recordType);
  return await Deno.resolveDns(hostname, recordType, { signal });
};

const defaultConnect = (
  options: { hostname: string; port: number; signal: AbortSignal },
): Promise<Deno.TcpConn> =>
  !onDeno
    // A Deno.TcpConn's shape over a net.Socket.
    ? connectNet(options) as unknown as Promise<Deno.TcpConn>
    // A signal that can never abort is not worth Deno's cancel handle.
    : Deno.connect(
      options.signal === never || neverAborts(options.signal)
        ? { hostname: options.hostname, port: options.port }
        : options,
    );

/**
 * The package's flow over a `Deno.Conn` (Flow contract): the conn's own
 * `read`/`write`/`closeWrite`/`close`, queued in call order, with
 * `readable`/`writable` over them (so cancelling `readable` leaves the
 * connection open for, say, `startTls`, and `writable.close()` half-closes),
 * typed errors after `close()`, and dispose. The base of
 * {@linkcode TcpFlow} and {@linkcode UnixFlow}.
 *
 * @example Wrap a connection accepted by a listener
 * ```ts
 * import { ConnFlow } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * using flow = new ConnFlow(await listener.accept(), "accepted");
 * await client.write(new Uint8Array([1]));
 * assert.equal(await flow.read(new Uint8Array(1)), 1);
 * ```
 */
export class ConnFlow<C extends Deno.Conn> extends SourceFlow {
  readonly #conn: C;

  /**
   * Wraps `conn`.
   *
   * @param conn The connection; the flow owns it from now on.
   * @param name Names the flow in error messages.
   */
  constructor(conn: C, name: string) {
    super(conn, {
      name,
      localAddr: conn.localAddr as Addr,
      remoteAddr: conn.remoteAddr as Addr,
      settlesOnClose: true,
    });
    this.#conn = conn;
  }

  /** Makes the process wait for this connection (the default). */
  ref(): void {
    this.#conn.ref();
  }

  /** Lets the process exit while this connection is open. */
  unref(): void {
    this.#conn.unref();
  }

  /** For subclasses: the connection. */
  protected get conn(): C {
    return this.#conn;
  }
}

/**
 * A TCP connection as a flow: what {@linkcode tcp} and
 * {@linkcode connectHappyEyeballs} return. It keeps the Flow contract over
 * the `Deno.TcpConn` it delegates to (`writable.close()` half-closes,
 * cancelling `readable` does not close the connection, pending operations
 * reject with `Interrupted` on `close()`, later ones with `BadResource`).
 *
 * @example Half-close through the writable, keep reading
 * ```ts
 * import { connectHappyEyeballs } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * await using flow = await connectHappyEyeballs("127.0.0.1", listener.addr.port);
 * using server = await listener.accept();
 * await flow.writable.close(); // a half-close: the server reads end of flow
 * assert.equal(await server.read(new Uint8Array(1)), null);
 * await server.write(new Uint8Array([7]));
 * assert.equal(await flow.read(new Uint8Array(1)), 1);
 * assert.equal(flow.remoteAddr.port, listener.addr.port);
 * ```
 */
export class TcpFlow extends ConnFlow<Deno.TcpConn> {
  /** The local address. */
  declare readonly localAddr: Deno.NetAddr;
  /** The peer's address. */
  declare readonly remoteAddr: Deno.NetAddr;

  /**
   * Wraps a connection; {@linkcode connectHappyEyeballs} does it for you.
   *
   * @param conn The connection.
   */
  constructor(conn: Deno.TcpConn) {
    const { hostname, port } = conn.remoteAddr;
    super(conn, `tcp ${authority(hostname, port)}`);
  }

  /**
   * Turns Nagle's algorithm off (`true`, the default) or on.
   *
   * @param noDelay Whether to send segments at once.
   */
  setNoDelay(noDelay?: boolean): void {
    this.conn.setNoDelay(noDelay);
  }

  /**
   * Turns TCP keep-alive on (`true`, the default) or off.
   *
   * @param keepAlive Whether to probe an idle connection.
   */
  setKeepAlive(keepAlive?: boolean): void {
    this.conn.setKeepAlive(keepAlive);
  }
}

/**
 * A Unix domain socket connection as a flow: what {@linkcode unix} returns.
 * The same contract as {@linkcode TcpFlow}.
 *
 * @example Connect a Unix socket
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { unix, UnixFlow } from "@mimic/mimic/tcp";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/socket`;
 * using listener = Deno.listen({ transport: "unix", path });
 * const flow = await resolve(empty.add(unix.endpoint, { path }));
 * assert.ok(flow instanceof UnixFlow);
 * using _server = await listener.accept();
 * flow.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class UnixFlow extends ConnFlow<Deno.UnixConn> {
  /** The local address. */
  declare readonly localAddr: Deno.UnixAddr;
  /** The peer's address. */
  declare readonly remoteAddr: Deno.UnixAddr;

  /**
   * Wraps a connection.
   *
   * @param conn The connection.
   * @param path The socket's path, for error messages.
   */
  constructor(conn: Deno.UnixConn, path: string) {
    super(conn, `unix ${path}`);
  }
}

function prepare(conn: Deno.TcpConn, noDelay: boolean | undefined): TcpFlow {
  if (noDelay !== false) conn.setNoDelay(true);
  return new TcpFlow(conn);
}

/**
 * Connects to `hostname:port` over TCP with Happy Eyeballs (RFC 8305).
 *
 * An IP literal (`127.0.0.1`, `::1`, `[::1]`) is connected directly, and
 * its error is the connect's own, of the same class, with a message naming
 * the address ("Cannot connect to 127.0.0.1:1: Connection refused ..."). A host name is looked up for AAAA and A
 * concurrently; attempts start as soon as the first answer comes (when A
 * comes first, after waiting up to the resolution delay, 50 ms, for AAAA).
 * Addresses are tried with the families interleaved, IPv6 first; a new
 * attempt starts every `attemptDelay` ms while earlier ones are pending, and
 * at once when one fails. The first connection wins; every other attempt is
 * aborted, and one that connects anyway is closed.
 *
 * The connection is a {@linkcode TcpFlow}, with TCP no-delay on (unless
 * `noDelay: false`).
 *
 * Errors: a host name that resolves to no address rejects with
 * `errors.NotFound` ("Cannot resolve host …", the lookup errors as
 * `cause`); when every address fails, it rejects with an `AggregateError`
 * whose `errors` are the attempts' errors, in the order they started, each
 * naming its address, and whose message names each address; an aborted `signal` rejects with its
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
 * @returns The first connection that succeeds.
 */
export function connectHappyEyeballs(
  hostname: string,
  port: number,
  options?: HappyEyeballsOptions,
): Promise<TcpFlow> {
  try {
    checkHostPort("tcp", { hostname, port });
    if (options?.attemptDelay !== undefined) {
      checkDelay("tcp", "attemptDelay", options.attemptDelay);
    }
    if (options?.resolutionDelay !== undefined) {
      checkDelay("tcp", "resolutionDelay", options.resolutionDelay);
    }
  } catch (error) {
    return Promise.reject(error);
  }
  return dial(hostname, port, options);
}

/** {@linkcode connectHappyEyeballs} on arguments already validated. */
function dial(
  hostname: string,
  port: number,
  options: HappyEyeballsOptions | undefined,
): Promise<TcpFlow> {
  const connectTo = options?.connect ?? defaultConnect;
  const ip = literal(hostname);
  if (ip !== undefined) return connectLiteral(ip, port, connectTo, options);
  return new HappyEyeballs(hostname, port, connectTo, options).promise;
}

const never = new AbortController().signal;

/** Connects an IP literal directly: one attempt, its own error. */
function connectLiteral(
  ip: string,
  port: number,
  connectTo: NonNullable<HappyEyeballsOptions["connect"]>,
  options: HappyEyeballsOptions | undefined,
): Promise<TcpFlow> {
  const onAttempt = options?.onAttempt;
  const signal = options?.signal ?? never;
  if (signal.aborted) return Promise.reject(signal.reason);
  onAttempt?.({ type: "start", address: ip });
  let pending: Promise<Deno.TcpConn>;
  try {
    // Deno.connect's signal aborts the connect only, never the connection.
    pending = connectTo({ hostname: ip, port, signal });
  } catch (error) {
    pending = Promise.reject(error);
  }
  return pending.then((conn) => {
    onAttempt?.({ type: "connected", address: ip });
    try {
      return prepare(conn, options?.noDelay);
    } catch (error) {
      conn.close();
      throw error;
    }
  }, (cause) => {
    const error = naming(cause, authority(ip, port));
    onAttempt?.({ type: "failed", address: ip, error });
    throw error;
  });
}

interface Attempt {
  readonly address: string;
  readonly controller: AbortController;
}

/** The state of one Happy Eyeballs race. */
class HappyEyeballs {
  readonly promise: Promise<TcpFlow>;
  #hostname: string;
  #port: number;
  #connect: NonNullable<HappyEyeballsOptions["connect"]>;
  #attemptDelay: number;
  #resolutionDelay: number;
  #onAttempt: HappyEyeballsOptions["onAttempt"];
  #noDelay: boolean | undefined;
  #signal: AbortSignal | undefined;
  #lookups = new AbortController();
  #resolve!: (conn: TcpFlow) => void;
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
  #errors: { address: string; error: unknown; cause: unknown }[] = [];
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
    let prepared: TcpFlow;
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
    const named = naming(error, authority(attempt.address, this.#port));
    this.#errors.push({ address: attempt.address, error: named, cause: error });
    this.#onAttempt?.({
      type: "failed",
      address: attempt.address,
      error: named,
    });
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
        : this.#lookupErrors.map(messageOf).join("; ");
      this.#finish(
        undefined,
        new errors.NotFound(
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
      .map(({ address, cause }) => `${address}: ${messageOf(cause)}`)
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
    conn: (TcpFlow) | undefined,
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
 * {@linkcode connectHappyEyeballs}; the flow is a {@linkcode TcpFlow}, with
 * TCP no-delay on unless the endpoint says `noDelay: false`. An endpoint of
 * the wrong shape fails that attempt with a `TypeError` or `RangeError`
 * naming what is wrong; a refused connection with `ConnectionRefused` naming
 * the address. Traces describe the endpoint as `tcp host:port`.
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
export const tcp: Protocol<TcpEndpoint, TcpFlow> = register(
  "tcp",
  (endpoint: TcpEndpoint, signal: AbortSignal): Promise<TcpFlow> => {
    try {
      validateTcp(endpoint);
    } catch (error) {
      return Promise.reject(error);
    }
    return dial(endpoint.hostname, endpoint.port, {
      attemptDelay: endpoint.attemptDelay,
      lookup: endpoint.lookup,
      noDelay: endpoint.noDelay,
      signal,
    });
  },
  { describe: describeTcp },
);

function describeTcp(endpoint: TcpEndpoint): string {
  const e = endpoint as Partial<TcpEndpoint> | null;
  return `tcp ${authority(String(e?.hostname), e?.port as number)}`;
}

/**
 * The `unix` protocol: connects a {@linkcode UnixEndpoint}, a Unix domain
 * socket's path; the flow is a {@linkcode UnixFlow}. An endpoint of the
 * wrong shape fails that attempt with a `TypeError`; a missing socket with
 * `NotFound` naming the path ("Cannot connect to unix socket /run/x.sock:
 * No such file or directory ..."). Traces describe it as `unix <path>`.
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
export const unix: Protocol<UnixEndpoint, UnixFlow> = register(
  "unix",
  async (endpoint: UnixEndpoint, signal: AbortSignal): Promise<UnixFlow> => {
    if (typeof endpoint !== "object" || endpoint === null) {
      fail("unix", `the endpoint must be an object, got ${typeName(endpoint)}`);
    }
    const path: unknown = endpoint.path;
    if (typeof path !== "string") {
      fail("unix", `path must be a string, got ${typeName(path)}`);
    }
    if (path === "") fail("unix", "path must not be empty");
    signal.throwIfAborted();
    // Deno.connect takes no signal for Unix sockets: race it, and close a
    // connection that comes after the abort.
    const pending = onDeno
      ? Deno.connect({ transport: "unix", path })
      : connectNet({ path, signal }) as unknown as Promise<Deno.UnixConn>;
    let conn: Deno.UnixConn;
    try {
      conn = await (neverAborts(signal) ? pending : abortable(pending, signal));
    } catch (error) {
      if (signal.aborted) pending.then((c) => c.close(), () => {});
      throw naming(error, `unix socket ${path}`);
    }
    return new UnixFlow(conn, path);
  },
  { describe: (endpoint) => `unix ${(endpoint as UnixEndpoint | null)?.path}` },
);
