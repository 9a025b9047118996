/**
 * The portable suite's entry for Node and Bun, bundled by `deno bundle`:
 * the pipe cases, then TLS over `node:net` (the `netTcp` protocol of
 * `src/node.ts`) to a real `openssl s_server` and to the runtime's own
 * `node:https` server, `node:http` served over our TLS, and `fromUri`
 * contexts (`tcp://`, `unix:`, `https://`, through Dante and tinyproxy),
 * whose `tcp` and `unix` protocols fall back to `node:net` here.
 *
 * Usage: `node suite_node.js <runtime name> <config.json>`; prints one line
 * per case and `<runtime name>: N passed, N failed`; exits 1 on a failure.
 *
 * @module
 */

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import process from "node:process";
import { Buffer } from "node:buffer";
import { empty, errors, resolve } from "../../mod.ts";
import { listenPipe, pipeProtocol } from "../../src/pipe.ts";
import { acceptTls, tls, type TlsFlow } from "../../src/tls.ts";
import { tcp, TcpFlow, unix, UnixFlow } from "../../src/tcp.ts";
import { fromUri, tlsOptions } from "../../src/uri.ts";
import {
  createConnection,
  fromDuplex,
  netTcp,
  serveHttp,
  toDuplex,
} from "../../src/node.ts";
import {
  type Case,
  check,
  getFromOpenssl,
  pipeCases,
  type PortableConfig,
  randomBytes,
  readAll,
  rejects,
  runCases,
  writeAll,
} from "./cases.ts";

const [runtime = "node", configPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath!, "utf8")) as PortableConfig;

function tlsOverNet(port: number): Promise<TlsFlow> {
  return resolve(
    empty.add(tls.endpoint, {
      hostname: "localhost",
      caCerts: [config.ca],
      over: empty.add(netTcp.endpoint, { hostname: "127.0.0.1", port }),
    }),
  ) as Promise<TlsFlow>;
}

function get(
  url: string,
  options: https.RequestOptions,
): Promise<{ status: number; body: string }> {
  return new Promise((ok, ko) => {
    const req = https.request(url, options, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => body += d);
      res.on("end", () => ok({ status: res.statusCode ?? 0, body }));
      res.on("error", ko);
    });
    req.on("error", ko);
    req.end();
  });
}

/** A node:net server on 127.0.0.1 running `onSocket` for each connection. */
async function netServer(
  onSocket: (socket: net.Socket) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    onSocket(socket);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise((ok) => {
        server.close(() => ok());
        for (const s of sockets) s.destroy();
      }),
  };
}

function connectNet(port: number) {
  return resolve(
    empty.add(netTcp.endpoint, { hostname: "127.0.0.1", port }),
  );
}

const enc = new TextEncoder();
const dec = new TextDecoder();

const nodeCases: Case[] = [
  {
    name:
      "fromDuplex over the runtime's node:net: half-close both ways, addresses",
    run: async () => {
      // The peer answers after our half-close, then half-closes itself.
      const server = await netServer((socket) => {
        const chunks: Uint8Array[] = [];
        socket.on("data", (c: Uint8Array) => chunks.push(c));
        socket.on("end", () => {
          const got = dec.decode(Buffer.concat(chunks));
          socket.end(`got ${got}`);
        });
      });
      try {
        const flow = await connectNet(server.port);
        const addr = (flow as { remoteAddr?: { port: number } }).remoteAddr;
        check(addr?.port === server.port, `remoteAddr ${JSON.stringify(addr)}`);
        await writeAll(flow, enc.encode("ping"));
        await flow.closeWrite();
        check(dec.decode(await readAll(flow)) === "got ping", "answer");
        check(await flow.read(new Uint8Array(1)) === null, "null again");
        await rejects(
          flow.write(enc.encode("x")),
          (e) => e instanceof errors.BrokenPipe,
          "write after closeWrite",
        );
        flow.close();
        await rejects(
          flow.read(new Uint8Array(1)),
          (e) => e instanceof errors.BadResource,
          "read after close",
        );
      } finally {
        await server.close();
      }
    },
  },
  {
    name:
      "fromDuplex over the runtime's node:net: a peer's RST is ConnectionReset",
    run: async () => {
      const server = await netServer((socket) => {
        socket.once("data", () => socket.resetAndDestroy());
      });
      try {
        const flow = await connectNet(server.port);
        const reading = flow.read(new Uint8Array(8));
        await writeAll(flow, enc.encode("reset me"));
        await rejects(
          reading,
          (e) =>
            e instanceof errors.ConnectionReset && e.name === "ConnectionReset",
          "read after RST",
        );
        flow.close();
      } finally {
        await server.close();
      }
    },
  },
  {
    name:
      "fromDuplex: close() interrupts a pending read; a refused connect is ConnectionRefused",
    run: async () => {
      const server = await netServer(() => {});
      const { port } = server;
      try {
        const flow = await connectNet(port);
        const reading = flow.read(new Uint8Array(8));
        flow.close();
        await rejects(
          reading,
          (e) => e instanceof errors.Interrupted,
          "pending read at close",
        );
      } finally {
        await server.close();
      }
      await rejects(
        connectNet(port),
        (e) => {
          const first = (e as { attempts?: { error: unknown }[] }).attempts
            ?.[0];
          return first?.error instanceof errors.ConnectionRefused;
        },
        "connect to a closed port",
      );
    },
  },
  {
    name: "TLS over node:net to openssl s_server (GET, close_notify)",
    run: async () => {
      check(config.opensslPort, "no s_server port");
      const flow = await tlsOverNet(config.opensslPort);
      check(tls.is(flow), "not a tls flow");
      await getFromOpenssl(flow);
    },
  },
  {
    name: "TLS over node:net to the runtime's own node:https server, 1 MiB up",
    run: async () => {
      const server = https.createServer(
        { cert: config.cert, key: config.key },
        (req, res) => {
          let n = 0;
          req.on("data", (c: Uint8Array) => n += c.length);
          req.on("end", () => res.end(`got ${n} for ${req.url}`));
        },
      );
      await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
      try {
        const { port } = server.address() as net.AddressInfo;
        const flow = await tlsOverNet(port);
        const body = randomBytes(1024 * 1024);
        const head = `PUT /up HTTP/1.1\r\nHost: localhost\r\n` +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
        await flow.write(new TextEncoder().encode(head));
        for (let off = 0; off < body.length;) {
          off += await flow.write(body.subarray(off, off + 65536));
        }
        const text = new TextDecoder().decode(await readAll(flow));
        check(text.startsWith("HTTP/1.1 200 OK"), text.slice(0, 40));
        check(text.endsWith(`got ${body.length} for /up`), text.slice(-40));
        flow.close();
      } finally {
        server.closeAllConnections?.();
        await new Promise((ok) => server.close(ok));
      }
    },
  },
  {
    name:
      "node:http served over our TLS (serveHttp), fetched by node:https with createConnection",
    run: async () => {
      const server = http.createServer((req, res) => res.end(`hi ${req.url}`));
      const listener = listenPipe();
      const serving = (async () => {
        for await (const flow of listener) {
          const secure = await acceptTls(flow, {
            cert: config.cert,
            key: config.key,
          });
          serveHttp(server, secure);
        }
      })();
      try {
        const res = await get("https://localhost/portable", {
          createConnection: createConnection(() =>
            empty.add(tls.endpoint, {
              hostname: "localhost",
              caCerts: [config.ca],
              over: empty.add(pipeProtocol.endpoint, listener),
            })
          ),
        });
        check(res.status === 200, `status ${res.status}`);
        check(res.body === "hi /portable", `body ${res.body}`);
      } finally {
        listener.close();
        await serving;
        server.closeAllConnections?.();
      }
    },
  },
  {
    name: "toDuplex/fromDuplex round trip keeps the bytes and the half-close",
    run: async () => {
      const { pipe } = await import("../../src/pipe.ts");
      const [a, b] = pipe();
      const flow = fromDuplex(toDuplex(a)); // a flow again, over Node streams
      const data = randomBytes(300_000);
      const reading = readAll(b);
      for (let off = 0; off < data.length;) {
        off += await flow.write(data.subarray(off, off + 50_000));
      }
      await flow.closeWrite();
      const got = await reading;
      check(got.length === data.length, `got ${got.length} bytes`);
      check(got.every((x, i) => x === data[i]), "bytes differ");
      await b.closeWrite();
      check(await flow.read(new Uint8Array(1)) === null, "no end of flow");
      flow.close();
      b.close();
    },
  },
];

/** An answer to every request, after the request's end: `got <bytes>`. */
function answerAtEnd(socket: net.Socket): void {
  const chunks: Uint8Array[] = [];
  socket.on("data", (c: Uint8Array) => chunks.push(c));
  socket.on(
    "end",
    () => socket.end(`got ${dec.decode(Buffer.concat(chunks))}`),
  );
}

function isRefused(port: number) {
  return (e: unknown): boolean => {
    const first = (e as { attempts?: { error: unknown }[] }).attempts?.[0];
    const error = first?.error;
    return error instanceof errors.ConnectionRefused &&
      error.name === "ConnectionRefused" &&
      error.message.startsWith(`Cannot connect to 127.0.0.1:${port}: `);
  };
}

/** Proxied `https://127.0.0.1:<s_server>/` through `proxy`, our TLS inside. */
async function httpsThrough(proxy: string): Promise<void> {
  check(config.opensslPort, "no s_server port");
  const ctx = fromUri(`https://127.0.0.1:${config.opensslPort}/`, { proxy })
    .add(tlsOptions, { caCerts: [config.ca] });
  const flow = await resolve(ctx) as TlsFlow;
  check(tls.is(flow), "not a tls flow");
  // The certificate's IP SAN is verified; no SNI for an IP.
  await getFromOpenssl(flow, null);
}

const uriCases: Case[] = [
  {
    name:
      "fromUri tcp:// off Deno: a TcpFlow over node:net (half-close, addresses, RST, refused)",
    run: async () => {
      const server = await netServer(answerAtEnd);
      try {
        const flow = await resolve(fromUri(`tcp://127.0.0.1:${server.port}`));
        check(tcp.is(flow), "not a tcp flow");
        check(flow instanceof TcpFlow, "not a TcpFlow");
        check(flow.remoteAddr.port === server.port, "remoteAddr");
        check(flow.localAddr.hostname === "127.0.0.1", "localAddr");
        flow.setNoDelay(true);
        flow.setKeepAlive(true);
        await writeAll(flow, enc.encode("ping"));
        await flow.closeWrite();
        check(dec.decode(await readAll(flow)) === "got ping", "answer");
        check(await flow.read(new Uint8Array(1)) === null, "null again");
        await rejects(
          flow.write(enc.encode("x")),
          (e) => e instanceof errors.BrokenPipe && e.name === "BrokenPipe",
          "write after closeWrite",
        );
        flow.close();
        await rejects(
          flow.read(new Uint8Array(1)),
          (e) => e instanceof errors.BadResource,
          "read after close",
        );
      } finally {
        await server.close();
      }
      const resetter = await netServer((socket) => {
        socket.once("data", () => socket.resetAndDestroy());
      });
      try {
        const flow = await resolve(fromUri(`tcp://127.0.0.1:${resetter.port}`));
        const reading = flow.read(new Uint8Array(8));
        await writeAll(flow, enc.encode("reset me"));
        await rejects(
          reading,
          (e) =>
            e instanceof errors.ConnectionReset && e.name === "ConnectionReset",
          "read after RST",
        );
        flow.close();
      } finally {
        await resetter.close();
      }
      await rejects(
        resolve(fromUri(`tcp://127.0.0.1:${resetter.port}`)),
        isRefused(resetter.port),
        "connect to a closed port",
      );
    },
  },
  {
    name:
      "fromUri tcp:// off Deno: 1 MiB each way at once, close() interrupts a pending read",
    run: async () => {
      const server = await netServer((socket) => socket.pipe(socket));
      try {
        const flow = await resolve(fromUri(`tcp://127.0.0.1:${server.port}`));
        const data = randomBytes(1024 * 1024);
        const [back] = await Promise.all([
          readAll(flow),
          writeAll(flow, data).then(() => flow.closeWrite()),
        ]);
        check(back.length === data.length, `got ${back.length} bytes`);
        check(back.every((x, i) => x === data[i]), "bytes differ");
        flow.close();
        const other = await resolve(fromUri(`tcp://127.0.0.1:${server.port}`));
        const reading = other.read(new Uint8Array(8));
        other.close();
        await rejects(
          reading,
          (e) => e instanceof errors.Interrupted && e.name === "Interrupted",
          "pending read at close",
        );
      } finally {
        await server.close();
      }
    },
  },
  {
    name: "fromUri unix: off Deno: a UnixFlow over node:net; a missing socket",
    run: async () => {
      const dir = mkdtempSync(`${tmpdir()}/mimic-portable-`);
      const path = `${dir}/echo.sock`;
      const server = net.createServer({ allowHalfOpen: true }, answerAtEnd);
      await new Promise<void>((ok) => server.listen(path, ok));
      try {
        const flow = await resolve(fromUri(`unix:${path}`));
        check(unix.is(flow), "not a unix flow");
        check(flow instanceof UnixFlow, "not a UnixFlow");
        check(flow.remoteAddr.path === path, "remoteAddr");
        await writeAll(flow, enc.encode("over unix"));
        await flow.closeWrite();
        check(dec.decode(await readAll(flow)) === "got over unix", "answer");
        flow.close();
        await rejects(
          resolve(fromUri(`unix:${dir}/missing.sock`)),
          (e) => {
            const error = (e as { attempts?: { error: unknown }[] })
              .attempts?.[0]?.error as Error | undefined;
            return error instanceof errors.NotFound &&
              error.message.includes(`${dir}/missing.sock`);
          },
          "a missing socket",
        );
      } finally {
        await new Promise((ok) => server.close(ok));
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
  {
    name:
      "fromUri https://localhost off Deno: our TLS over node:net to openssl s_server (Happy Eyeballs)",
    run: async () => {
      check(config.opensslPort, "no s_server port");
      // s_server listens on 127.0.0.1 only: ::1 is refused, 127.0.0.1 wins.
      const ctx = fromUri(`https://localhost:${config.opensslPort}/`)
        .add(tlsOptions, { caCerts: [config.ca] });
      const flow = await resolve(ctx) as TlsFlow;
      check(tls.is(flow), "not a tls flow");
      const addr = (flow as { remoteAddr?: { hostname?: string } }).remoteAddr;
      check(
        addr?.hostname === "127.0.0.1",
        `remoteAddr ${JSON.stringify(addr)}`,
      );
      await getFromOpenssl(flow);
    },
  },
  {
    name:
      "fromUri https:// through Dante (socks5h://) off Deno: TLS over SOCKS over node:net",
    run: async () => {
      check(config.dantePort, "no Dante port");
      await httpsThrough(`socks5h://127.0.0.1:${config.dantePort}`);
    },
  },
  {
    name:
      "fromUri https:// through tinyproxy (CONNECT) off Deno: TLS over a tunnel over node:net",
    run: async () => {
      check(config.tinyproxyPort, "no tinyproxy port");
      await httpsThrough(`http://127.0.0.1:${config.tinyproxyPort}`);
    },
  },
];

const summary = await runCases(
  runtime,
  [...pipeCases(config), ...nodeCases, ...uriCases],
  (line) => console.log(line),
);
process.exit(summary.failed === 0 ? 0 : 1);
