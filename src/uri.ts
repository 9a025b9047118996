/**
 * Turning a URL into a {@linkcode Context}: the values a URL carries
 * ({@linkcode scheme}, {@linkcode host}, {@linkcode port}, {@linkcode path},
 * {@linkcode user}, {@linkcode query}) plus the fold functions that compute
 * transport endpoints from them.
 *
 * Because the endpoints are computed by fold functions rather than bound as
 * plain values, a program can still change what the URL said with
 * {@linkcode Context.replace} (a redirect replaces `host`, `port` and
 * `path`) and resolution follows: mimic takes the most recent plain value.
 *
 * | URL | values | endpoint |
 * |---|---|---|
 * | `tcp://host:port` (port required) | scheme, host, port | `tcp` `{ hostname, port }` |
 * | `http://host[:port]/path` (port 80) | scheme, host, port, path, query | `tcp` |
 * | `tls://host:port` (port required) | scheme, host, port | `tls` over `tcp` |
 * | `https://host[:port]/path` (port 443) | scheme, host, port, path, query | `tls` (ALPN `http/1.1`) over `tcp` |
 * | `git://host[:port]/path` (port 9418) | scheme, host, port, path | `tcp` |
 * | `ssh://[user@]host[:port]/path` (port 22) | scheme, host, port, user, path | none (see below) |
 * | `[user@]host:path` (Git's scp-like address) | as `ssh://` | none |
 * | `unix:/path`, `unix:///path`, `unix:relative` | scheme, path (decoded) | `unix` `{ path }` |
 *
 * A `tls` endpoint is `{ hostname: host, over: <a tcp endpoint> }`: the
 * server's certificate is verified for the URL's host (a name, or an IP
 * address as an IP SAN) against the built-in Mozilla roots. Trust anchors
 * and other TLS settings come from {@linkcode tlsOptions}, a value read by
 * the TLS fold functions.
 *
 * An SSH address produces values only: an SSH session is not a raw TCP flow,
 * so connecting one is left to a subprocess transport (`./process`, which
 * runs `ssh`) that folds its endpoint from these values.
 *
 * @example Resolve a TCP URL
 * ```ts ignore
 * import { resolve } from "@mimic/mimic";
 * import { fromUri } from "@mimic/mimic/uri";
 *
 * await using flow = await resolve(fromUri("tcp://127.0.0.1:8080"));
 * await flow.write(new TextEncoder().encode("ping\n"));
 * ```
 *
 * @module
 */

import {
  type Arg,
  type ArgTypes,
  bindings,
  type Context,
  empty,
  opt,
  req,
  type Value,
  value,
} from "./context.ts";
import { tcp, unix } from "./tcp.ts";
import { tls, type TlsClientOptions } from "./tls.ts";
import { websocketOver } from "./_ws_flow.ts";

export type { Arg, ArgTypes, Context, TlsClientOptions, Value };

/**
 * The URL's scheme, lower-cased, without the `:` (`"tcp"`, `"unix"`,
 * `"ssh"`, ...). Git's scp-like addresses (`user@host:path`) give `"ssh"`.
 *
 * @example Read the scheme
 * ```ts
 * import { fromUri, scheme } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fromUri("git@example.com:org/repo.git").get(scheme), "ssh");
 * ```
 */
export const scheme: Value<string> = value<string>("scheme");

/**
 * The host: a lower-cased domain name (non-ASCII names in Punycode), an
 * IPv4 address, or an IPv6 address without its brackets.
 *
 * @example An IPv6 host
 * ```ts
 * import { fromUri, host } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fromUri("tcp://[::1]:8080").get(host), "::1");
 * ```
 */
export const host: Value<string> = value<string>("host");

/**
 * The port: the one the URL gives, or the scheme's default (`http` 80,
 * `git` 9418, `ssh` 22). Always in 1-65535.
 *
 * @example The default port of `http://`
 * ```ts
 * import { fromUri, port } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fromUri("http://example.com/").get(port), 80);
 * ```
 */
export const port: Value<number> = value<number>("port");

/**
 * The path, bound when the URL has one. For URLs with a host it is the
 * path as written (percent-encoded, starting with `/`; `http://` defaults
 * to `/`); for Git's scp-like addresses, the part after the `:` as written;
 * for `unix:` URLs, the socket's file path, percent-decoded.
 *
 * @example The path of a Git address
 * ```ts
 * import { fromUri, path } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fromUri("ssh://git@example.com/org/repo.git").get(path), "/org/repo.git");
 * ```
 */
export const path: Value<string> = value<string>("path");

/**
 * The user name, percent-decoded, bound when the URL has one. A password
 * in the URL is not bound.
 *
 * @example The user of an scp-like address
 * ```ts
 * import { fromUri, user } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fromUri("git@example.com:repo.git").get(user), "git");
 * ```
 */
export const user: Value<string> = value<string>("user");

/**
 * The query, as written (percent-encoded) and without the `?`, bound when
 * the URL has one. The fragment is ignored.
 *
 * @example The query of an HTTP URL
 * ```ts
 * import { fromUri, query } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fromUri("http://example.com/a?b=1#c").get(query), "b=1");
 * ```
 */
export const query: Value<string> = value<string>("query");

/**
 * Options for the `tls` endpoints of `tls://` and `https://` URLs: trust
 * anchors (`caCerts`), ALPN, a client certificate (`cert`, `key`), a
 * different name to verify (`hostname`), a `signal`, or
 * `unsafelyIgnoreCertificateErrors`. Add it to the context (before or after
 * `fromUri`): the fold functions read its most recent value and spread it
 * over what the URL says, so a field given here wins (`alpnProtocols`
 * replaces `https://`'s `["http/1.1"]`). Only the most recent value counts:
 * add one object with every field. The other schemes ignore it.
 *
 * @example Trust a private CA for an `https://` URL
 * ```ts
 * import { unfold } from "@mimic/mimic";
 * import { tls } from "@mimic/mimic/tls";
 * import { fromUri, tlsOptions } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * const ca = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
 * const ctx = fromUri("https://localhost:8443/x").add(tlsOptions, { caCerts: [ca] });
 * const [endpoint] = (await unfold(ctx)).filter((e) => e.value === tls.endpoint);
 * const { over: _, ...options } = endpoint.data as { over: unknown };
 * assert.deepEqual(options, {
 *   hostname: "localhost",
 *   alpnProtocols: ["http/1.1"],
 *   caCerts: [ca],
 * });
 * ```
 */
export const tlsOptions: Value<TlsClientOptions> = value<TlsClientOptions>(
  "tlsOptions",
);

// --- The scheme table -------------------------------------------------------

/** Adds to a context the one fold function that connects a scheme. */
type Transport = (name: string) => (ctx: Context) => Context;

/** What `fromUri` knows of a scheme. */
interface Scheme {
  /** `"host"`: `scheme://[user@]host[:port][/path]`; `"file"`: `scheme:path`. */
  readonly form: "host" | "file";
  /** The port when the URL gives none; `undefined`: the URL must give one. */
  readonly port?: number;
  /** The path when the URL gives none. */
  readonly path?: string;
  /** The fold function producing the scheme's endpoint; none: values only. */
  readonly transport?: Transport;
}

/** A `tcp` endpoint `{ hostname, port }` when the scheme is `name`. */
const viaTcp: Transport = (name) => {
  const k = (s: string, hostname: string, p: number) =>
    s === name ? { hostname, port: p } : undefined;
  return (ctx) =>
    ctx.fold(tcp.endpoint, [req(scheme), req(host), req(port)], k);
};

/** A `unix` endpoint `{ path }` when the scheme is `name`. */
const viaUnix: Transport = (name) => {
  const k = (s: string, p: string) => (s === name ? { path: p } : undefined);
  return (ctx) => ctx.fold(unix.endpoint, [req(scheme), req(path)], k);
};

/** The fields of `o` whose value is not `undefined` (so they override nothing). */
function defined<T extends object>(o: T | undefined): Partial<T> {
  if (o === undefined || o === null) return {};
  return Object.fromEntries(
    Object.entries(o).filter(([, v]) => v !== undefined),
  ) as Partial<T>;
}

/**
 * A `tls` endpoint over a `tcp` endpoint when the scheme is `name`: the
 * server's name is the host, ALPN `alpnProtocols`, then {@linkcode tlsOptions}.
 */
const viaTls = (alpnProtocols?: readonly string[]): Transport => (name) => {
  const k = (
    s: string,
    hostname: string,
    p: number,
    options: TlsClientOptions | undefined,
  ): TlsClientOptions & { over: Context } | undefined =>
    s === name
      ? {
        hostname,
        ...(alpnProtocols === undefined
          ? {}
          : { alpnProtocols: [...alpnProtocols] }),
        ...defined(options),
        over: empty.add(tcp.endpoint, { hostname, port: p }),
      }
      : undefined;
  return (ctx) =>
    ctx.fold(
      tls.endpoint,
      [req(scheme), req(host), req(port), opt(tlsOptions)],
      k,
    );
};

/**
 * A `websocket-over` endpoint when the scheme is `name` (`ws:` over `tcp`;
 * `wss:` over `tls` over `tcp`, ALPN `http/1.1`, then {@linkcode tlsOptions}
 * as for `https:`): its URL is the host, port, path and query.
 */
const viaWebSocket = (secure: boolean): Transport => (name) => {
  const k = (
    s: string,
    hostname: string,
    p: number,
    file: string,
    q: string | undefined,
    options: TlsClientOptions | undefined,
  ) => {
    if (s !== name) return undefined;
    const inner = empty.add(tcp.endpoint, { hostname, port: p });
    const over = secure
      ? empty.add(tls.endpoint, {
        hostname,
        alpnProtocols: ["http/1.1"],
        ...defined(options),
        over: inner,
      })
      : inner;
    const h = hostname.includes(":") ? `[${hostname}]` : hostname;
    const url = `${name}://${h}:${p}${file}${q === undefined ? "" : `?${q}`}`;
    return { url, over };
  };
  return (ctx) =>
    ctx.fold(websocketOver.endpoint, [
      req(scheme),
      req(host),
      req(port),
      req(path),
      opt(query),
      opt(tlsOptions),
    ], k);
};

/**
 * Every scheme `fromUri` accepts. Adding a scheme is one row: its form, its
 * default port and the fold function that connects it.
 */
const schemes: ReadonlyMap<string, Scheme> = new Map<string, Scheme>([
  ["tcp", { form: "host", transport: viaTcp }],
  ["http", { form: "host", port: 80, path: "/", transport: viaTcp }],
  ["git", { form: "host", port: 9418, transport: viaTcp }],
  // Values only: an SSH session is a subprocess transport (./process).
  ["ssh", { form: "host", port: 22 }],
  ["unix", { form: "file", transport: viaUnix }],
  ["tls", { form: "host", transport: viaTls() }],
  [
    "https",
    { form: "host", port: 443, path: "/", transport: viaTls(["http/1.1"]) },
  ],
  ["ws", { form: "host", port: 80, path: "/", transport: viaWebSocket(false) }],
  ["wss", {
    form: "host",
    port: 443,
    path: "/",
    transport: viaWebSocket(true),
  }],
]);

/** Adds the fold function of every scheme that has one (made once, so they can be recognised). */
const addTransports: (ctx: Context) => Context = (() => {
  const adders = [...schemes]
    .filter(([, s]) => s.transport !== undefined)
    .map(([name, s]) => s.transport!(name));
  return (ctx: Context) => adders.reduce((c, add) => add(c), ctx);
})();

const ours = new Set<unknown>(
  bindings(addTransports(empty)).map((b) => ("k" in b ? b.k : undefined)),
);

// --- Parsing ----------------------------------------------------------------

/** What a URL says, before it becomes a context. */
interface Parts {
  scheme: string;
  host?: string;
  port?: number;
  user?: string;
  path?: string;
  query?: string;
}

/** `Cannot parse URL x: why`, as a `TypeError` (or `RangeError`). */
function fail(
  uri: string,
  why: string,
  Kind: typeof TypeError = TypeError,
): never {
  throw new Kind(`Cannot parse URL ${uri === "" ? '""' : uri}: ${why}`);
}

/** Whether `s` has white space or a control character (C0 or DEL). */
function hasSpaceOrControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return true;
  }
  return /\s/.test(s);
}

/** Decodes `%XX` escapes, leaving malformed ones as written. */
function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s.replace(
      /(?:%[0-9a-fA-F]{2})+/g,
      (m) => {
        try {
          return decodeURIComponent(m);
        } catch {
          return m;
        }
      },
    );
  }
}

/** Validates and normalises a host (as WHATWG URL does for `http:`); brackets removed. */
function parseHost(uri: string, raw: string): string {
  if (raw === "" || raw === "[]") fail(uri, "host is missing");
  const bracketed = raw.startsWith("[") && raw.endsWith("]");
  if (
    /[\\/?#@]/.test(raw) || hasSpaceOrControl(raw) ||
    (bracketed ? /^\[[^\]]*\]$/.test(raw) === false : /[:[\]]/.test(raw))
  ) {
    fail(uri, "host is invalid");
  }
  let hostname: string;
  try {
    hostname = new URL(`http://${raw}`).hostname;
  } catch {
    fail(uri, "host is invalid");
  }
  if (bracketed !== hostname.startsWith("[")) fail(uri, "host is invalid");
  return bracketed ? hostname.slice(1, -1) : hostname;
}

/** Parses the digits of a port; `undefined` when empty. */
function parsePort(uri: string, raw: string): number | undefined {
  if (raw === "") return undefined;
  if (!/^[0-9]+$/.test(raw)) fail(uri, "port is not a number");
  const n = Number(raw);
  if (n < 1 || n > 65535) fail(uri, "port is out of range", RangeError);
  return n;
}

/** Splits `[user@]host[:port]`. */
function parseAuthority(
  uri: string,
  authority: string,
): { user?: string; host: string; port?: number } {
  // WHATWG URL ends an http: authority at a backslash: "http://a\\b@c/" is
  // host "a" to it. Refuse rather than connect somewhere else than it would.
  if (authority.includes("\\")) fail(uri, "host is invalid");
  const at = authority.lastIndexOf("@");
  const userinfo = at < 0 ? undefined : authority.slice(0, at);
  const hostport = authority.slice(at + 1);
  const m = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(hostport);
  if (m === null) fail(uri, "host is invalid");
  const hostname = parseHost(uri, m[1]);
  const p = parsePort(uri, m[2] ?? "");
  let name: string | undefined;
  if (userinfo !== undefined) {
    name = decode(userinfo.split(":", 1)[0]);
    if (name === "") fail(uri, "user is empty");
  }
  return { user: name, host: hostname, port: p };
}

/** Git's scp-like `[user@]host:path`, or `undefined` when `uri` is not one. */
function parseScpLike(uri: string): Parts | undefined {
  if (uri.includes("://")) return undefined;
  // The host part ends at the first ':' outside brackets.
  const m = /^((?:[^@/:[]*@)?(?:\[[^\]/]*\]|[^/:[\]]*)):(.*)$/s.exec(uri);
  if (m === null) return undefined;
  const [, left, right] = m;
  const at = left.lastIndexOf("@");
  const hostPart = left.slice(at + 1);
  // A Windows drive letter (C:\ or C:/) or a known scheme is no host.
  if (/^[a-zA-Z]$/.test(hostPart) && at < 0) return undefined;
  if (at < 0 && schemes.has(hostPart.toLowerCase())) return undefined;
  const parts: Parts = { scheme: "ssh", port: 22 };
  if (at >= 0) {
    parts.user = left.slice(0, at);
    if (parts.user === "") fail(uri, "user is empty");
  }
  // Git's [host:port]:path
  const inner = /^\[([^\]:]*):([0-9]*)\]$/.exec(hostPart);
  if (inner !== null) {
    parts.host = parseHost(uri, inner[1]);
    parts.port = parsePort(uri, inner[2]) ?? 22;
  } else {
    parts.host = parseHost(uri, hostPart);
  }
  if (right === "") fail(uri, "path is missing");
  parts.path = right;
  return parts;
}

/** Parses `uri` into its parts, or throws. */
function parse(uri: string): Parts {
  if (hasSpaceOrControl(uri)) {
    fail(uri, "it contains a space or a control character");
  }
  const scp = parseScpLike(uri);
  if (scp !== undefined) return scp;
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):(.*)$/s.exec(uri);
  if (m === null) fail(uri, "scheme is missing");
  const name = m[1].toLowerCase();
  const spec = schemes.get(name);
  if (spec === undefined) fail(uri, `scheme "${name}" is not supported`);
  // hier-part [ "?" query ] [ "#" fragment ]
  const rest = /^([^?#]*)(?:\?([^#]*))?(?:#.*)?$/s.exec(m[2])!;
  const hier = rest[1];
  const parts: Parts = { scheme: name };
  if (rest[2] !== undefined && rest[2] !== "") parts.query = rest[2];
  if (spec.form === "file") {
    let file = hier;
    if (hier.startsWith("//")) {
      const slash = hier.indexOf("/", 2);
      const authority = slash < 0 ? hier.slice(2) : hier.slice(2, slash);
      if (authority !== "" && authority.toLowerCase() !== "localhost") {
        fail(uri, "a unix socket URL takes no host");
      }
      file = slash < 0 ? "" : hier.slice(slash);
    }
    if (file === "") fail(uri, "path is missing");
    parts.path = decode(file);
    if (parts.path.includes("\0")) fail(uri, "path contains a NUL byte");
    return parts;
  }
  if (!hier.startsWith("//")) fail(uri, "host is missing");
  const slash = hier.indexOf("/", 2);
  const authority = slash < 0 ? hier.slice(2) : hier.slice(2, slash);
  const { user: userName, host: hostname, port: p } = parseAuthority(
    uri,
    authority,
  );
  parts.host = hostname;
  if (userName !== undefined) parts.user = userName;
  parts.port = p ?? spec.port;
  if (parts.port === undefined) fail(uri, "port is missing");
  const file = slash < 0 ? "" : hier.slice(slash);
  if (file !== "") parts.path = file;
  else if (spec.path !== undefined) parts.path = spec.path;
  return parts;
}

// --- The entry point --------------------------------------------------------

/**
 * Parses `uri` and returns `base` with the URL's values added
 * ({@linkcode scheme}, {@linkcode host}, {@linkcode port}, {@linkcode path},
 * {@linkcode user}, {@linkcode query}, each when the URL has it) and the
 * fold functions that compute transport endpoints from them.
 *
 * The fold functions read the most recent values, so replacing a value
 * (`ctx.replace(port, 8081)`) changes what {@linkcode resolve} connects to;
 * replacing the scheme switches the transport. They are added once per
 * context: calling `fromUri` again on its own result (a redirect) adds the
 * new values and reuses them. A value the new URL does not carry (a user,
 * a query) keeps the one `base` has.
 *
 * Schemes: `tcp://host:port` (the port is required), `http://` (port 80),
 * `git://` (9418) give a `tcp` endpoint; `tls://host:port` (the port is
 * required) and `https://` (443, ALPN `http/1.1`) give a `tls` endpoint
 * over a `tcp` one, configured by {@linkcode tlsOptions} (CAs to trust, a
 * client certificate, ...); `unix:/path`, `unix:///path` give a
 * `unix` endpoint; `ssh://[user@]host[:port]/path` (22) and Git's scp-like
 * `[user@]host:path` give values only (an SSH session is a subprocess, not a
 * raw TCP flow). A string without `://` whose part before the first `:` has
 * no `/` is scp-like, unless that part is a single letter (a Windows drive)
 * or a scheme named here (`unix:sock`).
 *
 * @example Resolve a URL, then follow a redirect
 * ```ts
 * import { unfold } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import { fromUri, host, port } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * const ctx = fromUri("http://example.com/index.html");
 * assert.equal(ctx.get(port), 80);
 * const moved = ctx.replace(host, "127.0.0.1").replace(port, 8080);
 * const [endpoint] = (await unfold(moved)).filter((e) => e.value === tcp.endpoint);
 * assert.deepEqual(endpoint.data, { hostname: "127.0.0.1", port: 8080 });
 * ```
 *
 * @example Errors name the URL and the problem
 * ```ts
 * import { fromUri } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * assert.throws(() => fromUri("tcp://h:70000"), {
 *   name: "RangeError",
 *   message: "Cannot parse URL tcp://h:70000: port is out of range",
 * });
 * assert.throws(() => fromUri("tcp://h"), TypeError);
 * ```
 *
 * @param uri The URL (a `URL` is read from its `href`).
 * @param base The context to add to; {@linkcode empty} by default.
 * @returns `base` with the URL's values and the transport fold functions.
 * @throws {TypeError} When `uri` is malformed, its scheme is not supported, or
 * its host, port or path is missing or invalid.
 * @throws {RangeError} When its port is not in 1-65535.
 */
export function fromUri(uri: string | URL, base: Context = empty): Context {
  const text = typeof uri === "string" ? uri : String(uri.href);
  const parts = parse(text);
  let ctx = base.add(scheme, parts.scheme);
  if (parts.host !== undefined) ctx = ctx.add(host, parts.host);
  if (parts.port !== undefined) ctx = ctx.add(port, parts.port);
  if (parts.user !== undefined) ctx = ctx.add(user, parts.user);
  if (parts.path !== undefined) ctx = ctx.add(path, parts.path);
  if (parts.query !== undefined) ctx = ctx.add(query, parts.query);
  const installed = bindings(base).some((b) => "k" in b && ours.has(b.k));
  return installed ? ctx : addTransports(ctx);
}
