/**
 * OpenSSL as a TLS peer in tests: `openssl s_server` on 127.0.0.1 and a free
 * port, and `openssl s_client` against a port, both with the fixture CA.
 *
 * @module
 */

import { fixturePath as path } from "../_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Collects a child's output stream as text, in the background. */
export class Collector {
  text = "";
  readonly done: Promise<void>;
  #waiters: { re: RegExp; ok: (m: RegExpExecArray) => void }[] = [];
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.text += chunk;
        this.#waiters = this.#waiters.filter((w) => {
          const m = w.re.exec(this.text);
          if (m === null) return true;
          w.ok(m);
          return false;
        });
      }
    })();
  }
  /**
   * Resolves once `needle` (text, or a pattern: its match) was output;
   * rejects if the stream ends first.
   */
  waitFor(needle: string | RegExp): Promise<RegExpExecArray> {
    const re = typeof needle === "string"
      ? new RegExp(needle.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      : needle;
    const m = re.exec(this.text);
    if (m !== null) return Promise.resolve(m);
    return new Promise((ok, ko) => {
      this.#waiters.push({ re, ok });
      this.done.then(() =>
        ko(new Error(`output ended without ${needle}: ${this.text}`))
      );
    });
  }
}

/** How {@linkcode OpensslServer.start} runs `openssl s_server`. */
export interface OpensslServerOptions {
  /** `-rev`: answer each line reversed (default true). */
  rev?: boolean;
  /** `-naccept`: how many connections, then exit (default 1; null: no limit). */
  naccept?: number | null;
  /** The fixture certificate and key (localhost.pem, .key) first (default false). */
  fixtureCert?: boolean;
}

/**
 * `openssl s_server` on 127.0.0.1 and a random free port, killed on dispose.
 * With `-rev` it answers each line reversed; without, it prints what the
 * client sends (and each connection's details) and sends its stdin.
 */
export class OpensslServer implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly stdout: Collector;
  readonly stderr: Collector;
  port = 0;

  constructor(args: string[], options: OpensslServerOptions = {}) {
    const { rev = true, naccept = 1, fixtureCert = false } = options;
    this.child = new Deno.Command("openssl", {
      args: [
        "s_server",
        "-accept",
        "127.0.0.1:0",
        ...(naccept === null ? [] : ["-naccept", String(naccept)]),
        ...(rev ? ["-rev"] : []),
        ...(fixtureCert
          ? ["-cert", path("localhost.pem"), "-key", path("localhost.key")]
          : []),
        ...args,
      ],
      // Kept open: s_server quits at the end of its stdin.
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.stdout = new Collector(this.child.stdout);
    this.stderr = new Collector(this.child.stderr);
  }

  /** Starts it and waits for "ACCEPT 127.0.0.1:PORT" on its stdout. */
  static async start(
    args: string[],
    options: OpensslServerOptions = {},
  ): Promise<OpensslServer> {
    const server = new OpensslServer(args, options);
    try {
      const m = await server.stdout.waitFor(/ACCEPT 127\.0\.0\.1:(\d+)\n/);
      server.port = Number(m[1]);
    } catch (error) {
      await server[Symbol.asyncDispose]();
      throw error;
    }
    return server;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.child.status;
    await this.child.stdin.close().catch(() => {});
    await this.stdout.done;
    await this.stderr.done;
  }
}

/**
 * Runs `openssl s_client` against 127.0.0.1:port, feeding it `input`;
 * `-brief` unless `brief: false` (the full output names a resumed session,
 * exported keying material, ...). Killed after 30 s.
 */
export async function opensslClient(
  port: number,
  args: string[],
  input = "hello\n",
  options: { brief?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-CAfile",
      path("ca.pem"),
      "-servername",
      "localhost",
      "-verify_hostname",
      "localhost",
      "-verify_return_error",
      "-ign_eof",
      ...(options.brief === false ? [] : ["-brief"]),
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(input));
    await writer.close();
    const { code, stdout, stderr } = await child.output();
    return {
      code,
      stdout: decoder.decode(stdout),
      stderr: decoder.decode(stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}
