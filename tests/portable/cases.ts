/**
 * The portable suite's cases and its tiny runner: plain TypeScript that uses
 * only the portable entry points (`mod.ts`, `src/pipe.ts`, `src/tls.ts`,
 * `src/websocket.ts`), no `Deno` global and no `node:` module, so the same
 * bundle runs in Node, Bun and a browser. Runtime-specific entries
 * (`node.ts`, `browser.ts`) add their own cases and print the summary.
 *
 * @module
 */

import { empty, errors, resolve, unfold } from "../../mod.ts";
import { listenPipe, pipe, pipeProtocol } from "../../src/pipe.ts";
import {
  acceptTls,
  startTls,
  tls,
  TlsError,
  type TlsFlow,
} from "../../src/tls.ts";
import { fromUri, host, path, port } from "../../src/uri.ts";
import { engineInfo } from "../../src/_engine.ts";

/** What the runner hands every runtime: PEMs and where the servers are. */
export interface PortableConfig {
  /** The fixture CA, PEM. */
  ca: string;
  /** The fixture `localhost` certificate, PEM. */
  cert: string;
  /** Its key, PEM. */
  key: string;
  /** An `openssl s_server -www` on 127.0.0.1 (TLS over node:net). */
  opensslPort?: number;
  /** A websockify on 127.0.0.1 bridging to that s_server (TLS over WebSocket). */
  websockifyPort?: number;
  /** A Dante SOCKS5 server (no authentication) on 127.0.0.1. */
  dantePort?: number;
  /** A tinyproxy (HTTP CONNECT) on 127.0.0.1. */
  tinyproxyPort?: number;
}

/** One case: a name and an async body that throws on failure. */
export interface Case {
  name: string;
  /** Throws on failure; may resolve to a note printed after the name. */
  run: () => Promise<string | void>;
}

/** The outcome of a run. */
export interface Summary {
  passed: number;
  failed: number;
  lines: string[];
}

/** Throws `message` unless `cond`. */
export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** Throws unless `p` rejects with an error that `test` accepts. */
export async function rejects(
  p: Promise<unknown>,
  test: (e: unknown) => boolean,
  what: string,
): Promise<void> {
  let error: unknown;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  if (error === undefined) throw new Error(`${what}: did not reject`);
  if (!test(error)) {
    throw new Error(`${what}: rejected with ${describe(error)}`);
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Runs each case with a time limit; every outcome is one line, then the summary. */
export async function runCases(
  runtime: string,
  cases: readonly Case[],
  log: (line: string) => void,
  timeoutMs = 30_000,
): Promise<Summary> {
  const summary: Summary = { passed: 0, failed: 0, lines: [] };
  const out = (line: string) => {
    summary.lines.push(line);
    log(line);
  };
  for (const c of cases) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const note = await Promise.race([
        c.run(),
        new Promise<never>((_, ko) => {
          timer = setTimeout(
            () => ko(new Error(`timed out after ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
      summary.passed++;
      out(`${runtime}: ok ${c.name}${note ? ` (${note})` : ""}`);
    } catch (e) {
      summary.failed++;
      out(`${runtime}: FAILED ${c.name}: ${describe(e)}`);
    } finally {
      clearTimeout(timer);
    }
  }
  out(`${runtime}: ${summary.passed} passed, ${summary.failed} failed`);
  return summary;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Random bytes (crypto.getRandomValues is portable; 64 KiB at a time). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** Reads `flow` to its end. */
export async function readAll(
  flow: { read(p: Uint8Array): Promise<number | null> },
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await flow.read(buf)) !== null;) {
    chunks.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Writes all of `data`. */
export async function writeAll(
  flow: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  for (let off = 0; off < data.length;) {
    off += await flow.write(data.subarray(off, off + 100_000));
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function tlsPipe(
  config: PortableConfig,
  hostname = "localhost",
): Promise<[TlsFlow, TlsFlow]> {
  const [a, b] = pipe();
  const server = acceptTls(b, {
    cert: config.cert,
    key: config.key,
    alpnProtocols: ["mimic"],
  });
  server.catch(() => b.close());
  try {
    const client = await startTls(a, {
      hostname,
      caCerts: [config.ca],
      alpnProtocols: ["mimic"],
    });
    return [client, await server];
  } catch (e) {
    a.close();
    throw e;
  }
}

/**
 * Sends an HTTP/1.0 GET over a TLS flow to `openssl s_server -www` and
 * checks its answer and the close_notify that ends it (and the name the
 * client sent: `null` when it connected to an IP address).
 */
export async function getFromOpenssl(
  flow: TlsFlow,
  serverName: string | null = "localhost",
): Promise<void> {
  const info = await flow.handshake();
  check(info.serverName === serverName, `serverName ${info.serverName}`);
  await writeAll(flow, enc.encode("GET / HTTP/1.0\r\n\r\n"));
  const text = dec.decode(await readAll(flow)); // null only after close_notify
  check(/^HTTP\/1\.0 200 ok/i.test(text), `answer: ${text.slice(0, 40)}`);
  check(text.includes("Protocol"), "no s_server status page");
  flow.close();
}

/** The cases every runtime runs: TLS over an in-memory pipe, and the error semantics off Deno. */
export function pipeCases(config: PortableConfig): Case[] {
  return [
    {
      name:
        "the TLS engine loads and shakes hands over a pipe (TLS 1.3, ALPN, SNI)",
      run: async () => {
        const [client, server] = await tlsPipe(config);
        const c = await client.handshake();
        const s = await server.handshake();
        check(c.protocol === "TLSv1.3", `protocol ${c.protocol}`);
        check(c.alpnProtocol === "mimic", `alpn ${c.alpnProtocol}`);
        check(s.serverName === "localhost", `serverName ${s.serverName}`);
        check(c.cipherSuite === s.cipherSuite, "cipher suites differ");
        check(c.peerCertificates.length >= 1, "no peer certificate");
        client.close();
        server.close();
        const engine = await engineInfo();
        return `${c.cipherSuite}; record protection: ${
          engine.hostAead ?? "the engine's own ciphers"
        }, self-test ${engine.selfTest}`;
      },
    },
    {
      name: "TLS over a pipe moves 1 MiB each way at once",
      run: async () => {
        const [client, server] = await tlsPipe(config);
        const up = randomBytes(1024 * 1024);
        const down = randomBytes(1024 * 1024);
        const [gotUp, gotDown] = await Promise.all([
          readAll(server),
          readAll(client),
          writeAll(client, up).then(() => client.closeWrite()),
          writeAll(server, down).then(() => server.closeWrite()),
        ]);
        check(equalBytes(gotUp, up), "client-to-server bytes differ");
        check(equalBytes(gotDown, down), "server-to-client bytes differ");
        client.close();
        server.close();
      },
    },
    {
      name:
        "close_notify: closeWrite() is end of flow for the peer, which still writes",
      run: async () => {
        const [client, server] = await tlsPipe(config);
        await writeAll(client, enc.encode("request"));
        await client.closeWrite();
        check(dec.decode(await readAll(server)) === "request", "request");
        check(await server.read(new Uint8Array(1)) === null, "null again");
        await writeAll(server, enc.encode("answer"));
        await server.closeWrite();
        check(dec.decode(await readAll(client)) === "answer", "answer");
        await rejects(
          client.write(enc.encode("x")),
          (e) => e instanceof errors.BrokenPipe && e.name === "BrokenPipe",
          "write after closeWrite",
        );
        client.close();
        server.close();
      },
    },
    {
      name:
        "a closed TLS flow: BadResource named as Deno's; the peer reads end of flow",
      run: async () => {
        const [client, server] = await tlsPipe(config);
        const pending = server.read(new Uint8Array(8));
        client.close(); // close_notify, then the pipe closes
        check(await pending === null, "peer did not read end of flow");
        await rejects(
          client.read(new Uint8Array(1)),
          (e) => e instanceof errors.BadResource && e.name === "BadResource",
          "read after close",
        );
        server.close();
      },
    },
    {
      name:
        "a certificate for another name fails with TlsError NotValidForName",
      run: async () => {
        await rejects(
          tlsPipe(config, "example.com"),
          (e) => e instanceof TlsError && e.code === "NotValidForName",
          "wrong name",
        );
      },
    },
    {
      name:
        "pipe errors off Deno: close() rejects pending reads, the peer reads null",
      run: async () => {
        const [a, b] = pipe();
        const reading = b.read(new Uint8Array(4));
        a.close();
        check(await reading === null, "peer read was not null");
        await rejects(
          a.write(new Uint8Array(1)),
          (e) => e instanceof errors.BadResource,
          "write after close",
        );
        b.close();
      },
    },
    {
      name: "src/uri.ts loads off Deno: an https URL unfolds to tls over tcp",
      run: async () => {
        const ctx = fromUri("https://LocalHost:8443/x?y");
        check(ctx.get(host) === "localhost", `host ${ctx.get(host)}`);
        check(ctx.get(port) === 8443, `port ${ctx.get(port)}`);
        check(ctx.get(path) === "/x", `path ${ctx.get(path)}`);
        const endpoint = (await unfold(ctx)).find((e) =>
          e.value === tls.endpoint
        );
        const data = endpoint?.data as
          | { hostname: string; alpnProtocols?: string[] }
          | undefined;
        check(data?.hostname === "localhost", "no tls endpoint for localhost");
        check(data.alpnProtocols?.[0] === "http/1.1", "no http/1.1 ALPN");
      },
    },
    {
      name: "resolve(): the tls protocol over a pipe listener",
      run: async () => {
        const listener = listenPipe();
        const serving = (async () => {
          for await (const flow of listener) {
            const server = await acceptTls(flow, {
              cert: config.cert,
              key: config.key,
            });
            const data = await readAll(server);
            await writeAll(server, data.reverse());
            await server.closeWrite();
            server.close();
            return;
          }
        })();
        const flow = await resolve(
          empty.add(tls.endpoint, {
            hostname: "localhost",
            caCerts: [config.ca],
            over: empty.add(pipeProtocol.endpoint, listener),
          }),
        );
        check(tls.is(flow), "not a tls flow");
        await writeAll(flow, enc.encode("abc"));
        await flow.closeWrite();
        check(dec.decode(await readAll(flow)) === "cba", "answer");
        flow.close();
        await serving;
        listener.close();
      },
    },
  ];
}
