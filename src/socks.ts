/**
 * SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): ask a
 * SOCKS server to open a TCP connection to a target and use it as a
 * {@linkcode Flow}. The way to the SOCKS server is itself any context (TCP,
 * TLS to a SOCKS server behind a TLS terminator, a Unix socket, a CONNECT
 * tunnel, another SOCKS server), and anything runs inside (TLS to the target).
 *
 * Targets are IPv4 addresses, IPv6 addresses and domain names. By default a
 * name is sent to the server, which resolves it (`socks5h` in curl's words,
 * `resolve: "proxy"`); with `resolve: "local"` it is resolved here first
 * (curl's `socks5`) and the address is sent.
 *
 * The entry point is portable: it uses no `Deno` API (local resolution uses
 * `node:dns`, which Deno, Node and Bun have, unless a `lookup` is given).
 *
 * @example HTTPS through a SOCKS server, by name
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { socks } from "@mimic/mimic/socks";
 * import { tcp } from "@mimic/mimic/tcp";
 * import { tls } from "@mimic/mimic/tls";
 *
 * const proxy = empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 1080 });
 * const through = empty.add(socks.endpoint, {
 *   proxy,
 *   target: { hostname: "example.com", port: 443 },
 * });
 * await using flow = await resolve(
 *   empty.add(tls.endpoint, { hostname: "example.com", over: through }),
 * );
 * ```
 *
 * @module
 */

import type { Context } from "./context.ts";
import { errors } from "./errors.ts";
import type { Flow } from "./flow.ts";
import { type Protocol, register } from "./protocol.ts";
import { resolve as resolveContext } from "./resolve.ts";
import { readableFromFlow, Unread, writableFromFlow } from "./_streams.ts";
import { abortable, closeQuietly, writeAll } from "./_util.ts";
import { formatIp, parseIpv4, parseIpv6 } from "./_ip.ts";

export type { Flow } from "./flow.ts";
export type { Protocol } from "./protocol.ts";
export type { Arg, ArgTypes, Context, Value } from "./context.ts";

/** Where the SOCKS server should connect. */
export interface SocksTarget {
  /** A domain name, or an IPv4 or IPv6 address (IPv6 with or without brackets). */
  hostname: string;
  /** The port, 0 to 65535. */
  port: number;
}

/**
 * Looks up the addresses of a host name, for `resolve: "local"`.
 *
 * @param hostname The name.
 * @param signal Aborted when the lookup is no longer needed.
 * @returns IP literals, the preferred first.
 */
export type SocksLookup = (
  hostname: string,
  signal?: AbortSignal,
) => Promise<string[]>;

/** How {@linkcode connectSocks} talks to the SOCKS server. */
export interface ConnectSocksOptions {
  /**
   * The user name (RFC 1929), 1 to 255 bytes of UTF-8. When given, the
   * client offers username/password authentication besides none.
   */
  username?: string;
  /** The password (RFC 1929), 0 to 255 bytes of UTF-8; default `""`. */
  password?: string;
  /**
   * Who resolves a domain name: `"proxy"` (socks5h, the default) sends the
   * name; `"local"` looks it up here and sends the first address.
   *
   * @default {"proxy"}
   */
  resolve?: "proxy" | "local";
  /**
   * The resolver for `resolve: "local"`; the default is `node:dns`'s
   * `lookup` (the system resolver: `/etc/hosts`, then DNS).
   */
  lookup?: SocksLookup;
  /** Aborts the handshake: the flow is closed and the call rejects with the reason. */
  signal?: AbortSignal;
}

/** The endpoint of the {@linkcode socks} protocol. */
export interface SocksEndpoint {
  /** How to reach the SOCKS server: any context (TCP, TLS, ...). */
  proxy: Context;
  /** Where the SOCKS server should connect. */
  target: SocksTarget;
  /** The user name (RFC 1929). */
  username?: string;
  /** The password (RFC 1929). */
  password?: string;
  /** `"proxy"` (socks5h, the default): the proxy resolves names. */
  resolve?: "proxy" | "local";
  /** The resolver for `resolve: "local"`. */
  lookup?: SocksLookup;
}

/** Why a SOCKS handshake failed: the reply codes of RFC 1928 and the rest. */
export type SocksErrorCode =
  /** Reply 1: general SOCKS server failure. */
  | "GeneralFailure"
  /** Reply 2: connection not allowed by ruleset. */
  | "NotAllowed"
  /** Reply 3: network unreachable. */
  | "NetworkUnreachable"
  /** Reply 4: host unreachable. */
  | "HostUnreachable"
  /** Reply 5: connection refused. */
  | "ConnectionRefused"
  /** Reply 6: TTL expired. */
  | "TtlExpired"
  /** Reply 7: command not supported. */
  | "CommandNotSupported"
  /** Reply 8: address type not supported. */
  | "AddressTypeNotSupported"
  /** The server accepts none of the authentication methods offered. */
  | "NoAcceptableMethods"
  /** The server rejected the username and password (RFC 1929). */
  | "AuthenticationFailed"
  /** The server sent something that is not SOCKS5. */
  | "ProtocolViolation"
  /** The server closed the connection in the middle of the handshake. */
  | "UnexpectedEof";

const REPLIES: readonly [SocksErrorCode, string][] = [
  ["GeneralFailure", "general SOCKS server failure"],
  ["NotAllowed", "connection not allowed by ruleset"],
  ["NetworkUnreachable", "network unreachable"],
  ["HostUnreachable", "host unreachable"],
  ["ConnectionRefused", "connection refused"],
  ["TtlExpired", "TTL expired"],
  ["CommandNotSupported", "command not supported"],
  ["AddressTypeNotSupported", "address type not supported"],
];

/**
 * A SOCKS handshake failed: the server refused the request (`reply` is its
 * RFC 1928 reply code, 1 to 8), or the failure came before the request or
 * broke the protocol (`reply` is -1; `code` says which). The message names
 * the target and the reply, e.g. `Cannot connect to 127.0.0.1:9 through the
 * SOCKS server: connection refused (reply 5)`.
 *
 * @example Tell a refused connection from the rest
 * ```ts
 * import { SocksError } from "@mimic/mimic/socks";
 * import assert from "node:assert/strict";
 *
 * const error = new SocksError("127.0.0.1:9", 5);
 * assert.equal(error.reply, 5);
 * assert.equal(error.code, "ConnectionRefused");
 * assert.equal(
 *   error.message,
 *   "Cannot connect to 127.0.0.1:9 through the SOCKS server: connection refused (reply 5)",
 * );
 * ```
 */
export class SocksError extends Error {
  /** The server's reply code (1..8), or -1 when the failure is not a reply. */
  readonly reply: number;
  /** The reply's name, or what else went wrong. */
  readonly code: SocksErrorCode;

  /**
   * Makes the error.
   *
   * @param authority The target, as `host:port`.
   * @param reply A reply code 1..8; or -1 with `code` and `detail`.
   * @param code What went wrong, when `reply` is -1.
   * @param detail The end of the message, when `reply` is -1.
   */
  constructor(
    authority: string,
    reply: number,
    code?: SocksErrorCode,
    detail?: string,
  ) {
    const known = reply >= 1 && reply <= 8 ? REPLIES[reply - 1] : undefined;
    super(
      `Cannot connect to ${authority} through the SOCKS server: ${
        known !== undefined
          ? `${known[1]} (reply ${reply})`
          : detail ?? "protocol violation"
      }`,
    );
    this.name = "SocksError";
    this.reply = known !== undefined ? reply : -1;
    this.code = known !== undefined ? known[0] : code ?? "ProtocolViolation";
  }
}

/** An address, in the shapes of `Deno.Addr` (a `Deno.Conn`'s `localAddr` fits). */
export type Addr =
  | { transport: "tcp" | "udp"; hostname: string; port: number }
  | { transport: "unix" | "unixpacket"; path: string };

/**
 * An established SOCKS connection: the flow to the SOCKS server, past the
 * handshake. Reads and writes go to it unchanged (the handshake reads exactly
 * the server's reply, so a byte the target sent right after it is the first
 * one read); `localAddr` and `remoteAddr` are the inner flow's (the SOCKS
 * server's), `bound` is the address the server connected from. Closing it
 * closes the inner flow.
 *
 * @example See the address the server used
 * ```ts ignore
 * import { connectSocks } from "@mimic/mimic/socks";
 *
 * await using flow = await connectSocks(proxyFlow, { hostname: "localhost", port: 7 });
 * console.log(flow.bound); // { hostname: "127.0.0.1", port: 50123 }
 * ```
 */
export class SocksFlow implements Flow, AsyncDisposable, Disposable {
  /** The flow to the SOCKS server, which carries the connection. */
  readonly inner: Flow;
  /** Where the connection leads. */
  readonly target: SocksTarget;
  /** BND.ADDR and BND.PORT of the server's reply: where it connected from. */
  readonly bound: SocksTarget;
  /** The bytes read, as a stream. */
  readonly readable: ReadableStream<Uint8Array>;
  /** The bytes to write, as a stream; closing it half-closes the flow. */
  readonly writable: WritableStream<Uint8Array>;

  #closed = false;
  /** Bytes a cancelled pull of `readable` had read: the next read's. */
  readonly #unread = new Unread();
  /** The read of `readable` in flight: later reads follow it. */
  #pull: Promise<void> | undefined;

  /**
   * Wraps an established connection. Prefer {@linkcode connectSocks}.
   *
   * @param inner The flow to the SOCKS server, past its reply.
   * @param target Where the connection leads.
   * @param bound The server's BND.ADDR and BND.PORT.
   */
  constructor(inner: Flow, target: SocksTarget, bound: SocksTarget) {
    this.inner = inner;
    this.target = target;
    this.bound = bound;
    // Cancelling the stream only ends it: a pull in flight still reads, and
    // what it gets goes back in front of the next read.
    this.readable = readableFromFlow((p) => this.#streamRead(p), () => {}, {
      unread: (bytes) => this.#unshift(bytes),
    });
    this.writable = writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  /** The inner flow's local address (toward the SOCKS server), if it has one. */
  get localAddr(): Addr | undefined {
    return (this.inner as { localAddr?: Addr }).localAddr;
  }

  /** The inner flow's remote address (the SOCKS server's), if it has one. */
  get remoteAddr(): Addr | undefined {
    return (this.inner as { remoteAddr?: Addr }).remoteAddr;
  }

  #closedError(action: string): Error {
    return new errors.BadResource(
      `Cannot ${action} SOCKS connection to ${
        authorityOf(this.target)
      }: the flow is closed`,
    );
  }

  /**
   * Reads into `p`.
   *
   * @param p The buffer to fill.
   * @returns The number of bytes read, or `null` at end of flow.
   */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(this.#closedError("read from"));
    const pull = this.#pull;
    if (pull !== undefined) return pull.then(() => this.read(p));
    if (this.#unread.size > 0 && p.length > 0) {
      return Promise.resolve(this.#unread.take(p));
    }
    return this.inner.read(p);
  }

  #streamRead(p: Uint8Array): Promise<number | null> {
    const op = this.read(p);
    const pull = op.then(() => {}, () => {});
    this.#pull = pull;
    pull.then(() => {
      if (this.#pull === pull) this.#pull = undefined;
    });
    return op;
  }

  #unshift(bytes: Uint8Array): void {
    if (!this.#closed) this.#unread.unshift(bytes);
  }

  /**
   * Writes from `p`.
   *
   * @param p The bytes to write.
   * @returns The number of bytes written.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closedError("write to"));
    return this.inner.write(p);
  }

  /**
   * Half-closes: the server half-closes its connection to the target.
   *
   * @returns A promise settled once the inner flow is half-closed.
   */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError("close"));
    return this.inner.closeWrite();
  }

  /** Closes the connection and the inner flow. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.inner);
  }

  /** Closes the connection (as {@linkcode SocksFlow.close}). */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the connection, and waits for the inner flow to be disposed when
   * it is async-disposable.
   *
   * @returns A promise settled once the flow is closed.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    const inner = this.inner as Partial<AsyncDisposable>;
    if (!this.#closed && typeof inner[Symbol.asyncDispose] === "function") {
      this.#closed = true;
      await inner[Symbol.asyncDispose]!();
      return;
    }
    this.close();
  }
}

/** `host:port`, with brackets around an IPv6 address. */
function authorityOf(target: SocksTarget): string {
  const host = target.hostname.includes(":") && !target.hostname.startsWith("[")
    ? `[${target.hostname}]`
    : target.hostname;
  return `${host}:${target.port}`;
}

const encoder = new TextEncoder();

/** The bytes of `text` as a SOCKS string field (1 length byte), or a TypeError. */
function field(
  authority: string,
  what: string,
  text: string,
  min: number,
): Uint8Array {
  const bytes = encoder.encode(text);
  if (bytes.length < min || bytes.length > 255) {
    throw new TypeError(
      `Cannot connect to ${authority} through the SOCKS server: the ${what} must be ${min} to 255 bytes, got ${bytes.length}`,
    );
  }
  const out = new Uint8Array(1 + bytes.length);
  out[0] = bytes.length;
  out.set(bytes, 1);
  return out;
}

/** A domain name as sent in the request: ASCII (non-ASCII names in Punycode). */
function asciiName(authority: string, hostname: string): string {
  const name = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
  if (/^[\x21-\x7e]+$/.test(name)) return name;
  try {
    const converted = new URL(`http://${name}`).hostname;
    if (/^[\x21-\x7e]+$/.test(converted)) return converted;
  } catch {
    // Reported below.
  }
  throw new TypeError(
    `Cannot connect to ${authority} through the SOCKS server: the host name is invalid`,
  );
}

/** ATYP and DST.ADDR for an address or a name. */
function address(authority: string, hostname: string): Uint8Array {
  const v4 = parseIpv4(hostname);
  if (v4 !== undefined) return Uint8Array.of(1, ...v4);
  const v6 = parseIpv6(hostname);
  if (v6 !== undefined) return Uint8Array.of(4, ...v6);
  if (hostname.includes(":") || hostname.includes("%")) {
    throw new TypeError(
      `Cannot connect to ${authority} through the SOCKS server: the IPv6 address is invalid (zones are not supported)`,
    );
  }
  return Uint8Array.of(
    3,
    ...field(authority, "host name", asciiName(authority, hostname), 1),
  );
}

/** The system resolver, through `node:dns` (Deno, Node, Bun). */
const systemLookup: SocksLookup = async (hostname) => {
  let dns: typeof import("node:dns");
  try {
    dns = await import("node:dns");
  } catch (error) {
    throw new errors.NotFound(
      `Cannot resolve host ${hostname}: this runtime has no node:dns (give a lookup function, or resolve: "proxy")`,
      { cause: error },
    );
  }
  const found = await dns.promises.lookup(hostname, {
    all: true,
    verbatim: true,
  });
  return found.map((a) => a.address);
};

/** The first address of `hostname`, or `hostname` itself when it is one. */
async function lookupFirst(
  hostname: string,
  lookup: SocksLookup,
  signal: AbortSignal | undefined,
): Promise<string> {
  if (parseIpv4(hostname) !== undefined || parseIpv6(hostname) !== undefined) {
    return hostname;
  }
  let found: string[];
  try {
    found = await abortable(lookup(hostname, signal), signal);
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new errors.NotFound(
      `Cannot resolve host ${hostname}: ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error },
    );
  }
  const first = found.find((a) =>
    parseIpv4(a) !== undefined || parseIpv6(a) !== undefined
  );
  if (first === undefined) {
    throw new errors.NotFound(`Cannot resolve host ${hostname}: no address`);
  }
  return first;
}

/** Shows bytes a server sent: hex, and the text when it is printable. */
function shown(bytes: Uint8Array): string {
  const hex = Array.from(bytes, (b) => `0x${b.toString(16).padStart(2, "0")}`)
    .join(" ");
  const text = String.fromCharCode(...bytes);
  return /^[\x20-\x7e]+$/.test(text) ? `${hex} (${JSON.stringify(text)})` : hex;
}

/** Reads exactly `n` bytes (never more, so nothing past the reply is taken). */
async function readExact(
  flow: Flow,
  n: number,
  authority: string,
  stage: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n;) {
    const got = await flow.read(out.subarray(at));
    if (got === null) {
      throw new SocksError(
        authority,
        -1,
        "UnexpectedEof",
        `the server closed the connection ${stage}${
          at === 0 ? "" : ` (after ${at} of ${n} bytes)`
        }`,
      );
    }
    at += got;
  }
  return out;
}

const NO_AUTH = 0x00;
const USERNAME_PASSWORD = 0x02;
const NO_ACCEPTABLE = 0xff;

/** The SOCKS5 handshake over `flow`: methods, authentication, CONNECT. */
async function handshake(
  flow: Flow,
  target: SocksTarget,
  options: ConnectSocksOptions,
  authority: string,
): Promise<SocksTarget> {
  const { username, password, signal } = options;
  const resolveMode = options.resolve ?? "proxy";
  if (resolveMode !== "proxy" && resolveMode !== "local") {
    throw new TypeError(
      `Cannot connect to ${authority} through the SOCKS server: resolve must be "proxy" or "local", got ${
        JSON.stringify(resolveMode)
      }`,
    );
  }
  if (username === undefined && password !== undefined) {
    throw new TypeError(
      `Cannot connect to ${authority} through the SOCKS server: a password needs a username`,
    );
  }
  const credentials = username === undefined ? undefined : Uint8Array.of(
    0x01,
    ...field(authority, "username", username, 1),
    ...field(authority, "password", password ?? "", 0),
  );
  const hostname = resolveMode === "local"
    ? await lookupFirst(target.hostname, options.lookup ?? systemLookup, signal)
    : target.hostname;
  const dst = address(authority, hostname);
  const request = new Uint8Array(3 + dst.length + 2);
  request.set([0x05, 0x01, 0x00]);
  request.set(dst, 3);
  request[request.length - 2] = target.port >> 8;
  request[request.length - 1] = target.port & 0xff;

  // Method selection (RFC 1928, section 3).
  const methods = credentials === undefined
    ? [NO_AUTH]
    : [NO_AUTH, USERNAME_PASSWORD];
  await writeAll(
    flow,
    Uint8Array.of(0x05, methods.length, ...methods),
    "the SOCKS server",
  );
  const choice = await readExact(
    flow,
    2,
    authority,
    "instead of choosing a method",
  );
  if (choice[0] !== 0x05) {
    throw new SocksError(
      authority,
      -1,
      "ProtocolViolation",
      `the server does not speak SOCKS5: it answered the greeting with ${
        shown(choice)
      }`,
    );
  }
  if (choice[1] === NO_ACCEPTABLE) {
    throw new SocksError(
      authority,
      -1,
      "NoAcceptableMethods",
      credentials === undefined
        ? "the server accepts no method offered (no authentication): it may need a username and password"
        : "the server accepts no method offered (no authentication, username/password)",
    );
  }
  if (!methods.includes(choice[1])) {
    throw new SocksError(
      authority,
      -1,
      "ProtocolViolation",
      `the server chose method 0x${
        choice[1].toString(16).padStart(2, "0")
      }, which was not offered`,
    );
  }

  // Username/password (RFC 1929).
  if (choice[1] === USERNAME_PASSWORD) {
    await writeAll(flow, credentials!, "the SOCKS server");
    const status = await readExact(flow, 2, authority, "during authentication");
    // RFC 1929 says version 1; some servers answer 5. Both are accepted.
    if (status[0] !== 0x01 && status[0] !== 0x05) {
      throw new SocksError(
        authority,
        -1,
        "ProtocolViolation",
        `the server answered the username and password with ${shown(status)}`,
      );
    }
    if (status[1] !== 0x00) {
      throw new SocksError(
        authority,
        -1,
        "AuthenticationFailed",
        `the server rejected the username and password for ${
          JSON.stringify(username)
        } (status ${status[1]})`,
      );
    }
  }

  // CONNECT (RFC 1928, sections 4 and 6).
  await writeAll(flow, request, "the SOCKS server");
  const head = await readExact(
    flow,
    4,
    authority,
    "instead of answering CONNECT",
  );
  if (head[0] !== 0x05) {
    throw new SocksError(
      authority,
      -1,
      "ProtocolViolation",
      `the server answered CONNECT with ${shown(head)}`,
    );
  }
  const reply = head[1];
  if (reply >= 1 && reply <= 8) throw new SocksError(authority, reply);
  if (reply !== 0) {
    throw new SocksError(
      authority,
      -1,
      "ProtocolViolation",
      `the server answered CONNECT with the unassigned reply ${reply}`,
    );
  }
  let boundHost: string;
  switch (head[3]) {
    case 1:
      boundHost = formatIp(await readExact(flow, 4, authority, "in its reply"));
      break;
    case 4:
      boundHost = formatIp(
        await readExact(flow, 16, authority, "in its reply"),
      );
      break;
    case 3: {
      const [length] = await readExact(flow, 1, authority, "in its reply");
      boundHost = new TextDecoder().decode(
        await readExact(flow, length, authority, "in its reply"),
      );
      break;
    }
    default:
      throw new SocksError(
        authority,
        -1,
        "ProtocolViolation",
        `the server's reply has the unknown address type ${head[3]}`,
      );
  }
  const portBytes = await readExact(flow, 2, authority, "in its reply");
  return { hostname: boundHost, port: (portBytes[0] << 8) | portBytes[1] };
}

/**
 * Runs the SOCKS5 handshake over `flow` (a connection to a SOCKS server):
 * offers no authentication (and username/password when a `username` is
 * given), authenticates, asks the server to CONNECT to `target`, and
 * resolves to the connection once the server succeeded. The handshake reads
 * exactly the server's messages, so nothing the target sends after the
 * reply is lost.
 *
 * On failure `flow` is closed, and the call rejects with
 * {@linkcode SocksError} (the server refused, rejected the credentials,
 * accepts none of the methods, broke the protocol or closed mid-handshake),
 * `TypeError`/`RangeError` for a bad target or credentials, `NotFound` when
 * `resolve: "local"` cannot resolve the name, an I/O error of `flow` as it
 * is, or the signal's reason when aborted.
 *
 * @example Over an in-memory pipe, with a fake SOCKS server
 * ```ts
 * import { connectSocks } from "@mimic/mimic/socks";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [client, server] = pipe();
 * const fake = (async () => {
 *   const buf = new Uint8Array(512);
 *   await server.read(buf); // 5 1 0: SOCKS5, one method, no authentication
 *   await server.write(Uint8Array.of(5, 0));
 *   const n = (await server.read(buf))!; // 5 1 0 3 9 "localhost" 0 7
 *   assert.equal(new TextDecoder().decode(buf.subarray(5, n - 2)), "localhost");
 *   // Success, bound to 127.0.0.1:4242, then the target's first bytes.
 *   await server.write(Uint8Array.of(5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0x92, 104, 105));
 * })();
 * await using flow = await connectSocks(client, { hostname: "localhost", port: 7 });
 * await fake;
 * assert.deepEqual(flow.bound, { hostname: "127.0.0.1", port: 4242 });
 * const buf = new Uint8Array(2);
 * assert.equal(await flow.read(buf), 2);
 * assert.equal(new TextDecoder().decode(buf), "hi");
 * server.close();
 * ```
 *
 * @example Over TCP, with a username and password
 * ```ts ignore
 * import { connectSocks } from "@mimic/mimic/socks";
 *
 * const proxy = await Deno.connect({ hostname: "127.0.0.1", port: 1080 });
 * await using flow = await connectSocks(proxy, { hostname: "::1", port: 7 }, {
 *   username: "alice",
 *   password: "secret",
 * });
 * ```
 *
 * @param flow A flow to a SOCKS5 server.
 * @param target Where the server should connect.
 * @param options Credentials, who resolves names, and a signal.
 * @returns The connection.
 */
export async function connectSocks(
  flow: Flow,
  target: SocksTarget,
  options: ConnectSocksOptions = {},
): Promise<SocksFlow> {
  const authority = authorityOf(target);
  const { signal } = options;
  try {
    if (
      !Number.isInteger(target.port) || target.port < 0 || target.port > 65535
    ) {
      throw new RangeError(
        `Cannot connect to ${authority} through the SOCKS server: port is out of range`,
      );
    }
    if (typeof target.hostname !== "string" || target.hostname === "") {
      throw new TypeError(
        `Cannot connect to ${authority} through the SOCKS server: the host name is missing`,
      );
    }
    signal?.throwIfAborted();
    const bound = await abortable(
      handshake(flow, target, options, authority),
      signal,
    );
    const hostname = target.hostname.startsWith("[") &&
        target.hostname.endsWith("]")
      ? target.hostname.slice(1, -1)
      : target.hostname;
    return new SocksFlow(flow, { hostname, port: target.port }, bound);
  } catch (error) {
    closeQuietly(flow);
    throw error;
  }
}

/**
 * The `socks` protocol: resolves the endpoint's `proxy` context, then runs
 * the SOCKS5 handshake to `target` through it (see {@linkcode connectSocks}).
 *
 * @example Through a SOCKS server over TCP, name resolved by the server
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { socks } from "@mimic/mimic/socks";
 * import { tcp } from "@mimic/mimic/tcp";
 *
 * const proxy = empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 1080 });
 * await using flow = await resolve(empty.add(socks.endpoint, {
 *   proxy,
 *   target: { hostname: "localhost", port: 7 },
 *   username: "alice",
 *   password: "secret",
 * }));
 * ```
 */
export const socks: Protocol<SocksEndpoint, SocksFlow> = register(
  "socks",
  async (endpoint: SocksEndpoint, signal: AbortSignal) => {
    const proxy = await resolveContext(endpoint.proxy, { signal });
    return await connectSocks(proxy, endpoint.target, {
      username: endpoint.username,
      password: endpoint.password,
      resolve: endpoint.resolve,
      lookup: endpoint.lookup,
      signal,
    });
  },
);
