/**
 * HTTP CONNECT tunnels: ask a proxy to open a connection to a target and
 * use it as a {@linkcode Flow}. The proxy is itself any context (TCP, TLS
 * for an HTTPS proxy, a Unix socket, even another tunnel), and anything can
 * run inside the tunnel (TLS for HTTPS through the proxy).
 *
 * @example HTTPS through an HTTP proxy
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import { tls } from "@mimic/mimic/tls";
 * import { tunnel } from "@mimic/mimic/tunnel";
 *
 * const proxy = empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 8888 });
 * const through = empty.add(tunnel.endpoint, {
 *   proxy,
 *   target: { hostname: "example.com", port: 443 },
 * });
 * const flow = await resolve(
 *   empty.add(tls.endpoint, { hostname: "example.com", over: through }),
 * );
 * ```
 *
 * @module
 */

import type { Context } from "./context.ts";
import type { Flow } from "./flow.ts";
import { type Protocol, register } from "./protocol.ts";
import { resolve } from "./resolve.ts";
import { readableFromFlow, writableFromFlow } from "./_streams.ts";
import { errors } from "./errors.ts";

export type { Flow } from "./flow.ts";
export type { Protocol } from "./protocol.ts";
export type { Arg, ArgTypes, Context, Value } from "./context.ts";

/** The largest response head {@linkcode connectTunnel} accepts by default: 64 KiB. */
export const DEFAULT_MAX_HEAD_SIZE = 64 * 1024;

/** Where the tunnel leads. */
export interface TunnelTarget {
  /** A host name or an IP address (IPv6 with or without brackets). */
  hostname: string;
  /** The port. */
  port: number;
}

/** The endpoint of the {@linkcode tunnel} protocol. */
export interface TunnelEndpoint {
  /** How to reach the proxy: any context (TCP, TLS for an HTTPS proxy, ...). */
  proxy: Context;
  /** Where the tunnel leads. */
  target: TunnelTarget;
  /** Extra request headers, e.g. `Proxy-Authorization`. */
  headers?: Record<string, string>;
}

/** Options of {@linkcode connectTunnel}. */
export interface ConnectTunnelOptions {
  /** Extra request headers, e.g. `Proxy-Authorization`. */
  headers?: Record<string, string>;
  /** Aborts the request: the flow is closed and the call rejects with the reason. */
  signal?: AbortSignal;
  /**
   * The largest response head accepted, in bytes.
   *
   * @default {65536}
   */
  maxHeadSize?: number;
}

/** The proxy's answer to `CONNECT`. */
export interface TunnelResponse {
  /** The status code, e.g. 200. */
  status: number;
  /** The reason phrase, e.g. `"Connection established"`. */
  statusText: string;
  /** The response headers, names in lower case. */
  headers: Headers;
}

/**
 * The proxy answered `CONNECT` with a status other than 2xx (e.g. 403 for a
 * port it does not allow, 407 when it wants `Proxy-Authorization`).
 *
 * @example Ask for credentials on 407
 * ```ts ignore
 * import { connectTunnel, TunnelError } from "@mimic/mimic/tunnel";
 *
 * try {
 *   await connectTunnel(proxyFlow, { hostname: "example.com", port: 443 });
 * } catch (error) {
 *   if (error instanceof TunnelError && error.status === 407) {
 *     // retry with headers: { "Proxy-Authorization": "Basic ..." }
 *   }
 *   throw error;
 * }
 * ```
 */
export class TunnelError extends Error {
  /** The status code. */
  readonly status: number;
  /** The reason phrase. */
  readonly statusText: string;
  /** The response headers. */
  readonly headers: Headers;

  /**
   * Makes the error.
   *
   * @param authority The target, as `host:port`.
   * @param response The proxy's answer.
   */
  constructor(authority: string, response: TunnelResponse) {
    super(
      `Proxy refused CONNECT to ${authority}: ${response.status}${
        response.statusText === "" ? "" : ` ${response.statusText}`
      }`,
    );
    this.name = "TunnelError";
    this.status = response.status;
    this.statusText = response.statusText;
    this.headers = response.headers;
  }
}

/**
 * An established tunnel: the proxy's flow, with the bytes that arrived
 * right after the proxy's answer served first. Closing it closes the
 * proxy's flow.
 *
 * @example Inspect the proxy's answer
 * ```ts ignore
 * import { connectTunnel } from "@mimic/mimic/tunnel";
 *
 * const flow = await connectTunnel(proxyFlow, { hostname: "127.0.0.1", port: 7 });
 * console.log(flow.response.status, flow.response.headers.get("via"));
 * ```
 */
export class TunnelFlow implements Flow, AsyncDisposable {
  /** The flow to the proxy, which carries the tunnel. */
  readonly inner: Flow;
  /** Where the tunnel leads. */
  readonly target: TunnelTarget;
  /** The proxy's answer to `CONNECT`. */
  readonly response: TunnelResponse;
  /** The bytes read, as a stream. */
  readonly readable: ReadableStream<Uint8Array>;
  /** The bytes to write, as a stream; closing it half-closes the tunnel. */
  readonly writable: WritableStream<Uint8Array>;

  #leftover: Uint8Array | null;
  #closed = false;

  /**
   * Wraps an established tunnel. Prefer {@linkcode connectTunnel}.
   *
   * @param inner The flow to the proxy, past the response head.
   * @param target Where the tunnel leads.
   * @param response The proxy's answer.
   * @param leftover Bytes read past the response head, served first.
   */
  constructor(
    inner: Flow,
    target: TunnelTarget,
    response: TunnelResponse,
    leftover?: Uint8Array,
  ) {
    this.inner = inner;
    this.target = target;
    this.response = response;
    this.#leftover = leftover !== undefined && leftover.length > 0
      ? leftover
      : null;
    this.readable = readableFromFlow(
      (p) => this.read(p),
      () => {
        this.#leftover = null;
      },
    );
    this.writable = writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  #closedError(action: string): Error {
    return new errors.BadResource(
      `Cannot ${action} tunnel to ${
        authorityOf(this.target)
      }: the flow is closed`,
    );
  }

  /**
   * Reads from the tunnel into `p`.
   *
   * @param p The buffer to fill.
   * @returns The number of bytes read, or `null` at end of flow.
   */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(this.#closedError("read from"));
    const leftover = this.#leftover;
    if (leftover !== null && p.length > 0) {
      const n = Math.min(p.length, leftover.length);
      p.set(leftover.subarray(0, n));
      this.#leftover = n === leftover.length ? null : leftover.subarray(n);
      return Promise.resolve(n);
    }
    return this.inner.read(p);
  }

  /**
   * Writes from `p` into the tunnel.
   *
   * @param p The bytes to write.
   * @returns The number of bytes written.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closedError("write to"));
    return this.inner.write(p);
  }

  /**
   * Half-closes the tunnel (the proxy half-closes its connection to the
   * target, if it supports it).
   *
   * @returns A promise settled once the proxy's flow is half-closed.
   */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError("close"));
    return this.inner.closeWrite();
  }

  /** Closes the tunnel and the proxy's flow. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#leftover = null;
    try {
      this.inner.close();
    } catch {
      // Already closed (e.g. a Deno.Conn closed twice).
    }
  }

  /**
   * Closes the tunnel, and waits for the proxy's flow to be disposed when
   * it is async-disposable.
   *
   * @returns A promise settled once the flow is closed.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    const inner = this.inner as Partial<AsyncDisposable>;
    if (!this.#closed && typeof inner[Symbol.asyncDispose] === "function") {
      this.#closed = true;
      this.#leftover = null;
      await inner[Symbol.asyncDispose]!();
      return;
    }
    this.close();
  }
}

/** `host:port`, with brackets around an IPv6 address. */
function authorityOf(target: TunnelTarget): string {
  const host = target.hostname.includes(":") && !target.hostname.startsWith("[")
    ? `[${target.hostname}]`
    : target.hostname;
  return `${host}:${target.port}`;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function request(authority: string, headers: Record<string, string>): string {
  let head = `CONNECT ${authority} HTTP/1.1\r\n`;
  const names = new Set(Object.keys(headers).map((h) => h.toLowerCase()));
  if (!names.has("host")) head += `Host: ${authority}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (!TOKEN.test(name)) {
      throw new TypeError(
        `Cannot CONNECT to ${authority}: invalid header name ${
          JSON.stringify(name)
        }`,
      );
    }
    if (/[\r\n\0]/.test(value)) {
      throw new TypeError(
        `Cannot CONNECT to ${authority}: the value of header ${name} contains a line break`,
      );
    }
    head += `${name}: ${value}\r\n`;
  }
  return head + "\r\n";
}

/** Where `\r\n\r\n` ends in `buf`, searching from `from`, or -1. */
function headEnd(buf: Uint8Array, length: number, from: number): number {
  for (let i = Math.max(from, 3); i < length; i++) {
    if (
      buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 &&
      buf[i - 3] === 13
    ) {
      return i + 1;
    }
  }
  return -1;
}

function parseHead(authority: string, text: string): TunnelResponse {
  const lines = text.split("\r\n");
  const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (match === null) {
    throw new errors.InvalidData(
      `Cannot CONNECT to ${authority}: the proxy answered with an invalid status line ${
        JSON.stringify(lines[0].slice(0, 80))
      }`,
    );
  }
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    try {
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    } catch {
      // An invalid header from the proxy is ignored, not fatal.
    }
  }
  return {
    status: Number(match[1]),
    statusText: (match[2] ?? "").trim(),
    headers,
  };
}

async function writeAll(flow: Flow, p: Uint8Array): Promise<void> {
  for (let offset = 0; offset < p.length;) {
    const n = await flow.write(p.subarray(offset));
    if (n <= 0) {
      throw new errors.WriteZero(
        "Cannot write CONNECT request: the flow accepted zero bytes",
      );
    }
    offset += n;
  }
}

/**
 * Sends `CONNECT host:port` over `flow` (a connection to an HTTP proxy),
 * reads the proxy's response head and, on a 2xx status, resolves to the
 * tunnel. Bytes that arrived after the head are kept and read first from
 * the tunnel.
 *
 * On failure `flow` is closed, and the call rejects with
 * {@linkcode TunnelError} when the proxy answered with another status,
 * `Deno.errors.InvalidData` when the answer is not HTTP or its head is too
 * large, `Deno.errors.UnexpectedEof` when the proxy closed before
 * answering, or the signal's reason when aborted.
 *
 * @example Over a TCP connection to a proxy
 * ```ts ignore
 * import { connectTunnel } from "@mimic/mimic/tunnel";
 *
 * const proxy = await Deno.connect({ hostname: "127.0.0.1", port: 8888 });
 * await using flow = await connectTunnel(proxy, {
 *   hostname: "127.0.0.1",
 *   port: 7,
 * }, { headers: { "Proxy-Authorization": `Basic ${btoa("user:pass")}` } });
 * await flow.write(new TextEncoder().encode("ping"));
 * ```
 *
 * @example Over an in-memory pipe, with a fake proxy
 * ```ts
 * import { connectTunnel } from "@mimic/mimic/tunnel";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [client, proxy] = pipe();
 * const answer = (async () => {
 *   const buf = new Uint8Array(1024);
 *   await proxy.read(buf); // CONNECT 127.0.0.1:7 HTTP/1.1 ...
 *   await proxy.write(new TextEncoder().encode(
 *     "HTTP/1.1 200 Connection established\r\n\r\nhello",
 *   ));
 * })();
 * await using flow = await connectTunnel(client, {
 *   hostname: "127.0.0.1",
 *   port: 7,
 * });
 * await answer;
 * const buf = new Uint8Array(5);
 * assert.equal(await flow.read(buf), 5);
 * assert.equal(new TextDecoder().decode(buf), "hello");
 * proxy.close();
 * ```
 *
 * @param flow A flow to an HTTP proxy.
 * @param target Where the tunnel should lead.
 * @param options Extra headers, a signal, and the largest head accepted.
 * @returns The tunnel.
 */
export async function connectTunnel(
  flow: Flow,
  target: TunnelTarget,
  options: ConnectTunnelOptions = {},
): Promise<TunnelFlow> {
  const { signal } = options;
  const maxHeadSize = options.maxHeadSize ?? DEFAULT_MAX_HEAD_SIZE;
  const authority = authorityOf(target);
  let onAbort: (() => void) | undefined;
  try {
    if (
      !Number.isInteger(target.port) || target.port < 0 || target.port > 65535
    ) {
      throw new RangeError(
        `Cannot CONNECT to ${authority}: port is out of range`,
      );
    }
    if (!Number.isInteger(maxHeadSize) || maxHeadSize <= 0) {
      throw new RangeError(
        `Cannot CONNECT to ${authority}: maxHeadSize must be a positive integer, got ${maxHeadSize}`,
      );
    }
    signal?.throwIfAborted();
    const aborted = new Promise<never>((_, ko) => {
      onAbort = () => ko(signal!.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => {});
    const race = <T>(p: Promise<T>): Promise<T> =>
      signal === undefined ? p : Promise.race([p, aborted]);

    const head = new TextEncoder().encode(
      request(authority, options.headers ?? {}),
    );
    await race(writeAll(flow, head));

    let buf = new Uint8Array(1024);
    let length = 0;
    let end = -1;
    while (end < 0) {
      if (length === buf.length) {
        if (buf.length >= maxHeadSize + 4) {
          throw new errors.InvalidData(
            `Cannot CONNECT to ${authority}: the proxy's response head exceeds ${maxHeadSize} bytes`,
          );
        }
        const bigger = new Uint8Array(
          Math.min(buf.length * 2, maxHeadSize + 4),
        );
        bigger.set(buf);
        buf = bigger;
      }
      const n = await race(flow.read(buf.subarray(length)));
      if (n === null) {
        throw new errors.UnexpectedEof(
          `Cannot CONNECT to ${authority}: the proxy closed the connection before answering`,
        );
      }
      const from = Math.max(0, length - 3);
      length += n;
      end = headEnd(buf, length, from);
    }
    const response = parseHead(
      authority,
      new TextDecoder().decode(buf.subarray(0, end - 4)),
    );
    if (response.status < 200 || response.status > 299) {
      throw new TunnelError(authority, response);
    }
    return new TunnelFlow(flow, target, response, buf.slice(end, length));
  } catch (error) {
    try {
      flow.close();
    } catch {
      // Already closed.
    }
    throw error;
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * The `tunnel` protocol: resolves the endpoint's `proxy` context, then
 * opens a CONNECT tunnel to `target` through it (see
 * {@linkcode connectTunnel}).
 *
 * @example An HTTP proxy over TCP
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import { tunnel } from "@mimic/mimic/tunnel";
 *
 * const proxy = empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 8888 });
 * const flow = await resolve(empty.add(tunnel.endpoint, {
 *   proxy,
 *   target: { hostname: "127.0.0.1", port: 7 },
 * }));
 * ```
 */
export const tunnel: Protocol<TunnelEndpoint, TunnelFlow> = register(
  "tunnel",
  async (endpoint: TunnelEndpoint, signal: AbortSignal) => {
    const proxy = await resolve(endpoint.proxy, { signal });
    return await connectTunnel(proxy, endpoint.target, {
      headers: endpoint.headers,
      signal,
    });
  },
);
