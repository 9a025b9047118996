/**
 * A small HTTP/1.1 client written against {@linkcode Flow}: it never knows
 * whether the bytes go over TCP, TLS, a pipe or a subprocess. Shared by the
 * `http_get` and `git_ls_remote` examples.
 *
 * - {@linkcode FlowReader}: buffered reads of lines and exact byte counts.
 * - {@linkcode writeAll}: a write that loops over short writes.
 * - {@linkcode request}: writes one request and parses the response head;
 *   the body is an async iterable that understands `Content-Length`,
 *   `Transfer-Encoding: chunked` and close-delimited bodies.
 *
 * @module
 */

import { type Context, empty, type Flow, NotFoundError } from "../mod.ts";
import { fromUri, tlsOptions } from "../src/uri.ts";

/** The peer broke the protocol (a malformed response, a truncated body). */
export class ProtocolError extends Error {
  /**
   * Makes the error.
   *
   * @param message What went wrong.
   * @param options The cause, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/**
 * Writes every byte of `p` to `flow`, looping over short writes.
 *
 * @param flow The flow.
 * @param p The bytes.
 */
export async function writeAll(
  flow: Pick<Flow, "write">,
  p: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < p.length) {
    const n = await flow.write(offset === 0 ? p : p.subarray(offset));
    if (n <= 0) {
      throw new ProtocolError("Cannot write: the flow accepted no byte");
    }
    offset += n;
  }
}

/**
 * Closes `flow`, ignoring that it was closed already.
 *
 * @param flow The flow.
 */
export function closeQuietly(flow: Pick<Flow, "close">): void {
  try {
    flow.close();
  } catch {
    // Already closed.
  }
}

/** Buffered reads over a {@linkcode Flow}. */
export class FlowReader {
  #flow: Flow;
  #buf = new Uint8Array(16 * 1024);
  #start = 0;
  #end = 0;
  #eof = false;

  /**
   * Wraps a flow.
   *
   * @param flow The flow to read from.
   */
  constructor(flow: Flow) {
    this.#flow = flow;
  }

  /** The number of bytes buffered and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Reads more bytes into the buffer; false at end of flow. */
  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    if (this.#start > 0 && this.#start === this.#end) {
      this.#start = this.#end = 0;
    }
    if (this.#end === this.#buf.length) {
      const size = this.buffered;
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const next = new Uint8Array(this.#buf.length * 2);
        next.set(this.#buf);
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = size;
    }
    let n: number | null;
    do n = await this.#flow.read(this.#buf.subarray(this.#end)); while (
      n === 0
    );
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#end += n;
    return true;
  }

  /**
   * Reads one line ending in LF (a CR before it is dropped).
   *
   * @param max The longest line accepted, in bytes.
   * @returns The line without its end, or `null` at end of flow before any byte.
   */
  async readLine(max = 64 * 1024): Promise<string | null> {
    let scanned = 0;
    for (;;) {
      const i = this.#buf.subarray(this.#start + scanned, this.#end).indexOf(
        0x0a,
      );
      if (i >= 0) {
        let line = this.#buf.subarray(this.#start, this.#start + scanned + i);
        this.#start += scanned + i + 1;
        if (line.length > 0 && line[line.length - 1] === 0x0d) {
          line = line.subarray(0, line.length - 1);
        }
        return new TextDecoder().decode(line);
      }
      scanned = this.buffered;
      if (scanned > max) {
        throw new ProtocolError(`Cannot read a line: longer than ${max} bytes`);
      }
      if (!(await this.#fill())) {
        if (this.buffered === 0) return null;
        throw new ProtocolError("Cannot read a line: the peer closed mid-line");
      }
    }
  }

  /**
   * Reads exactly `n` bytes.
   *
   * @param n The count.
   * @returns A copy of the bytes, or `null` at end of flow before any byte.
   */
  async readExact(n: number): Promise<Uint8Array | null> {
    while (this.buffered < n) {
      if (!(await this.#fill())) {
        if (this.buffered === 0) return null;
        throw new ProtocolError(
          `Cannot read ${n} bytes: the peer closed after ${this.buffered}`,
        );
      }
    }
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /**
   * Reads what is buffered, or else what one read of the flow gives.
   *
   * @param max The most bytes returned.
   * @returns A copy of at most `max` bytes, or `null` at end of flow.
   */
  async readSome(max: number): Promise<Uint8Array | null> {
    if (this.buffered === 0 && !(await this.#fill())) return null;
    const n = Math.min(max, this.buffered);
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }
}

/** What {@linkcode request} sends. */
export interface RequestOptions {
  /** The method. @default {"GET"} */
  method?: string;
  /** The request target: a path and query, e.g. `/a/b?c=d`. */
  target: string;
  /** The `Host` header's value (`host` or `host:port`). */
  host: string;
  /** More headers. `Host` is always sent; `Connection: close` by default. */
  headers?: Record<string, string>;
  /** A body to send (with a `Content-Length`). */
  body?: Uint8Array;
}

/** A response whose head has been read; `body` yields the decoded body bytes. */
export interface HttpResponse {
  /** The HTTP version, e.g. `HTTP/1.1`. */
  version: string;
  /** The status code. */
  status: number;
  /** The reason phrase. */
  reason: string;
  /** The headers. */
  headers: Headers;
  /** The body's bytes, with the transfer coding removed. Iterate it once. */
  body: AsyncIterable<Uint8Array>;
}

const encoder = new TextEncoder();

/**
 * Sends one HTTP/1.1 request over `flow` and reads the response head.
 *
 * @param flow A connected flow (TCP, TLS, ...).
 * @param options The request.
 * @returns The response; its body is read lazily from the flow.
 */
export async function request(
  flow: Flow,
  options: RequestOptions,
): Promise<HttpResponse> {
  const method = options.method ?? "GET";
  const headers = new Headers(options.headers);
  headers.set("host", options.host);
  if (!headers.has("connection")) headers.set("connection", "close");
  if (!headers.has("user-agent")) {
    headers.set("user-agent", "mimic-example/0.1");
  }
  if (options.body !== undefined) {
    headers.set("content-length", String(options.body.length));
  }
  let head = `${method} ${options.target} HTTP/1.1\r\n`;
  for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
  head += "\r\n";
  await writeAll(flow, encoder.encode(head));
  if (options.body !== undefined) await writeAll(flow, options.body);
  return await readResponse(new FlowReader(flow), method);
}

/**
 * Reads a response head from `reader` (skipping `1xx` interim responses).
 *
 * @param reader The reader over the flow.
 * @param method The request's method (a `HEAD` response has no body).
 * @returns The response.
 */
export async function readResponse(
  reader: FlowReader,
  method = "GET",
): Promise<HttpResponse> {
  for (;;) {
    const line = await reader.readLine();
    if (line === null) {
      throw new ProtocolError(
        "Cannot read the HTTP response: the server closed without answering",
      );
    }
    const m = /^(HTTP\/1\.[01]) (\d{3})(?: (.*))?$/.exec(line);
    if (m === null) {
      throw new ProtocolError(
        `Cannot read the HTTP response: not an HTTP/1.x status line: ${
          JSON.stringify(line.slice(0, 80))
        }`,
      );
    }
    const headers = new Headers();
    for (;;) {
      const h = await reader.readLine();
      if (h === null) {
        throw new ProtocolError(
          "Cannot read the HTTP response: the server closed in the headers",
        );
      }
      if (h === "") break;
      const colon = h.indexOf(":");
      if (colon <= 0) {
        throw new ProtocolError(
          `Cannot read the HTTP response: malformed header ${
            JSON.stringify(h.slice(0, 80))
          }`,
        );
      }
      headers.append(h.slice(0, colon).trim(), h.slice(colon + 1).trim());
    }
    const status = Number(m[2]);
    if (status >= 100 && status < 200 && status !== 101) continue;
    const bodiless = method === "HEAD" || status === 204 || status === 304;
    return {
      version: m[1],
      status,
      reason: m[3] ?? "",
      headers,
      body: bodiless ? noBody() : bodyOf(reader, headers),
    };
  }
}

async function* noBody(): AsyncGenerator<Uint8Array> {}

function bodyOf(
  reader: FlowReader,
  headers: Headers,
): AsyncIterable<Uint8Array> {
  const te = headers.get("transfer-encoding");
  if (te !== null) {
    const codings = te.split(",").map((s) => s.trim().toLowerCase());
    if (codings[codings.length - 1] !== "chunked") {
      // RFC 9112 6.3: not chunked last means the body runs until close.
      return untilClose(reader);
    }
    if (codings.length > 1) {
      throw new ProtocolError(
        `Cannot read the HTTP body: unsupported transfer coding ${te}`,
      );
    }
    return chunked(reader);
  }
  const cl = headers.get("content-length");
  if (cl !== null) {
    // Repeated identical values arrive as "n, n".
    const values = new Set(cl.split(",").map((s) => s.trim()));
    const [only] = values;
    if (values.size !== 1 || !/^\d+$/.test(only)) {
      throw new ProtocolError(
        `Cannot read the HTTP body: bad Content-Length ${JSON.stringify(cl)}`,
      );
    }
    return sized(reader, Number(only));
  }
  return untilClose(reader);
}

async function* sized(
  reader: FlowReader,
  length: number,
): AsyncGenerator<Uint8Array> {
  let left = length;
  while (left > 0) {
    const chunk = await reader.readSome(Math.min(left, 64 * 1024));
    if (chunk === null) {
      throw new ProtocolError(
        `Cannot read the HTTP body: the server closed after ${
          length - left
        } of ${length} bytes`,
      );
    }
    left -= chunk.length;
    yield chunk;
  }
}

async function* untilClose(reader: FlowReader): AsyncGenerator<Uint8Array> {
  for (;;) {
    const chunk = await reader.readSome(64 * 1024);
    if (chunk === null) return;
    yield chunk;
  }
}

async function* chunked(reader: FlowReader): AsyncGenerator<Uint8Array> {
  for (;;) {
    const line = await reader.readLine();
    if (line === null) {
      throw new ProtocolError(
        "Cannot read the HTTP body: the server closed before the last chunk",
      );
    }
    const size = line.split(";", 1)[0].trim();
    if (!/^[0-9a-fA-F]{1,15}$/.test(size)) {
      throw new ProtocolError(
        `Cannot read the HTTP body: bad chunk size ${
          JSON.stringify(line.slice(0, 40))
        }`,
      );
    }
    let left = parseInt(size, 16);
    if (left === 0) break;
    while (left > 0) {
      const chunk = await reader.readSome(Math.min(left, 64 * 1024));
      if (chunk === null) {
        throw new ProtocolError(
          "Cannot read the HTTP body: the server closed mid-chunk",
        );
      }
      left -= chunk.length;
      yield chunk;
    }
    const end = await reader.readLine(2);
    if (end !== "") {
      throw new ProtocolError(
        "Cannot read the HTTP body: a chunk does not end with CRLF",
      );
    }
  }
  // Trailers, up to the empty line.
  for (;;) {
    const line = await reader.readLine();
    if (line === null || line === "") return;
  }
}

/**
 * Reads a whole body into one buffer.
 *
 * @param body The body, as {@linkcode HttpResponse.body}.
 * @returns The bytes.
 */
export async function readAll(
  body: AsyncIterable<Uint8Array>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const c of body) {
    chunks.push(c);
    size += c.length;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * A read-only {@linkcode Flow} over a body (as {@linkcode HttpResponse.body}),
 * so protocol code written against flows can read an HTTP body. Writing
 * rejects; closing stops reading.
 *
 * @param body The body's chunks.
 * @returns The flow.
 */
export function bodyFlow(body: AsyncIterable<Uint8Array>): Flow {
  const it = body[Symbol.asyncIterator]();
  let pending: Uint8Array = new Uint8Array(0);
  let closed = false;
  const read = async (p: Uint8Array): Promise<number | null> => {
    if (closed) throw new Deno.errors.BadResource("The body flow is closed");
    while (pending.length === 0) {
      const r = await it.next();
      if (r.done) return null;
      pending = r.value;
    }
    const n = Math.min(p.length, pending.length);
    p.set(pending.subarray(0, n));
    pending = pending.subarray(n);
    return n;
  };
  const write = (): Promise<number> =>
    Promise.reject(new Deno.errors.BadResource("The body flow is read-only"));
  return {
    read,
    write,
    closeWrite: () => Promise.resolve(),
    close(): void {
      if (closed) return;
      closed = true;
      it.return?.().catch(() => {});
    },
    get readable(): ReadableStream<Uint8Array> {
      return ReadableStream.from(body);
    },
    get writable(): WritableStream<Uint8Array> {
      return new WritableStream({ write: () => write().then(() => {}) });
    },
  };
}

/**
 * A one-line reason for an error, for the examples' messages: the failed
 * attempts of a `NotFoundError`, the message of anything else.
 *
 * @param error What was thrown.
 * @returns The reason, without a stack.
 */
export function explain(error: unknown): string {
  if (error instanceof NotFoundError && error.attempts.length > 0) {
    return [...new Set(error.attempts.map((a) => explain(a.error)))].join("; ");
  }
  if (error instanceof NotFoundError && error.folds.length > 0) {
    return error.folds.map((a) => explain(a.error)).join("; ");
  }
  if (error instanceof DOMException && error.name === "TimeoutError") {
    return "timed out";
  }
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** Options of {@linkcode httpContext}. */
export interface HttpContextOptions {
  /** PEM certificates of the CAs to trust for `https://`. */
  caCerts?: string[];
}

/**
 * The context of an `http://` or `https://` URL: `fromUri`'s values and
 * fold functions, with the CAs to trust for `https://` given to its `tls`
 * fold through the `tlsOptions` value. The folds read the most recent
 * `scheme`, `host` and `port`, so replacing them (a redirect) moves the
 * connection, from HTTP to HTTPS too.
 *
 * @param url The URL.
 * @param options The CAs to trust.
 * @returns The context.
 * @throws {TypeError} When `fromUri` cannot parse the URL.
 */
export function httpContext(
  url: string,
  options: HttpContextOptions = {},
): Context {
  const base = options.caCerts === undefined
    ? empty
    : empty.add(tlsOptions, { caCerts: options.caCerts });
  return fromUri(url, base);
}
