/**
 * A WebSocket's binary messages as a {@linkcode Flow}: reading yields the
 * bytes of the messages received, in order, as one byte stream; each write
 * is sent as binary messages. Useful to reach a TCP service through a
 * WebSocket bridge such as websockify, and to run any byte protocol
 * (including TLS, with `startTls`) over a WebSocket.
 *
 * WebSockets cannot half-close: {@linkcode WebSocketFlow.closeWrite} waits
 * until every message written is sent, then closes the WebSocket with code
 * 1000 (the peer reads end of flow). What was already received is still
 * read, but what the peer sends after it sees the close is lost, so a
 * protocol that half-closes and then waits for an answer does not work over
 * a WebSocket.
 *
 * @example Echo through a WebSocket server
 * ```ts
 * import { acceptWebSocket, websocketFlow } from "@mimic/mimic/websocket";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve(
 *   { hostname: "127.0.0.1", port: 0, onListen() {} },
 *   async (req) => {
 *     const { socket, response } = Deno.upgradeWebSocket(req);
 *     const flow = acceptWebSocket(socket);
 *     (async () => {
 *       const buf = new Uint8Array(1024);
 *       for (let n; (n = await flow.read(buf)) !== null;) {
 *         await flow.write(buf.subarray(0, n));
 *       }
 *     })().catch(() => {}).finally(() => flow.close());
 *     return response;
 *   },
 * );
 * await using flow = await websocketFlow(`ws://127.0.0.1:${server.addr.port}`);
 * await flow.write(new Uint8Array([1, 2, 3]));
 * const buf = new Uint8Array(3);
 * assert.equal(await flow.read(buf), 3);
 * assert.deepEqual([...buf], [1, 2, 3]);
 * ```
 *
 * @module
 */

import { type Flow, SourceFlow } from "./flow.ts";
import { type Protocol, register } from "./protocol.ts";
import { errors } from "./errors.ts";

export type { Flow } from "./flow.ts";
export type { Protocol } from "./protocol.ts";
export type { Value } from "./context.ts";

/** The default {@linkcode WebSocketFlowOptions.highWaterMark}: 1 MiB. */
export const DEFAULT_HIGH_WATER_MARK = 1024 * 1024;
/** The default {@linkcode WebSocketFlowOptions.maxMessageSize}: 1 MiB. */
export const DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024;

/** Options of {@linkcode acceptWebSocket}. */
export interface AcceptWebSocketOptions {
  /**
   * Writes wait while the WebSocket's `bufferedAmount` is above this many
   * bytes: the flow's backpressure.
   *
   * @default {1048576}
   */
  highWaterMark?: number;
  /**
   * A write larger than this is sent as several messages of at most this
   * many bytes.
   *
   * @default {1048576}
   */
  maxMessageSize?: number;
}

/** Options of {@linkcode websocketFlow}. */
export interface WebSocketFlowOptions extends AcceptWebSocketOptions {
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`). */
  protocols?: string[];
  /** Aborts opening the WebSocket; once open, close the flow instead. */
  signal?: AbortSignal;
}

/** Where to connect: the endpoint of the {@linkcode websocket} protocol. */
export interface WebSocketEndpoint {
  /** A `ws:`, `wss:`, `http:` or `https:` URL. */
  url: string;
  /** Subprotocols to offer (`Sec-WebSocket-Protocol`). */
  protocols?: string[];
}

/** How a WebSocket closed: the fields of its `CloseEvent`. */
export interface WebSocketCloseInfo {
  /** The close code (1005 when the peer sent none, 1006 when the connection dropped). */
  code: number;
  /** The close reason. */
  reason: string;
  /** Whether the closing handshake completed. */
  wasClean: boolean;
}

/**
 * The WebSocket closed with a code other than 1000 (normal closure) or 1005
 * (no code): a read of a {@linkcode WebSocketFlow} rejects with this error
 * once the bytes received before the close are read.
 *
 * @example Tell an abnormal closure from other errors
 * ```ts
 * import { WebSocketCloseError } from "@mimic/mimic/websocket";
 * import type { Flow } from "@mimic/mimic";
 *
 * async function readOrExplain(flow: Flow): Promise<number | null> {
 *   try {
 *     return await flow.read(new Uint8Array(1024));
 *   } catch (error) {
 *     if (error instanceof WebSocketCloseError && error.code === 1011) {
 *       console.error("The server failed:", error.reason);
 *     }
 *     throw error;
 *   }
 * }
 * ```
 */
export class WebSocketCloseError extends Error {
  /** The close code. */
  readonly code: number;
  /** The close reason. */
  readonly reason: string;

  /**
   * Makes the error.
   *
   * @param url The WebSocket's URL, for the message.
   * @param info How it closed.
   */
  constructor(url: string, info: WebSocketCloseInfo) {
    super(
      `WebSocket ${url} closed with code ${info.code}${
        info.reason === "" ? "" : ` (${info.reason})`
      }`,
    );
    this.name = "WebSocketCloseError";
    this.code = info.code;
    this.reason = info.reason;
  }
}

function isClean(info: WebSocketCloseInfo): boolean {
  return info.code === 1000 || info.code === 1005;
}

function positiveInteger(name: string, x: number): number {
  if (!Number.isInteger(x) || x <= 0) {
    throw new RangeError(
      `Cannot make a WebSocket flow: ${name} must be a positive integer, got ${x}`,
    );
  }
  return x;
}

/**
 * A WebSocket as a flow. Made by {@linkcode websocketFlow} (client side),
 * {@linkcode acceptWebSocket} (server side) or by resolving a
 * {@linkcode websocket} endpoint.
 *
 * - `read` yields the bytes of the binary messages received; it resolves to
 *   `null` once the WebSocket closed with code 1000 or 1005, rejects with
 *   `errors.ConnectionReset` when the connection dropped (code 1006),
 *   {@linkcode WebSocketCloseError} when it closed with another code, and
 *   with `errors.InvalidData` when a text message arrives (the
 *   WebSocket is then closed with code 4003: the WebSocket API does not let
 *   an endpoint send 1003, "unsupported data"). Messages are buffered as they
 *   arrive: a WebSocket has no read backpressure.
 * - `write` sends `p` as one binary message (several when larger than
 *   `maxMessageSize`) and waits while `bufferedAmount` is above the
 *   high-water mark; it rejects with `errors.BrokenPipe` when the
 *   WebSocket is closing or closed, or after `closeWrite`.
 * - `closeWrite` waits until every message is sent, then closes the
 *   WebSocket with code 1000 (WebSockets cannot half-close).
 * - `close` closes the WebSocket with code 1000; idempotent; pending reads
 *   and writes reject with `errors.Interrupted`, later ones with
 *   `errors.BadResource`. Await
 *   {@linkcode WebSocketFlow.closed} (or use `await using`) to wait for the
 *   closing handshake.
 *
 * @example Wrap the server side of `Deno.upgradeWebSocket`
 * ```ts
 * import { acceptWebSocket } from "@mimic/mimic/websocket";
 *
 * function handler(req: Request): Response {
 *   const { socket, response } = Deno.upgradeWebSocket(req);
 *   const flow = acceptWebSocket(socket);
 *   flow.readable.pipeTo(flow.writable).catch(() => flow.close());
 *   return response;
 * }
 * ```
 */
export class WebSocketFlow implements Flow, Disposable, AsyncDisposable {
  /** The WebSocket. */
  readonly socket: WebSocket;
  /** Settles once the WebSocket is closed, with how. Never rejects. */
  readonly closed: Promise<WebSocketCloseInfo>;

  #url: string;
  #highWaterMark: number;
  #maxMessageSize: number;
  #queue: Uint8Array[] = [];
  #wake: (() => void) | null = null;
  #info: WebSocketCloseInfo | null = null;
  #readError: unknown = undefined;
  #closed = false;
  #opened: Promise<void>;
  #flow: SourceFlow;

  /**
   * Wraps a WebSocket, connecting or open. Its `binaryType` is set to
   * `"arraybuffer"`. Prefer {@linkcode websocketFlow} and
   * {@linkcode acceptWebSocket}.
   *
   * @param socket The WebSocket.
   * @param options The high-water mark and maximum message size.
   */
  constructor(socket: WebSocket, options: AcceptWebSocketOptions = {}) {
    this.#highWaterMark = positiveInteger(
      "highWaterMark",
      options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK,
    );
    this.#maxMessageSize = positiveInteger(
      "maxMessageSize",
      options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE,
    );
    this.socket = socket;
    this.#url = socket.url;
    socket.binaryType = "arraybuffer";
    this.#opened = socket.readyState === WebSocket.CONNECTING
      ? new Promise((ok) => {
        socket.addEventListener("open", () => ok(), { once: true });
        socket.addEventListener("close", () => ok(), { once: true });
      })
      : Promise.resolve();
    socket.addEventListener("message", (event) => this.#onMessage(event));
    this.closed = socket.readyState === WebSocket.CLOSED
      ? Promise.resolve({ code: 1006, reason: "", wasClean: false })
      : new Promise((ok) => {
        socket.addEventListener("close", (event) => {
          ok({
            // Deno reports a dropped connection as code 0; the standard
            // says 1006 (abnormal closure).
            code: event.code === 0 ? 1006 : event.code,
            reason: event.reason,
            wasClean: event.wasClean,
          });
        }, { once: true });
      });
    this.closed.then((info) => {
      this.#info = info;
      if (!isClean(info) && this.#readError === undefined) {
        this.#readError = info.code === 1006
          ? new errors.ConnectionReset(
            `Cannot read from WebSocket ${this.#url}: the connection dropped (code 1006)`,
          )
          : new WebSocketCloseError(this.#url, info);
      }
      this.#notify();
    });
    this.#flow = new SourceFlow({
      read: (p) => this.#read(p),
      write: (p) => this.#write(p),
      closeWrite: () => this.#closeWrite(),
      close: () => this.#close(),
    }, { name: `WebSocket ${this.#url}` });
  }

  /** The WebSocket's URL. */
  get url(): string {
    return this.#url;
  }

  /** The subprotocol the server selected, or `""`. */
  get protocol(): string {
    return this.socket.protocol;
  }

  /** The bytes read, as a stream sharing `read`'s position. */
  get readable(): ReadableStream<Uint8Array> {
    return this.#flow.readable;
  }

  /** The bytes to write, as a stream; closing it closes the WebSocket. */
  get writable(): WritableStream<Uint8Array> {
    return this.#flow.writable;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #onMessage(event: MessageEvent): void {
    if (this.#readError !== undefined) return;
    const data: unknown = event.data;
    if (data instanceof ArrayBuffer) {
      if (data.byteLength > 0) this.#queue.push(new Uint8Array(data));
    } else {
      this.#readError = new errors.InvalidData(
        `Cannot read from WebSocket ${this.#url}: received a text message, expected binary messages only`,
      );
      this.#queue = [];
      this.#closeSocket(4003, "Text messages are not supported");
    }
    this.#notify();
  }

  #closeSocket(code: number, reason?: string): void {
    const socket = this.socket;
    if (socket.readyState === WebSocket.CONNECTING) {
      // Deno ignores close() on a server-side WebSocket that is not open
      // yet (and would never close it): close it once it opens.
      socket.addEventListener("open", () => socket.close(code, reason), {
        once: true,
      });
    } else if (socket.readyState === WebSocket.OPEN) {
      socket.close(code, reason);
    }
  }

  /**
   * Reads received bytes into `p`. Concurrent reads are served in call
   * order.
   *
   * @param p The buffer to fill.
   * @returns The number of bytes read, or `null` once the WebSocket closed
   * normally and every byte received was read.
   */
  read(p: Uint8Array): Promise<number | null> {
    return this.#flow.read(p);
  }

  async #read(p: Uint8Array): Promise<number | null> {
    while (true) {
      if (this.#closed) return null; // the flow already rejected
      if (this.#queue.length > 0) {
        const chunk = this.#queue[0];
        const n = Math.min(p.length, chunk.length);
        p.set(chunk.subarray(0, n));
        if (n === chunk.length) this.#queue.shift();
        else this.#queue[0] = chunk.subarray(n);
        return n;
      }
      if (this.#readError !== undefined) throw this.#readError;
      if (this.#info !== null) return null;
      await new Promise<void>((ok) => this.#wake = ok);
    }
  }

  /**
   * Sends `p` as one binary message (several when larger than
   * `maxMessageSize`), then waits while `bufferedAmount` is above the
   * high-water mark. Concurrent writes go out in call order.
   *
   * @param p The bytes to send.
   * @returns `p.length`.
   */
  write(p: Uint8Array): Promise<number> {
    return this.#flow.write(p);
  }

  async #write(p: Uint8Array): Promise<number> {
    await this.#opened;
    for (let offset = 0; offset < p.length; offset += this.#maxMessageSize) {
      if (this.socket.readyState !== WebSocket.OPEN) throw this.#brokenPipe();
      this.socket.send(p.slice(offset, offset + this.#maxMessageSize));
      await this.#drain(this.#highWaterMark);
    }
    return p.length;
  }

  #brokenPipe(): Error {
    const info = this.#info;
    return new errors.BrokenPipe(
      `Cannot write to WebSocket ${this.#url}: it is ${
        info === null
          ? "closing"
          : `closed (code ${info.code}${
            info.reason === "" ? "" : `, ${info.reason}`
          })`
      }`,
    );
  }

  /** Waits until `bufferedAmount` is at most `mark` or the socket is no longer open. */
  async #drain(mark: number): Promise<void> {
    let delay = 1;
    while (
      this.socket.bufferedAmount > mark &&
      this.socket.readyState === WebSocket.OPEN
    ) {
      await new Promise((ok) => setTimeout(ok, delay));
      delay = Math.min(delay * 2, 50);
    }
  }

  /**
   * Waits until every message written is sent, then closes the WebSocket
   * with code 1000: WebSockets cannot half-close. Bytes already received
   * can still be read. Idempotent; a later `write` rejects with
   * `BrokenPipe`.
   *
   * @returns A promise settled once the close is initiated.
   */
  closeWrite(): Promise<void> {
    return this.#flow.closeWrite();
  }

  async #closeWrite(): Promise<void> {
    await this.#opened;
    await this.#drain(0);
    this.#closeSocket(1000);
  }

  /**
   * Closes the WebSocket with code 1000 and drops what was received but not
   * read. Pending reads and writes reject with `errors.Interrupted`, later
   * ones with `errors.BadResource`. Idempotent. Await
   * {@linkcode WebSocketFlow.closed} (or use `await using`) to wait for the
   * closing handshake.
   */
  close(): void {
    this.#flow.close();
  }

  #close(): void {
    this.#closed = true;
    this.#queue = [];
    this.#closeSocket(1000);
    this.#notify();
  }

  /** Closes the flow. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the flow and waits for the WebSocket to be closed.
   *
   * @returns A promise settled once the WebSocket is closed.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }
}

/**
 * Opens a WebSocket (with `binaryType` `"arraybuffer"`) and resolves to it
 * as a flow once it is open. Rejects with an `Error` naming the URL when it
 * fails or closes before opening, with the signal's reason when aborted.
 *
 * @example Reach a TCP service through websockify
 * ```ts ignore
 * import { websocketFlow } from "@mimic/mimic/websocket";
 *
 * // websockify 127.0.0.1:6080 127.0.0.1:5900
 * await using flow = await websocketFlow("ws://127.0.0.1:6080", {
 *   protocols: ["binary"],
 * });
 * await flow.write(new TextEncoder().encode("hello"));
 * ```
 *
 * @param url A `ws:`, `wss:`, `http:` or `https:` URL.
 * @param options Subprotocols to offer, a signal, and the flow's
 * high-water mark and maximum message size.
 * @returns The flow, once the WebSocket is open.
 */
export function websocketFlow(
  url: string | URL,
  options: WebSocketFlowOptions = {},
): Promise<WebSocketFlow> {
  const { protocols, signal } = options;
  try {
    signal?.throwIfAborted();
    positiveInteger(
      "highWaterMark",
      options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK,
    );
    positiveInteger(
      "maxMessageSize",
      options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE,
    );
  } catch (error) {
    return Promise.reject(error);
  }
  let socket: WebSocket;
  try {
    socket = new WebSocket(url, protocols);
  } catch (error) {
    return Promise.reject(error);
  }
  socket.binaryType = "arraybuffer";
  return new Promise((ok, ko) => {
    let failure = "";
    let abortReason: unknown = undefined;
    const cleanup = () => {
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("error", onError);
      socket.removeEventListener("close", onClose);
      signal?.removeEventListener("abort", onAbort);
    };
    const onOpen = () => {
      cleanup();
      ok(
        new WebSocketFlow(socket, {
          highWaterMark: options.highWaterMark,
          maxMessageSize: options.maxMessageSize,
        }),
      );
    };
    const onError = (event: Event) => {
      if (event instanceof ErrorEvent && event.message) {
        failure = event.message;
      }
    };
    const onClose = (event: CloseEvent) => {
      cleanup();
      if (abortReason !== undefined) return ko(abortReason);
      const detail = failure !== ""
        ? failure
        : `it closed with code ${event.code}${
          event.reason === "" ? "" : ` (${event.reason})`
        }`;
      ko(new Error(`Cannot open WebSocket ${socket.url}: ${detail}`));
    };
    const onAbort = () => {
      abortReason = signal!.reason;
      socket.close();
    };
    socket.addEventListener("open", onOpen);
    socket.addEventListener("error", onError);
    socket.addEventListener("close", onClose);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Wraps a WebSocket, typically the server side from
 * `Deno.upgradeWebSocket`, as a flow. The WebSocket may still be connecting:
 * writes wait for it to open.
 *
 * @example An echo handler for `Deno.serve`
 * ```ts
 * import { acceptWebSocket } from "@mimic/mimic/websocket";
 *
 * function handler(req: Request): Response {
 *   const { socket, response } = Deno.upgradeWebSocket(req);
 *   const flow = acceptWebSocket(socket);
 *   flow.readable.pipeTo(flow.writable).catch(() => flow.close());
 *   return response;
 * }
 * ```
 *
 * @param socket The WebSocket, connecting or open.
 * @param options The high-water mark and maximum message size.
 * @returns The flow.
 */
export function acceptWebSocket(
  socket: WebSocket,
  options: AcceptWebSocketOptions = {},
): WebSocketFlow {
  return new WebSocketFlow(socket, options);
}

/**
 * The `websocket` protocol: its endpoint is a URL (and subprotocols), and
 * connecting opens a WebSocket flow (see {@linkcode websocketFlow}).
 *
 * @example Resolve a context to a WebSocket
 * ```ts ignore
 * import { empty, resolve } from "@mimic/mimic";
 * import { websocket } from "@mimic/mimic/websocket";
 *
 * const ctx = empty.add(websocket.endpoint, { url: "ws://127.0.0.1:6080" });
 * const flow = await resolve(ctx);
 * ```
 */
export const websocket: Protocol<WebSocketEndpoint, WebSocketFlow> = register(
  "websocket",
  (endpoint: WebSocketEndpoint, signal: AbortSignal) =>
    websocketFlow(endpoint.url, { protocols: endpoint.protocols, signal }),
);

// WebSocket written over any flow (RFC 6455), in ./_ws_flow.ts.
export {
  DEFAULT_MAX_MESSAGE_SIZE_OVER_FLOW,
  openWebSocket,
  type OpenWebSocketOptions,
  upgradeWebSocket,
  type UpgradeWebSocketOptions,
  type WebSocketAddr,
  WebSocketHandshakeError,
  websocketOver,
  type WebSocketOverEndpoint,
  WebSocketOverFlow,
  type WebSocketOverFlowInit,
} from "./_ws_flow.ts";
