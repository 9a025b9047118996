/**
 * RFC 6455 (WebSocket) without I/O: the opening handshake's texts and checks,
 * and a frame codec. {@linkcode FrameDecoder} takes bytes and gives events
 * (messages, pings, pongs, the peer's close, or a protocol failure with the
 * close code the RFC prescribes); {@linkcode encodeFrame} and
 * {@linkcode frameHeader} make frames. Nothing here reads or writes a flow:
 * `_ws_flow.ts` is the pump. Portable (Web Crypto, `TextDecoder`,
 * `Headers`). Not an entry point.
 *
 * @module
 */

/** The GUID of RFC 6455 section 1.3, appended to the key before SHA-1. */
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** The frame opcodes (RFC 6455 section 5.2). */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/** Close codes this codec sends (RFC 6455 section 7.4.1). */
export const CloseCode = {
  Normal: 1000,
  ProtocolError: 1002,
  NoStatus: 1005,
  Abnormal: 1006,
  InvalidData: 1007,
  TooBig: 1009,
} as const;

/** What the decoder found in the bytes fed to it. */
export type FrameEvent =
  /** A whole message (reassembled from its fragments); text already validated as UTF-8. */
  | { type: "message"; binary: boolean; data: Uint8Array }
  /** A ping: answer it with a pong carrying `data`. */
  | { type: "ping"; data: Uint8Array }
  /** A pong (unsolicited or not): nothing to do. */
  | { type: "pong"; data: Uint8Array }
  /** The peer's close frame; `code` is 1005 when it carried none. The decoder ends. */
  | { type: "close"; code: number; reason: string }
  /** The peer broke the RFC: close the connection with `code`. The decoder ends. */
  | { type: "fail"; code: number; reason: string };

/** Options of {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /** `"server"`: frames must be masked; `"client"`: they must not be. */
  role: "client" | "server";
  /** The largest message accepted, in bytes (whole, after reassembly); more fails with 1009. */
  maxMessageSize: number;
}

/** Whether `code` may appear in a close frame (RFC 6455 section 7.4). */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

/** XORs `data` in place with `mask`, starting at mask position `offset`. */
export function applyMask(
  data: Uint8Array,
  mask: Uint8Array,
  offset = 0,
): void {
  const m0 = mask[offset & 3], m1 = mask[(offset + 1) & 3];
  const m2 = mask[(offset + 2) & 3], m3 = mask[(offset + 3) & 3];
  const n = data.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    data[i] ^= m0;
    data[i + 1] ^= m1;
    data[i + 2] ^= m2;
    data[i + 3] ^= m3;
  }
  const rest = [m0, m1, m2, m3];
  for (let j = 0; i < n; i++, j++) data[i] ^= rest[j];
}

/**
 * The bytes of a frame header: FIN, opcode, length, and the masking key
 * when `mask` is given (a client's frames).
 */
export function frameHeader(
  opcode: number,
  length: number,
  mask: Uint8Array | null,
  fin = true,
): Uint8Array {
  const extra = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const head = new Uint8Array(2 + extra + (mask === null ? 0 : 4));
  head[0] = (fin ? 0x80 : 0) | opcode;
  const maskBit = mask === null ? 0 : 0x80;
  if (extra === 0) {
    head[1] = maskBit | length;
  } else if (extra === 2) {
    head[1] = maskBit | 126;
    head[2] = length >>> 8;
    head[3] = length & 0xff;
  } else {
    head[1] = maskBit | 127;
    const view = new DataView(head.buffer);
    view.setUint32(2, Math.floor(length / 2 ** 32));
    view.setUint32(6, length >>> 0);
  }
  if (mask !== null) head.set(mask, 2 + extra);
  return head;
}

/**
 * One whole frame: header, then the payload (copied, and masked when `mask`
 * is given; `payload` itself is left untouched).
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  mask: Uint8Array | null,
  fin = true,
): Uint8Array {
  const head = frameHeader(opcode, payload.length, mask, fin);
  const frame = new Uint8Array(head.length + payload.length);
  frame.set(head);
  frame.set(payload, head.length);
  if (mask !== null) applyMask(frame.subarray(head.length), mask);
  return frame;
}

/** The payload of a close frame: the code, then the reason in UTF-8 (cut to fit 125 bytes). */
export function closePayload(code: number, reason = ""): Uint8Array {
  let text = new TextEncoder().encode(reason);
  if (text.length > 123) {
    // Cut on a character boundary.
    let end = 123;
    while (end > 0 && (text[end] & 0xc0) === 0x80) end--;
    text = text.subarray(0, end);
  }
  const out = new Uint8Array(2 + text.length);
  out[0] = code >>> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}

/** A fresh masking key. */
export function newMask(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(4));
}

const MAX_HEADER = 14;

/**
 * The frame decoder: feed it the bytes received, in order, and it returns
 * the events they complete. It checks what RFC 6455 section 5 requires of a
 * peer (masking by role, no reserved bits without an extension, known
 * opcodes, control frames unfragmented and at most 125 bytes, continuation
 * frames only inside a fragmented message, UTF-8 text, valid close codes)
 * and enforces the message size limit before buffering a frame. After a
 * `close` or `fail` event it ignores every later byte.
 */
export class FrameDecoder {
  readonly #server: boolean;
  readonly #maxMessageSize: number;
  readonly #head = new Uint8Array(MAX_HEADER);
  #headLength = 0;
  /** The frame being read, once its header is complete. */
  #frame: {
    fin: boolean;
    opcode: number;
    mask: Uint8Array | null;
    payload: Uint8Array;
    filled: number;
  } | null = null;
  /** The fragmented message in progress. */
  #message: {
    binary: boolean;
    parts: Uint8Array[];
    size: number;
    utf8: TextDecoder | null;
  } | null = null;
  #done = false;

  /**
   * Makes a decoder.
   *
   * @param options The role (which masking to expect) and the message size limit.
   */
  constructor(options: FrameDecoderOptions) {
    this.#server = options.role === "server";
    this.#maxMessageSize = options.maxMessageSize;
  }

  /** Whether the decoder ended (after a `close` or `fail` event). */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Consumes `bytes` (not kept: what is needed is copied).
   *
   * @param bytes The next bytes received.
   * @returns The events completed by them, in order.
   */
  feed(bytes: Uint8Array): FrameEvent[] {
    const events: FrameEvent[] = [];
    let at = 0;
    while (!this.#done && at < bytes.length) {
      if (this.#frame === null) {
        at += this.#readHeader(bytes.subarray(at), events);
        continue;
      }
      const frame = this.#frame;
      const n = Math.min(
        bytes.length - at,
        frame.payload.length - frame.filled,
      );
      const dst = frame.payload.subarray(frame.filled, frame.filled + n);
      dst.set(bytes.subarray(at, at + n));
      if (frame.mask !== null) applyMask(dst, frame.mask, frame.filled);
      frame.filled += n;
      at += n;
      if (frame.filled === frame.payload.length) this.#endFrame(events);
    }
    // A frame of length 0 completes with its header.
    if (
      !this.#done && this.#frame !== null &&
      this.#frame.payload.length === 0
    ) {
      this.#endFrame(events);
    }
    return events;
  }

  #fail(events: FrameEvent[], code: number, reason: string): void {
    this.#done = true;
    this.#frame = null;
    this.#message = null;
    events.push({ type: "fail", code, reason });
  }

  /** Reads header bytes; returns how many of `bytes` it took. */
  #readHeader(bytes: Uint8Array, events: FrameEvent[]): number {
    const head = this.#head;
    let taken = 0;
    const need = (): number => {
      if (this.#headLength < 2) return 2;
      const len7 = head[1] & 0x7f;
      const extra = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
      return 2 + extra + ((head[1] & 0x80) !== 0 ? 4 : 0);
    };
    while (this.#headLength < need() && taken < bytes.length) {
      head[this.#headLength++] = bytes[taken++];
      if (this.#headLength === 2 && !this.#checkFirstTwo(events)) {
        return taken;
      }
    }
    if (this.#headLength < need()) return taken;
    // The header is complete.
    const fin = (head[0] & 0x80) !== 0;
    const opcode = head[0] & 0x0f;
    const masked = (head[1] & 0x80) !== 0;
    const len7 = head[1] & 0x7f;
    let length = len7;
    let off = 2;
    if (len7 === 126) {
      length = (head[2] << 8) | head[3];
      off = 4;
    } else if (len7 === 127) {
      const view = new DataView(head.buffer, 0, 10);
      const high = view.getUint32(2);
      if (high & 0x80000000) {
        this.#fail(
          events,
          CloseCode.ProtocolError,
          "A frame length has its most significant bit set",
        );
        return taken;
      }
      length = high * 2 ** 32 + view.getUint32(6);
      off = 10;
    }
    const mask = masked ? head.slice(off, off + 4) : null;
    this.#headLength = 0;
    const isControl = (opcode & 0x08) !== 0;
    if (isControl && length > 125) {
      this.#fail(
        events,
        CloseCode.ProtocolError,
        `A control frame has a payload of ${length} bytes (at most 125)`,
      );
      return taken;
    }
    if (!isControl) {
      const sofar = this.#message?.size ?? 0;
      if (length > this.#maxMessageSize - sofar) {
        this.#fail(
          events,
          CloseCode.TooBig,
          `A message exceeds ${this.#maxMessageSize} bytes`,
        );
        return taken;
      }
    }
    this.#frame = {
      fin,
      opcode,
      mask,
      payload: new Uint8Array(length),
      filled: 0,
    };
    return taken;
  }

  /** Checks the first two header bytes; false (and a `fail` event) when they break the RFC. */
  #checkFirstTwo(events: FrameEvent[]): boolean {
    const [b0, b1] = this.#head;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    const fail = (reason: string): false => {
      this.#fail(events, CloseCode.ProtocolError, reason);
      return false;
    };
    if ((b0 & 0x70) !== 0) {
      return fail("A frame has reserved bits set and no extension was agreed");
    }
    if (opcode > 0xa || (opcode > 0x2 && opcode < 0x8)) {
      return fail(`A frame has the reserved opcode ${opcode}`);
    }
    if (this.#server && !masked) {
      return fail("A client frame is not masked");
    }
    if (!this.#server && masked) {
      return fail("A server frame is masked");
    }
    if ((opcode & 0x08) !== 0 && !fin) {
      return fail("A control frame is fragmented");
    }
    if (opcode === Opcode.Continuation && this.#message === null) {
      return fail("A continuation frame has no message to continue");
    }
    if (
      (opcode === Opcode.Text || opcode === Opcode.Binary) &&
      this.#message !== null
    ) {
      return fail("A new message starts inside a fragmented message");
    }
    return true;
  }

  #endFrame(events: FrameEvent[]): void {
    const { fin, opcode, payload } = this.#frame!;
    this.#frame = null;
    switch (opcode) {
      case Opcode.Ping:
        events.push({ type: "ping", data: payload });
        return;
      case Opcode.Pong:
        events.push({ type: "pong", data: payload });
        return;
      case Opcode.Close:
        this.#endClose(payload, events);
        return;
    }
    if (opcode !== Opcode.Continuation) {
      this.#message = {
        binary: opcode === Opcode.Binary,
        parts: [],
        size: 0,
        utf8: opcode === Opcode.Text
          ? new TextDecoder("utf-8", { fatal: true })
          : null,
      };
    }
    const message = this.#message!;
    if (message.utf8 !== null) {
      try {
        message.utf8.decode(payload, { stream: !fin });
      } catch {
        this.#fail(
          events,
          CloseCode.InvalidData,
          "A text message is not valid UTF-8",
        );
        return;
      }
    }
    if (payload.length > 0) message.parts.push(payload);
    message.size += payload.length;
    if (!fin) return;
    this.#message = null;
    events.push({
      type: "message",
      binary: message.binary,
      data: concat(message.parts, message.size),
    });
  }

  #endClose(payload: Uint8Array, events: FrameEvent[]): void {
    if (payload.length === 1) {
      this.#fail(
        events,
        CloseCode.ProtocolError,
        "A close frame has a 1-byte payload",
      );
      return;
    }
    let code: number = CloseCode.NoStatus;
    let reason = "";
    if (payload.length >= 2) {
      code = (payload[0] << 8) | payload[1];
      if (!isValidCloseCode(code)) {
        this.#fail(
          events,
          CloseCode.ProtocolError,
          `A close frame has the invalid code ${code}`,
        );
        return;
      }
      try {
        reason = new TextDecoder("utf-8", { fatal: true }).decode(
          payload.subarray(2),
        );
      } catch {
        this.#fail(
          events,
          CloseCode.InvalidData,
          "A close frame's reason is not valid UTF-8",
        );
        return;
      }
    }
    this.#done = true;
    this.#message = null;
    events.push({ type: "close", code, reason });
  }
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// --- The opening handshake (RFC 6455 section 4) ------------------------------

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** A fresh `Sec-WebSocket-Key`: 16 random bytes in base64. */
export function newKey(): string {
  return base64(crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * The `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
 *
 * @param key The client's `Sec-WebSocket-Key`.
 * @returns The value the server must answer.
 */
export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + GUID),
  );
  return base64(new Uint8Array(digest));
}

/** An HTTP/1.1 message head: its first line and its headers. */
export interface HttpHead {
  /** The request line or status line. */
  startLine: string;
  /** The header fields (names case-insensitive; repeated fields joined with ", "). */
  headers: Headers;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Parses a message head (the text before `\r\n\r\n`). Lines with no colon
 * or an invalid name make it `null`: the peer does not speak HTTP/1.1.
 */
export function parseHead(text: string): HttpHead | null {
  const lines = text.split("\r\n");
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) return null;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return null;
    try {
      headers.append(name, line.slice(colon + 1).trim());
    } catch {
      return null;
    }
  }
  return { startLine: lines[0], headers };
}

/** Whether the comma-separated header value has `token` (case-insensitive). */
export function hasToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  return value.split(",").some((t) =>
    t.trim().toLowerCase() === token.toLowerCase()
  );
}

/** The comma-separated list in a header value, trimmed, empty items dropped. */
export function tokens(value: string | null): string[] {
  if (value === null) return [];
  return value.split(",").map((t) => t.trim()).filter((t) => t !== "");
}

/** Validates the header fields a caller adds, returning their lines. */
function headerLines(headers: Record<string, string>, what: string): string {
  let out = "";
  for (const [name, value] of Object.entries(headers)) {
    if (!TOKEN.test(name)) {
      throw new TypeError(
        `Cannot ${what}: invalid header name ${JSON.stringify(name)}`,
      );
    }
    if (/[\r\n\0]/.test(value)) {
      throw new TypeError(
        `Cannot ${what}: the value of header ${name} contains a line break`,
      );
    }
    out += `${name}: ${value}\r\n`;
  }
  return out;
}

/** Header names a caller may not set on the opening request: the handshake's own. */
const RESERVED = new Set([
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
]);

/**
 * The client's opening request for `url` (`ws:`, `wss:`, `http:` or
 * `https:`). A `Host` in `headers` replaces the URL's; the handshake's own
 * fields cannot be set.
 */
export function clientRequest(
  url: URL,
  key: string,
  protocols: readonly string[],
  headers: Record<string, string>,
): string {
  const what = `open WebSocket ${url.href}`;
  for (const name of Object.keys(headers)) {
    if (RESERVED.has(name.toLowerCase())) {
      throw new TypeError(
        `Cannot ${what}: header ${name} is set by the handshake`,
      );
    }
  }
  for (const p of protocols) {
    if (!TOKEN.test(p)) {
      throw new TypeError(
        `Cannot ${what}: invalid subprotocol ${JSON.stringify(p)}`,
      );
    }
  }
  if (new Set(protocols).size !== protocols.length) {
    throw new TypeError(`Cannot ${what}: a subprotocol is repeated`);
  }
  const target = `${url.pathname === "" ? "/" : url.pathname}${url.search}`;
  const names = new Set(Object.keys(headers).map((h) => h.toLowerCase()));
  let head = `GET ${target} HTTP/1.1\r\n`;
  if (!names.has("host")) head += `Host: ${url.host}\r\n`;
  head += "Upgrade: websocket\r\nConnection: Upgrade\r\n";
  head += `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
  if (protocols.length > 0) {
    head += `Sec-WebSocket-Protocol: ${protocols.join(", ")}\r\n`;
  }
  return head + headerLines(headers, what) + "\r\n";
}

/** The server's verdict on an opening request. */
export type UpgradeCheck =
  | { ok: true; key: string; target: string; headers: Headers }
  | {
    ok: false;
    status: number;
    statusText: string;
    headers: Record<string, string>;
    reason: string;
  };

/**
 * Checks an opening request (RFC 6455 section 4.2.1): `GET`, HTTP/1.1 or
 * later, `Host`, `Upgrade: websocket`, `Connection: Upgrade`, a key of 16
 * bytes in base64, and version 13. A request that is no upgrade, or of
 * another version, gets 426 (with `Upgrade` or `Sec-WebSocket-Version`);
 * any other fault 400.
 */
export function checkUpgradeRequest(head: HttpHead): UpgradeCheck {
  const bad = (
    reason: string,
    status = 400,
    headers: Record<string, string> = {},
  ): UpgradeCheck => ({
    ok: false,
    status,
    statusText: status === 426 ? "Upgrade Required" : "Bad Request",
    headers,
    reason,
  });
  const m = /^([A-Z]+) (\S+) HTTP\/(\d)\.(\d)$/.exec(head.startLine);
  if (m === null) return bad("the request line is not HTTP/1.1");
  const [, method, target, major, minor] = m;
  const h = head.headers;
  if (method !== "GET") return bad(`the method is ${method}, not GET`);
  if (Number(major) * 10 + Number(minor) < 11) {
    return bad(`the request is HTTP/${major}.${minor}, not HTTP/1.1`);
  }
  if (!h.has("host")) return bad("the request has no Host header");
  if (!hasToken(h.get("upgrade"), "websocket")) {
    return bad("the request asks for no WebSocket upgrade", 426, {
      Upgrade: "websocket",
      Connection: "Upgrade",
    });
  }
  if (!hasToken(h.get("connection"), "upgrade")) {
    return bad("the request's Connection header lacks upgrade");
  }
  if (h.get("sec-websocket-version") !== "13") {
    return bad(
      `the WebSocket version is ${
        JSON.stringify(h.get("sec-websocket-version"))
      }, not 13`,
      426,
      { "Sec-WebSocket-Version": "13" },
    );
  }
  const key = h.get("sec-websocket-key") ?? "";
  let decoded = "";
  try {
    decoded = /^[A-Za-z0-9+/]{22}==$/.test(key) ? atob(key) : "";
  } catch {
    // Not base64.
  }
  if (decoded.length !== 16) {
    return bad("the Sec-WebSocket-Key is not 16 bytes in base64");
  }
  return { ok: true, key, target, headers: h };
}

/** The server's `101 Switching Protocols` answer. */
export function switchingProtocols(accept: string, protocol: string): string {
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
    `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n` +
    (protocol === "" ? "" : `Sec-WebSocket-Protocol: ${protocol}\r\n`) +
    "\r\n";
}

/** An error answer with a plain-text body, closing the connection. */
export function errorResponse(
  status: number,
  statusText: string,
  headers: Record<string, string>,
  body: string,
): string {
  const text = new TextEncoder().encode(body + "\n");
  return `HTTP/1.1 ${status} ${statusText}\r\n` +
    headerLines(headers, "answer") +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    `Content-Length: ${text.length}\r\nConnection: close\r\n\r\n${body}\n`;
}

/** Where `\r\n\r\n` ends in `buf[0, length)`, searching from `from`, or -1. */
export function headEnd(buf: Uint8Array, length: number, from: number): number {
  for (let i = Math.max(from, 3); i < length; i++) {
    if (
      buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 &&
      buf[i - 3] === 13
    ) {
      return i + 1;
    }
  }
  return -1;
}
