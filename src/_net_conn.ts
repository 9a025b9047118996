/**
 * Internal: connections over `node:net` shaped like a `Deno.Conn`, so that
 * the `tcp` and `unix` protocols (`src/tcp.ts`) connect on runtimes without
 * `Deno.connect` (Node, Bun) and still return a `TcpFlow` / `UnixFlow`.
 *
 * `node:net` and `node:dns` are loaded on first use through computed
 * specifiers: bundlers leave them alone, so a browser bundle holding
 * `./tcp` (through `./uri`) loads; there the import fails and a connect
 * rejects with a `TypeError` saying so.
 *
 * A {@linkcode NetConn} is a source for `SourceFlow` (never two reads or two
 * writes at once, nothing after `close`), and settles its own pending calls
 * when closed, as a `Deno.Conn` does.
 *
 * @module
 */

import type { Socket } from "node:net";
import type { Addr } from "./flow.ts";
import { errors } from "./errors.ts";
import { authority, messageOf } from "./_util.ts";

interface NodeNet {
  connect(options: {
    host?: string;
    port?: number;
    path?: string;
    allowHalfOpen: boolean;
  }): Socket;
}

interface NodeDns {
  promises: {
    lookup(
      hostname: string,
      options: { family: 4 | 6; all: true },
    ): Promise<{ address: string; family: number }[]>;
  };
}

const loaded = new Map<string, Promise<unknown>>();

/** `node:<name>`, imported once; a clear `TypeError` where it does not exist. */
function load<T>(name: string, what: string): Promise<T> {
  let module = loaded.get(name);
  if (module === undefined) {
    // A computed specifier: bundlers (for browsers too) leave it alone.
    const specifier = ["node", name].join(":");
    module = import(specifier).catch((cause) => {
      loaded.delete(name);
      throw new TypeError(
        `Cannot ${what}: this runtime has neither Deno.connect nor node:${name}`,
        { cause },
      );
    });
    loaded.set(name, module);
  }
  return module as Promise<T>;
}

/** Node's error codes as the package's named errors, with Deno's wording. */
const CODES: Record<string, [keyof typeof errors, string]> = {
  ECONNRESET: ["ConnectionReset", "Connection reset by peer"],
  EPIPE: ["BrokenPipe", "Broken pipe"],
  ECONNREFUSED: ["ConnectionRefused", "Connection refused"],
  ECONNABORTED: ["ConnectionAborted", "Connection aborted"],
  ETIMEDOUT: ["TimedOut", "Connection timed out"],
  ENOTCONN: ["NotConnected", "Not connected"],
  EADDRINUSE: ["AddrInUse", "Address already in use"],
  EADDRNOTAVAIL: ["AddrNotAvailable", "Cannot assign requested address"],
  ENETUNREACH: ["ConnectionRefused", "Network is unreachable"],
  EHOSTUNREACH: ["ConnectionRefused", "No route to host"],
  ENOENT: ["NotFound", "No such file or directory"],
  EACCES: ["PermissionDenied", "Permission denied"],
  EPERM: ["PermissionDenied", "Operation not permitted"],
  ERR_STREAM_DESTROYED: ["ConnectionReset", "The socket was destroyed"],
  ERR_STREAM_PREMATURE_CLOSE: ["ConnectionReset", "The socket closed early"],
  ERR_STREAM_WRITE_AFTER_END: [
    "BrokenPipe",
    "The socket is closed for writing",
  ],
};

/**
 * A `node:net` error as one of the named errors: "`prefix`Connection
 * refused (ECONNREFUSED)", the original as `cause`. An error of unknown code
 * is `ConnectionAborted`.
 */
export function netError(error: unknown, prefix = ""): Error {
  const code = (error as { code?: unknown } | null)?.code;
  const known = typeof code === "string" ? CODES[code] : undefined;
  const [name, text] = known ?? ["ConnectionAborted", messageOf(error)];
  const suffix = typeof code === "string" ? ` (${code})` : "";
  return new errors[name](`${prefix}${text}${suffix}`, { cause: error });
}

interface Pending {
  ko(error: Error): void;
}

interface PendingRead extends Pending {
  p: Uint8Array;
  ok(n: number | null): void;
}

/**
 * A `net.Socket` (made with `allowHalfOpen: true`) with a `Deno.Conn`'s
 * methods: `read` into a buffer, `write` resolving once the socket took the
 * bytes, `closeWrite` (`end()`), `close` (`destroy()`), `ref`/`unref`,
 * `setNoDelay`/`setKeepAlive`, `localAddr`/`remoteAddr`.
 */
export class NetConn {
  /** The local address. */
  readonly localAddr: Addr;
  /** The peer's address. */
  readonly remoteAddr: Addr;
  #socket: Socket;
  #name: string;
  #read: PendingRead | undefined;
  #pending = new Set<Pending>();
  #leftover: Uint8Array | undefined;
  #ended = false;
  #error: Error | undefined;
  #closed = false;

  /**
   * Wraps a connected socket.
   *
   * @param socket The socket; the conn owns it.
   * @param name Names the connection in errors ("tcp 127.0.0.1:80").
   * @param localAddr Its local address.
   * @param remoteAddr Its peer's address.
   */
  constructor(socket: Socket, name: string, localAddr: Addr, remoteAddr: Addr) {
    this.#socket = socket;
    this.#name = name;
    this.localAddr = localAddr;
    this.remoteAddr = remoteAddr;
    socket.on("readable", () => this.#pump());
    socket.on("end", () => {
      this.#ended = true;
      this.#pump();
    });
    socket.on("error", (error: unknown) => {
      this.#error ??= netError(error, `Cannot use ${name}: `);
      this.#fail();
    });
    socket.on("close", () => {
      if (!this.#ended && !this.#closed) {
        this.#error ??= new errors.ConnectionReset(
          `Cannot read from ${name}: the connection was closed before its end`,
        );
      }
      this.#fail();
    });
  }

  /** Rejects what waits on a socket that failed or went away. */
  #fail(): void {
    this.#pump();
    const error = this.#error ??
      new errors.ConnectionReset(`Cannot write to ${this.#name}: it is gone`);
    for (const w of this.#pending) w.ko(error);
    this.#pending.clear();
  }

  #pump(): void {
    const r = this.#read;
    if (r === undefined) return;
    let chunk = this.#leftover;
    if (chunk === undefined && !this.#socket.destroyed) {
      chunk = (this.#socket.read() as Uint8Array | null) ?? undefined;
    }
    if (chunk === undefined || chunk.length === 0) {
      this.#leftover = undefined;
      if (this.#error !== undefined) {
        this.#read = undefined;
        r.ko(this.#error);
      } else if (this.#ended) {
        this.#read = undefined;
        r.ok(null);
      }
      return; // otherwise: wait for "readable"
    }
    this.#read = undefined;
    const n = Math.min(chunk.length, r.p.length);
    r.p.set(n === chunk.length ? chunk : chunk.subarray(0, n));
    this.#leftover = n < chunk.length ? chunk.subarray(n) : undefined;
    r.ok(n);
  }

  /**
   * Reads into `p` (never called twice at once).
   *
   * @param p The buffer.
   * @returns The count, or `null` at end of flow.
   */
  read(p: Uint8Array): Promise<number | null> {
    return new Promise((ok, ko) => {
      this.#read = { p, ok, ko };
      this.#pump();
    });
  }

  /**
   * Writes `p`; resolves once the socket's callback ran (the bytes are the
   * kernel's, `p` may be reused).
   *
   * @param p The bytes.
   * @returns `p.length`.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    return new Promise((ok, ko) => {
      const pending: Pending = { ko };
      this.#pending.add(pending);
      this.#socket.write(p, (error?: Error | null) => {
        if (!this.#pending.delete(pending)) return;
        if (error) {
          ko(this.#error ?? netError(error, `Cannot write to ${this.#name}: `));
        } else ok(p.length);
      });
    });
  }

  /**
   * Half-closes (`end()`); resolves once the socket finished writing.
   *
   * @returns A promise.
   */
  closeWrite(): Promise<void> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    return new Promise((ok, ko) => {
      const pending: Pending = { ko };
      this.#pending.add(pending);
      const done = (error?: Error | null) => {
        if (!this.#pending.delete(pending)) return;
        if (error) {
          ko(netError(error, `Cannot half-close ${this.#name}: `));
        } else ok();
      };
      if (this.#socket.writableFinished) done();
      else this.#socket.end(done);
    });
  }

  /** Destroys the socket; pending calls reject with `Interrupted`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const error = new errors.Interrupted(
      `Cannot use ${this.#name}: it was closed`,
    );
    this.#read?.ko(error);
    this.#read = undefined;
    for (const w of this.#pending) w.ko(error);
    this.#pending.clear();
    this.#leftover = undefined;
    this.#socket.destroy();
  }

  /** Makes the process wait for this connection. */
  ref(): void {
    this.#socket.ref();
  }

  /** Lets the process exit while this connection is open. */
  unref(): void {
    this.#socket.unref();
  }

  /**
   * Nagle's algorithm off (`true`) or on.
   *
   * @param noDelay Whether to send at once.
   */
  setNoDelay(noDelay = true): void {
    this.#socket.setNoDelay(noDelay);
  }

  /**
   * TCP keep-alive on (`true`) or off.
   *
   * @param keepAlive Whether to probe an idle connection.
   */
  setKeepAlive(keepAlive = true): void {
    this.#socket.setKeepAlive(keepAlive);
  }
}

/** Where {@linkcode connectNet} connects. */
export type NetTarget =
  | { hostname: string; port: number; signal?: AbortSignal }
  | { path: string; signal?: AbortSignal };

/**
 * Connects over `node:net` (with `allowHalfOpen: true`).
 *
 * @param target An IP address and port, or a Unix socket's path; the signal
 * aborts the connect (the socket is destroyed, the promise rejects with its
 * reason).
 * @returns The connection.
 */
export async function connectNet(target: NetTarget): Promise<NetConn> {
  const isUnix = "path" in target;
  const what = isUnix ? "connect a unix socket" : "connect over tcp";
  const net = await load<NodeNet>("net", what);
  const signal = target.signal;
  signal?.throwIfAborted();
  const socket = net.connect(
    isUnix
      ? { path: target.path, allowHalfOpen: true }
      : { host: target.hostname, port: target.port, allowHalfOpen: true },
  );
  return new Promise<NetConn>((ok, ko) => {
    const cleanup = () => {
      signal?.removeEventListener("abort", onAbort);
      socket.off("connect", onConnect);
      socket.off("error", onError);
    };
    const onAbort = () => {
      cleanup();
      socket.destroy();
      ko(signal!.reason);
    };
    const onConnect = () => {
      cleanup();
      // Made at once, so that the conn's listeners are on the socket before
      // its next event.
      ok(
        "path" in target
          ? unixConn(socket, target.path)
          : tcpConn(socket, target),
      );
    };
    const onError = (error: unknown) => {
      cleanup();
      socket.destroy();
      ko(netError(error));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", onConnect);
    socket.once("error", onError);
  });
}

function unixConn(socket: Socket, path: string): NetConn {
  // Deno's shape: a client's own Unix socket is unnamed (path null).
  const local = { transport: "unix", path: null } as unknown as Addr;
  return new NetConn(socket, `unix ${path}`, local, {
    transport: "unix",
    path,
  });
}

function tcpConn(
  socket: Socket,
  target: { hostname: string; port: number },
): NetConn {
  const local: Addr = {
    transport: "tcp",
    hostname: socket.localAddress ?? "",
    port: socket.localPort ?? 0,
  };
  const remote: Addr = {
    transport: "tcp",
    hostname: socket.remoteAddress ?? target.hostname,
    port: socket.remotePort ?? target.port,
  };
  const name = `tcp ${authority(remote.hostname, remote.port)}`;
  return new NetConn(socket, name, local, remote);
}

/**
 * Looks a name up with the system's resolver (`node:dns` `lookup`:
 * getaddrinfo, so the hosts file counts), for one family.
 *
 * @param hostname The name.
 * @param recordType `"AAAA"` for IPv6, `"A"` for IPv4.
 * @returns The addresses.
 */
export async function lookupNet(
  hostname: string,
  recordType: "A" | "AAAA",
): Promise<string[]> {
  const dns = await load<NodeDns>("dns", `resolve host ${hostname}`);
  const found = await dns.promises.lookup(hostname, {
    family: recordType === "AAAA" ? 6 : 4,
    all: true,
  });
  return found.map((a) => a.address);
}
