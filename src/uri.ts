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
 * | a common protocol's scheme (below), or one {@linkcode defineScheme} added | scheme, host, port, user, path, query | `tcp`, or `tls` over `tcp` |
 *
 * The common protocols' schemes, with their default ports ("TLS": TLS from
 * the first byte, a `tls` endpoint configured by {@linkcode tlsOptions}):
 *
 * | scheme | port | | scheme | port | |
 * |---|---|---|---|---|---|
 * | `postgres`, `postgresql` | 5432 | | `mysql`, `mariadb` | 3306 | |
 * | `mongodb` | 27017 | | `memcached` | 11211 | |
 * | `redis` | 6379 | | `rediss` | 6380 | TLS |
 * | `nats` | 4222 | | `amqp` | 5672 | |
 * | `amqps` | 5671 | TLS | `mqtt` | 1883 | |
 * | `mqtts` | 8883 | TLS | `ldap` | 389 | |
 * | `ldaps` | 636 | TLS | `smtp` | 25 | |
 * | `smtps` | 465 | TLS | `imap` | 143 | |
 * | `imaps` | 993 | TLS | `pop3` | 110 | |
 * | `pop3s` | 995 | TLS | `ftp` | 21 | |
 * | `ftps` | 990 | TLS | `irc` | 6667 | |
 * | `ircs` | 6697 | TLS | `telnet` | 23 | |
 * | `nntp` | 119 | | `nntps` | 563 | TLS |
 *
 * With a {@linkcode proxy} (`fromUri(url, { proxy })`, e.g. from
 * {@linkcode proxyFromEnv}), the `tcp` endpoint becomes a `tunnel` (HTTP
 * CONNECT through an `http://` or `https://` proxy) or a `socks` one
 * (`socks5://`, `socks5h://`), and TLS to the target runs inside it.
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
  Context,
  empty,
  opt,
  req,
  type Value,
  value,
} from "./context.ts";
import { socks, type SocksEndpoint } from "./socks.ts";
import { tcp, unix } from "./tcp.ts";
import { tls, type TlsClientOptions } from "./tls.ts";
import { tunnel, type TunnelEndpoint } from "./tunnel.ts";
import { inPrefix, parseIp } from "./_ip.ts";
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

/**
 * The proxy every transport of the URL goes through: `http://`, `https://`,
 * `socks5://` or `socks5h://` with the port (default 80, 443, 1080, 1080)
 * and credentials in the userinfo (`http://user:pass@proxy:3128`). The
 * empty string means no proxy. Bound by {@linkcode fromUri}'s `proxy`
 * option; replace it to change the route (`ctx.replace(proxy, "")` goes
 * direct).
 *
 * The target's TCP connection becomes a `tunnel` endpoint (HTTP CONNECT,
 * with `Proxy-Authorization: Basic` from the credentials) or a `socks`
 * endpoint (SOCKS5 with RFC 1929 credentials; `socks5h` lets the proxy
 * resolve the name, `socks5` resolves it here). The way to the proxy is TCP,
 * or TLS over TCP for `https://` (configured by {@linkcode proxyTls}), and
 * TLS to an `https://` or `tls://` target runs inside.
 *
 * @example The endpoint through an HTTP proxy
 * ```ts
 * import { unfold } from "@mimic/mimic";
 * import { tunnel } from "@mimic/mimic/tunnel";
 * import { fromUri } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * const ctx = fromUri("tcp://127.0.0.1:7", {
 *   proxy: "http://alice:secret@127.0.0.1:3128",
 * });
 * const [endpoint] = (await unfold(ctx)).filter((e) => e.value === tunnel.endpoint);
 * const { target, headers } = endpoint.data as { target: unknown; headers: unknown };
 * assert.deepEqual(target, { hostname: "127.0.0.1", port: 7 });
 * assert.deepEqual(headers, { "Proxy-Authorization": `Basic ${btoa("alice:secret")}` });
 * ```
 */
export const proxy: Value<string> = value<string>("proxy");

/**
 * TLS options for the connection to an `https://` proxy (its CAs, a client
 * certificate, ...), bound by {@linkcode fromUri}'s `proxyTls` option. The
 * name verified is always the proxy's host.
 *
 * @example Trust a private CA for the proxy
 * ```ts
 * import { fromUri, proxyTls } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * const ca = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
 * const ctx = fromUri("https://example.com/", {
 *   proxy: "https://proxy.example:8443",
 *   proxyTls: { caCerts: [ca] },
 * });
 * assert.deepEqual(ctx.get(proxyTls), { caCerts: [ca] });
 * ```
 */
export const proxyTls: Value<Omit<TlsClientOptions, "hostname">> = value<
  Omit<TlsClientOptions, "hostname">
>("proxyTls");

/** A parsed proxy URL. */
interface ProxySpec {
  readonly kind: "http" | "https" | "socks5" | "socks5h";
  readonly hostname: string;
  readonly port: number;
  readonly username?: string;
  readonly password?: string;
}

const PROXY_PORTS = { http: 80, https: 443, socks5: 1080, socks5h: 1080 };

/** The URL with its password (or its whole userinfo) masked, for messages. */
function redact(text: string): string {
  return text.replace(
    /^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)?([^@/?#]*)@/,
    (_, prefix: string | undefined, userinfo: string) => {
      const colon = userinfo.indexOf(":");
      return `${prefix ?? ""}${
        colon < 0 ? userinfo : `${userinfo.slice(0, colon)}:****`
      }@`;
    },
  );
}

/**
 * Parses a proxy URL; without a scheme it is `http://` (as curl does).
 * Throws `TypeError`/`RangeError` "Cannot parse proxy URL ...", the
 * password masked.
 */
function parseProxy(input: string): ProxySpec {
  const shown = redact(input);
  const bad = (why: string, Kind: typeof TypeError = TypeError): never => {
    throw new Kind(
      `Cannot parse proxy URL ${shown === "" ? '""' : shown}: ${why}`,
    );
  };
  if (hasSpaceOrControl(input)) {
    bad("it contains a space or a control character");
  }
  const text = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(input)
    ? input
    : `http://${input}`;
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^]*)$/.exec(text)!;
  const kind = m[1].toLowerCase();
  if (!Object.hasOwn(PROXY_PORTS, kind)) {
    bad(
      `scheme "${kind}" is not a proxy scheme (http, https, socks5, socks5h)`,
    );
  }
  if (m[3] !== "" && m[3] !== "/") {
    bad("a proxy URL takes no path, query or fragment");
  }
  const authority = m[2];
  if (authority.includes("\\")) bad("host is invalid");
  const at = authority.lastIndexOf("@");
  const hostport = authority.slice(at + 1);
  const hp = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(hostport);
  if (hp === null) bad("host is invalid");
  let hostname: string;
  let p: number | undefined;
  try {
    hostname = parseHost(text, hp![1]);
    p = parsePort(text, hp![2] ?? "");
  } catch (error) {
    // parseHost and parsePort say "Cannot parse URL <text>: why".
    const why = (error as Error).message.replace(/^Cannot parse URL .*?: /, "");
    bad(why, error instanceof RangeError ? RangeError : TypeError);
  }
  const spec: {
    -readonly [K in keyof ProxySpec]: ProxySpec[K];
  } = {
    kind: kind as ProxySpec["kind"],
    hostname: hostname!,
    port: p ?? PROXY_PORTS[kind as ProxySpec["kind"]],
  };
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    const colon = userinfo.indexOf(":");
    spec.username = decode(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (colon >= 0) spec.password = decode(userinfo.slice(colon + 1));
    if (spec.username === "") bad("user is empty");
  }
  return spec;
}

/** `Basic base64(user:password)`, of the UTF-8 bytes. */
function basic(username: string, password: string): string {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

/** The endpoint that carries a TCP connection to `hostname:port`. */
interface Route {
  readonly value: Value<unknown>;
  readonly data: unknown;
}

/**
 * How to reach `hostname:port`: a `tcp` endpoint, or, through `proxyUrl`, a
 * `tunnel` or `socks` endpoint whose `proxy` is TCP (or TLS over TCP for an
 * `https://` proxy).
 */
function route(
  hostname: string,
  p: number,
  proxyUrl: string | undefined,
  proxyOptions: Omit<TlsClientOptions, "hostname"> | undefined,
): Route {
  if (proxyUrl === undefined || proxyUrl === "") {
    return { value: tcp.endpoint, data: { hostname, port: p } };
  }
  const spec = parseProxy(proxyUrl);
  let toProxy = empty.add(tcp.endpoint, {
    hostname: spec.hostname,
    port: spec.port,
  });
  if (spec.kind === "https") {
    toProxy = empty.add(tls.endpoint, {
      ...defined(proxyOptions),
      hostname: spec.hostname,
      over: toProxy,
    });
  }
  const target = { hostname, port: p };
  if (spec.kind === "http" || spec.kind === "https") {
    const data: TunnelEndpoint = { proxy: toProxy, target };
    if (spec.username !== undefined) {
      data.headers = {
        "Proxy-Authorization": basic(spec.username, spec.password ?? ""),
      };
    }
    return { value: tunnel.endpoint, data };
  }
  const data: SocksEndpoint = {
    proxy: toProxy,
    target,
    resolve: spec.kind === "socks5h" ? "proxy" : "local",
  };
  if (spec.username !== undefined) {
    data.username = spec.username;
    data.password = spec.password ?? "";
  }
  return { value: socks.endpoint, data };
}

/**
 * The context whose resolution is a TCP connection to `hostname:port`,
 * direct or through `proxyUrl`: what a transport that runs over TCP (TLS,
 * WebSocket) puts in its `over`.
 */
function connectionTo(
  hostname: string,
  p: number,
  proxyUrl?: string,
  proxyOptions?: Omit<TlsClientOptions, "hostname">,
): Context {
  const r = route(hostname, p, proxyUrl, proxyOptions);
  return empty.add(r.value, r.data);
}

// --- The scheme table -------------------------------------------------------

/** Adds to a context the fold functions that connect a scheme. */
type Transport = (name: string) => (ctx: Context) => Context;

/** What `fromUri` knows of a scheme. */
interface Scheme {
  /** `"host"`: `scheme://[user@]host[:port][/path]`; `"file"`: `scheme:path`. */
  readonly form: "host" | "file";
  /** The port when the URL gives none; `undefined`: the URL must give one. */
  readonly port?: number;
  /** The path when the URL gives none. */
  readonly path?: string;
  /** The fold functions producing the scheme's endpoint; none: values only. */
  readonly transport?: Transport;
}

/**
 * A transport shared by every scheme that names it in the table (including
 * those {@linkcode defineScheme} adds later): its fold functions are made
 * once and check, when they run, that the URL's scheme is one of its own.
 */
function shared(
  build: (mine: (s: string) => boolean) => (ctx: Context) => Context,
): Transport {
  let add: ((ctx: Context) => Context) | undefined;
  const transport: Transport = () =>
    add ??= build((s) => schemes.get(s)?.transport === transport);
  return transport;
}

/**
 * A `tcp` endpoint `{ hostname, port }` for the URL's host and port, or,
 * with a {@linkcode proxy}, the `tunnel` or `socks` endpoint through it.
 */
const viaTcp: Transport = shared((mine) => {
  const args = [
    req(scheme),
    req(host),
    req(port),
    opt(proxy),
    opt(proxyTls),
  ] as const;
  const pick = <T>(v: Value<T>) =>
  (
    s: string,
    hostname: string,
    p: number,
    proxyUrl: string | undefined,
    proxyOptions: Omit<TlsClientOptions, "hostname"> | undefined,
  ): T | undefined => {
    if (!mine(s)) return undefined;
    const r = route(hostname, p, proxyUrl, proxyOptions);
    return r.value === v ? r.data as T : undefined;
  };
  return (ctx) =>
    ctx.fold(tcp.endpoint, args, pick(tcp.endpoint))
      .fold(tunnel.endpoint, args, pick(tunnel.endpoint))
      .fold(socks.endpoint, args, pick(socks.endpoint));
});

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
 * A `tls` endpoint over the connection to the URL's host and port (direct,
 * or through a {@linkcode proxy}): the server's name is the host, ALPN
 * `alpnProtocols`, then {@linkcode tlsOptions}.
 */
const viaTls = (alpnProtocols?: readonly string[]): Transport =>
  shared((mine) => {
    const k = (
      s: string,
      hostname: string,
      p: number,
      options: TlsClientOptions | undefined,
      proxyUrl: string | undefined,
      proxyOptions: Omit<TlsClientOptions, "hostname"> | undefined,
    ): TlsClientOptions & { over: Context } | undefined =>
      mine(s)
        ? {
          hostname,
          ...(alpnProtocols === undefined
            ? {}
            : { alpnProtocols: [...alpnProtocols] }),
          ...defined(options),
          over: connectionTo(hostname, p, proxyUrl, proxyOptions),
        }
        : undefined;
    return (ctx) =>
      ctx.fold(
        tls.endpoint,
        [
          req(scheme),
          req(host),
          req(port),
          opt(tlsOptions),
          opt(proxy),
          opt(proxyTls),
        ],
        k,
      );
  });

/** TLS without ALPN: `tls://` and the TLS schemes of the table. */
const viaPlainTls: Transport = viaTls();

/** A scheme of `scheme://host[:port]` over TCP, or TLS over TCP. */
const tcpScheme = (p: number, secure = false): Scheme => ({
  form: "host",
  port: p,
  transport: secure ? viaPlainTls : viaTcp,
});

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
    proxyUrl: string | undefined,
    proxyOptions: Omit<TlsClientOptions, "hostname"> | undefined,
  ) => {
    if (s !== name) return undefined;
    const inner = connectionTo(hostname, p, proxyUrl, proxyOptions);
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
      opt(proxy),
      opt(proxyTls),
    ], k);
};

/**
 * Every scheme `fromUri` accepts. Adding a scheme is one row: its form, its
 * default port and the fold function that connects it.
 */
const schemes: Map<string, Scheme> = new Map<string, Scheme>([
  ["tcp", { form: "host", transport: viaTcp }],
  ["http", { form: "host", port: 80, path: "/", transport: viaTcp }],
  ["git", { form: "host", port: 9418, transport: viaTcp }],
  // Values only: an SSH session is a subprocess transport (./process).
  ["ssh", { form: "host", port: 22 }],
  ["unix", { form: "file", transport: viaUnix }],
  ["tls", { form: "host", transport: viaPlainTls }],
  [
    "https",
    { form: "host", port: 443, path: "/", transport: viaTls(["http/1.1"]) },
  ],
  // Common protocols: the port IANA registers; "s" variants are TLS from the
  // first byte (implicit TLS), not STARTTLS.
  ["postgres", tcpScheme(5432)],
  ["postgresql", tcpScheme(5432)],
  ["mysql", tcpScheme(3306)],
  ["mariadb", tcpScheme(3306)],
  ["mongodb", tcpScheme(27017)],
  ["redis", tcpScheme(6379)],
  ["rediss", tcpScheme(6380, true)],
  ["memcached", tcpScheme(11211)],
  ["nats", tcpScheme(4222)],
  ["mqtt", tcpScheme(1883)],
  ["mqtts", tcpScheme(8883, true)],
  ["amqp", tcpScheme(5672)],
  ["amqps", tcpScheme(5671, true)],
  ["ldap", tcpScheme(389)],
  ["ldaps", tcpScheme(636, true)],
  ["smtp", tcpScheme(25)],
  ["smtps", tcpScheme(465, true)],
  ["imap", tcpScheme(143)],
  ["imaps", tcpScheme(993, true)],
  ["pop3", tcpScheme(110)],
  ["pop3s", tcpScheme(995, true)],
  ["ftp", tcpScheme(21)],
  ["ftps", tcpScheme(990, true)],
  ["irc", tcpScheme(6667)],
  ["ircs", tcpScheme(6697, true)],
  ["telnet", tcpScheme(23)],
  ["nntp", tcpScheme(119)],
  ["nntps", tcpScheme(563, true)],
  ["ws", { form: "host", port: 80, path: "/", transport: viaWebSocket(false) }],
  ["wss", {
    form: "host",
    port: 443,
    path: "/",
    transport: viaWebSocket(true),
  }],
]);

/** The schemes the package ships: {@linkcode defineScheme} may not redefine them. */
const builtIn: ReadonlySet<string> = new Set(schemes.keys());

/** Adds the fold functions of every scheme that has some (made once, so they can be recognised). */
const addTransports: (ctx: Context) => Context = (() => {
  const adders = new Set(
    [...schemes]
      .filter(([, s]) => s.transport !== undefined)
      .map(([name, s]) => s.transport!(name)),
  );
  return (ctx: Context) => [...adders].reduce((c, add) => add(c), ctx);
})();

const ours = new Set<unknown>(
  bindings(addTransports(empty)).map((b) => ("k" in b ? b.k : undefined)),
);

/** Options of {@linkcode defineScheme}. */
export interface SchemeOptions {
  /** The default port, 1-65535. */
  port: number;
  /**
   * TLS from the first byte (as `rediss://`): a `tls` endpoint over TCP,
   * configured by {@linkcode tlsOptions}; otherwise a `tcp` endpoint.
   *
   * @default {false}
   */
  tls?: boolean;
}

/**
 * Teaches {@linkcode fromUri} a scheme of the form `scheme://host[:port]`:
 * its default port, and whether it is TLS over TCP or plain TCP. Every
 * context, even one made before, then resolves URLs of the scheme (through
 * a {@linkcode proxy} too). Defining a scheme again replaces its
 * definition; the schemes the package ships cannot be redefined.
 *
 * @example A TLS scheme of one's own
 * ```ts
 * import { unfold } from "@mimic/mimic";
 * import { tls } from "@mimic/mimic/tls";
 * import { defineScheme, fromUri } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * defineScheme("myqs", { port: 7443, tls: true });
 * const [endpoint] = (await unfold(fromUri("myqs://db.example")))
 *   .filter((e) => e.value === tls.endpoint);
 * const { over: _, ...options } = endpoint.data as { over: unknown };
 * assert.deepEqual(options, { hostname: "db.example" });
 * assert.throws(() => defineScheme("https", { port: 8443 }), TypeError);
 * ```
 *
 * @param name The scheme, `[a-zA-Z][a-zA-Z0-9+.-]*` (case-insensitive).
 * @param options Its default port, and whether it is TLS.
 * @throws {TypeError} When the name is invalid or a built-in scheme, the
 * port is not an integer in 1-65535, or `tls` is not a boolean.
 */
export function defineScheme(name: string, options: SchemeOptions): void {
  const shownName = JSON.stringify(name);
  if (typeof name !== "string" || !/^[a-zA-Z][a-zA-Z0-9+.-]*$/.test(name)) {
    throw new TypeError(
      `Cannot define scheme ${shownName}: a scheme is a letter followed by letters, digits, "+", "-" or "."`,
    );
  }
  const lower = name.toLowerCase();
  if (builtIn.has(lower)) {
    throw new TypeError(
      `Cannot define scheme "${lower}": it is built in`,
    );
  }
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot define scheme "${lower}": options must be an object`,
    );
  }
  const { port: p, tls: secure } = options;
  if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p > 65535) {
    throw new TypeError(
      `Cannot define scheme "${lower}": port must be an integer in 1-65535, got ${
        typeof p === "number" ? p : typeof p
      }`,
    );
  }
  if (secure !== undefined && typeof secure !== "boolean") {
    throw new TypeError(
      `Cannot define scheme "${lower}": tls must be a boolean, got ${typeof secure}`,
    );
  }
  schemes.set(lower, tcpScheme(p, secure ?? false));
}

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

/** Options of {@linkcode fromUri}. */
export interface FromUriOptions {
  /** The context to add to; {@linkcode empty} by default. */
  base?: Context;
  /**
   * A proxy for every connection the URL makes: `http://`, `https://`,
   * `socks5://`, `socks5h://` (without a scheme: `http://`), credentials in
   * the userinfo; `""`: none. Bound as {@linkcode proxy}. See
   * {@linkcode proxyFromEnv} for the environment's.
   */
  proxy?: string | URL;
  /** TLS options for an `https://` proxy (its CAs, ...); bound as {@linkcode proxyTls}. */
  proxyTls?: Omit<TlsClientOptions, "hostname">;
}

/**
 * Parses `uri` and returns a context with the URL's values added
 * ({@linkcode scheme}, {@linkcode host}, {@linkcode port}, {@linkcode path},
 * {@linkcode user}, {@linkcode query}, each when the URL has it) and the
 * fold functions that compute transport endpoints from them.
 *
 * The fold functions read the most recent values, so replacing a value
 * (`ctx.replace(port, 8081)`) changes what {@linkcode resolve} connects to;
 * replacing the scheme switches the transport. They are added once per
 * context: calling `fromUri` again on its own result (a redirect) adds the
 * new values and reuses them. A value the new URL does not carry (a user,
 * a query, a proxy) keeps the one the base has.
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
 * or a scheme named here (`unix:sock`). The common protocols' schemes
 * (`postgres://`, `redis://`, `rediss://`, `mqtts://`, ...: see the module
 * documentation) give a `tcp` endpoint, or a `tls` one for their TLS
 * variants, with their default port; {@linkcode defineScheme} adds more.
 *
 * With a `proxy`, the TCP connection of every scheme but `unix:` (and the
 * values-only `ssh://`) goes through it: a `tunnel` (HTTP CONNECT) or
 * `socks` endpoint instead of `tcp`, and TLS to the target inside (see
 * {@linkcode proxy}).
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
 * @example Through a SOCKS proxy that resolves names (socks5h)
 * ```ts
 * import { unfold } from "@mimic/mimic";
 * import { socks } from "@mimic/mimic/socks";
 * import { fromUri } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * const ctx = fromUri("redis://cache.internal", {
 *   proxy: "socks5h://127.0.0.1:1080",
 * });
 * const [endpoint] = (await unfold(ctx)).filter((e) => e.value === socks.endpoint);
 * const { target, resolve } = endpoint.data as { target: unknown; resolve: unknown };
 * assert.deepEqual(target, { hostname: "cache.internal", port: 6379 });
 * assert.equal(resolve, "proxy");
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
 * assert.throws(() => fromUri("tcp://h:1", { proxy: "ftp://u:pw@p" }), {
 *   name: "TypeError",
 *   message:
 *     'Cannot parse proxy URL ftp://u:****@p: scheme "ftp" is not a proxy scheme (http, https, socks5, socks5h)',
 * });
 * ```
 *
 * @param uri The URL (a `URL` is read from its `href`).
 * @param options The context to add to (or the `base` field), a proxy and
 * its TLS options.
 * @returns The base context with the URL's values and the transport fold
 * functions.
 * @throws {TypeError} When `uri` or the proxy URL is malformed, its scheme is
 * not supported, or its host, port or path is missing or invalid.
 * @throws {RangeError} When a port is not in 1-65535.
 */
export function fromUri(
  uri: string | URL,
  options: Context | FromUriOptions = {},
): Context {
  const { base = empty, proxy: proxyUrl, proxyTls: proxyOptions } =
    options instanceof Context ? { base: options } : options;
  const text = typeof uri === "string" ? uri : String(uri.href);
  const parts = parse(text);
  const proxyText = proxyUrl === undefined
    ? undefined
    : typeof proxyUrl === "string"
    ? proxyUrl
    : String(proxyUrl.href);
  if (proxyText !== undefined && proxyText !== "") parseProxy(proxyText);
  let ctx = base.add(scheme, parts.scheme);
  if (parts.host !== undefined) ctx = ctx.add(host, parts.host);
  if (parts.port !== undefined) ctx = ctx.add(port, parts.port);
  if (parts.user !== undefined) ctx = ctx.add(user, parts.user);
  if (parts.path !== undefined) ctx = ctx.add(path, parts.path);
  if (parts.query !== undefined) ctx = ctx.add(query, parts.query);
  if (proxyText !== undefined) ctx = ctx.add(proxy, proxyText);
  if (proxyOptions !== undefined) ctx = ctx.add(proxyTls, proxyOptions);
  const installed = bindings(base).some((b) => "k" in b && ours.has(b.k));
  return installed ? ctx : addTransports(ctx);
}

// --- The environment's proxy ---------------------------------------------------

/** Reads one environment variable: from `env`, else `Deno.env`, else `process.env`. */
function envReader(
  env: Record<string, string | undefined> | undefined,
): (name: string) => string | undefined {
  if (env !== undefined) return (name) => env[name];
  const g = globalThis as {
    Deno?: { env?: { get(name: string): string | undefined } };
    process?: { env?: Record<string, string | undefined> };
  };
  const denoEnv = g.Deno?.env;
  if (denoEnv !== undefined && typeof denoEnv.get === "function") {
    return (name) => denoEnv.get(name);
  }
  const processEnv = g.process?.env;
  if (processEnv !== undefined && processEnv !== null) {
    return (name) => processEnv[name];
  }
  return () => undefined;
}

/** The first of `names` set to a non-empty value. */
function firstSet(
  get: (name: string) => string | undefined,
  names: readonly string[],
): string | undefined {
  for (const name of names) {
    const v = get(name)?.trim();
    if (v !== undefined && v !== "") return v;
  }
  return undefined;
}

/** The proxy variables for a scheme, in curl's order. */
function proxyVariables(s: string): string[] {
  // WebSocket handshakes are HTTP: ws: reads http_proxy, wss: https_proxy.
  const as = s === "ws" ? "http" : s === "wss" ? "https" : s;
  // http_proxy only in lower case: HTTP_PROXY may be set by a CGI request's
  // "Proxy:" header (httpoxy).
  const names = as === "http"
    ? ["http_proxy"]
    : [`${as}_proxy`, `${as.toUpperCase()}_PROXY`];
  return [...names, "all_proxy", "ALL_PROXY"];
}

/** `[a]:p`, `a:p` (one colon): the host part and port of a `no_proxy` pattern. */
function splitPatternPort(
  pattern: string,
): { pattern: string; port?: number } | undefined {
  const bracketed = /^\[([^\]]+)\](?::([0-9]+))?$/.exec(pattern);
  let hostPart = pattern;
  let portText: string | undefined;
  if (bracketed !== null) {
    hostPart = bracketed[1];
    portText = bracketed[2];
  } else if (pattern.startsWith("[")) {
    return undefined;
  } else if (pattern.split(":").length === 2) {
    [hostPart, portText] = pattern.split(":");
    if (!/^[0-9]+$/.test(portText)) return undefined;
  }
  if (portText === undefined) return { pattern: hostPart };
  const n = Number(portText);
  if (n < 1 || n > 65535) return undefined;
  return { pattern: hostPart, port: n };
}

/**
 * Whether `no_proxy` (a list of patterns) excludes `hostname:p`. Patterns
 * that cannot match (malformed) are skipped, as curl does.
 */
function excluded(noProxy: string, hostname: string, p: number): boolean {
  if (noProxy.trim() === "*") return true;
  const ip = parseIp(hostname);
  const name = hostname.toLowerCase().replace(/\.$/, "");
  for (const token of noProxy.split(/[\s,]+/)) {
    if (token === "") continue;
    if (token === "*") return true;
    const split = splitPatternPort(token);
    if (split === undefined) continue;
    if (split.port !== undefined && split.port !== p) continue;
    const pattern = split.pattern;
    if (ip !== undefined) {
      const [address, bitsText, ...more] = pattern.split("/");
      const network = parseIp(address);
      if (network === undefined || more.length > 0) continue;
      const max = network.length * 8;
      let bits = max;
      if (bitsText !== undefined) {
        if (!/^[0-9]{1,3}$/.test(bitsText) || Number(bitsText) > max) continue;
        bits = Number(bitsText);
      }
      if (inPrefix(ip, network, bits)) return true;
      continue;
    }
    if (pattern.includes("/") || parseIp(pattern) !== undefined) continue;
    // ".example.com", "*.example.com" and "example.com" all match the domain
    // and its subdomains.
    const domain = pattern.toLowerCase().replace(/^\*?\./, "").replace(
      /\.$/,
      "",
    );
    if (domain === "" || domain.includes("*")) continue;
    if (name === domain || name.endsWith(`.${domain}`)) return true;
  }
  return false;
}

/**
 * The proxy the environment gives for `url`, by curl's rules, or
 * `undefined` for none: pass it to {@linkcode fromUri}'s `proxy`.
 *
 * 1. The variable is `http_proxy` for `http://` (lower case only, as curl:
 *    `HTTP_PROXY` can be set by a CGI request, "httpoxy"), else
 *    `<scheme>_proxy` then `<SCHEME>_PROXY` (`https_proxy`, `HTTPS_PROXY`;
 *    `ws://` reads http's, `wss://` https's), then `all_proxy`, `ALL_PROXY`.
 *    The first one set to a non-empty value wins. A value without a scheme
 *    is given `http://` (`proxy:3128` is `http://proxy:3128`).
 * 2. `no_proxy` (then `NO_PROXY`) lists, separated by commas or white space,
 *    what goes direct: `*` (everything); a domain, which matches itself and
 *    its subdomains (`example.com`, `.example.com` and `*.example.com` all
 *    match `example.com` and `a.example.com`, not `notexample.com`); an IP
 *    address or a CIDR range (`127.0.0.1`, `10.0.0.0/8`, `::1`, `[::1]`,
 *    `fe80::/10`), which matches IP hosts only (names are not resolved);
 *    any of them with `:port` to match only that port (`[::1]:8080`).
 *    Case and a trailing dot are ignored.
 * 3. A pattern that cannot match (`10.0.0.0/33`, `host:99999`, `[::1`) is
 *    skipped, as curl skips it: a bad entry never turns the proxy off for
 *    other hosts, nor makes the call throw.
 *
 * Differences from curl, each where curl would never match: a `*` entry in
 * a list, `*.` prefixes, ports and bracketed IPv6 patterns are honoured.
 * `unix:` URLs never use a proxy.
 *
 * @example Pick the proxy of an HTTPS URL
 * ```ts
 * import { proxyFromEnv } from "@mimic/mimic/uri";
 * import assert from "node:assert/strict";
 *
 * const env = {
 *   https_proxy: "socks5h://127.0.0.1:1080",
 *   no_proxy: "localhost,.internal,10.0.0.0/8",
 * };
 * assert.equal(proxyFromEnv("https://example.com/", env), "socks5h://127.0.0.1:1080");
 * assert.equal(proxyFromEnv("https://db.internal/", env), undefined);
 * assert.equal(proxyFromEnv("https://10.1.2.3/", env), undefined);
 * assert.equal(proxyFromEnv("http://example.com/", env), undefined); // http_proxy unset
 * ```
 *
 * @param url The URL to reach (any scheme {@linkcode fromUri} knows).
 * @param env The variables; default `Deno.env` when it exists, else
 * `process.env`, else none.
 * @returns The proxy URL, or `undefined` to go direct.
 * @throws {TypeError} When `url` cannot be parsed (as {@linkcode fromUri}).
 * @throws {Deno.errors.NotCapable} On Deno without `--allow-env` for these
 * variables, when `env` is not given (the denial is not taken for "unset").
 */
export function proxyFromEnv(
  url: string | URL,
  env?: Record<string, string | undefined>,
): string | undefined {
  const parts = parse(typeof url === "string" ? url : String(url.href));
  if (parts.host === undefined || parts.port === undefined) return undefined;
  const get = envReader(env);
  const found = firstSet(get, proxyVariables(parts.scheme));
  if (found === undefined) return undefined;
  const noProxy = firstSet(get, ["no_proxy", "NO_PROXY"]);
  if (noProxy !== undefined && excluded(noProxy, parts.host, parts.port)) {
    return undefined;
  }
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(found)
    ? found
    : `http://${found}`;
}
