/**
 * `http_get <url>`: an HTTP/1.1 GET over whatever flow mimic resolves the
 * URL to (TCP for `http://`, TLS with ALPN `http/1.1` over TCP for
 * `https://`), writing the body to stdout byte for byte.
 *
 * Redirects (301, 302, 303, 307, 308; at most 10) are followed by replacing
 * the context's `scheme`, `host`, `port`, `path` and `query`: the fold
 * functions that compute the endpoints read the most recent values, so the
 * same context connects somewhere else, from HTTP to HTTPS included.
 *
 * ```sh
 * deno run --allow-net --allow-read examples/http_get.ts http://127.0.0.1:8000/ > out
 * ```
 *
 * @module
 */

import { type Context, type Flow, resolve } from "../mod.ts";
import { tls } from "../src/tls.ts";
import { host, path, port, query, scheme } from "../src/uri.ts";
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
  httpContext,
  type HttpResponse,
  readAll,
  request,
  writeAll,
} from "./_http.ts";

/** Options of {@linkcode httpGet}. */
export interface HttpGetOptions {
  /** PEM certificates of the CAs to trust for `https://`. */
  caCerts?: string[];
  /** The most redirects followed. @default {10} */
  maxRedirects?: number;
  /** Called with each URL a redirect leads to. */
  onRedirect?: (url: string, status: number) => void;
  /** Gives up (and closes the flow) when aborted. */
  signal?: AbortSignal;
}

/** A response of {@linkcode httpGet}: read its body, then close it. */
export interface HttpGetResponse extends HttpResponse, Disposable {
  /** The URL that answered, after redirects. */
  url: string;
  /** The ALPN protocol TLS negotiated (`"http/1.1"`); `undefined` without TLS. */
  alpnProtocol: string | null | undefined;
  /** Closes the flow. */
  close(): void;
}

/** A failure of {@linkcode httpGet}; the message names the step and the URL. */
export class HttpGetError extends Error {
  /** What was being done. */
  readonly step: "parse" | "connect" | "request" | "redirect" | "status";
  /** The status, when the server answered one that is not 2xx. */
  readonly status: number | undefined;

  /**
   * Makes the error.
   *
   * @param step The step that failed.
   * @param message The message.
   * @param options The cause, and the status for `step: "status"`.
   */
  constructor(
    step: HttpGetError["step"],
    message: string,
    options?: ErrorOptions & { status?: number },
  ) {
    super(message, options);
    this.name = "HttpGetError";
    this.step = step;
    this.status = options?.status;
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** The URL the context's current values designate. */
function urlOf(ctx: Context): string {
  const s = ctx.get(scheme)!;
  const h = ctx.get(host)!;
  const p = ctx.get(port)!;
  const q = ctx.get(query);
  const name = h.includes(":") ? `[${h}]` : h;
  const dflt = s === "https" ? 443 : 80;
  return `${s}://${name}${p === dflt ? "" : `:${p}`}${ctx.get(path) ?? "/"}${
    q ? `?${q}` : ""
  }`;
}

/** The `Host` header: `host[:port]`, the port only when not the default. */
function hostHeader(ctx: Context): string {
  const h = ctx.get(host)!;
  const p = ctx.get(port)!;
  const name = h.includes(":") ? `[${h}]` : h;
  return p === (ctx.get(scheme) === "https" ? 443 : 80) ? name : `${name}:${p}`;
}

/**
 * Follows a redirect: the context with `location`'s values replacing the
 * current ones (the fold functions stay and recompute the endpoints).
 */
function redirect(ctx: Context, location: string): Context {
  const base = urlOf(ctx);
  let next: URL;
  try {
    next = new URL(location, base);
  } catch {
    throw new TypeError(`bad Location ${JSON.stringify(location)}`);
  }
  if (next.protocol !== "http:" && next.protocol !== "https:") {
    throw new TypeError(`cannot follow a redirect to ${next.href}`);
  }
  // Parse with ./uri for its checks and defaults (the port of the scheme).
  const parsed = httpContext(next.href);
  return ctx
    .replace(scheme, parsed.get(scheme)!)
    .replace(host, parsed.get(host)!)
    .replace(port, parsed.get(port)!)
    .replace(path, parsed.get(path) ?? "/")
    .replace(query, parsed.get(query) ?? "");
}

/**
 * GETs `url`, following redirects, and resolves once the final response's
 * head is read; its body is read from the flow as it is iterated.
 *
 * @example Fetch a page's bytes
 * ```ts ignore
 * import { httpGet } from "./http_get.ts";
 *
 * using response = await httpGet("http://127.0.0.1:8000/");
 * for await (const chunk of response.body) await Deno.stdout.write(chunk);
 * ```
 *
 * @param url An `http://` or `https://` URL.
 * @param options CAs, the redirect limit, a signal.
 * @returns The final 2xx response.
 * @throws {HttpGetError} When a step fails, or the final status is not 2xx.
 */
export async function httpGet(
  url: string,
  options: HttpGetOptions = {},
): Promise<HttpGetResponse> {
  const { signal } = options;
  const max = options.maxRedirects ?? 10;
  let ctx: Context;
  try {
    ctx = httpContext(url, { caCerts: options.caCerts });
  } catch (error) {
    const why = explain(error).replace(/^Cannot parse URL .*?: /, "");
    throw new HttpGetError("parse", `cannot parse ${url}: ${why}`, {
      cause: error,
    });
  }
  const kind = ctx.get(scheme);
  if (kind !== "http" && kind !== "https") {
    throw new HttpGetError(
      "parse",
      `cannot handle ${url}: not an http:// or https:// URL`,
    );
  }
  for (let redirects = 0;; redirects++) {
    const current = urlOf(ctx);
    let flow: Flow;
    try {
      flow = await resolve(ctx, { signal });
    } catch (error) {
      throw new HttpGetError(
        "connect",
        `cannot connect to ${current}: ${explain(error)}`,
        { cause: error },
      );
    }
    const onAbort = () => closeQuietly(flow);
    signal?.addEventListener("abort", onAbort, { once: true });
    const release = () => {
      signal?.removeEventListener("abort", onAbort);
      closeQuietly(flow);
    };
    let response: HttpResponse;
    let alpnProtocol: string | null | undefined;
    try {
      if (tls.is(flow)) {
        alpnProtocol = (await flow.handshake()).alpnProtocol;
        if (alpnProtocol !== null && alpnProtocol !== "http/1.1") {
          throw new Error(
            `the server chose ALPN ${alpnProtocol}, not http/1.1`,
          );
        }
      }
      const q = ctx.get(query);
      response = await request(flow, {
        target: `${ctx.get(path) ?? "/"}${q ? `?${q}` : ""}`,
        host: hostHeader(ctx),
        headers: { accept: "*/*" },
      });
    } catch (error) {
      release();
      const why = signal?.aborted ? explain(signal.reason) : explain(error);
      throw new HttpGetError("request", `cannot GET ${current}: ${why}`, {
        cause: error,
      });
    }
    const location = response.headers.get("location");
    if (REDIRECTS.has(response.status) && location !== null) {
      release();
      if (redirects >= max) {
        throw new HttpGetError(
          "redirect",
          `cannot GET ${url}: more than ${max} redirects (the last to ${location})`,
        );
      }
      try {
        ctx = redirect(ctx, location);
      } catch (error) {
        throw new HttpGetError(
          "redirect",
          `cannot follow the redirect from ${current}: ${explain(error)}`,
          { cause: error },
        );
      }
      options.onRedirect?.(urlOf(ctx), response.status);
      continue;
    }
    if (response.status < 200 || response.status > 299) {
      release();
      throw new HttpGetError(
        "status",
        `cannot GET ${current}: the server answered ${response.status} ${response.reason}`
          .trim(),
        { status: response.status },
      );
    }
    return {
      ...response,
      url: current,
      alpnProtocol,
      close: release,
      [Symbol.dispose]: release,
    };
  }
}

/**
 * GETs `url` (following redirects) and reads the whole body.
 *
 * @param url An `http://` or `https://` URL.
 * @param options CAs, the redirect limit, a signal.
 * @returns The body's bytes.
 * @throws {HttpGetError} When a step fails, or the final status is not 2xx.
 */
export async function httpGetBytes(
  url: string,
  options: HttpGetOptions = {},
): Promise<Uint8Array> {
  using response = await httpGet(url, options);
  try {
    return await readAll(response.body);
  } catch (error) {
    throw new HttpGetError(
      "request",
      `cannot read the body of ${response.url}: ${explain(error)}`,
      { cause: error },
    );
  }
}

const USAGE = `Usage: http_get.ts [options] <url>

GETs an http:// or https:// URL over mimic (HTTP/1.1 over TCP, or over TLS
with ALPN http/1.1) and writes the body to stdout, byte for byte. Follows
up to 10 redirects; a final status that is not 2xx is an error.

Options:
  --ca-file <pem>        trust the CAs in this PEM file (env: HTTP_GET_CA_FILE)
  --max-redirects <n>    follow at most n redirects (default: 10)
  --timeout <seconds>    give up after this long (default: 60)
  -v, --verbose          print the redirects and the status on stderr
  -h, --help             print this help
`;

async function main(args: string[]): Promise<number> {
  const options: HttpGetOptions = {};
  let caFile = Deno.env.get("HTTP_GET_CA_FILE");
  let timeout = 60;
  let verbose = false;
  const urls: string[] = [];
  for (const [a, next] of eachArg(args)) {
    if (a === "-h" || a === "--help") {
      console.log(USAGE);
      return 0;
    } else if (a === "--ca-file") caFile = next();
    else if (a === "--max-redirects") {
      options.maxRedirects = Number(next());
      if (!Number.isInteger(options.maxRedirects) || options.maxRedirects < 0) {
        throw new UsageError("--max-redirects must be a whole number");
      }
    } else if (a === "--timeout") timeout = parseTimeout(next());
    else if (a === "-v" || a === "--verbose") verbose = true;
    else if (a.startsWith("-") && a !== "-") {
      throw new UsageError(`unknown option ${a}`);
    } else urls.push(a);
  }
  if (urls.length !== 1) throw new UsageError("expected one URL");
  if (caFile !== undefined && caFile !== "") {
    options.caCerts = await readCaFile(caFile);
  }
  if (verbose) {
    options.onRedirect = (to, status) =>
      console.error(`http_get: ${status} redirect to ${to}`);
  }
  options.signal = AbortSignal.timeout(timeout * 1000);
  using response = await httpGet(urls[0], options);
  if (verbose) {
    console.error(`http_get: ${response.status} ${response.reason}`);
  }
  try {
    for await (const chunk of response.body) {
      await writeAll(Deno.stdout, chunk);
    }
  } catch (error) {
    throw new HttpGetError(
      "request",
      `cannot read the body of ${response.url}: ${explain(error)}`,
      { cause: error },
    );
  }
  return 0;
}

if (import.meta.main) await runMain("http_get", main);
