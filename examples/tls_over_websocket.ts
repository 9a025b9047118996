/**
 * TLS through a WebSocket tunnel, with mimic: one context says "TLS, over a
 * WebSocket to this URL", and `resolve` hands back a TLS flow whose bytes
 * travel as binary WebSocket messages (for instance through websockify to
 * a TLS server behind it). Deno's own `Deno.startTls` only runs over TCP;
 * ours runs over any flow.
 *
 * ```ts ignore
 * const ctx = empty.add(tls.endpoint, {
 *   hostname: "localhost",
 *   caCerts: [ca],
 *   over: empty.add(websocket.endpoint, { url: "ws://127.0.0.1:6080" }),
 * });
 * const flow = await resolve(ctx); // a TlsFlow over a WebSocketFlow
 * ```
 *
 * Run against a bridge to a TLS echo server:
 *
 * ```sh
 * websockify 127.0.0.1:6080 127.0.0.1:4433 &
 * deno run -A examples/tls_over_websocket.ts ws://127.0.0.1:6080 \
 *   --host localhost --ca-file tests/fixtures/ca.pem --message hello
 * ```
 *
 * or with no URL, as a self-contained demo on loopback: a TLS echo server
 * (`Deno.listenTls` with the test fixture certificate), a WebSocket bridge
 * to it (Debian's `websockify` when it is installed, otherwise a small
 * `Deno.serve` bridge made of `acceptWebSocket` and `Deno.connect`), and the
 * client.
 *
 * @module
 */

import { type Context, empty, NotFoundError, resolve } from "../mod.ts";
import { tls, type TlsFlow, type TlsHandshakeInfo } from "../src/tls.ts";
import { acceptWebSocket, websocket } from "../src/websocket.ts";
import {
  eachArg,
  parseTimeout,
  readCaFile,
  runMain,
  UsageError,
} from "./_cli.ts";
import { explain, FlowReader, writeAll } from "./_http.ts";

/** Options of {@linkcode connectTlsOverWebSocket}. */
export interface TlsOverWebSocketOptions {
  /** The TLS server's name: sent as SNI, and verified in its certificate. */
  hostname: string;
  /** PEM certificates of the CAs to trust; default: the Mozilla roots. */
  caCerts?: string[];
  /** ALPN protocols to offer. */
  alpnProtocols?: string[];
  /** WebSocket subprotocols to offer (`Sec-WebSocket-Protocol`). */
  protocols?: string[];
  /** Gives up when aborted. */
  signal?: AbortSignal;
}

/** The step of {@linkcode TlsOverWebSocketError}. */
export type TlsOverWebSocketStep = "parse" | "websocket" | "tls" | "exchange";

/**
 * A failure of this example, naming the step that failed: parsing the URL,
 * opening the WebSocket, the TLS handshake through it, or the exchange of
 * data once connected.
 */
export class TlsOverWebSocketError extends Error {
  /** The step that failed. */
  readonly step: TlsOverWebSocketStep;

  /**
   * Makes the error.
   *
   * @param step The step that failed.
   * @param message The message.
   * @param options The cause.
   */
  constructor(
    step: TlsOverWebSocketStep,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "TlsOverWebSocketError";
    this.step = step;
  }
}

/**
 * The context of TLS over a WebSocket: a `tls` endpoint whose `over` is a
 * `websocket` endpoint.
 *
 * @param url A `ws:`, `wss:`, `http:` or `https:` URL.
 * @param options The TLS name, CAs, ALPN and WebSocket subprotocols.
 * @returns The context.
 */
export function tlsOverWebSocketContext(
  url: string,
  options: TlsOverWebSocketOptions,
): Context {
  return empty.add(tls.endpoint, {
    hostname: options.hostname,
    ...(options.caCerts === undefined ? {} : { caCerts: options.caCerts }),
    ...(options.alpnProtocols === undefined
      ? {}
      : { alpnProtocols: options.alpnProtocols }),
    over: empty.add(websocket.endpoint, {
      url,
      ...(options.protocols === undefined
        ? {}
        : { protocols: options.protocols }),
    }),
  });
}

/** Checks that `url` is a WebSocket URL, and returns it normalized. */
function checkUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TlsOverWebSocketError("parse", `cannot parse URL ${url}`);
  }
  if (!["ws:", "wss:", "http:", "https:"].includes(parsed.protocol)) {
    throw new TlsOverWebSocketError(
      "parse",
      `cannot use ${url}: not a WebSocket URL (use ws:// or wss://)`,
    );
  }
  return parsed.href;
}

/**
 * Opens a WebSocket to `url` and runs a TLS handshake with `hostname`
 * through it, by resolving {@linkcode tlsOverWebSocketContext}.
 *
 * @example Through websockify
 * ```ts ignore
 * import { connectTlsOverWebSocket } from "./tls_over_websocket.ts";
 *
 * await using flow = await connectTlsOverWebSocket("ws://127.0.0.1:6080", {
 *   hostname: "localhost",
 * });
 * console.log((await flow.handshake()).cipherSuite);
 * ```
 *
 * @param url A `ws:`, `wss:`, `http:` or `https:` URL.
 * @param options The TLS name, CAs, ALPN, subprotocols and a signal.
 * @returns The TLS flow, its handshake complete.
 * @throws {TlsOverWebSocketError} Naming the step that failed.
 */
export async function connectTlsOverWebSocket(
  url: string,
  options: TlsOverWebSocketOptions,
): Promise<TlsFlow> {
  const href = checkUrl(url);
  const ctx = tlsOverWebSocketContext(href, options);
  try {
    return await resolve(ctx, { signal: options.signal }) as TlsFlow;
  } catch (error) {
    // resolve() wraps each failed connect: tls's own failure, or the
    // failure of its inner (websocket) context, itself a NotFoundError.
    const attempt = error instanceof NotFoundError
      ? error.attempts.find((a) => a.name === "tls")
      : undefined;
    if (attempt !== undefined && attempt.error instanceof NotFoundError) {
      throw new TlsOverWebSocketError(
        "websocket",
        `cannot open the WebSocket ${href}: ${
          explain(attempt.error).replace(/^Cannot open WebSocket \S+: /, "")
        }`,
        { cause: error },
      );
    }
    const why = attempt !== undefined ? explain(attempt.error) : explain(error);
    throw new TlsOverWebSocketError(
      "tls",
      `cannot establish TLS with ${options.hostname} through ${href}: ${why}`,
      { cause: error },
    );
  }
}

/**
 * Formats a handshake's information, one `name: value` per line.
 *
 * @param info The handshake's information.
 * @returns The lines, each ending in a newline.
 */
export function formatHandshake(info: TlsHandshakeInfo): string {
  return [
    `protocol:    ${info.protocol}`,
    `cipher:      ${info.cipherSuite}`,
    `alpn:        ${info.alpnProtocol ?? "(none)"}`,
    `server name: ${info.serverName ?? "(none)"}`,
    `peer certs:  ${info.peerCertificates.length}`,
  ].map((line) => line + "\n").join("");
}

/**
 * Sends `message` and a newline, and reads one line back.
 *
 * @param flow The TLS flow.
 * @param message The line to send, without its newline.
 * @returns The reply, without its newline, or `null` when the server closed
 * without replying.
 */
export async function exchangeLine(
  flow: TlsFlow,
  message: string,
): Promise<string | null> {
  await writeAll(flow, new TextEncoder().encode(`${message}\n`));
  return await new FlowReader(flow).readLine();
}

/**
 * Sends `data` while reading as many bytes back (from an echo server), and
 * returns them.
 *
 * @param flow The TLS flow.
 * @param data The bytes to send.
 * @returns The bytes read back.
 */
export async function exchangeBytes(
  flow: TlsFlow,
  data: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  const writing = (async () => {
    for (let off = 0; off < data.length; off += 64 * 1024) {
      await writeAll(flow, data.subarray(off, off + 64 * 1024));
    }
  })();
  const reading = (async () => {
    const back = new Uint8Array(data.length);
    for (let off = 0; off < back.length;) {
      const n = await flow.read(back.subarray(off));
      if (n === null) {
        throw new Error(
          `the server closed after echoing ${off} of ${data.length} bytes`,
        );
      }
      off += n;
    }
    return back;
  })();
  // Whichever fails first explains the failure; the other is then moot.
  writing.catch(() => {});
  reading.catch(() => {});
  await Promise.race([writing, reading.then(() => writing)]);
  return await reading;
}

/**
 * The SHA-256 of `data`, in hexadecimal.
 *
 * @param data The bytes.
 * @returns 64 hexadecimal digits.
 */
export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)));
  }
  return out;
}

/** What {@linkcode run} sends: a line, or random bytes to an echo server. */
interface RunOptions extends TlsOverWebSocketOptions {
  message: string;
  bytes?: number;
}

const encoder = new TextEncoder();

function print(text: string): Promise<void> {
  return writeAll(Deno.stdout, encoder.encode(text));
}

/** Connects, prints the handshake, exchanges data, prints the result. */
async function run(url: string, options: RunOptions): Promise<void> {
  const flow = await connectTlsOverWebSocket(url, options);
  const onAbort = () => flow.close();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await print(
      `connected to ${options.hostname} through ${new URL(url).href}\n` +
        formatHandshake(await flow.handshake()),
    );
    if (options.bytes !== undefined) {
      const data = randomBytes(options.bytes);
      const sent = await sha256(data);
      await print(`sent:        ${data.length} bytes, sha-256 ${sent}\n`);
      const back = await exchangeBytes(flow, data);
      const received = await sha256(back);
      await print(`received:    ${back.length} bytes, sha-256 ${received}\n`);
      if (received !== sent) {
        throw new Error("the bytes echoed differ from the bytes sent");
      }
    } else {
      await print(`sent:        ${options.message}\n`);
      const reply = await exchangeLine(flow, options.message);
      if (reply === null) {
        throw new Error("the server closed the connection without replying");
      }
      await print(`received:    ${reply}\n`);
    }
  } catch (error) {
    if (error instanceof TlsOverWebSocketError) throw error;
    const why = options.signal?.aborted
      ? explain(options.signal.reason)
      : explain(error);
    throw new TlsOverWebSocketError(
      "exchange",
      `cannot exchange data with ${options.hostname} through ${
        new URL(url).href
      }: ${why}`,
      { cause: error },
    );
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    flow.close();
  }
}

/** A running piece of the demo. */
interface DemoServer {
  port: number;
  description: string;
  close(): Promise<void>;
}

/** The path of `command` in `PATH`, or `undefined`. */
function findInPath(command: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const info = Deno.statSync(`${dir}/${command}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) {
        return `${dir}/${command}`;
      }
    } catch {
      // Not there.
    }
  }
  return undefined;
}

/** A TLS echo server on 127.0.0.1 (Deno's own TLS, independent of ours). */
function startTlsEcho(cert: string, key: string): DemoServer {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    alpnProtocols: ["mimic-echo"],
  });
  const conns = new Set<Deno.TlsConn>();
  const tasks = new Set<Promise<void>>();
  const echo = async (conn: Deno.TlsConn): Promise<void> => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        await writeAll(conn, buf.subarray(0, n));
      }
    } catch {
      // The bridge hung up.
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const task = echo(conn);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch {
      // The listener was closed.
    }
  })();
  return {
    port: listener.addr.port,
    description: "a TLS echo server (Deno.listenTls)",
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await accepting;
      await Promise.all(tasks);
    },
  };
}

/** Debian's websockify, bridging a free loopback port to `targetPort`. */
async function startWebsockify(
  command: string,
  targetPort: number,
): Promise<DemoServer> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const child = new Deno.Command(command, {
    args: [`127.0.0.1:${port}`, `127.0.0.1:${targetPort}`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.finally(() => exited = true);
  const log = new Response(child.stderr).text().catch(() => "");
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    await status;
    await log;
  };
  for (const deadline = Date.now() + 10_000;;) {
    if (exited || Date.now() > deadline) {
      await stop();
      const last = (await log).trim().split("\n").pop() ?? "";
      throw new Error(`websockify did not start${last ? `: ${last}` : ""}`);
    }
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }
  return {
    port,
    description: `websockify (${command})`,
    close: stop,
  };
}

/** A WebSocket-to-TCP bridge made with Deno.serve, acceptWebSocket and Deno.connect. */
function startDenoBridge(targetPort: number): Promise<DemoServer> {
  const tasks = new Set<Promise<void>>();
  const bridge = async (socket: WebSocket): Promise<void> => {
    const ws = acceptWebSocket(socket);
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
    } catch {
      socket.addEventListener("open", () => socket.close(1011), {
        once: true,
      });
      return;
    }
    const up = (async () => {
      const buf = new Uint8Array(64 * 1024);
      for (let n; (n = await ws.read(buf)) !== null;) {
        await writeAll(conn, buf.subarray(0, n));
      }
      await conn.closeWrite();
    })();
    const down = (async () => {
      const buf = new Uint8Array(64 * 1024);
      for (let n; (n = await conn.read(buf)) !== null;) {
        await ws.write(buf.subarray(0, n));
      }
    })();
    // A WebSocket cannot half-close: when either side ends, end both.
    await Promise.race([up, down]).catch(() => {});
    await Promise.race([
      Promise.allSettled([up, down]),
      new Promise((ok) => setTimeout(ok, 1000)),
    ]);
    try {
      conn.close();
    } catch {
      // Already closed.
    }
    await ws[Symbol.asyncDispose]();
    await Promise.allSettled([up, down]);
  };
  const { promise, resolve: listening } = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => listening(port),
  }, (req) => {
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("WebSocket only\n", { status: 426 });
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    const task = bridge(socket).catch(() => {});
    tasks.add(task);
    task.finally(() => tasks.delete(task));
    return response;
  });
  return promise.then((port) => ({
    port,
    description:
      "a Deno.serve WebSocket bridge (acceptWebSocket + Deno.connect)",
    async close() {
      await server.shutdown();
      await Promise.all(tasks);
    },
  }));
}

/** Runs the client against a TLS echo server behind a local WebSocket bridge. */
async function demo(
  bridgeKind: "auto" | "websockify" | "deno",
  options: Omit<RunOptions, "hostname" | "caCerts">,
): Promise<void> {
  const fixtures = new URL("../tests/fixtures/", import.meta.url);
  let cert: string, key: string, ca: string;
  try {
    [cert, key, ca] = await Promise.all(
      ["localhost.pem", "localhost.key", "ca.pem"].map((name) =>
        Deno.readTextFile(new URL(name, fixtures))
      ),
    );
  } catch (error) {
    throw new Error(
      `cannot read the demo certificates in ${fixtures.pathname}: ${
        explain(error)
      }`,
    );
  }
  const websockify = bridgeKind === "deno"
    ? undefined
    : findInPath("websockify");
  if (bridgeKind === "websockify" && websockify === undefined) {
    throw new Error(
      "cannot find websockify in PATH (apt-get install websockify)",
    );
  }
  const echo = startTlsEcho(cert, key);
  let bridge: DemoServer | undefined;
  try {
    bridge = websockify !== undefined
      ? await startWebsockify(websockify, echo.port)
      : await startDenoBridge(echo.port);
    await print(
      `demo: ${echo.description} on 127.0.0.1:${echo.port}\n` +
        `demo: ${bridge.description} on ws://127.0.0.1:${bridge.port}\n`,
    );
    await run(`ws://127.0.0.1:${bridge.port}`, {
      ...options,
      hostname: "localhost",
      caCerts: [ca],
      alpnProtocols: options.alpnProtocols ?? ["mimic-echo"],
    });
  } finally {
    await bridge?.close();
    await echo.close();
  }
}

const USAGE =
  `Usage: tls_over_websocket.ts [options] [<ws-url> --host <tls-name>]

Runs TLS through a WebSocket: resolves a 'tls' context over a 'websocket'
context, does the TLS handshake through the WebSocket (e.g. websockify in
front of a TLS server), prints what the handshake agreed on, sends a line
and prints the reply line.

With no URL, runs a demo on 127.0.0.1: a TLS echo server (Deno.listenTls with
tests/fixtures/localhost.pem), a WebSocket bridge to it (websockify when it
is in PATH, otherwise a Deno.serve bridge), and the client.

Options:
  --host <name>          the TLS server's name (SNI, and verified); required with a URL
  --ca-file <pem>        trust the CAs in this PEM file (default: the Mozilla roots)
  --message <text>       the line to send (default: "hello through a WebSocket")
  --bytes <n>            send n random bytes instead, to an echo server, and
                         check they come back (prints their SHA-256)
  --alpn <protocol>      offer this ALPN protocol (repeatable)
  --ws-protocol <name>   offer this WebSocket subprotocol (repeatable)
  --bridge <kind>        demo only: auto (default), websockify or deno
  --timeout <seconds>    give up after this long (default: 30)
  -h, --help             print this help
`;

/**
 * The command line.
 *
 * @param args The arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let hostname: string | undefined;
  let caFile: string | undefined;
  let message = "hello through a WebSocket";
  let bytes: number | undefined;
  let timeout = 30;
  let bridge: "auto" | "websockify" | "deno" = "auto";
  const alpn: string[] = [];
  const protocols: string[] = [];
  const urls: string[] = [];
  for (const [a, next] of eachArg(args)) {
    if (a === "-h" || a === "--help") {
      await print(USAGE);
      return 0;
    } else if (a === "--host") hostname = next();
    else if (a === "--ca-file") caFile = next();
    else if (a === "--message") message = next();
    else if (a === "--bytes") {
      bytes = Number(next());
      if (!Number.isInteger(bytes) || bytes < 0 || bytes > 1 << 30) {
        throw new UsageError("--bytes must be a whole number up to 1 GiB");
      }
    } else if (a === "--alpn") alpn.push(next());
    else if (a === "--ws-protocol") protocols.push(next());
    else if (a === "--bridge") {
      const kind = next();
      if (kind !== "auto" && kind !== "websockify" && kind !== "deno") {
        throw new UsageError("--bridge must be auto, websockify or deno");
      }
      bridge = kind;
    } else if (a === "--timeout") timeout = parseTimeout(next());
    else if (a.startsWith("-")) {
      throw new UsageError(`unknown option ${a}`);
    } else urls.push(a);
  }
  if (urls.length > 1) throw new UsageError("expected at most one URL");
  if (/[\r\n]/.test(message)) {
    throw new UsageError("--message must be one line");
  }
  const options = {
    message,
    bytes,
    signal: AbortSignal.timeout(timeout * 1000),
    ...(alpn.length > 0 ? { alpnProtocols: alpn } : {}),
    ...(protocols.length > 0 ? { protocols } : {}),
  };
  if (urls.length === 0) {
    if (hostname !== undefined || caFile !== undefined) {
      throw new UsageError("--host and --ca-file need a URL");
    }
    await demo(bridge, options);
    return 0;
  }
  if (hostname === undefined) {
    throw new UsageError("--host is required with a URL");
  }
  let caCerts: string[] | undefined;
  if (caFile !== undefined) {
    caCerts = await readCaFile(caFile);
  }
  await run(urls[0], {
    ...options,
    hostname,
    ...(caCerts === undefined ? {} : { caCerts }),
  });
  return 0;
}

if (import.meta.main) await runMain("tls_over_websocket", main);
