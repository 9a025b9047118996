/**
 * mimic's tutorial: a line-based ping-pong, over whatever transport a URL
 * names.
 *
 * The protocol is written once, against {@linkcode Flow} only: the client
 * sends `ping\n` and expects `pong\n`, the server answers `pong\n` to each
 * `ping\n`. The client gets its flow from {@linkcode resolve} and a
 * {@linkcode Context} (here made by `fromUri`), so it never knows whether
 * it talks over TCP, a Unix socket or an in-memory pipe; the server side is
 * {@linkcode serve} with a handler, for any listener.
 *
 * With no arguments it runs the demo on loopback: a TCP server on
 * 127.0.0.1 (port 0), a Unix socket server in a temporary directory and a
 * TLS server (TCP on 127.0.0.1, with the test certificate of
 * `tests/fixtures/`), the same client over each, then shuts them down. For
 * TLS the server is {@linkcode serve} with its `tls` option, and the client
 * is `fromUri("tls://localhost:<port>")` with the test CA added as
 * {@linkcode tlsOptions}: the protocol code does not change.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-write examples/ping_pong.ts
 * deno run --allow-net --allow-read --allow-write examples/ping_pong.ts --server unix:/tmp/ping.sock
 * deno run --allow-net --allow-read --allow-write examples/ping_pong.ts --client unix:/tmp/ping.sock
 * deno run --allow-net --allow-read --allow-write examples/ping_pong.ts --server tls://127.0.0.1:8443 \
 *   --cert-file tests/fixtures/localhost.pem --key-file tests/fixtures/localhost.key
 * deno run --allow-net --allow-read --allow-write examples/ping_pong.ts --client tls://localhost:8443 \
 *   --ca-file tests/fixtures/ca.pem
 * ```
 *
 * Adding a transport to the demo is one entry in {@linkcode demos}.
 *
 * @module
 */

import {
  type Context,
  empty,
  type Flow,
  resolve,
  type ResolveOptions,
} from "../mod.ts";
import {
  serve,
  type ServeOptions,
  type TlsServerOptions,
} from "../src/serve.ts";
import { fromUri, host, path, port, scheme, tlsOptions } from "../src/uri.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The longest line either side accepts, newline excluded. */
const MAX_LINE = 1024;

// --- 1. The protocol, over any Flow -----------------------------------------

/** Writes all of `bytes`: a flow's `write` may write fewer. */
async function writeAll(flow: Flow, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) {
    off += await flow.write(bytes.subarray(off));
  }
}

/**
 * Reads `\n`-terminated lines from a flow.
 *
 * @example
 * ```ts
 * import { pipe } from "../src/pipe.ts";
 * import { LineReader } from "./ping_pong.ts";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * await a.write(new TextEncoder().encode("one\ntwo\n"));
 * await a.closeWrite();
 * const lines = new LineReader(b);
 * assert.equal(await lines.readLine(), "one");
 * assert.equal(await lines.readLine(), "two");
 * assert.equal(await lines.readLine(), null);
 * a.close();
 * b.close();
 * ```
 */
export class LineReader {
  #flow: Flow;
  #buf = new Uint8Array(4096);
  #start = 0;
  #end = 0;

  /**
   * Reads lines from `flow`.
   *
   * @param flow The flow to read.
   */
  constructor(flow: Flow) {
    this.#flow = flow;
  }

  /**
   * The next line, without its `\n`.
   *
   * @returns The line, or `null` at end of flow with nothing buffered.
   * @throws {TypeError} When the flow ends inside a line or a line is too long.
   */
  async readLine(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.subarray(this.#start, this.#end).indexOf(10);
      if (nl >= 0) {
        const line = this.#buf.subarray(this.#start, this.#start + nl);
        this.#start += nl + 1;
        return decoder.decode(line);
      }
      if (this.#end - this.#start > MAX_LINE) {
        throw new TypeError(`Cannot read line: longer than ${MAX_LINE} bytes`);
      }
      if (this.#end === this.#buf.length) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.#flow.read(this.#buf.subarray(this.#end));
      if (n === null) {
        if (this.#start === this.#end) return null;
        throw new TypeError("Cannot read line: the flow ended inside a line");
      }
      this.#end += n;
    }
  }
}

/**
 * The client side of the protocol: `rounds` times, sends `ping` and expects
 * `pong`; then half-closes and expects the server to end the flow too.
 *
 * @example Over an in-memory pipe
 * ```ts
 * import { pipe } from "../src/pipe.ts";
 * import { answerPings, pingPong } from "./ping_pong.ts";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const [, answered] = await Promise.all([pingPong(a, 3), answerPings(b)]);
 * assert.equal(answered, 3);
 * a.close();
 * b.close();
 * ```
 *
 * @param flow The flow to the server.
 * @param rounds How many round trips.
 * @returns Once every `pong` came back and the server ended the flow.
 * @throws {TypeError} When the server answers something else.
 */
export async function pingPong(flow: Flow, rounds: number): Promise<void> {
  const lines = new LineReader(flow);
  const ping = encoder.encode("ping\n");
  for (let i = 1; i <= rounds; i++) {
    await writeAll(flow, ping);
    const line = await lines.readLine();
    if (line !== "pong") {
      throw new TypeError(
        `Cannot play ping-pong: round ${i} expected "pong", got ${
          line === null ? "end of flow" : JSON.stringify(line)
        }`,
      );
    }
  }
  await flow.closeWrite();
  const extra = await lines.readLine();
  if (extra !== null) {
    throw new TypeError(
      `Cannot play ping-pong: expected end of flow, got ${
        JSON.stringify(extra)
      }`,
    );
  }
}

/**
 * The server side of the protocol: answers `pong` to each `ping` line until
 * end of flow; any other line gets an error line and ends the exchange.
 *
 * @example As a `serve` handler
 * ```ts ignore
 * import { serve } from "../src/serve.ts";
 * import { answerPings } from "./ping_pong.ts";
 *
 * const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), answerPings);
 * await server.shutdown();
 * ```
 *
 * @param flow The flow from a client.
 * @returns The number of pings answered.
 * @throws {TypeError} When the client sends something other than `ping`.
 */
export async function answerPings(flow: Flow): Promise<number> {
  const lines = new LineReader(flow);
  const pong = encoder.encode("pong\n");
  let answered = 0;
  for (let line; (line = await lines.readLine()) !== null;) {
    if (line !== "ping") {
      await writeAll(flow, encoder.encode("error: expected ping\n"));
      throw new TypeError(
        `Cannot play ping-pong: expected "ping", got ${JSON.stringify(line)}`,
      );
    }
    await writeAll(flow, pong);
    answered++;
  }
  await flow.closeWrite();
  return answered;
}

// --- 2. The client: a context in, a result out ------------------------------

/** Options of {@linkcode client}. */
export interface ClientOptions extends ResolveOptions {
  /**
   * How many round trips.
   *
   * @default {10}
   */
  rounds?: number;
}

/** What {@linkcode client} did. */
export interface ClientResult {
  /** The protocol `resolve` connected with (from its trace). */
  protocol: string;
  /** The round trips made. */
  rounds: number;
  /** The time taken, connecting included, in milliseconds. */
  milliseconds: number;
}

/**
 * Resolves `ctx` to a flow and plays {@linkcode pingPong} over it. It only
 * sees a {@linkcode Flow}: the transport is whatever the context resolves to.
 *
 * @example Over a pipe listener
 * ```ts
 * import { empty } from "../mod.ts";
 * import { listenPipe, pipeProtocol } from "../src/pipe.ts";
 * import { serve } from "../src/serve.ts";
 * import { answerPings, client } from "./ping_pong.ts";
 * import assert from "node:assert/strict";
 *
 * const listener = listenPipe();
 * await using _server = serve(listener, async (flow) => {
 *   await answerPings(flow);
 * });
 * const ctx = empty.add(pipeProtocol.endpoint, listener);
 * const result = await client(ctx, { rounds: 3 });
 * assert.equal(result.protocol, "pipe");
 * ```
 *
 * @param ctx The context to resolve (e.g. `fromUri("tcp://127.0.0.1:7000")`).
 * @param options The number of rounds; a signal and a trace hook for `resolve`.
 * @returns The protocol used, the rounds and the time taken.
 */
export async function client(
  ctx: Context,
  options: ClientOptions = {},
): Promise<ClientResult> {
  const { rounds = 10, signal, onEvent } = options;
  let protocol = "unknown";
  const start = performance.now();
  const flow = await resolve(ctx, {
    signal,
    onEvent: (event) => {
      if (event.type === "connected") protocol = event.protocol;
      onEvent?.(event);
    },
  });
  try {
    await pingPong(flow, rounds);
  } finally {
    flow.close();
  }
  return { protocol, rounds, milliseconds: performance.now() - start };
}

// --- 3. The server: a listener per scheme -----------------------------------

/**
 * A `unix:` URL for a socket path, percent-encoding what needs it.
 *
 * @example
 * ```ts
 * import { unixUri } from "./ping_pong.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(unixUri("/tmp/my dir/s.sock"), "unix:/tmp/my%20dir/s.sock");
 * ```
 *
 * @param socket The socket's file path.
 * @returns The URL.
 */
export function unixUri(socket: string): string {
  return `unix:${socket.split("/").map(encodeURIComponent).join("/")}`;
}

/**
 * Listens where a `fromUri` context says: `tcp://host:port`, `unix:/path`,
 * or `tls://host:port` (a TCP listener: TLS is `serve`'s `tls` option).
 */
function listen(uri: string): Deno.Listener {
  const ctx = fromUri(uri);
  switch (ctx.get(scheme)) {
    case "tcp":
    case "tls":
      return Deno.listen({ hostname: ctx.get(host)!, port: ctx.get(port)! });
    case "unix":
      return Deno.listen({ transport: "unix", path: ctx.get(path)! });
    default:
      throw new TypeError(
        `Cannot serve ${uri}: only tcp://, tls:// and unix: URLs can be served`,
      );
  }
}

/** Reads one of the test certificates or keys of `tests/fixtures/`. */
function fixture(name: string): Promise<string> {
  return Deno.readTextFile(
    new URL(`../tests/fixtures/${name}`, import.meta.url),
  );
}

// --- 4. The demo: one entry per transport -----------------------------------

/** A transport of the demo: how to listen, and the URL clients resolve. */
export interface Demo {
  /** The transport's name, as printed. */
  name: string;
  /** Listens on loopback; `dir` is a fresh temporary directory. */
  listen(dir: string): Deno.Listener;
  /** The URL of the listener. */
  uri(listener: Deno.Listener): string;
  /**
   * The client's context, under the URL's values (e.g. the CA to trust, as
   * {@linkcode tlsOptions}); made when the demo runs. Default `empty`.
   */
  base?(): Promise<Context>;
  /** The server's TLS (see `serve`'s `tls`), made when the demo runs. */
  tls?(): Promise<TlsServerOptions>;
  /** Upgrades each accepted flow (after TLS, if any); see `serve`. */
  upgrade?: ServeOptions["upgrade"];
}

/**
 * The transports the demo runs, in order. The TLS entry listens as TCP,
 * gives a `tls://` URL, has `serve` accept TLS with the test certificate
 * and gives the client the test CA as {@linkcode tlsOptions}.
 *
 * @example
 * ```ts
 * import { demos } from "./ping_pong.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(demos.map((d) => d.name), ["tcp", "unix", "tls"]);
 * ```
 */
export const demos: Demo[] = [
  {
    name: "tcp",
    listen: () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    uri: (l) => `tcp://127.0.0.1:${(l.addr as Deno.NetAddr).port}`,
  },
  {
    name: "unix",
    listen: (dir) =>
      Deno.listen({ transport: "unix", path: `${dir}/ping.sock` }),
    uri: (l) => unixUri((l.addr as Deno.UnixAddr).path),
  },
  {
    name: "tls",
    listen: () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    // The name the certificate is for (it also has the IP 127.0.0.1).
    uri: (l) => `tls://localhost:${(l.addr as Deno.NetAddr).port}`,
    tls: async () => ({
      cert: await fixture("localhost.pem"),
      key: await fixture("localhost.key"),
    }),
    base: async () =>
      empty.add(tlsOptions, { caCerts: [await fixture("ca.pem")] }),
  },
];

function format(ms: number): string {
  return ms < 10 ? ms.toFixed(2) : ms.toFixed(1);
}

/** Runs every demo: a server, the same client over it, a shutdown. */
async function runDemo(rounds: number): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "mimic_ping_pong_" });
  let failures = 0;
  try {
    console.log(`ping-pong: ${rounds} round trips over each transport`);
    for (const demo of demos) {
      const tls = await demo.tls?.();
      const base = await demo.base?.() ?? empty;
      const listener = demo.listen(dir);
      const uri = demo.uri(listener);
      let answered = 0;
      const server = serve(listener, async (flow) => {
        answered += await answerPings(flow);
      }, {
        tls,
        upgrade: demo.upgrade,
        closeOnShutdown: true,
        onError: (e) => console.error(`${demo.name} server: ${message(e)}`),
      });
      try {
        const ctx = fromUri(uri, base);
        const r = await client(ctx, { rounds });
        console.log(
          `${
            demo.name.padEnd(5)
          } ${uri}: ${r.rounds} round trips over ${r.protocol} in ${
            format(r.milliseconds)
          } ms`,
        );
      } catch (e) {
        failures++;
        console.error(`${demo.name.padEnd(5)} ${uri}: failed: ${message(e)}`);
      } finally {
        await server.shutdown();
      }
      console.log(
        `${demo.name.padEnd(5)} server answered ${answered} pings, shut down`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  console.log(failures === 0 ? "ok" : `${failures} failed`);
  return failures === 0 ? 0 : 1;
}

/** Files given on the command line. */
interface Files {
  /** PEM CA certificates the client trusts for `tls://`. */
  ca?: string;
  /** The server's PEM certificate chain for `tls://`. */
  cert?: string;
  /** The server's PEM private key for `tls://`. */
  key?: string;
}

/** Runs one client over `uri`. */
async function runClient(
  uri: string,
  rounds: number,
  files: Files,
): Promise<number> {
  let base = empty;
  if (files.ca !== undefined) {
    base = base.add(tlsOptions, {
      caCerts: [await Deno.readTextFile(files.ca)],
    });
  }
  const r = await client(fromUri(uri, base), { rounds });
  console.log(
    `${uri}: ${r.rounds} round trips over ${r.protocol} in ${
      format(r.milliseconds)
    } ms`,
  );
  return 0;
}

/** Serves on `uri` until SIGINT or SIGTERM. */
async function runServer(uri: string, files: Files): Promise<number> {
  const secure = fromUri(uri).get(scheme) === "tls";
  if (secure !== (files.cert !== undefined && files.key !== undefined)) {
    throw new TypeError(
      secure
        ? `Cannot serve ${uri}: --cert-file and --key-file are required`
        : `Cannot serve ${uri}: --cert-file and --key-file are for tls:// only`,
    );
  }
  const tls = secure
    ? {
      cert: await Deno.readTextFile(files.cert!),
      key: await Deno.readTextFile(files.key!),
    }
    : undefined;
  const listener = listen(uri);
  const controller = new AbortController();
  const stop = () => controller.abort();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  let answered = 0;
  const server = serve(listener, async (flow) => {
    answered += await answerPings(flow);
  }, {
    signal: controller.signal,
    tls,
    closeOnShutdown: true,
    onError: (e) => console.error(`server: ${message(e)}`),
  });
  const addr = listener.addr;
  const where = addr.transport === "tcp"
    ? `${secure ? "tls" : "tcp"}://${
      addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname
    }:${addr.port}`
    : uri;
  console.log(`serving ping-pong on ${where}`);
  await server.finished;
  for (const s of signals) Deno.removeSignalListener(s, stop);
  if (addr.transport === "unix") {
    await Deno.remove(addr.path).catch(() => {});
  }
  console.log(`answered ${answered} pings, shut down`);
  return 0;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const USAGE = `Usage: ping_pong.ts [--rounds N] [--client URI | --server URI]

A line-based ping-pong over any transport mimic resolves.

  (no option)      run the demo: a TCP, a Unix socket and a TLS server on
                   loopback, the same client over each, then shut down
  --client URI     play against a server at URI (tcp://host:port,
                   unix:/path, tls://host:port)
  --server URI     serve at URI (tcp://host:port, unix:/path,
                   tls://host:port) until Ctrl-C
  --ca-file PEM    the CA certificates a tls:// client trusts (default:
                   the built-in Mozilla roots)
  --cert-file PEM  the certificate chain of a tls:// server
  --key-file PEM   the private key of a tls:// server
  --rounds N       round trips per client (default: 100)
  -h, --help       print this help

Permissions: --allow-net --allow-read --allow-write`;

/**
 * Runs the example with command-line arguments.
 *
 * @example
 * ```ts ignore
 * import { main } from "./ping_pong.ts";
 *
 * Deno.exitCode = await main(["--client", "tcp://127.0.0.1:7000"]);
 * ```
 *
 * @param args The arguments, as `Deno.args`.
 * @returns The exit code: 0 on success, 1 when a client failed, 2 on a usage error.
 */
export async function main(args: string[]): Promise<number> {
  let mode: "demo" | "client" | "server" = "demo";
  let uri = "";
  let rounds = 100;
  const files: Files = {};
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].startsWith("--") && args[i].includes("=")
      ? [
        args[i].slice(0, args[i].indexOf("=")),
        args[i].slice(args[i].indexOf("=") + 1),
      ]
      : [args[i], undefined];
    const operand = (): string | undefined => inline ?? args[++i];
    switch (flag) {
      case "-h":
      case "--help":
        console.log(USAGE);
        return 0;
      case "--client":
      case "--server": {
        const x = operand();
        if (x === undefined || mode !== "demo") {
          return usage(
            `${flag} needs one URI, and only one of --client, --server`,
          );
        }
        mode = flag === "--client" ? "client" : "server";
        uri = x;
        break;
      }
      case "--ca-file":
      case "--cert-file":
      case "--key-file": {
        const x = operand();
        if (x === undefined || x === "") {
          return usage(`${flag} needs a file name`);
        }
        const which = ({
          "--ca-file": "ca",
          "--cert-file": "cert",
          "--key-file": "key",
        } as const)[flag];
        files[which] = x;
        break;
      }
      case "--rounds": {
        const n = Number(operand());
        if (!Number.isInteger(n) || n < 1) {
          return usage("--rounds needs a positive integer");
        }
        rounds = n;
        break;
      }
      default:
        return usage(`unknown argument ${JSON.stringify(args[i])}`);
    }
  }
  if (mode === "demo" && Object.keys(files).length > 0) {
    return usage(
      "--ca-file, --cert-file and --key-file need --client or --server",
    );
  }
  if (
    mode === "client" && (files.cert !== undefined || files.key !== undefined)
  ) {
    return usage("--cert-file and --key-file are for --server");
  }
  if (mode === "server" && files.ca !== undefined) {
    return usage("--ca-file is for --client");
  }
  try {
    if (mode === "client") return await runClient(uri, rounds, files);
    if (mode === "server") return await runServer(uri, files);
    return await runDemo(rounds);
  } catch (e) {
    console.error(`error: ${message(e)}`);
    return 1;
  }
}

function usage(problem: string): number {
  console.error(`error: ${problem}\n\n${USAGE}`);
  return 2;
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);
