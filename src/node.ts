/**
 * Glue between flows and the Node ecosystem's streams, for Deno, Node and
 * Bun (this entry point imports `node:stream`, `node:net` and `node:buffer`,
 * which all three provide; it is not for browsers).
 *
 * - {@linkcode toDuplex}: a {@linkcode Flow} as a `node:stream` `Duplex`
 *   shaped like a `net.Socket`, for undici's `connect`, `node:http`'s
 *   `createConnection` or a `node:http` server's `connection` event.
 * - {@linkcode fromDuplex}: a `Duplex` (a `net.Socket`, a `tls.TLSSocket`,
 *   any stream pair) as a flow that keeps the package's Flow contract.
 * - {@linkcode netTcp} and {@linkcode netUnix}: protocols over `node:net`,
 *   so TCP and Unix endpoints resolve on runtimes without `Deno.connect`.
 * - {@linkcode undiciConnect} and {@linkcode createConnection}: the HTTP
 *   stacks users already have (undici, `node:http`) over any context: TLS
 *   over a CONNECT tunnel, TLS over a WebSocket, a pipe, ...
 * - {@linkcode serveHttp}: a `node:http` server fed by flows: HTTP served
 *   over any transport.
 *
 * The package itself stays dependency-free: undici is the caller's.
 *
 * @example HTTP over an in-memory pipe, served by `node:http`
 * ```ts
 * import { createServer } from "node:http";
 * import { pipe } from "@mimic/mimic/pipe";
 * import { serveHttp } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const server = createServer((req, res) => res.end(`hello ${req.url}`));
 * const [client, flow] = pipe();
 * const served = serveHttp(server, flow);
 * await client.write(new TextEncoder().encode(
 *   "GET /pipe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
 * ));
 * const answer = await new Response(client.readable).text();
 * assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
 * assert.ok(answer.endsWith("hello /pipe"));
 * client.close();
 * await served;
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Server } from "node:http";
import * as net from "node:net";
import { Duplex } from "node:stream";
import {
  type Arg,
  type ArgTypes,
  type Context,
  errors,
  type Flow,
  type IoErrors,
  type Protocol,
  register,
  resolve,
  type ResolveEvent,
  type ResolveOptions,
  type Value,
} from "../mod.ts";
import { readableFromFlow, writableFromFlow } from "./_streams.ts";

export type {
  Arg,
  ArgTypes,
  Context,
  Flow,
  Protocol,
  ResolveEvent,
  ResolveOptions,
  Value,
};

/** The default size of the buffer {@linkcode toDuplex} reads into. */
export const DEFAULT_READ_SIZE = 64 * 1024;

/** A network address, the shape of a `Deno.NetAddr`. */
export interface NetAddr {
  /** Always `"tcp"` here. */
  transport: "tcp";
  /** The IP address (or name) as the socket reports it. */
  hostname: string;
  /** The port. */
  port: number;
}

type MaybeAddressed = Flow & { localAddr?: unknown; remoteAddr?: unknown };

function netAddrOf(addr: unknown): NetAddr | undefined {
  if (typeof addr !== "object" || addr === null) return undefined;
  const { hostname, port } = addr as { hostname?: unknown; port?: unknown };
  if (typeof hostname !== "string" || typeof port !== "number") {
    return undefined;
  }
  return { transport: "tcp", hostname, port };
}

function familyOf(hostname: string | undefined): string | undefined {
  if (hostname === undefined) return undefined;
  return hostname.includes(":") ? "IPv6" : "IPv4";
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------
// toDuplex
// ---------------------------------------------------------------------------

/** Options of {@linkcode toDuplex}. */
export interface ToDuplexOptions {
  /**
   * Keep the write side open when the flow reaches end of flow (a
   * half-close), as `Duplex` does; `false` ends it, as a `net.Socket` made
   * without `allowHalfOpen` does.
   *
   * @default {true}
   */
  allowHalfOpen?: boolean;
  /**
   * The size of the buffer each `read` of the flow gets.
   *
   * @default {65536}
   */
  readSize?: number;
}

/**
 * A `node:stream` `Duplex` over a {@linkcode Flow}, made by
 * {@linkcode toDuplex}. It reads from the flow only while its consumer wants
 * data (backpressure both ways); `end()` half-closes the flow
 * (`closeWrite()`), `destroy()` closes it, and a rejected `read` or `write`
 * destroys the stream with the flow's error (`err.name` as the flow's,
 * e.g. `"ConnectionReset"`).
 *
 * It has what HTTP stacks ask of a `net.Socket`: `setTimeout` (an
 * inactivity timer emitting `timeout`), `setNoDelay`, `setKeepAlive`, `ref`
 * and `unref` (these four do nothing: the flow owns its transport), the
 * remote and local addresses of flows that have them, and `alpnProtocol`
 * (as a `tls.TLSSocket`: the protocol a TLS flow agreed, else `false`; set
 * by {@linkcode undiciConnect} and {@linkcode createConnection}).
 *
 * @example Read a flow as a Node stream
 * ```ts
 * import { pipe } from "@mimic/mimic/pipe";
 * import { toDuplex } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const duplex = toDuplex(a);
 * await b.write(new TextEncoder().encode("hi"));
 * await b.closeWrite();
 * const chunks: Uint8Array[] = [];
 * for await (const chunk of duplex) chunks.push(chunk);
 * assert.equal(new TextDecoder().decode(chunks[0]), "hi");
 * duplex.destroy();
 * b.close();
 * ```
 */
export class FlowDuplex extends Duplex {
  /** The ALPN protocol agreed, as `tls.TLSSocket#alpnProtocol`; `false` if none. */
  alpnProtocol: string | false = false;
  /** Always `false`: the flow is connected. */
  readonly connecting = false;
  #flow: Flow;
  #readSize: number;
  #scratch: Buffer | undefined;
  #reading = false;
  #wanted = false;
  #timeoutMs = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Wraps `flow`; prefer {@linkcode toDuplex}.
   *
   * @param flow The flow to wrap (this stream owns it: destroying closes it).
   * @param options Half-open behaviour and read size.
   */
  constructor(flow: Flow, options: ToDuplexOptions = {}) {
    super({ allowHalfOpen: options.allowHalfOpen ?? true });
    const readSize = options.readSize ?? DEFAULT_READ_SIZE;
    if (!Number.isInteger(readSize) || readSize <= 0) {
      throw new RangeError(
        `Cannot make a duplex: readSize must be a positive integer, got ${readSize}`,
      );
    }
    this.#flow = flow;
    this.#readSize = readSize;
  }

  /** The flow this stream wraps. */
  get flow(): Flow {
    return this.#flow;
  }

  /** The remote IP address, when the flow has a `remoteAddr`. */
  get remoteAddress(): string | undefined {
    return netAddrOf((this.#flow as MaybeAddressed).remoteAddr)?.hostname;
  }

  /** The remote port, when the flow has a `remoteAddr`. */
  get remotePort(): number | undefined {
    return netAddrOf((this.#flow as MaybeAddressed).remoteAddr)?.port;
  }

  /** `"IPv4"` or `"IPv6"`, when the flow has a `remoteAddr`. */
  get remoteFamily(): string | undefined {
    return familyOf(this.remoteAddress);
  }

  /** The local IP address, when the flow has a `localAddr`. */
  get localAddress(): string | undefined {
    return netAddrOf((this.#flow as MaybeAddressed).localAddr)?.hostname;
  }

  /** The local port, when the flow has a `localAddr`. */
  get localPort(): number | undefined {
    return netAddrOf((this.#flow as MaybeAddressed).localAddr)?.port;
  }

  /**
   * Emits `timeout` after `ms` without bytes read or written, as
   * `net.Socket#setTimeout`; 0 turns it off. The stream is not closed.
   *
   * @param ms The inactivity time, in milliseconds.
   * @param callback Added as a one-time `timeout` listener.
   * @returns This stream.
   */
  setTimeout(ms: number, callback?: () => void): this {
    this.#timeoutMs = ms > 0 && Number.isFinite(ms) ? ms : 0;
    if (callback) {
      if (this.#timeoutMs === 0) this.off("timeout", callback);
      else this.once("timeout", callback);
    }
    this.#touch();
    return this;
  }

  /**
   * Does nothing (the flow owns its transport), as a `net.Socket` method.
   *
   * @returns This stream.
   */
  setNoDelay(_noDelay?: boolean): this {
    return this;
  }

  /**
   * Does nothing (the flow owns its transport), as a `net.Socket` method.
   *
   * @returns This stream.
   */
  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this;
  }

  /**
   * Does nothing, as a `net.Socket` method.
   *
   * @returns This stream.
   */
  ref(): this {
    return this;
  }

  /**
   * Does nothing, as a `net.Socket` method.
   *
   * @returns This stream.
   */
  unref(): this {
    return this;
  }

  #touch(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#timeoutMs > 0 && !this.destroyed) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.emit("timeout");
      }, this.#timeoutMs);
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** `node:stream`'s read hook: reads the flow while the consumer wants bytes. */
  override _read(): void {
    this.#wanted = true;
    if (!this.#reading) void this.#pull();
  }

  async #pull(): Promise<void> {
    this.#reading = true;
    try {
      while (this.#wanted && !this.destroyed) {
        this.#wanted = false;
        const buf = this.#scratch ??= Buffer.allocUnsafe(this.#readSize);
        const n = await this.#flow.read(buf);
        if (this.destroyed) return;
        if (n === null) {
          this.push(null);
          return;
        }
        if (!(n > 0)) {
          // Flow rule 1: a read of a non-empty buffer never resolves 0.
          throw new errors.InvalidData(
            `Cannot read from duplex: the flow's read resolved ${n} bytes`,
          );
        }
        this.#touch();
        let chunk: Buffer;
        if (n * 2 >= buf.length) {
          chunk = buf.subarray(0, n); // handed over: the next read gets a new buffer
          this.#scratch = undefined;
        } else {
          chunk = Buffer.from(buf.subarray(0, n)); // a copy; the buffer is reused
        }
        if (this.push(chunk)) this.#wanted = true;
      }
    } catch (error) {
      if (!this.destroyed) this.destroy(error as Error);
    } finally {
      this.#reading = false;
    }
  }

  async #writeAll(data: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < data.length) {
      const n = await this.#flow.write(
        offset === 0 ? data : data.subarray(offset),
      );
      if (!(n > 0)) {
        throw new errors.WriteZero(
          "Cannot write to duplex: the flow accepted zero bytes",
        );
      }
      offset += n;
    }
    this.#touch();
  }

  /** `node:stream`'s write hook: writes every byte of `chunk` to the flow. */
  override _write(
    chunk: Buffer,
    _encoding: string,
    callback: (error?: Error | null) => void,
  ): void {
    this.#writeAll(chunk).then(() => callback(), callback);
  }

  /** `node:stream`'s batch write hook: corked chunks go out as one write. */
  override _writev(
    chunks: { chunk: Buffer; encoding: string }[],
    callback: (error?: Error | null) => void,
  ): void {
    const data = chunks.length === 1
      ? chunks[0].chunk
      : Buffer.concat(chunks.map((c) => c.chunk));
    this.#writeAll(data).then(() => callback(), callback);
  }

  /** `node:stream`'s end hook: `closeWrite()`. */
  override _final(callback: (error?: Error | null) => void): void {
    this.#flow.closeWrite().then(() => callback(), callback);
  }

  /** `node:stream`'s destroy hook: `close()`. */
  override _destroy(
    error: Error | null,
    callback: (error?: Error | null) => void,
  ): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    try {
      this.#flow.close();
    } catch {
      // Already closed by its owner.
    }
    callback(error);
  }
}

/**
 * A `node:stream` `Duplex` over `flow` (see {@linkcode FlowDuplex}): what
 * undici's `connect`, `node:http`'s `createConnection` and a `node:http`
 * server's `connection` event take. The duplex owns the flow: destroying it
 * closes the flow.
 *
 * @param flow The flow.
 * @param options Half-open behaviour and read size.
 * @returns The duplex.
 *
 * @example end() is a half-close
 * ```ts
 * import { pipe } from "@mimic/mimic/pipe";
 * import { toDuplex } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const duplex = toDuplex(a);
 * duplex.end("bye");
 * assert.equal(await new Response(b.readable).text(), "bye");
 * await b.write(new Uint8Array([1])); // a still reads after its half-close
 * await b.closeWrite();
 * const [chunk] = await duplex.toArray();
 * assert.deepEqual([...chunk], [1]);
 * duplex.destroy();
 * b.close();
 * ```
 */
export function toDuplex(flow: Flow, options?: ToDuplexOptions): FlowDuplex {
  return new FlowDuplex(flow, options);
}

// ---------------------------------------------------------------------------
// fromDuplex
// ---------------------------------------------------------------------------

const CODES: Readonly<Record<string, keyof IoErrors>> = {
  ECONNRESET: "ConnectionReset",
  EPIPE: "BrokenPipe",
  ECONNREFUSED: "ConnectionRefused",
  ECONNABORTED: "ConnectionAborted",
  ETIMEDOUT: "TimedOut",
  ENOTCONN: "NotConnected",
  EADDRINUSE: "AddrInUse",
  EADDRNOTAVAIL: "AddrNotAvailable",
  ENOENT: "NotFound",
  EACCES: "PermissionDenied",
  EPERM: "PermissionDenied",
  ERR_STREAM_PREMATURE_CLOSE: "ConnectionReset",
  ERR_STREAM_WRITE_AFTER_END: "BrokenPipe",
};

function isIoError(error: unknown): error is Error {
  if (!(error instanceof Error)) return false;
  const cls = (errors as unknown as Record<string, unknown>)[error.name];
  return typeof cls === "function" && error instanceof cls;
}

/**
 * A Node error as one of the package's named I/O errors: by its `code`
 * (`ECONNRESET` is `ConnectionReset`, ...); an error already named so is
 * kept; anything else becomes `ConnectionAborted` with it as the cause.
 */
function ioError(error: unknown, what: string): Error {
  if (isIoError(error)) return error;
  const code = (error as { code?: unknown } | null)?.code;
  const name = (typeof code === "string" && CODES[code]) || "ConnectionAborted";
  return new errors[name](`${what}: ${messageOf(error)}`, { cause: error });
}

interface PendingRead {
  p: Uint8Array;
  ok: (n: number | null) => void;
  ko: (error: Error) => void;
  /** A read of `readable`'s: cancelling the stream resolves it 0. */
  stream?: boolean;
}

interface Pending {
  ko: (error: Error) => void;
}

const encoder = new TextEncoder();

/**
 * A flow over a `node:stream` `Duplex`, made by {@linkcode fromDuplex}. It
 * keeps the package's Flow contract: concurrent reads are served in call
 * order; `null` at the duplex's end, and again after; `closeWrite()` is
 * `end()` (idempotent; later writes reject with `BrokenPipe`); `close()` is
 * `destroy()` (idempotent; pending reads and writes reject with
 * `Interrupted`, later calls with `BadResource`). The duplex's errors are
 * named by their code: `ECONNRESET` rejects with `ConnectionReset`, `EPIPE`
 * with `BrokenPipe`, ...; a duplex destroyed before its end by someone else
 * makes reads reject with `ConnectionReset`; an error without a known code
 * becomes `ConnectionAborted` (its `cause` is the original).
 *
 * A `net.Socket` made without `allowHalfOpen: true` ends its write side
 * when the peer half-closes; {@linkcode netTcp} makes sockets with it.
 *
 * @example A Node stream pair as a flow
 * ```ts
 * import { Duplex, PassThrough } from "node:stream";
 * import { fromDuplex } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const incoming = new PassThrough();
 * const outgoing = new PassThrough();
 * const flow = fromDuplex(Duplex.from({ readable: incoming, writable: outgoing }));
 * incoming.end("hello");
 * const buf = new Uint8Array(16);
 * const n = await flow.read(buf);
 * assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "hello");
 * assert.equal(await flow.read(buf), null);
 * flow.close();
 * ```
 */
export class DuplexFlow implements Flow, AsyncDisposable, Disposable {
  #duplex: Duplex;
  #reads: PendingRead[] = [];
  #writes = new Set<Pending>();
  #leftover: Uint8Array | undefined;
  #ended = false;
  #error: Error | undefined;
  #closed = false;
  #closeWrite: Promise<void> | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;
  #localAddr: NetAddr | undefined;
  #remoteAddr: NetAddr | undefined;
  #ownsChunks: boolean;

  /**
   * Wraps `duplex`; prefer {@linkcode fromDuplex}.
   *
   * @param duplex The stream (this flow owns it: closing destroys it).
   */
  constructor(duplex: Duplex) {
    this.#duplex = duplex;
    this.#ownsChunks = duplex instanceof net.Socket;
    this.#localAddr = this.#addr("local");
    this.#remoteAddr = this.#addr("remote");
    duplex.on("readable", () => this.#pump());
    duplex.on("end", () => {
      this.#ended = true;
      this.#pump();
    });
    duplex.on("error", (error: unknown) => {
      this.#error ??= ioError(error, "Duplex failed");
      this.#pump();
    });
    duplex.on("close", () => {
      if (!this.#ended && !this.#closed) {
        this.#error ??= new errors.ConnectionReset(
          "Cannot read from duplex flow: the duplex was destroyed before its end",
        );
      }
      this.#pump();
    });
    if (duplex.readableEnded) this.#ended = true;
  }

  #addr(side: "local" | "remote"): NetAddr | undefined {
    const d = this.#duplex as Partial<net.Socket>;
    const hostname = side === "local" ? d.localAddress : d.remoteAddress;
    const port = side === "local" ? d.localPort : d.remotePort;
    if (typeof hostname !== "string" || typeof port !== "number") {
      return undefined;
    }
    return { transport: "tcp", hostname, port };
  }

  /** The duplex this flow wraps. */
  get duplex(): Duplex {
    return this.#duplex;
  }

  /** The local address, when the duplex is a connected `net.Socket`. */
  get localAddr(): NetAddr | undefined {
    return this.#localAddr ??= this.#addr("local");
  }

  /** The remote address, when the duplex is a connected `net.Socket`. */
  get remoteAddr(): NetAddr | undefined {
    return this.#remoteAddr ??= this.#addr("remote");
  }

  #pump(): void {
    while (this.#reads.length > 0) {
      let chunk = this.#leftover;
      if (chunk === undefined && !this.#duplex.destroyed) {
        const c: unknown = this.#duplex.read();
        if (typeof c === "string") chunk = encoder.encode(c);
        else if (c instanceof Uint8Array) chunk = c;
        else if (c !== null && c !== undefined) {
          this.#error ??= new errors.InvalidData(
            "Cannot read from duplex flow: it yielded a chunk that is not bytes",
          );
        }
      }
      if (chunk === undefined || chunk.length === 0) {
        this.#leftover = undefined;
        if (this.#error) {
          const error = this.#error;
          for (const r of this.#reads.splice(0)) r.ko(error);
        } else if (this.#ended) {
          for (const r of this.#reads.splice(0)) r.ok(null);
        }
        return; // otherwise: wait for "readable"
      }
      const r = this.#reads.shift()!;
      const n = Math.min(chunk.length, r.p.length);
      r.p.set(n === chunk.length ? chunk : chunk.subarray(0, n));
      this.#leftover = n < chunk.length ? chunk.subarray(n) : undefined;
      r.ok(n);
    }
  }

  #badResource(op: string): Promise<never> {
    return Promise.reject(
      new errors.BadResource(`Cannot ${op} duplex flow: it is closed`),
    );
  }

  /**
   * Reads into `p`: 1..`p.length` bytes, or `null` at end of flow.
   *
   * @param p The buffer.
   * @returns The count read, or `null`.
   */
  read(p: Uint8Array): Promise<number | null> {
    return this.#read(p, false);
  }

  #read(p: Uint8Array, stream: boolean): Promise<number | null> {
    if (this.#closed) return this.#badResource("read from");
    if (p.length === 0) return Promise.resolve(0);
    return new Promise((ok, ko) => {
      this.#reads.push({ p, ok, ko, stream });
      this.#pump();
    });
  }

  /** Puts bytes a cancelled pull had taken back in front. */
  #unshift(bytes: Uint8Array): void {
    if (this.#closed || bytes.length === 0) return;
    const rest = this.#leftover;
    if (rest === undefined) this.#leftover = bytes.slice();
    else {
      const all = new Uint8Array(bytes.length + rest.length);
      all.set(bytes);
      all.set(rest, bytes.length);
      this.#leftover = all;
    }
    this.#pump();
  }

  /**
   * Writes `p`; resolves to `p.length` once the duplex has taken the bytes
   * (its write callback ran).
   *
   * @param p The bytes.
   * @returns The count written.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return this.#badResource("write to");
    if (this.#closeWrite !== undefined) {
      return Promise.reject(
        new errors.BrokenPipe(
          "Cannot write to duplex flow: it is closed for writing",
        ),
      );
    }
    if (this.#error) return Promise.reject(this.#error);
    if (p.length === 0) return Promise.resolve(0);
    // A net.Socket is done with the bytes when its callback runs; another
    // Duplex (a PassThrough) may hand the very chunk to its reader, so it
    // gets a copy the caller cannot overwrite by reusing `p`.
    const chunk = this.#ownsChunks ? p : Buffer.from(p);
    return new Promise((ok, ko) => {
      const pending: Pending = { ko };
      this.#writes.add(pending);
      this.#duplex.write(chunk, (error?: Error | null) => {
        if (!this.#writes.delete(pending)) return; // closed meanwhile
        if (error) {
          ko(this.#error ?? ioError(error, "Cannot write to duplex flow"));
        } else ok(p.length);
      });
    });
  }

  /**
   * Half-closes (`end()`): the peer reads every byte written, then end of
   * flow; this side keeps reading. Idempotent.
   *
   * @returns Resolves once the duplex has finished writing.
   */
  closeWrite(): Promise<void> {
    if (this.#closed) return this.#badResource("half-close");
    if (this.#closeWrite === undefined && this.#error) {
      return Promise.reject(this.#error);
    }
    return this.#closeWrite ??= new Promise<void>((ok, ko) => {
      const pending: Pending = { ko };
      this.#writes.add(pending);
      const done = (error?: Error | null) => {
        if (!this.#writes.delete(pending)) return;
        if (error) ko(ioError(error, "Cannot half-close duplex flow"));
        else ok();
      };
      if (this.#duplex.writableFinished) done();
      else this.#duplex.end(done);
    });
  }

  /** Destroys the duplex. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#reads.splice(0)) {
      r.ko(
        new errors.Interrupted("Cannot read from duplex flow: it was closed"),
      );
    }
    for (const w of this.#writes) {
      w.ko(
        new errors.Interrupted("Cannot write to duplex flow: it was closed"),
      );
    }
    this.#writes.clear();
    this.#leftover = undefined;
    this.#duplex.destroy();
  }

  /**
   * The bytes read, as a stream (the same position as `read`): cancelling
   * it only ends the stream; its pending read gives up its place, and bytes
   * a cancelled pull had taken go back in front.
   */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFromFlow(
      (p) => this.#read(p, true),
      () => {
        const i = this.#reads.findIndex((r) => r.stream);
        if (i >= 0) this.#reads.splice(i, 1)[0].ok(0);
        this.#pump();
      },
      { unread: (bytes) => this.#unshift(bytes) },
    );
  }

  /** The bytes to write; closing it is `closeWrite()`, aborting it `close()`. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  /** `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * A flow over a `node:stream` `Duplex` (a `net.Socket`, a `tls.TLSSocket`,
 * a stream pair): see {@linkcode DuplexFlow} for its semantics. The flow
 * owns the duplex: closing it destroys the duplex.
 *
 * @param duplex The stream.
 * @returns The flow.
 *
 * @example A node:net socket as a flow
 * ```ts
 * import * as net from "node:net";
 * import { fromDuplex } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const socket = net.connect({
 *   host: "127.0.0.1",
 *   port: listener.addr.port,
 *   allowHalfOpen: true,
 * });
 * await new Promise((ok) => socket.once("connect", ok));
 * await using flow = fromDuplex(socket);
 * using server = await listener.accept();
 * await server.write(new TextEncoder().encode("hi"));
 * const buf = new Uint8Array(2);
 * assert.equal(await flow.read(buf), 2);
 * assert.equal(flow.remoteAddr?.port, listener.addr.port);
 * ```
 */
export function fromDuplex(duplex: Duplex): DuplexFlow {
  return new DuplexFlow(duplex);
}

// ---------------------------------------------------------------------------
// node:net protocols
// ---------------------------------------------------------------------------

/** The endpoint of {@linkcode netTcp}: the shape of the `tcp` protocol's. */
export interface NetTcpEndpoint {
  /** A host name or an IP address. */
  hostname: string;
  /** The port, 1-65535. */
  port: number;
  /**
   * Disables Nagle's algorithm.
   *
   * @default {true}
   */
  noDelay?: boolean;
}

/** The endpoint of {@linkcode netUnix}: a Unix domain socket's path. */
export interface NetUnixEndpoint {
  /** The socket's file path. */
  path: string;
}

function connectNet(
  options: net.NetConnectOpts,
  what: string,
  signal: AbortSignal,
  noDelay: boolean,
): Promise<DuplexFlow> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((ok, ko) => {
    const socket = net.connect({ ...options, allowHalfOpen: true });
    const cleanup = () => {
      signal.removeEventListener("abort", onAbort);
      socket.off("connect", onConnect);
      socket.off("error", onError);
    };
    const onAbort = () => {
      cleanup();
      socket.destroy();
      ko(signal.reason);
    };
    const onConnect = () => {
      cleanup();
      if (noDelay && "setNoDelay" in socket) socket.setNoDelay(true);
      ok(new DuplexFlow(socket));
    };
    const onError = (error: unknown) => {
      cleanup();
      socket.destroy();
      ko(ioError(error, `Cannot connect to ${what}`));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", onConnect);
    socket.once("error", onError);
  });
}

function badEndpoint(protocol: string, why: string): never {
  throw new TypeError(`Cannot connect ${protocol} endpoint: ${why}`);
}

/**
 * TCP over `node:net` (Node, Bun, and Deno's `node:net`): connects a
 * {@linkcode NetTcpEndpoint}; the flow is a {@linkcode DuplexFlow} over the
 * `net.Socket` (made with `allowHalfOpen: true`), with `localAddr` and
 * `remoteAddr`. A refused connection rejects with `ConnectionRefused`, an
 * endpoint of the wrong shape with a `TypeError`.
 *
 * Its endpoint has the `tcp` protocol's shape, so code that builds contexts
 * for `tcp` (`./tcp`, which needs `Deno.connect`) can build them for
 * `netTcp` on runtimes without Deno.
 *
 * @example TLS over node:net
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { netTcp } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const ctx = empty.add(netTcp.endpoint, {
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 * });
 * await using flow = await resolve(ctx);
 * assert.ok(netTcp.is(flow));
 * using server = await listener.accept();
 * await flow.write(new TextEncoder().encode("ping"));
 * const buf = new Uint8Array(4);
 * assert.equal(await server.read(buf), 4);
 * ```
 */
export const netTcp: Protocol<NetTcpEndpoint, DuplexFlow> = register(
  "net-tcp",
  (endpoint: NetTcpEndpoint, signal: AbortSignal): Promise<DuplexFlow> => {
    try {
      if (typeof endpoint !== "object" || endpoint === null) {
        badEndpoint("net-tcp", "it must be an object");
      }
      const { hostname, port } = endpoint;
      if (typeof hostname !== "string" || hostname === "") {
        badEndpoint("net-tcp", "hostname must be a non-empty string");
      }
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        badEndpoint(
          "net-tcp",
          `port must be an integer in 1-65535, got ${port}`,
        );
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const host = endpoint.hostname.replace(/^\[(.*)\]$/, "$1");
    const what = host.includes(":")
      ? `[${host}]:${endpoint.port}`
      : `${host}:${endpoint.port}`;
    return connectNet(
      { host, port: endpoint.port },
      what,
      signal,
      endpoint.noDelay ?? true,
    );
  },
);

/**
 * Unix domain sockets over `node:net`: connects a
 * {@linkcode NetUnixEndpoint}; the flow is a {@linkcode DuplexFlow}. A
 * missing socket rejects with `NotFound`, a refused one with
 * `ConnectionRefused`.
 *
 * @example Connect a Unix socket
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { netUnix } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/socket`;
 * using listener = Deno.listen({ transport: "unix", path });
 * await using flow = await resolve(empty.add(netUnix.endpoint, { path }));
 * assert.ok(netUnix.is(flow));
 * using _server = await listener.accept();
 * flow.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export const netUnix: Protocol<NetUnixEndpoint, DuplexFlow> = register(
  "net-unix",
  (endpoint: NetUnixEndpoint, signal: AbortSignal): Promise<DuplexFlow> => {
    try {
      if (typeof endpoint !== "object" || endpoint === null) {
        badEndpoint("net-unix", "it must be an object");
      }
      if (typeof endpoint.path !== "string" || endpoint.path === "") {
        badEndpoint("net-unix", "path must be a non-empty string");
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return connectNet({ path: endpoint.path }, endpoint.path, signal, false);
  },
);

// ---------------------------------------------------------------------------
// HTTP glue: undici and node:http
// ---------------------------------------------------------------------------

/** Where an HTTP client wants a connection to. */
export interface HttpTarget {
  /** `"http:"` or `"https:"`. */
  protocol: string;
  /** The host name (or IP address, IPv6 without brackets). */
  hostname: string;
  /** The port (the scheme's default when the URL has none). */
  port: number;
  /** The TLS server name the client asked for, if any. */
  servername?: string;
}

/**
 * Makes the context to resolve for a target: e.g. TLS over a CONNECT
 * tunnel for `https:`. Called once per connection the client opens.
 */
export type ContextFor = (target: HttpTarget) => Context | Promise<Context>;

/** The options undici passes to a `connect` function (the part used here). */
export interface UndiciConnectOptions {
  /** `"http:"` or `"https:"`. */
  protocol: string;
  /** The host name. */
  hostname: string;
  /** The port, as a string; empty for the scheme's default. */
  port: string;
  /** The TLS server name. */
  servername?: string | null;
}

/**
 * An undici `connect` function: what `new Agent({ connect })` and
 * `new Client(url, { connect })` take. The socket it hands undici is a
 * {@linkcode FlowDuplex} (typed as undici types it: a `net.Socket`; it has
 * what undici uses of one).
 */
export type UndiciConnector = (
  options: UndiciConnectOptions,
  callback: (...args: [null, net.Socket] | [Error, null]) => void,
) => void;

function defaultPort(protocol: string | undefined): number {
  return protocol === "https:" || protocol === "wss:" ? 443 : 80;
}

function unbracket(hostname: string): string {
  return hostname.replace(/^\[(.*)\]$/, "$1");
}

async function connectDuplex(
  contextFor: ContextFor,
  target: HttpTarget,
  options: ResolveOptions,
): Promise<FlowDuplex> {
  const flow = await resolve(await contextFor(target), options);
  const duplex = toDuplex(flow);
  const handshake = (flow as { handshake?: unknown }).handshake;
  if (typeof handshake === "function") {
    try {
      const info = await (handshake.call(flow) as Promise<
        { alpnProtocol?: string | null }
      >);
      duplex.alpnProtocol = info.alpnProtocol ?? false;
    } catch (error) {
      duplex.destroy(); // closes the flow
      throw error;
    }
  }
  return duplex;
}

/**
 * An undici `connect` function over any context: for each connection undici
 * opens, `contextFor` says what to resolve (TLS over a CONNECT tunnel, TLS
 * over a WebSocket, ...), and the flow is handed to undici as a
 * {@linkcode FlowDuplex}. For `https:` the context must do the TLS (undici
 * does no TLS over a custom connection); a TLS flow's ALPN protocol is
 * passed on as `alpnProtocol` (offer `["http/1.1"]`: undici speaks HTTP/2
 * only over its own sockets).
 *
 * @param contextFor The context for a target.
 * @param options The resolution's signal and trace.
 * @returns The `connect` option of undici's `Agent`, `Client` and `Pool`.
 *
 * @example undici over in-memory pipes served by node:http
 * ```ts
 * import { Agent, request } from "npm:undici@8.13.1";
 * import { createServer } from "node:http";
 * import { empty } from "@mimic/mimic";
 * import { listenPipe, pipeProtocol } from "@mimic/mimic/pipe";
 * import { serveHttp, undiciConnect } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const server = createServer((req, res) => res.end(`hello ${req.url}`));
 * using listener = listenPipe();
 * const serving = (async () => {
 *   for await (const flow of listener) serveHttp(server, flow);
 * })();
 * const dispatcher = new Agent({
 *   connect: undiciConnect(() => empty.add(pipeProtocol.endpoint, listener)),
 * });
 * const res = await request("http://in-process.test/x", { dispatcher });
 * assert.equal(await res.body.text(), "hello /x");
 * await dispatcher.close();
 * listener.close();
 * await serving;
 * ```
 */
export function undiciConnect(
  contextFor: ContextFor,
  options: ResolveOptions = {},
): UndiciConnector {
  return (opts, callback) => {
    const target: HttpTarget = {
      protocol: opts.protocol,
      hostname: unbracket(opts.hostname),
      port: Number(opts.port) || defaultPort(opts.protocol),
      ...(opts.servername ? { servername: opts.servername } : {}),
    };
    connectDuplex(contextFor, target, options).then(
      (duplex) => callback(null, duplex as unknown as net.Socket),
      (error) => callback(error as Error, null),
    );
  };
}

/** The options `node:http` passes to `createConnection` (the part used here). */
export interface HttpConnectionOptions {
  /** `"http:"` or `"https:"`. */
  protocol?: string | null;
  /** The host name. */
  hostname?: string | null;
  /** The host name (when `hostname` is absent). */
  host?: string | null;
  /** The port. */
  port?: number | string | null;
  /** The scheme's default port. */
  defaultPort?: number | string | null;
  /** The TLS server name. */
  servername?: string | null;
}

/** A `node:http` `createConnection` function (the callback form). */
export type HttpConnector = (
  options: HttpConnectionOptions,
  callback: (error: Error | null, socket: Duplex) => void,
) => undefined;

/**
 * A `node:http` `createConnection` over any context: give it as the
 * `createConnection` option of `http.request` or `https.request`, or set it
 * on an `http.Agent`. The context does the TLS for `https:` targets: given
 * `createConnection` (and no `agent`), `https.request` uses the connection
 * as it is, without its own TLS.
 *
 * @param contextFor The context for a target.
 * @param options The resolution's signal and trace.
 * @returns The `createConnection` function (it answers through its callback).
 *
 * @example node:http's client over in-memory pipes
 * ```ts
 * import { createServer, request } from "node:http";
 * import { empty } from "@mimic/mimic";
 * import { listenPipe, pipeProtocol } from "@mimic/mimic/pipe";
 * import { createConnection, serveHttp } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const server = createServer((req, res) => res.end(`hello ${req.url}`));
 * using listener = listenPipe();
 * const serving = (async () => {
 *   for await (const flow of listener) serveHttp(server, flow);
 * })();
 * const body = await new Promise<string>((ok, ko) => {
 *   const req = request("http://in-process.test/y", {
 *     createConnection: createConnection(() =>
 *       empty.add(pipeProtocol.endpoint, listener)
 *     ),
 *   }, (res) => {
 *     let text = "";
 *     res.setEncoding("utf8");
 *     res.on("data", (s) => text += s);
 *     res.on("end", () => ok(text));
 *   });
 *   req.on("error", ko);
 *   req.end();
 * });
 * assert.equal(body, "hello /y");
 * listener.close();
 * await serving;
 * ```
 */
export function createConnection(
  contextFor: ContextFor,
  options: ResolveOptions = {},
): HttpConnector {
  return (opts, callback) => {
    const protocol = opts.protocol ?? "http:";
    const target: HttpTarget = {
      protocol,
      hostname: unbracket(opts.hostname ?? opts.host ?? "localhost"),
      port: Number(opts.port) || Number(opts.defaultPort) ||
        defaultPort(protocol),
      ...(opts.servername ? { servername: opts.servername } : {}),
    };
    connectDuplex(contextFor, target, options).then(
      (duplex) => callback(null, duplex),
      (error) => callback(error as Error, undefined as unknown as Duplex),
    );
    return undefined;
  };
}

/**
 * Serves HTTP over `flow` with a `node:http` server (or `node:https`'s,
 * `http2`'s: any server whose `connection` event takes a `Duplex`): the
 * flow becomes a {@linkcode FlowDuplex} emitted as a connection. HTTP over
 * any transport: TLS made by `acceptTls` over a WebSocket, a pipe, a
 * subprocess, ... (which `Deno.serve` cannot do). The server need not
 * listen.
 *
 * @param server The server.
 * @param flow The connection (the server owns it from now on).
 * @returns Resolves once the connection is closed.
 *
 * @example Serve every flow a pipe listener accepts
 * ```ts
 * import { createServer } from "node:http";
 * import { listenPipe } from "@mimic/mimic/pipe";
 * import { serveHttp } from "@mimic/mimic/node";
 * import assert from "node:assert/strict";
 *
 * const server = createServer((_req, res) => res.end("ok"));
 * const listener = listenPipe();
 * const serving = (async () => {
 *   for await (const flow of listener) serveHttp(server, flow);
 * })();
 * const client = listener.connect();
 * await client.write(new TextEncoder().encode(
 *   "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
 * ));
 * assert.ok((await new Response(client.readable).text()).endsWith("ok"));
 * client.close();
 * listener.close();
 * await serving;
 * ```
 */
export function serveHttp(server: Server, flow: Flow): Promise<void> {
  const duplex = toDuplex(flow);
  const closed = new Promise<void>((ok) => duplex.once("close", () => ok()));
  server.emit("connection", duplex);
  return closed;
}
