/**
 * WebSocket (RFC 6455) written over any {@linkcode Flow}: the client and
 * server opening handshakes, and {@linkcode WebSocketOverFlow}, the pump
 * between the sans-IO codec of `_rfc6455.ts` and the inner flow. Portable:
 * no `Deno` global. Re-exported by `./websocket`.
 *
 * @module
 */

import type { Context } from "./context.ts";
import type { Flow } from "./flow.ts";
import { type Protocol, register } from "./protocol.ts";
import { resolve } from "./resolve.ts";
import { errors } from "./errors.ts";
import { abortable, closeQuietly, writeAll } from "./_util.ts";
import { readableFromFlow, writableFromFlow } from "./_streams.ts";
import {
  acceptFor,
  checkUpgradeRequest,
  clientRequest,
  CloseCode,
  closePayload,
  encodeFrame,
  errorResponse,
  FrameDecoder,
  type FrameEvent,
  frameHeader,
  headEnd,
  type HttpHead,
  newKey,
  newMask,
  Opcode,
  parseHead,
  switchingProtocols,
  tokens,
} from "./_rfc6455.ts";
import { WebSocketCloseError } from "./websocket.ts";

/**
 * The default `maxMessageSize` of {@linkcode openWebSocket} and
 * {@linkcode upgradeWebSocket}: 64 MiB, as Deno's own WebSocket.
 */
export const DEFAULT_MAX_MESSAGE_SIZE_OVER_FLOW = 64 * 1024 * 1024;

/** The largest HTTP head the handshakes read: 64 KiB. */
const MAX_HEAD_SIZE = 64 * 1024;
/** The inner flow is read this many bytes at a time. */
const READ_CHUNK = 64 * 1024;
/** The pump stops reading while this many message bytes wait to be read. */
const READ_HIGH_WATER = 1024 * 1024;
/** Smaller payloads are copied behind their header (one inner write). */
const COPY_LIMIT = 16 * 1024;
/** How long `Symbol.asyncDispose` waits for its close frame to be handed over. */
const DISPOSE_WAIT_MS = 1000;

/** A transport address, in the shapes of `Deno.Addr`. */
export type WebSocketAddr =
  | { transport: "tcp" | "udp"; hostname: string; port: number }
  | { transport: "unix" | "unixpacket"; path: string };

/** Options of {@linkcode openWebSocket}. */
export interface OpenWebSocketOptions {
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`), most preferred first. */
  protocols?: string[];
  /** More request headers (`Origin`, `Authorization`, a `Host` to replace the URL's, ...). */
  headers?: Record<string, string>;
  /**
   * The largest message accepted, in bytes: a bigger one closes the
   * WebSocket with code 1009. Also the most one `write` sends (as one
   * message).
   *
   * @default {67108864}
   */
  maxMessageSize?: number;
  /** Aborts the handshake: the flow is closed and the call rejects with the reason. */
  signal?: AbortSignal;
}

/** Options of {@linkcode upgradeWebSocket}. */
export interface UpgradeWebSocketOptions {
  /**
   * Subprotocols this server speaks, most preferred first: the first one the
   * client offers is selected. None in common: none is selected.
   */
  protocols?: string[];
  /**
   * The largest message accepted, in bytes: a bigger one closes the
   * WebSocket with code 1009. Also the most one `write` sends.
   *
   * @default {67108864}
   */
  maxMessageSize?: number;
  /** Aborts the handshake: the flow is closed and the call rejects with the reason. */
  signal?: AbortSignal;
}

/** The endpoint of {@linkcode websocketOver}. */
export interface WebSocketOverEndpoint {
  /** A `ws:`, `wss:`, `http:` or `https:` URL: its host and path go in the request. */
  url: string;
  /** How to reach the server: any context (tcp, tls over tcp, a tunnel, ...). */
  over: Context;
  /** Subprotocols to offer. */
  protocols?: string[];
  /** More request headers. */
  headers?: Record<string, string>;
  /** See {@linkcode OpenWebSocketOptions.maxMessageSize}. */
  maxMessageSize?: number;
}

/**
 * The opening handshake failed on an HTTP answer: the server answered
 * another status than 101, or a 101 that is no valid WebSocket upgrade
 * (wrong `Sec-WebSocket-Accept`, a subprotocol not offered); or, on the
 * server side, the request was no valid upgrade and was answered with
 * `status` (400 or 426).
 *
 * @example Tell a refused upgrade from a network failure
 * ```ts
 * import { openWebSocket, WebSocketHandshakeError } from "@mimic/mimic/websocket";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [client, server] = pipe();
 * (async () => {
 *   await server.read(new Uint8Array(4096));
 *   await server.write(new TextEncoder().encode(
 *     "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
 *   ));
 * })();
 * await assert.rejects(
 *   openWebSocket(client, "ws://localhost/nowhere"),
 *   (e) => e instanceof WebSocketHandshakeError && e.status === 404,
 * );
 * server.close();
 * ```
 */
export class WebSocketHandshakeError extends Error {
  /** The HTTP status answered. */
  readonly status: number;
  /** The reason phrase. */
  readonly statusText: string;
  /** The answer's headers (client side), or the request's (server side). */
  readonly headers: Headers;

  /**
   * Makes the error.
   *
   * @param message The message.
   * @param status The HTTP status answered.
   * @param statusText Its reason phrase.
   * @param headers The headers of the answer (or of the request, server side).
   */
  constructor(
    message: string,
    status: number,
    statusText: string,
    headers: Headers,
  ) {
    super(message);
    this.name = "WebSocketHandshakeError";
    this.status = status;
    this.statusText = statusText;
    this.headers = headers;
  }
}

/** How a {@linkcode WebSocketOverFlow} is made: what its handshake settled. */
export interface WebSocketOverFlowInit {
  /** `"client"`: frames are masked, the peer's must not be; `"server"`: the reverse. */
  role: "client" | "server";
  /** The WebSocket's URL, for messages. */
  url: string;
  /** The subprotocol selected, or `""`. */
  protocol?: string;
  /** The peer's handshake headers (the response's, or the request's). */
  headers?: Headers;
  /** See {@linkcode OpenWebSocketOptions.maxMessageSize}. */
  maxMessageSize?: number;
  /** Bytes read from the inner flow past the handshake: the first frames. */
  leftover?: Uint8Array;
}

function positiveInteger(what: string, name: string, x: number): number {
  if (!Number.isInteger(x) || x <= 0) {
    throw new RangeError(
      `Cannot ${what}: ${name} must be a positive integer, got ${x}`,
    );
  }
  return x;
}

/**
 * A WebSocket written over a flow (RFC 6455), itself a flow of the binary
 * messages' bytes. Made by {@linkcode openWebSocket} (client),
 * {@linkcode upgradeWebSocket} (server), or by resolving a
 * {@linkcode websocketOver} endpoint.
 *
 * - `read` yields the bytes of the messages received, in order (a text
 *   message, once checked to be UTF-8, as its UTF-8 bytes); message
 *   boundaries are not kept. It resolves `null` once the peer's close frame
 *   with code 1000 (or none) arrived, and rejects with
 *   {@linkcode WebSocketCloseError} when it closed with another code, when
 *   the peer broke the RFC (this side then closes with 1002, 1007 or 1009,
 *   the error's `code`), or when the connection ended without a close frame
 *   (code 1006). A failure of the inner flow (`ConnectionReset`) is passed
 *   through.
 * - `write(p)` sends `p` as one binary message (at most `maxMessageSize`
 *   bytes of it: the count is returned) once the frame is handed to the
 *   inner flow.
 * - `closeWrite()` sends a close frame (1000) after every message written;
 *   reading goes on until the peer's close frame (a true half-close). Once
 *   both close frames are exchanged the inner flow is half-closed. A peer's
 *   close frame is answered by this side's `closeWrite()` or `close()`, so
 *   this side may still write after reading `null`.
 * - Pings are answered with pongs as they arrive, pongs ignored. Reading
 *   the inner flow pauses while 1 MiB of messages waits to be read.
 * - `close()` sends a close frame (1000) when none was sent and nothing is
 *   being written, without waiting, and closes the inner flow (over TLS
 *   that frame is lost: call `closeWrite()` first, or use `await using`,
 *   whose dispose waits up to 1 s for the frame to be handed over).
 *
 * @example A server and a client over an in-memory pipe
 * ```ts
 * import { openWebSocket, upgradeWebSocket } from "@mimic/mimic/websocket";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * const [client, server] = await Promise.all([
 *   openWebSocket(a, "ws://localhost/echo", { protocols: ["echo"] }),
 *   upgradeWebSocket(b, { protocols: ["echo"] }),
 * ]);
 * assert.equal(client.protocol, "echo");
 * await client.write(new TextEncoder().encode("hello"));
 * const buf = new Uint8Array(16);
 * const n = await server.read(buf);
 * assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "hello");
 * await client.closeWrite();
 * assert.equal(await server.read(buf), null);
 * await server.closeWrite();
 * assert.equal(await client.read(buf), null);
 * client.close();
 * server.close();
 * ```
 */
export class WebSocketOverFlow implements Flow, AsyncDisposable, Disposable {
  /** The flow the frames travel on. */
  readonly inner: Flow;
  /** The WebSocket's URL (server side: built from `Host` and the request target). */
  readonly url: string;
  /** The subprotocol selected, or `""`. */
  readonly protocol: string;
  /** The peer's handshake headers: the 101 response's (client), the request's (server). */
  readonly headers: Headers;

  readonly #client: boolean;
  readonly #maxMessageSize: number;
  readonly #decoder: FrameDecoder;
  /** Message bytes received and not read yet. */
  #queue: Uint8Array[] = [];
  #queued = 0;
  /** Reads waiting for bytes, in call order. */
  #waiters: {
    p: Uint8Array;
    ok: (n: number | null) => void;
    ko: (e: unknown) => void;
    /** A read of `readable`'s: cancelling it resolves 0 (nothing taken). */
    stream?: boolean;
  }[] = [];
  /** How reading ended: `"eof"` (null), or an error every later read repeats. */
  #readEnd: "eof" | { error: unknown } | null = null;
  #resume: (() => void) | null = null;
  /** Frames to the inner flow, in order. */
  #sending: Promise<void> = Promise.resolve();
  #sendsInFlight = 0;
  #sendError: { error: unknown } | undefined;
  #writeClosed = false;
  #closeSent = false;
  #peerClose: { code: number; reason: string } | null = null;
  #closeWrite: Promise<void> | undefined;
  #finished = false;
  /** After a protocol failure: incoming bytes are read and dropped. */
  #draining = false;
  #closed = false;
  #readable: ReadableStream<Uint8Array> | undefined;
  #writable: WritableStream<Uint8Array> | undefined;

  /**
   * Runs the WebSocket over `inner`, whose opening handshake is done. Prefer
   * {@linkcode openWebSocket} and {@linkcode upgradeWebSocket}; this is for
   * a handshake made elsewhere.
   *
   * @param inner The flow, past the handshake.
   * @param init The role, URL, subprotocol, headers, limit and leftover bytes.
   */
  constructor(inner: Flow, init: WebSocketOverFlowInit) {
    this.inner = inner;
    this.url = init.url;
    this.protocol = init.protocol ?? "";
    this.headers = init.headers ?? new Headers();
    this.#client = init.role === "client";
    this.#maxMessageSize = positiveInteger(
      `run WebSocket ${init.url}`,
      "maxMessageSize",
      init.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE_OVER_FLOW,
    );
    this.#decoder = new FrameDecoder({
      role: init.role,
      maxMessageSize: this.#maxMessageSize,
    });
    this.#pump(init.leftover ?? new Uint8Array(0));
  }

  /** The peer's close frame (code 1005 when it had none), once it arrived. */
  get peerClose(): { code: number; reason: string } | null {
    return this.#peerClose;
  }

  /** The inner flow's local address, when it has one. */
  get localAddr(): WebSocketAddr | undefined {
    return (this.inner as { localAddr?: WebSocketAddr }).localAddr;
  }

  /** The inner flow's remote address, when it has one. */
  get remoteAddr(): WebSocketAddr | undefined {
    return (this.inner as { remoteAddr?: WebSocketAddr }).remoteAddr;
  }

  #error(
    Kind: (typeof errors)[keyof typeof errors],
    action: string,
    why: string,
  ): Error {
    return new Kind(`Cannot ${action} WebSocket ${this.url}: ${why}`);
  }

  // --- Reading --------------------------------------------------------------

  /** The pump: reads the inner flow and feeds the decoder until reading ends. */
  async #pump(leftover: Uint8Array): Promise<void> {
    const buf = new Uint8Array(READ_CHUNK);
    try {
      if (leftover.length > 0) this.#handle(this.#decoder.feed(leftover));
      while (!this.#closed && this.#peerClose === null) {
        if (
          this.#queued >= READ_HIGH_WATER && !this.#draining
        ) {
          await new Promise<void>((ok) => this.#resume = ok);
          continue;
        }
        const n = await this.inner.read(buf);
        if (this.#closed) return;
        if (n === null) {
          if (!this.#draining) {
            this.#endRead({
              error: new WebSocketCloseError(this.url, {
                code: CloseCode.Abnormal,
                reason: "the connection ended without a close frame",
                wasClean: false,
              }),
            });
          }
          return;
        }
        if (!this.#draining) {
          this.#handle(this.#decoder.feed(buf.subarray(0, n)));
        }
      }
    } catch (error) {
      if (!this.#closed) this.#endRead({ error });
    }
  }

  #handle(events: FrameEvent[]): void {
    for (const event of events) {
      switch (event.type) {
        case "message":
          if (event.data.length > 0) {
            this.#queue.push(event.data);
            this.#queued += event.data.length;
          }
          break;
        case "ping":
          if (!this.#closeSent) {
            this.#send([this.#frame(Opcode.Pong, event.data)]).catch(() => {});
          }
          break;
        case "pong":
          break;
        case "close":
          this.#peerClose = { code: event.code, reason: event.reason };
          this.#endRead(
            event.code === CloseCode.Normal || event.code === CloseCode.NoStatus
              ? "eof"
              : {
                error: new WebSocketCloseError(this.url, {
                  code: event.code,
                  reason: event.reason,
                  wasClean: true,
                }),
              },
          );
          if (this.#closeSent) this.#finish();
          break;
        case "fail":
          this.#fail(event.code, event.reason);
          break;
      }
    }
    this.#serve();
  }

  /** The peer broke the RFC: close with `code`, drop what follows. */
  #fail(code: number, reason: string): void {
    this.#draining = true;
    this.#endRead({
      error: new WebSocketCloseError(this.url, {
        code,
        reason,
        wasClean: false,
      }),
    });
    this.#writeClosed = true;
    if (!this.#closeSent) {
      this.#closeSent = true;
      this.#send([this.#frame(Opcode.Close, closePayload(code, reason))])
        .catch(() => {});
    }
    this.#finish();
  }

  /** Both close frames are out (or this side failed): half-close the inner flow. */
  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#sending
      .then(() => {
        if (!this.#closed) return this.inner.closeWrite();
      })
      .catch(() => {});
  }

  #endRead(end: "eof" | { error: unknown }): void {
    if (this.#readEnd !== null) return;
    this.#readEnd = end;
    this.#serve();
  }

  /** Answers waiting reads from the queue, or with how reading ended. */
  #serve(): void {
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0];
      const got = this.#take(waiter.p);
      if (got === undefined) return;
      this.#waiters.shift();
      if (typeof got === "object" && got !== null) waiter.ko(got.error);
      else waiter.ok(got);
    }
  }

  /** Takes bytes for `p`: a count, null, an error to reject with, or undefined to wait. */
  #take(p: Uint8Array): number | null | { error: unknown } | undefined {
    if (this.#queue.length > 0) {
      const chunk = this.#queue[0];
      const n = Math.min(p.length, chunk.length);
      p.set(chunk.subarray(0, n));
      if (n === chunk.length) this.#queue.shift();
      else this.#queue[0] = chunk.subarray(n);
      this.#queued -= n;
      if (this.#queued < READ_HIGH_WATER) this.#wake();
      return n;
    }
    const end = this.#readEnd;
    if (end === "eof") return null;
    if (end !== null) return end;
    return undefined;
  }

  #wake(): void {
    const resume = this.#resume;
    this.#resume = null;
    resume?.();
  }

  /**
   * Reads message bytes into `p`.
   *
   * @param p The buffer to fill.
   * @returns The count read, or `null` once the peer closed.
   */
  read(p: Uint8Array): Promise<number | null> {
    return this.#read(p, false);
  }

  #read(p: Uint8Array, stream: boolean): Promise<number | null> {
    if (this.#closed) {
      return Promise.reject(
        this.#error(errors.BadResource, "read from", "the flow is closed"),
      );
    }
    if (p.length === 0) return Promise.resolve(0);
    if (this.#waiters.length === 0) {
      const got = this.#take(p);
      if (typeof got === "object" && got !== null) {
        return Promise.reject(got.error);
      }
      if (got !== undefined) return Promise.resolve(got);
    }
    return new Promise((ok, ko) => this.#waiters.push({ p, ok, ko, stream }));
  }

  // --- Writing --------------------------------------------------------------

  /** One whole frame of this side (masked when this is the client). */
  #frame(opcode: number, payload: Uint8Array): Uint8Array {
    return encodeFrame(opcode, payload, this.#client ? newMask() : null);
  }

  /** Queues `parts` to the inner flow after everything queued before. */
  #send(parts: Uint8Array[]): Promise<void> {
    this.#sendsInFlight++;
    const task = this.#sending.then(async () => {
      if (this.#closed) {
        throw this.#error(errors.Interrupted, "write to", "the flow is closed");
      }
      if (this.#sendError !== undefined) throw this.#sendError.error;
      for (const part of parts) {
        await writeAll(this.inner, part, `WebSocket ${this.url}`);
      }
    });
    this.#sending = task.then(
      () => {
        this.#sendsInFlight--;
      },
      (error) => {
        this.#sendsInFlight--;
        this.#sendError ??= { error };
      },
    );
    return task.catch((error) => {
      if (this.#closed) {
        throw this.#error(errors.Interrupted, "write to", "the flow is closed");
      }
      throw error;
    });
  }

  /**
   * Sends `p` (at most `maxMessageSize` bytes of it) as one binary message.
   *
   * @param p The bytes.
   * @returns The count sent, once the frame is handed to the inner flow.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(
        this.#error(errors.BadResource, "write to", "the flow is closed"),
      );
    }
    if (this.#writeClosed || this.#closeSent) {
      return Promise.reject(
        this.#error(errors.BrokenPipe, "write to", "it is closed for writing"),
      );
    }
    if (p.length === 0) return Promise.resolve(0);
    const n = Math.min(p.length, this.#maxMessageSize);
    const body = p.subarray(0, n);
    const parts = this.#client || n <= COPY_LIMIT
      ? [this.#frame(Opcode.Binary, body)]
      : [frameHeader(Opcode.Binary, n, null), body];
    return this.#send(parts).then(() => n);
  }

  /**
   * Sends a close frame (code 1000) after every message written; reading
   * goes on until the peer's close frame. Idempotent.
   *
   * @returns A promise settled once the close frame is handed to the inner flow.
   */
  closeWrite(): Promise<void> {
    if (this.#closed) {
      return Promise.reject(
        this.#error(errors.BadResource, "close", "the flow is closed"),
      );
    }
    if (this.#closeWrite !== undefined) return this.#closeWrite;
    this.#writeClosed = true;
    if (this.#closeSent) return this.#closeWrite = Promise.resolve();
    this.#closeSent = true;
    this.#closeWrite = this.#send([
      this.#frame(Opcode.Close, closePayload(CloseCode.Normal)),
    ]).then(() => {
      if (this.#peerClose !== null) this.#finish();
    });
    return this.#closeWrite;
  }

  /**
   * Closes the WebSocket and the inner flow: a close frame (1000) is sent
   * first when none was and nothing is being written. Pending reads and
   * writes reject with `Interrupted`. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writeClosed = true;
    if (
      !this.#closeSent && this.#sendsInFlight === 0 &&
      this.#sendError === undefined
    ) {
      this.#closeSent = true;
      try {
        this.inner
          .write(this.#frame(Opcode.Close, closePayload(CloseCode.Normal)))
          .catch(() => {});
      } catch {
        // The inner flow is already closed.
      }
    }
    this.#queue = [];
    this.#queued = 0;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      w.ko(this.#error(errors.Interrupted, "read from", "the flow is closed"));
    }
    this.#wake();
    closeQuietly(this.inner);
  }

  /**
   * The bytes read, as a stream sharing `read`'s position: cancelling it
   * only ends the stream (a later `read` gets the next bytes, even those a
   * cancelled pull had taken).
   */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFromFlow(
      (p) => this.#read(p, true),
      () => {
        // The stream's pending read gives up its place, taking nothing.
        const i = this.#waiters.findIndex((w) => w.stream);
        if (i >= 0) this.#waiters.splice(i, 1)[0].ok(0);
        this.#serve();
      },
      { unread: (bytes) => this.#unshift(bytes) },
    );
  }

  /** Puts bytes a cancelled pull had taken back in front of the queue. */
  #unshift(bytes: Uint8Array): void {
    if (this.#closed || bytes.length === 0) return;
    this.#queue.unshift(bytes.slice());
    this.#queued += bytes.length;
    this.#serve();
  }

  /** The bytes to write, as a stream: closing it is `closeWrite()`, aborting it `close()`. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFromFlow(
      (p) => this.write(p),
      () => this.closeWrite(),
      { abort: () => this.close() },
    );
  }

  /** Closes the flow. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the flow as `close()` does, but first hands a close frame (1000)
   * to the inner flow when none was sent, waiting for it at most 1 s: the
   * peer sees a normal closure even over an inner flow whose `close()`
   * drops unsent bytes (TLS).
   *
   * @returns A promise settled once the flow is closed.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (
      !this.#closed && !this.#closeSent && this.#sendError === undefined
    ) {
      this.#closeSent = true;
      this.#writeClosed = true;
      const sent = this.#send([
        this.#frame(Opcode.Close, closePayload(CloseCode.Normal)),
      ]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        sent.catch(() => {}),
        new Promise((ok) => timer = setTimeout(ok, DISPOSE_WAIT_MS)),
      ]);
      clearTimeout(timer);
    }
    this.close();
  }
}

// --- The handshakes -----------------------------------------------------------

/** Reads an HTTP head from `flow`: its text, and the bytes read past it. */
async function readHead(
  flow: Flow,
  what: string,
  peer: string,
): Promise<{ text: string; leftover: Uint8Array }> {
  let buf = new Uint8Array(4096);
  let length = 0;
  let end = -1;
  while (end < 0) {
    if (length === buf.length) {
      if (buf.length >= MAX_HEAD_SIZE) {
        throw new errors.InvalidData(
          `Cannot ${what}: the ${peer}'s head exceeds ${MAX_HEAD_SIZE} bytes`,
        );
      }
      const bigger = new Uint8Array(Math.min(buf.length * 2, MAX_HEAD_SIZE));
      bigger.set(buf);
      buf = bigger;
    }
    const n = await flow.read(buf.subarray(length));
    if (n === null) {
      throw new errors.UnexpectedEof(
        `Cannot ${what}: the ${peer} closed the connection ${
          length === 0 ? "before answering" : "in the middle of its head"
        }`,
      );
    }
    const from = Math.max(0, length - 3);
    length += n;
    end = headEnd(buf, length, from);
  }
  return {
    text: new TextDecoder().decode(buf.subarray(0, end - 4)),
    leftover: buf.slice(end, length),
  };
}

/** The start of `text`, quoted, for an error message. */
function quote(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
}

/** Parses a URL for {@linkcode openWebSocket}: `ws:`, `wss:`, `http:` or `https:`, no fragment. */
function wsUrl(url: string | URL): URL {
  const u = new URL(String(url instanceof URL ? url.href : url));
  if (!["ws:", "wss:", "http:", "https:"].includes(u.protocol)) {
    throw new TypeError(
      `Cannot open WebSocket ${u.href}: the scheme must be ws:, wss:, http: or https:`,
    );
  }
  u.hash = "";
  return u;
}

/**
 * Opens a WebSocket over `flow` (TCP, TLS over anything, a tunnel, a
 * pipe, ...): sends the opening request for `url`, checks the server's 101
 * answer (`Sec-WebSocket-Accept`, the subprotocol, which must be one
 * offered) and resolves to the WebSocket as a {@linkcode WebSocketOverFlow}.
 * The URL names the resource (`Host` and the request target); `flow`
 * decides where the bytes go.
 *
 * On failure `flow` is closed, and the call rejects with
 * {@linkcode WebSocketHandshakeError} (another status than 101, a wrong
 * accept key, a subprotocol not offered), `InvalidData` (the answer is not
 * HTTP, or its head exceeds 64 KiB), `UnexpectedEof` (the server closed
 * before answering), a `TypeError` (a bad URL, header or subprotocol), or
 * the signal's reason.
 *
 * @example Through any flow: here TCP to a local `Deno.serve`
 * ```ts
 * import { openWebSocket } from "@mimic/mimic/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, onListen() {} },
 *   (req) => {
 *     const { socket, response } = Deno.upgradeWebSocket(req);
 *     socket.onmessage = (e) => socket.send(e.data);
 *     return response;
 *   },
 * );
 * const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
 * await using ws = await openWebSocket(tcp, `ws://127.0.0.1:${server.addr.port}/`);
 * await ws.write(new Uint8Array([1, 2, 3]));
 * const buf = new Uint8Array(3);
 * assert.equal(await ws.read(buf), 3);
 * assert.deepEqual([...buf], [1, 2, 3]);
 * await ws.closeWrite();
 * assert.equal(await ws.read(buf), null);
 * ```
 *
 * @param flow A flow to the server.
 * @param url The WebSocket URL.
 * @param options Subprotocols, headers, the message size limit, a signal.
 * @returns The WebSocket, open.
 */
export async function openWebSocket(
  flow: Flow,
  url: string | URL,
  options: OpenWebSocketOptions = {},
): Promise<WebSocketOverFlow> {
  const { signal } = options;
  try {
    const u = wsUrl(url);
    const what = `open WebSocket ${u.href}`;
    const maxMessageSize = positiveInteger(
      what,
      "maxMessageSize",
      options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE_OVER_FLOW,
    );
    const protocols = options.protocols ?? [];
    const key = newKey();
    const request = clientRequest(u, key, protocols, options.headers ?? {});
    signal?.throwIfAborted();
    const expected = acceptFor(key);
    const { text, leftover } = await abortable(
      (async () => {
        await writeAll(flow, new TextEncoder().encode(request), what);
        return await readHead(flow, what, "server");
      })(),
      signal,
    );
    const head = parseHead(text);
    const m = head === null
      ? null
      : /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(head.startLine);
    if (head === null || m === null) {
      throw new errors.InvalidData(
        `Cannot ${what}: the server does not speak HTTP/1.1: it sent ${
          quote(text)
        }`,
      );
    }
    const status = Number(m[1]);
    const statusText = (m[2] ?? "").trim();
    const fail = (why: string): never => {
      throw new WebSocketHandshakeError(
        `Cannot ${what}: ${why}`,
        status,
        statusText,
        head.headers,
      );
    };
    const h = head.headers;
    if (status !== 101) {
      fail(
        `the server answered ${status}${
          statusText === "" ? "" : ` ${statusText}`
        }, not 101`,
      );
    }
    if (
      !tokens(h.get("upgrade")).some((t) => t.toLowerCase() === "websocket")
    ) {
      fail("the server's 101 answer has no Upgrade: websocket");
    }
    if (
      !tokens(h.get("connection")).some((t) => t.toLowerCase() === "upgrade")
    ) {
      fail("the server's 101 answer has no Connection: Upgrade");
    }
    if (h.get("sec-websocket-accept") !== await expected) {
      fail("the server's Sec-WebSocket-Accept does not match the key sent");
    }
    if (h.has("sec-websocket-extensions")) {
      fail(
        `the server selected extensions not offered (${
          h.get("sec-websocket-extensions")
        })`,
      );
    }
    const protocol = h.get("sec-websocket-protocol") ?? "";
    if (protocol !== "" && !protocols.includes(protocol)) {
      fail(
        `the server selected the subprotocol ${
          JSON.stringify(protocol)
        }, which was not offered`,
      );
    }
    return new WebSocketOverFlow(flow, {
      role: "client",
      url: u.href,
      protocol,
      headers: h,
      maxMessageSize,
      leftover,
    });
  } catch (error) {
    closeQuietly(flow);
    throw error;
  }
}

/**
 * The server side of the opening handshake over `flow` (what a listener
 * accepted: TCP, TLS, a pipe, ...): reads the client's HTTP upgrade
 * request, checks it (RFC 6455 section 4.2.1), answers
 * `101 Switching Protocols` with the first of `protocols` the client
 * offers, and resolves to the WebSocket as a {@linkcode WebSocketOverFlow}.
 *
 * A request that is no valid upgrade is answered (426 with
 * `Upgrade: websocket` when it asks for none, 426 with
 * `Sec-WebSocket-Version: 13` for another version, else 400, each with a
 * line saying why), `flow` is closed, and the call rejects with
 * {@linkcode WebSocketHandshakeError} whose `status` is the one answered.
 * It rejects with `InvalidData` when the request is not HTTP or its head
 * exceeds 64 KiB, `UnexpectedEof` when the client closed before its
 * request was complete, or the signal's reason (each time closing `flow`).
 *
 * @example An echo server on a `Deno.listen` listener
 * ```ts
 * import { upgradeWebSocket } from "@mimic/mimic/websocket";
 * import assert from "node:assert/strict";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const served = (async () => {
 *   await using ws = await upgradeWebSocket(await listener.accept());
 *   const buf = new Uint8Array(1024);
 *   for (let n; (n = await ws.read(buf)) !== null;) {
 *     await ws.write(buf.subarray(0, n));
 *   }
 *   await ws.closeWrite();
 * })();
 * const socket = new WebSocket(`ws://127.0.0.1:${listener.addr.port}/`);
 * socket.binaryType = "arraybuffer";
 * const echoed = await new Promise<ArrayBuffer>((ok) => {
 *   socket.onopen = () => socket.send(new Uint8Array([42]));
 *   socket.onmessage = (e) => ok(e.data);
 * });
 * assert.deepEqual([...new Uint8Array(echoed)], [42]);
 * const closed = new Promise((ok) => socket.onclose = ok);
 * socket.close();
 * await closed;
 * await served;
 * ```
 *
 * @param flow A flow from a client.
 * @param options Subprotocols spoken, the message size limit, a signal.
 * @returns The WebSocket, open.
 */
export async function upgradeWebSocket(
  flow: Flow,
  options: UpgradeWebSocketOptions = {},
): Promise<WebSocketOverFlow> {
  const { signal } = options;
  const what = "accept WebSocket";
  try {
    const maxMessageSize = positiveInteger(
      what,
      "maxMessageSize",
      options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE_OVER_FLOW,
    );
    signal?.throwIfAborted();
    const { text, leftover } = await abortable(
      readHead(flow, what, "client"),
      signal,
    );
    const head: HttpHead | null = parseHead(text);
    if (head === null || !/^[A-Z]+ \S+ HTTP\/\d\.\d$/.test(head.startLine)) {
      const answer = errorResponse(
        400,
        "Bad Request",
        {},
        "Not an HTTP/1.1 request",
      );
      await abortable(
        writeAll(flow, new TextEncoder().encode(answer), what),
        signal,
      ).catch(() => {});
      throw new errors.InvalidData(
        `Cannot ${what}: the client does not speak HTTP/1.1: it sent ${
          quote(text)
        }`,
      );
    }
    const check = checkUpgradeRequest(head);
    if (!check.ok) {
      const answer = errorResponse(
        check.status,
        check.statusText,
        check.headers,
        `Cannot upgrade to WebSocket: ${check.reason}`,
      );
      await abortable(
        writeAll(flow, new TextEncoder().encode(answer), what),
        signal,
      ).catch(() => {});
      throw new WebSocketHandshakeError(
        `Cannot ${what}: ${check.reason} (answered ${check.status})`,
        check.status,
        check.statusText,
        head.headers,
      );
    }
    const offered = tokens(head.headers.get("sec-websocket-protocol"));
    const protocol = (options.protocols ?? []).find((p) =>
      offered.includes(p)
    ) ?? "";
    const accept = await acceptFor(check.key);
    await abortable(
      writeAll(
        flow,
        new TextEncoder().encode(switchingProtocols(accept, protocol)),
        what,
      ),
      signal,
    );
    let url = check.target;
    try {
      url = new URL(check.target, `ws://${head.headers.get("host")}`).href;
    } catch {
      // Keep the request target.
    }
    return new WebSocketOverFlow(flow, {
      role: "server",
      url,
      protocol,
      headers: head.headers,
      maxMessageSize,
      leftover,
    });
  } catch (error) {
    closeQuietly(flow);
    throw error;
  }
}

/**
 * The `websocket-over` protocol: resolves the endpoint's `over` context
 * (tcp, tls over tcp, a tunnel, SOCKS, ...), then opens a WebSocket for
 * `url` over it (see {@linkcode openWebSocket}). `fromUri("ws://...")` and
 * `fromUri("wss://...")` make its endpoints.
 *
 * @example `wss:` with a private CA, through a context
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { tcp } from "@mimic/mimic/tcp";
 * import { tls } from "@mimic/mimic/tls";
 * import { websocketOver } from "@mimic/mimic/websocket";
 *
 * const over = empty.add(tls.endpoint, {
 *   hostname: "localhost",
 *   caCerts: [await Deno.readTextFile("ca.pem")],
 *   over: empty.add(tcp.endpoint, { hostname: "127.0.0.1", port: 8443 }),
 * });
 * await using ws = await resolve(
 *   empty.add(websocketOver.endpoint, { url: "wss://localhost:8443/", over }),
 * );
 * ```
 */
export const websocketOver: Protocol<WebSocketOverEndpoint, WebSocketOverFlow> =
  register(
    "websocket-over",
    async (endpoint: WebSocketOverEndpoint, signal: AbortSignal) => {
      const flow = await resolve(endpoint.over, { signal });
      return await openWebSocket(flow, endpoint.url, {
        protocols: endpoint.protocols,
        headers: endpoint.headers,
        maxMessageSize: endpoint.maxMessageSize,
        signal,
      });
    },
  );
