/**
 * An HTTPS GET through an HTTP or HTTPS proxy, with mimic: the whole path
 * is one context, resolved to one flow.
 *
 * ```text
 * tls (target name, ALPN http/1.1)
 *   over tunnel (HTTP CONNECT target:port)
 *     over proxy context: tcp                 for an http:// proxy
 *                         tls over tcp        for an https:// proxy
 * ```
 *
 * With an HTTPS proxy this is TLS inside TLS: the target's TLS session
 * runs inside the CONNECT tunnel, itself inside the TLS session with the
 * proxy. Deno's `Deno.startTls` only runs over a TCP connection, so it
 * cannot do that; mimic's TLS runs over any flow. The HTTP/1.1 request is
 * the small client of `./_http.ts`, written once against a flow.
 *
 * ```sh
 * deno run -A examples/https_via_proxy.ts https://example.com/ \
 *   --proxy http://127.0.0.1:8888
 * ```
 *
 * @module
 */

import {
  type Context,
  empty,
  type Flow,
  NotFoundError,
  resolve,
} from "../mod.ts";
import { tcp } from "../src/tcp.ts";
import { tls, type TlsFlow } from "../src/tls.ts";
import { tunnel, TunnelError, type TunnelTarget } from "../src/tunnel.ts";
import {
  eachArg,
  parseTimeout,
  readCaFile,
  runMain,
  UsageError,
} from "./_cli.ts";
import {
  closeQuietly,
  explain,
  type HttpResponse,
  request,
  writeAll,
} from "./_http.ts";

/** Options of {@linkcode connectViaProxy} and {@linkcode getViaProxy}. */
export interface HttpsViaProxyOptions {
  /**
   * The proxy's URL: `http://host[:port]` (default port 1080, as curl) or
   * `https://host[:port]` (default port 443), with optional `user:password@`
   * sent as `Proxy-Authorization: Basic`.
   */
  proxy: string;
  /** PEM certificates of the CAs to trust for the target; default: the Mozilla roots. */
  caCerts?: string[];
  /** PEM certificates of the CAs to trust for an HTTPS proxy; default: the Mozilla roots. */
  proxyCaCerts?: string[];
  /** Gives up (and closes the flow) when aborted. */
  signal?: AbortSignal;
}

/** The step of {@linkcode HttpsViaProxyError}. */
export type HttpsViaProxyStep =
  | "parse"
  | "proxy"
  | "tunnel"
  | "tls"
  | "request";

/**
 * A failure of this example, naming the step that failed: parsing a URL,
 * reaching the proxy (TCP, and TLS for an HTTPS proxy), the proxy's answer
 * to `CONNECT`, the TLS handshake with the target through the tunnel, or
 * the HTTP request.
 */
export class HttpsViaProxyError extends Error {
  /** The step that failed. */
  readonly step: HttpsViaProxyStep;

  /**
   * Makes the error.
   *
   * @param step The step that failed.
   * @param message The message.
   * @param options The cause.
   */
  constructor(
    step: HttpsViaProxyStep,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "HttpsViaProxyError";
    this.step = step;
  }
}

/** A URL's host name, without the brackets of an IPv6 address. */
function hostnameOf(url: URL): string {
  return url.hostname.startsWith("[")
    ? url.hostname.slice(1, -1)
    : url.hostname;
}

function parseUrl(url: string, what: string): URL {
  try {
    return new URL(url);
  } catch {
    throw new HttpsViaProxyError(
      "parse",
      `cannot parse the ${what} URL ${url}`,
    );
  }
}

/** The base64 of a string's UTF-8 bytes. */
function base64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** How to reach the proxy: a parsed proxy URL. */
interface ProxyPlan {
  url: URL;
  context: Context;
  headers: Record<string, string>;
}

function planProxy(proxy: string, proxyCaCerts?: string[]): ProxyPlan {
  const url = parseUrl(proxy, "proxy");
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new HttpsViaProxyError(
      "parse",
      `cannot use the proxy ${proxy}: use an http:// or https:// proxy URL`,
    );
  }
  const hostname = hostnameOf(url);
  if (hostname === "") {
    throw new HttpsViaProxyError(
      "parse",
      `cannot use the proxy ${proxy}: no host`,
    );
  }
  const secure = url.protocol === "https:";
  const port = url.port === "" ? (secure ? 443 : 1080) : Number(url.port);
  const overTcp = empty.add(tcp.endpoint, { hostname, port });
  const context = secure
    ? empty.add(tls.endpoint, {
      hostname,
      ...(proxyCaCerts === undefined ? {} : { caCerts: proxyCaCerts }),
      over: overTcp,
    })
    : overTcp;
  const headers: Record<string, string> = {};
  if (url.username !== "" || url.password !== "") {
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    headers["Proxy-Authorization"] = `Basic ${base64(`${user}:${password}`)}`;
  }
  // Never show the credentials in messages.
  url.username = "";
  url.password = "";
  if (url.port === "") url.port = String(port);
  return { url, context, headers };
}

function planTarget(target: string): { url: URL; target: TunnelTarget } {
  const url = parseUrl(target, "target");
  if (url.protocol !== "https:") {
    throw new HttpsViaProxyError(
      "parse",
      `cannot GET ${target}: only https:// URLs are supported`,
    );
  }
  return {
    url,
    target: {
      hostname: hostnameOf(url),
      port: url.port === "" ? 443 : Number(url.port),
    },
  };
}

/** `host:port`, with brackets around an IPv6 address. */
function authorityOf(target: TunnelTarget): string {
  const host = target.hostname.includes(":")
    ? `[${target.hostname}]`
    : target.hostname;
  return `${host}:${target.port}`;
}

/**
 * The context of HTTPS through a proxy: `tls` (the target's name, ALPN
 * `http/1.1`) over `tunnel` (CONNECT to the target) over the proxy's context
 * (`tcp`, or `tls` over `tcp` for an `https://` proxy).
 *
 * @param url The target's `https://` URL.
 * @param options The proxy's URL and the CAs to trust.
 * @returns The context.
 * @throws {HttpsViaProxyError} When a URL cannot be parsed.
 */
export function httpsViaProxyContext(
  url: string,
  options: HttpsViaProxyOptions,
): Context {
  const proxy = planProxy(options.proxy, options.proxyCaCerts);
  const { target } = planTarget(url);
  return contextOf(proxy, target, options.caCerts);
}

function contextOf(
  proxy: ProxyPlan,
  target: TunnelTarget,
  caCerts?: string[],
): Context {
  return empty.add(tls.endpoint, {
    hostname: target.hostname,
    alpnProtocols: ["http/1.1"],
    ...(caCerts === undefined ? {} : { caCerts }),
    over: empty.add(tunnel.endpoint, {
      proxy: proxy.context,
      target,
      ...(Object.keys(proxy.headers).length > 0
        ? { headers: proxy.headers }
        : {}),
    }),
  });
}

/** The error of the attempt of `name` in a `NotFoundError`, if any. */
function attemptOf(error: unknown, name: string): unknown {
  if (!(error instanceof NotFoundError)) return undefined;
  return error.attempts.find((a) => a.name === name)?.error;
}

/**
 * Connects to the target through the proxy by resolving
 * {@linkcode httpsViaProxyContext}, and tells which step failed.
 *
 * @example Through a local tinyproxy
 * ```ts ignore
 * import { connectViaProxy } from "./https_via_proxy.ts";
 *
 * await using flow = await connectViaProxy("https://example.com/", {
 *   proxy: "http://127.0.0.1:8888",
 * });
 * console.log((await flow.handshake()).alpnProtocol); // "http/1.1"
 * ```
 *
 * @param url The target's `https://` URL.
 * @param options The proxy's URL, the CAs to trust, a signal.
 * @returns The TLS flow to the target, its handshake complete.
 * @throws {HttpsViaProxyError} Naming the step that failed.
 */
export async function connectViaProxy(
  url: string,
  options: HttpsViaProxyOptions,
): Promise<TlsFlow> {
  const proxy = planProxy(options.proxy, options.proxyCaCerts);
  const { target } = planTarget(url);
  const ctx = contextOf(proxy, target, options.caCerts);
  const authority = authorityOf(target);
  try {
    return await resolve(ctx, { signal: options.signal }) as TlsFlow;
  } catch (error) {
    if (options.signal?.aborted) {
      throw new HttpsViaProxyError(
        "proxy",
        `cannot connect to ${authority} through the proxy ${proxy.url.href}: ${
          explain(options.signal.reason)
        }`,
        { cause: error },
      );
    }
    // Each resolve() wraps its failed connects in a NotFoundError: tls's,
    // then inside it tunnel's, then inside that the proxy context's.
    const tlsError = attemptOf(error, "tls") ?? error;
    const tunnelError = attemptOf(tlsError, "tunnel");
    if (tunnelError instanceof NotFoundError) {
      throw new HttpsViaProxyError(
        "proxy",
        `cannot connect to the proxy ${proxy.url.href}: ${
          explain(tunnelError)
        }`,
        { cause: error },
      );
    }
    if (tunnelError !== undefined) {
      const why = tunnelError instanceof TunnelError
        ? `it answered ${tunnelError.status} ${tunnelError.statusText}`.trim()
        : explain(tunnelError).replace(/^Cannot CONNECT to \S+: /, "");
      throw new HttpsViaProxyError(
        "tunnel",
        `cannot open a tunnel to ${authority} through the proxy ${proxy.url.href}: ${why}`,
        { cause: error },
      );
    }
    throw new HttpsViaProxyError(
      "tls",
      `cannot establish TLS with ${authority} through the proxy ${proxy.url.href}: ${
        explain(tlsError)
      }`,
      { cause: error },
    );
  }
}

/** A response of {@linkcode getViaProxy}: dispose of it to close the flow. */
export interface ProxiedResponse extends HttpResponse, Disposable {
  /** The URL requested. */
  url: string;
  /** The flow to the target. */
  flow: Flow;
}

/** Closes `flow`; a flow closed twice may throw, which is fine here. */
/**
 * GETs an `https://` URL through a proxy, and reads the response head. A
 * status other than 2xx is an error. Iterate the body once, then dispose of
 * the response (`using`) to close the flow.
 *
 * @param url The target's `https://` URL.
 * @param options The proxy's URL, the CAs to trust, a signal.
 * @returns The response.
 * @throws {HttpsViaProxyError} Naming the step that failed.
 */
export async function getViaProxy(
  url: string,
  options: HttpsViaProxyOptions,
): Promise<ProxiedResponse> {
  const flow = await connectViaProxy(url, options);
  const { signal } = options;
  const onAbort = () => closeQuietly(flow);
  signal?.addEventListener("abort", onAbort, { once: true });
  const release = () => {
    signal?.removeEventListener("abort", onAbort);
    closeQuietly(flow);
  };
  const target = new URL(url);
  try {
    const response = await request(flow, {
      target: `${target.pathname}${target.search}`,
      host: target.host,
      headers: { accept: "*/*" },
    });
    if (response.status < 200 || response.status > 299) {
      throw new Error(
        `the server answered ${response.status} ${response.reason}`.trim(),
      );
    }
    return { ...response, url: target.href, flow, [Symbol.dispose]: release };
  } catch (error) {
    release();
    const why = signal?.aborted ? explain(signal.reason) : explain(error);
    throw new HttpsViaProxyError(
      "request",
      `cannot GET ${target.href}: ${why}`,
      {
        cause: error,
      },
    );
  }
}

const USAGE =
  `Usage: https_via_proxy.ts [options] <https-url> --proxy <proxy-url>

GETs an https:// URL through an HTTP proxy (CONNECT) and writes the body to
stdout, byte for byte. The context is TLS (the target's name, ALPN http/1.1)
over an HTTP CONNECT tunnel over the proxy: TCP for an http:// proxy, TLS
over TCP for an https:// proxy (then it is TLS inside TLS). A status that is
not 2xx is an error.

Options:
  --proxy <url>          http://[user:pass@]host[:port] (default port 1080) or
                         https://[user:pass@]host[:port] (default port 443)
  --ca-file <pem>        trust the CAs in this PEM file for the target
  --proxy-ca-file <pem>  trust the CAs in this PEM file for an https:// proxy
  --timeout <seconds>    give up after this long (default: 60)
  -h, --help             print this help
`;

/**
 * The command line.
 *
 * @param args The arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let proxy: string | undefined;
  let caFile: string | undefined;
  let proxyCaFile: string | undefined;
  let timeout = 60;
  const urls: string[] = [];
  for (const [a, next] of eachArg(args)) {
    if (a === "-h" || a === "--help") {
      await writeAll(Deno.stdout, new TextEncoder().encode(USAGE));
      return 0;
    } else if (a === "--proxy") proxy = next();
    else if (a === "--ca-file") caFile = next();
    else if (a === "--proxy-ca-file") proxyCaFile = next();
    else if (a === "--timeout") timeout = parseTimeout(next());
    else if (a.startsWith("-")) {
      throw new UsageError(`unknown option ${a}`);
    } else urls.push(a);
  }
  if (urls.length !== 1) throw new UsageError("expected one URL");
  if (proxy === undefined) throw new UsageError("--proxy is required");
  const options: HttpsViaProxyOptions = {
    proxy,
    signal: AbortSignal.timeout(timeout * 1000),
  };
  if (caFile !== undefined) options.caCerts = await readCaFile(caFile);
  if (proxyCaFile !== undefined) {
    options.proxyCaCerts = await readCaFile(proxyCaFile);
  }
  using response = await getViaProxy(urls[0], options);
  try {
    for await (const chunk of response.body) {
      await writeAll(Deno.stdout, chunk);
    }
  } catch (error) {
    const why = options.signal?.aborted
      ? explain(options.signal.reason)
      : explain(error);
    throw new HttpsViaProxyError(
      "request",
      `cannot read the body of ${response.url}: ${why}`,
      { cause: error },
    );
  }
  return 0;
}

if (import.meta.main) await runMain("https_via_proxy", main);
