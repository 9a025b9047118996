/**
 * Go's crypto/tls as a test peer: `tests/servers/go_tls/main.go` (standard
 * library only), built once per test process with `/usr/local/go/bin/go`
 * (or `go` on PATH, or $GO) into a temporary directory, then run as a TLS
 * server ({@linkcode startGoTlsServer}) or client ({@linkcode runGoTlsClient}).
 * Each connection is reported as one JSON line ({@linkcode GoTlsReport}).
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** What Go reports for one connection. */
export interface GoTlsReport {
  /** "TLSv1.2" or "TLSv1.3". */
  version: string;
  /** IANA name of the suite. */
  cipherSuite: string;
  /** IANA name of the key exchange group ("X25519MLKEM768", "x25519", "secp256r1", ...). */
  group: string;
  /** Go resumed the session. */
  resumed: boolean;
  /** The ALPN protocol agreed, or "". */
  alpn: string;
  /** The SNI (server side). */
  serverName: string;
  /** The exporter's output, hex, with `exportLabel`. */
  exporter?: string;
  /** How many certificates the peer sent. */
  peerCertificates: number;
  /** Go accepted Encrypted Client Hello (server side). */
  ech: boolean;
  /** What the client read to the end (client side). */
  received: string;
  /** A handshake or exporter error. */
  error?: string;
}

/** Options of both sides. */
export interface GoTlsOptions {
  /** Go's curve preferences: "X25519MLKEM768", "x25519", "secp256r1", "secp384r1". */
  curves?: string[];
  /** "1.2" or "1.3". */
  min?: string;
  /** "1.2" or "1.3". */
  max?: string;
  /** IANA cipher suite names (Go applies them to TLS 1.2 only). */
  ciphers?: string[];
  /** ALPN protocols. */
  alpn?: string[];
  /** A file Go appends its NSS key log lines to. */
  keyLogFile?: string;
  /** Exporter label: the report gets `exporter`. */
  exportLabel?: string;
  /** Exporter length (default 32). */
  exportLength?: number;
  /** Exporter context (absent: no context). */
  exportContext?: Uint8Array;
  /** Certificate chain file (server; client mTLS). */
  certFile?: string;
  /** Key file. */
  keyFile?: string;
  /** Client: trusted CA file; server: required client CA file. */
  caFile?: string;
  /** Text written after the handshake (client; server: instead of echoing). */
  send?: string;
  /** How many connections (server: 0 = until closed; default 1). */
  count?: number;
  /**
   * Server: accept Encrypted Client Hello with a fresh X25519 key and this
   * public name; the server's `echConfigList` is then set.
   */
  echPublicName?: string;
}

let built: Promise<string> | undefined;

function goBinary(): string {
  const env = Deno.env.get("GO");
  if (env) return env;
  try {
    Deno.statSync("/usr/local/go/bin/go");
    return "/usr/local/go/bin/go";
  } catch {
    return "go";
  }
}

/**
 * Builds go_tls once per process; resolves to the binary's path.
 *
 * @returns The path.
 */
export function buildGoTls(): Promise<string> {
  built ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "mimic-go-tls-" });
    const out = `${dir}/go_tls`;
    const src = fileURLToPath(new URL("./go_tls/", import.meta.url));
    const cache = Deno.env.get("GOCACHE") ??
      `${Deno.env.get("HOME") ?? dir}/.cache/go-build`;
    const result = await new Deno.Command(goBinary(), {
      args: ["build", "-o", out, "."],
      cwd: src,
      env: {
        GOFLAGS: "-mod=mod",
        GOTOOLCHAIN: "local",
        GOCACHE: cache,
        GOPROXY: "off",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!result.success) {
      throw new Error(
        `go build of tests/servers/go_tls failed: ${
          new TextDecoder().decode(result.stderr)
        }`,
      );
    }
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Best effort.
      }
    });
    return out;
  })();
  built.catch(() => (built = undefined));
  return built;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function flags(o: GoTlsOptions): string[] {
  const a: string[] = [];
  if (o.curves) a.push("-curves", o.curves.join(","));
  if (o.min) a.push("-min", o.min);
  if (o.max) a.push("-max", o.max);
  if (o.ciphers) a.push("-ciphers", o.ciphers.join(","));
  if (o.alpn) a.push("-alpn", o.alpn.join(","));
  if (o.keyLogFile) a.push("-keylog", o.keyLogFile);
  if (o.exportLabel !== undefined) a.push("-export-label", o.exportLabel);
  if (o.exportLength !== undefined) {
    a.push("-export-len", String(o.exportLength));
  }
  if (o.exportContext !== undefined) {
    a.push(`-export-context=${hex(o.exportContext)}`);
  }
  if (o.certFile) a.push("-cert", o.certFile);
  if (o.keyFile) a.push("-key", o.keyFile);
  if (o.caFile) a.push("-ca", o.caFile);
  if (o.send !== undefined) a.push("-send", o.send);
  if (o.count !== undefined) a.push("-count", String(o.count));
  if (o.echPublicName !== undefined) {
    a.push("-ech-public-name", o.echPublicName);
  }
  return a;
}

/** Reads JSON lines from a child's stdout. */
class Lines {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buf = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }
  /** The next line, or null at the end. */
  async next(): Promise<string | null> {
    for (;;) {
      const i = this.#buf.indexOf("\n");
      if (i >= 0) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#buf += value;
    }
  }
  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

/** A running go_tls server. */
export interface GoTlsServer extends AsyncDisposable {
  /** Its loopback port. */
  port: number;
  /** With `echPublicName`: the ECHConfigList a client needs. */
  echConfigList?: Uint8Array;
  /** The next connection's report (rejects if the server exits first). */
  next(): Promise<GoTlsReport>;
  /** Kills the server and waits for it. */
  close(): Promise<void>;
}

/**
 * Starts go_tls as a server on 127.0.0.1 and a free port.
 *
 * @param options What Go allows; `certFile` and `keyFile` are required.
 * @returns The server, once it listens.
 */
export async function startGoTlsServer(
  options: GoTlsOptions,
): Promise<GoTlsServer> {
  const bin = await buildGoTls();
  const child = new Deno.Command(bin, {
    args: ["-mode", "server", ...flags(options)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = new Lines(child.stdout);
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    closed ??= (async () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await lines.cancel();
      await stderr;
    })();
  const first = await lines.next();
  if (first === null) {
    await close();
    throw new Error(`go_tls server exited: ${await stderr}`);
  }
  const { port, echConfigList } = JSON.parse(first) as {
    port: number;
    echConfigList?: string;
  };
  return {
    port,
    echConfigList: echConfigList === undefined
      ? undefined
      : Uint8Array.from(atob(echConfigList), (c) => c.charCodeAt(0)),
    async next(): Promise<GoTlsReport> {
      const line = await lines.next();
      if (line === null) {
        throw new Error(`go_tls server ended: ${await stderr}`);
      }
      return JSON.parse(line) as GoTlsReport;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Runs go_tls as a client against 127.0.0.1:port to its end (60 s at most).
 *
 * @param port The server's port.
 * @param options What Go allows, and the server name (`serverName`, default "localhost").
 * @returns One report per connection, and the exit code.
 */
export async function runGoTlsClient(
  port: number,
  options: GoTlsOptions & { serverName?: string; insecure?: boolean },
): Promise<{ code: number; reports: GoTlsReport[]; stderr: string }> {
  const bin = await buildGoTls();
  const args = [
    "-mode",
    "client",
    "-connect",
    `127.0.0.1:${port}`,
    "-servername",
    options.serverName ?? "localhost",
    ...flags(options),
  ];
  if (options.insecure) args.push("-insecure");
  const child = new Deno.Command(bin, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
  }, 60_000);
  try {
    const { code, stdout, stderr } = await child.output();
    const text = new TextDecoder().decode(stdout);
    const reports = text.split("\n").filter((l) => l !== "").map((l) =>
      JSON.parse(l) as GoTlsReport
    );
    return { code, reports, stderr: new TextDecoder().decode(stderr) };
  } finally {
    clearTimeout(timer);
  }
}
