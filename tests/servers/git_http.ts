/**
 * `git http-backend` behind a small `Deno.serve` CGI bridge on a free
 * loopback port, plain HTTP or TLS, for tests.
 *
 * @module
 */

import { ensureCommand } from "./_util.ts";

/** A running server: its port, and how to stop it. */
export interface GitHttpServer {
  /** The loopback port it listens on. */
  port: number;
  /** Stops the server, waits for every CGI process to exit. */
  close(): Promise<void>;
}

/** Options of {@linkcode startGitHttp}. */
export interface GitHttpOptions {
  /** The directory of the repositories (`GIT_PROJECT_ROOT`). */
  root: string;
  /** A PEM certificate chain: serve HTTPS. */
  cert?: string;
  /** The PEM key of `cert`. */
  key?: string;
  /** The address to listen on. @default {"127.0.0.1"} */
  hostname?: string;
}

/** Where the CGI headers end (the first empty line, LF or CRLF) and the body starts. */
function headerEnd(
  buf: Uint8Array,
): { head: number; body: number } | undefined {
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue;
    if (buf[i + 1] === 0x0a) return { head: i, body: i + 2 };
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) {
      return { head: i, body: i + 3 };
    }
  }
  return undefined;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Runs one request through `git http-backend` (CGI/1.1): the request's
 * method, path and query go in the environment, its body on stdin; the
 * response's headers (with `Status:`) come first on stdout, then its body.
 */
async function cgi(
  request: Request,
  root: string,
  children: Set<Promise<unknown>>,
  command: string,
): Promise<Response> {
  const url = new URL(request.url);
  const env: Record<string, string> = {
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: "1",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GATEWAY_INTERFACE: "CGI/1.1",
    SERVER_PROTOCOL: "HTTP/1.1",
    REQUEST_METHOD: request.method,
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.slice(1),
    REMOTE_ADDR: "127.0.0.1",
    CONTENT_TYPE: request.headers.get("content-type") ?? "",
  };
  const length = request.headers.get("content-length");
  if (length !== null) env.CONTENT_LENGTH = length;
  const protocol = request.headers.get("git-protocol");
  if (protocol !== null) env.GIT_PROTOCOL = protocol;
  const encoding = request.headers.get("content-encoding");
  if (encoding !== null) env.HTTP_CONTENT_ENCODING = encoding;

  const child = new Deno.Command(command, {
    args: ["http-backend"],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const done = child.status.catch(() => {});
  children.add(done);
  done.finally(() => children.delete(done));

  // The body goes in while the response comes out.
  const fed = (request.body ?? ReadableStream.from<Uint8Array>([]))
    .pipeTo(child.stdin).catch(() => {});
  children.add(fed);
  fed.finally(() => children.delete(fed));

  const reader = child.stdout.getReader();
  let buf: Uint8Array = new Uint8Array(0);
  let end: { head: number; body: number } | undefined;
  while ((end = headerEnd(buf)) === undefined) {
    const { value, done } = await reader.read();
    if (done) {
      return new Response("git http-backend sent no headers\n", {
        status: 502,
      });
    }
    buf = concat(buf, value);
  }
  const head = new TextDecoder().decode(buf.subarray(0, end.head));
  const rest = buf.slice(end.body);
  let status = 200;
  let statusText = "OK";
  const headers = new Headers();
  for (const line of head.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === "status") {
      const m = /^(\d{3})\s*(.*)$/.exec(value);
      if (m !== null) {
        status = Number(m[1]);
        statusText = m[2];
      }
    } else headers.append(name, value);
  }
  const body = new ReadableStream<Uint8Array>({
    start(controller): void {
      if (rest.length > 0) controller.enqueue(rest);
    },
    async pull(controller): Promise<void> {
      const { value, done } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(): void {
      reader.cancel().catch(() => {});
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
    },
  });
  return new Response(status === 204 || status === 304 ? null : body, {
    status,
    statusText,
    headers,
  });
}

/**
 * Serves the repositories under `root` with `git http-backend` on a free
 * loopback port (HTTPS when `cert` and `key` are given).
 *
 * @param options The root, and a certificate for HTTPS.
 * @returns The server.
 */
export async function startGitHttp(
  options: GitHttpOptions,
): Promise<GitHttpServer> {
  const command = await ensureCommand("git", "git");
  const children = new Set<Promise<unknown>>();
  const { promise, resolve } = Promise.withResolvers<number>();
  const tls = options.cert !== undefined && options.key !== undefined
    ? { cert: options.cert, key: options.key }
    : {};
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: 0,
    ...tls,
    onListen: ({ port }) => resolve(port),
    onError: (error) =>
      new Response(`Internal error: ${error}\n`, { status: 500 }),
  }, (request) => cgi(request, options.root, children, command));
  let closed: Promise<void> | undefined;
  return promise.then((port) => ({
    port,
    close(): Promise<void> {
      closed ??= (async () => {
        await server.shutdown();
        while (children.size > 0) await Promise.all([...children]);
      })();
      return closed;
    },
  }));
}
