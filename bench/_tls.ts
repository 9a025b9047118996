// Shared by bench/tls_bench.ts and bench/tls_ratios.ts: the fixture
// certificate (ECDSA P-256), a native Deno.listenTls bench server, and three
// TLS clients over loopback behind one interface:
//
//   ours    startTls() (rustls in WASM) over Deno.connect
//   native  Deno.connectTls
//   node    node:tls connect({ socket }) over a node:stream Duplex wrapping a
//           Deno.Conn: what a Deno user does today for TLS over a custom
//           transport
//
// The bench server speaks a one-byte command, then:
//   "W"               discards what the client writes until end of flow,
//                     then answers "ok" and half-closes (close_notify)
//   "R" + u64 (BE) n  writes n bytes, then half-closes
//   nothing           (handshake benchmarks) closes when the client does
import { Duplex } from "node:stream";
import * as nodeTls from "node:tls";
import { startTls } from "../src/tls.ts";

const FIXTURES = new URL("../tests/fixtures/", import.meta.url);

/** The fixture CA, certificate and key (ECDSA P-256, valid for localhost). */
export const pems: { ca: string; cert: string; key: string } = {
  ca: Deno.readTextFileSync(new URL("ca.pem", FIXTURES)),
  cert: Deno.readTextFileSync(new URL("localhost.pem", FIXTURES)),
  key: Deno.readTextFileSync(new URL("localhost.key", FIXTURES)),
};

export const HOST = "127.0.0.1";
/** The size of every write and read buffer (clients and server). */
export const CHUNK = 64 * 1024;

// --- The server ---------------------------------------------------------------

async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  p: Uint8Array,
): Promise<void> {
  for (let off = 0; off < p.length;) off += await w.write(p.subarray(off));
}

/** Reads exactly p.length bytes; false at end of flow first. */
async function readFull(conn: Deno.Conn, p: Uint8Array): Promise<boolean> {
  for (let off = 0; off < p.length;) {
    const n = await conn.read(p.subarray(off));
    if (n === null) return false;
    off += n;
  }
  return true;
}

async function handle(conn: Deno.TlsConn): Promise<void> {
  try {
    await conn.handshake();
    const cmd = new Uint8Array(1);
    if (!await readFull(conn, cmd)) return;
    if (cmd[0] === 0x57 /* W */) {
      const buf = new Uint8Array(CHUNK);
      while (await conn.read(buf) !== null) { /* discard */ }
      await writeAll(conn, new TextEncoder().encode("ok"));
      await conn.closeWrite();
    } else if (cmd[0] === 0x52 /* R */) {
      const head = new Uint8Array(8);
      if (!await readFull(conn, head)) return;
      let left = Number(new DataView(head.buffer).getBigUint64(0));
      const payload = new Uint8Array(CHUNK).fill(0x6d);
      while (left > 0) {
        const n = Math.min(left, CHUNK);
        await writeAll(conn, n === CHUNK ? payload : payload.subarray(0, n));
        left -= n;
      }
      await conn.closeWrite();
      // Wait for the client to go, so close() does not cut the last bytes.
      while (await conn.read(cmd) !== null) { /* nothing */ }
    }
  } catch {
    // The client went away (a handshake benchmark, a failed run).
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** A native TLS bench server on loopback (port 0), serving until closed. */
export function listenBench(): {
  port: number;
  close(): Promise<void>;
} {
  const listener = Deno.listenTls({
    hostname: HOST,
    port: 0,
    cert: pems.cert,
    key: pems.key,
  });
  const conns = new Set<Promise<void>>();
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const task = handle(conn);
        conns.add(task);
        task.then(() => conns.delete(task));
      }
    } catch {
      // Closed.
    }
  })();
  return {
    port: listener.addr.port,
    close: async () => {
      try {
        listener.close();
      } catch {
        // Closed already.
      }
      await accepting;
      await Promise.allSettled(conns);
    },
  };
}

// --- The clients --------------------------------------------------------------

/** A TLS client connection, whatever its implementation. */
export interface Client {
  /** Writes all of p. */
  write(p: Uint8Array): Promise<void>;
  /** Half-closes (close_notify). */
  closeWrite(): Promise<void>;
  /**
   * Reads to end of flow; resolves to the byte count. Calls `onFirst` when
   * the first bytes arrive.
   */
  drain(onFirst?: () => void): Promise<number>;
  /** Releases the connection. */
  close(): void;
  /** The negotiated TLS version and cipher suite, as far as known. */
  describe(): Promise<string>;
}

/**
 * The client implementations: ours (with variants), Deno's native TLS and
 * node:tls over a Duplex. Our variants:
 *
 * - `ours`: the defaults (host AEAD where it passed its self-test, the
 *   default suite order: ChaCha20-Poly1305 first on Deno);
 * - `ours-wasm`: the engine's own ciphers only (the fallback of browsers);
 * - `ours-aes128`, `ours-aes256`: TLS_AES_128_GCM_SHA256 or
 *   TLS_AES_256_GCM_SHA384 only (what a server that picks AES-GCM gets);
 *   `-wasm` for the same on the engine's own ciphers;
 * - `ours-x25519`: key exchange x25519 only (no post-quantum hybrid);
 * - `ours-resumed`: a resumed handshake (a ticket from an earlier
 *   connection to the same server).
 */
export type Way =
  | "ours"
  | "ours-wasm"
  | "ours-aes128"
  | "ours-aes256"
  | "ours-aes128-wasm"
  | "ours-aes256-wasm"
  | "ours-x25519"
  | "ours-resumed"
  | "native"
  | "node";
export const WAYS: readonly Way[] = ["ours", "native", "node"];

/** startTls options of our variants (see {@linkcode Way}). */
const OURS: Record<string, Record<string, unknown>> = {
  "ours": {},
  "ours-wasm": { _hostAead: false },
  "ours-aes128": { cipherSuites: ["TLS_AES_128_GCM_SHA256"] },
  "ours-aes256": { cipherSuites: ["TLS_AES_256_GCM_SHA384"] },
  "ours-aes128-wasm": {
    cipherSuites: ["TLS_AES_128_GCM_SHA256"],
    _hostAead: false,
  },
  "ours-aes256-wasm": {
    cipherSuites: ["TLS_AES_256_GCM_SHA384"],
    _hostAead: false,
  },
  "ours-x25519": { keyExchangeGroups: ["x25519"] },
  // A config of its own, so its session cache holds only its tickets.
  "ours-resumed": { alpnProtocols: ["bench-resumed"] },
};

/** A Client over a Flow (ours, or a Deno.TlsConn). */
function flowClient(
  flow: {
    read(p: Uint8Array): Promise<number | null>;
    write(p: Uint8Array): Promise<number>;
    closeWrite(): Promise<void>;
    close(): void;
  },
  describe: () => Promise<string>,
): Client {
  return {
    write: (p) => writeAll(flow, p),
    closeWrite: () => flow.closeWrite(),
    drain: async (onFirst) => {
      const buf = new Uint8Array(CHUNK);
      let total = 0;
      for (let n; (n = await flow.read(buf)) !== null;) {
        if (total === 0 && n > 0) onFirst?.();
        total += n;
      }
      return total;
    },
    close: () => {
      try {
        flow.close();
      } catch {
        // Closed already.
      }
    },
    describe,
  };
}

/**
 * A node:stream Duplex over a Deno.Conn, as a Deno user would write it to
 * hand node:tls a custom transport.
 */
export function duplexFromConn(conn: Deno.Conn): Duplex {
  return new Duplex({
    read() {
      const buf = new Uint8Array(CHUNK);
      conn.read(buf).then(
        (n) => this.push(n === null ? null : buf.subarray(0, n)),
        (error) => this.destroy(error),
      );
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAll(conn, chunk).then(() => callback(), callback);
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), callback);
    },
    destroy(error, callback) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
      callback(error);
    },
  });
}

function nodeClient(socket: nodeTls.TLSSocket): Client {
  let failed: Error | undefined;
  let total = 0;
  let onFirstData: (() => void) | undefined;
  const ended = new Promise<void>((resolve, reject) => {
    socket.on("data", (d: Uint8Array) => {
      if (total === 0 && d.length > 0) onFirstData?.();
      total += d.length;
    });
    socket.once("end", () => resolve());
    socket.once("error", (e) => {
      failed = e;
      reject(e);
    });
  });
  ended.catch(() => {});
  return {
    write: async (p) => {
      if (failed) throw failed;
      if (!socket.write(p)) {
        await new Promise<void>((resolve, reject) => {
          const onError = (e: Error) => reject(e);
          socket.once("error", onError);
          socket.once("drain", () => {
            socket.off("error", onError);
            resolve();
          });
        });
      }
    },
    closeWrite: () =>
      new Promise<void>((resolve) => socket.end(() => resolve())),
    drain: async (onFirst) => {
      if (total > 0) onFirst?.();
      else onFirstData = onFirst;
      await ended;
      return total;
    },
    close: () => {
      socket.destroy();
    },
    describe: () =>
      Promise.resolve(
        `${socket.getProtocol()} ${socket.getCipher()?.standardName}`,
      ),
  };
}

/** Connects a client of implementation `way` to the bench server at `port`. */
export async function connectClient(way: Way, port: number): Promise<Client> {
  if (way === "native") {
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [pems.ca],
    });
    // Deno.connectTls resolves before the handshake: complete it here.
    await conn.handshake();
    // Deno.TlsHandshakeInfo names neither version nor suite.
    return flowClient(conn, () => Promise.resolve("(not reported by Deno)"));
  }
  if (way === "node") {
    const tcp = await Deno.connect({ hostname: HOST, port });
    const socket = nodeTls.connect({
      socket: duplexFromConn(tcp),
      servername: "localhost",
      ca: [pems.ca],
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => {
        socket.off("error", reject);
        resolve();
      });
      socket.once("error", reject);
    });
    return nodeClient(socket);
  }
  const tcp = await Deno.connect({ hostname: HOST, port });
  try {
    const flow = await startTls(tcp, {
      hostname: "localhost",
      caCerts: [pems.ca],
      ...OURS[way],
    });
    return flowClient(flow, async () => {
      const info = await flow.handshake();
      return `${info.protocol} ${info.cipherSuite} ${info.keyExchangeGroup}${
        info.resumed ? " resumed" : ""
      }`;
    });
  } catch (error) {
    tcp.close();
    throw error;
  }
}

/**
 * Fills our session cache with tickets from the bench server: a connection
 * that reads to the end (the tickets come after the handshake).
 */
export async function collectTickets(way: Way, port: number): Promise<void> {
  const c = await connectClient(way, port);
  await upload(c, 1);
  c.close();
}

/** Client→server: "W", `bytes` in CHUNK writes, half-close, wait for "ok". */
export async function upload(client: Client, bytes: number): Promise<void> {
  const payload = new Uint8Array(CHUNK).fill(0x6d);
  await client.write(new Uint8Array([0x57]));
  for (let sent = 0; sent < bytes; sent += CHUNK) {
    const n = Math.min(CHUNK, bytes - sent);
    await client.write(n === CHUNK ? payload : payload.subarray(0, n));
  }
  await client.closeWrite();
  const got = await client.drain();
  if (got !== 2) throw new Error(`upload: expected "ok", got ${got} bytes`);
}

/**
 * Server→client: "R" + size, then read `bytes` to end of flow; resolves to
 * the time from the first byte received to end of flow, in ms (`onFirst`
 * is called at the first byte).
 *
 * Timing from the first byte leaves out how long the 9-byte request takes
 * to leave: right after its handshake, Deno.connectTls's first small write
 * waits ~40 ms for the server's delayed ACK (Nagle: Deno.TlsConn cannot set
 * TCP_NODELAY), which would swamp the transfer's own time.
 */
export async function download(
  client: Client,
  bytes: number,
  onFirst?: () => void,
): Promise<number> {
  const request = new Uint8Array(9);
  request[0] = 0x52;
  new DataView(request.buffer).setBigUint64(1, BigInt(bytes));
  await client.write(request);
  let first = NaN;
  const got = await client.drain(() => {
    first = performance.now();
    onFirst?.();
  });
  const ms = performance.now() - first;
  if (got !== bytes) {
    throw new Error(`download: expected ${bytes} bytes, got ${got}`);
  }
  return ms;
}
