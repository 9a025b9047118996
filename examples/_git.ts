/**
 * The Git protocol pieces of the `git_ls_remote` example, written once
 * against {@linkcode Flow}: pkt-lines and the reference advertisement of
 * protocol v0/v1. Which transport carries the bytes (TCP for `git://`, an
 * HTTP body for smart HTTP, a subprocess for SSH) is none of their concern.
 *
 * @module
 */

import type { Flow } from "../mod.ts";
import { FlowReader, ProtocolError, writeAll } from "./_http.ts";

/** A pkt-line: its payload, or one of the special packets. */
export type Pkt = Uint8Array | "flush" | "delim" | "response-end";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Encodes one pkt-line: four hex digits of length (the digits included),
 * then the payload.
 *
 * @param payload The payload (a string is UTF-8 encoded).
 * @returns The encoded packet.
 */
export function pktLine(payload: string | Uint8Array): Uint8Array {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  if (data.length > 65516) {
    throw new RangeError("Cannot encode a pkt-line: payload over 65516 bytes");
  }
  const out = new Uint8Array(4 + data.length);
  out.set(encoder.encode((4 + data.length).toString(16).padStart(4, "0")));
  out.set(data, 4);
  return out;
}

/** The flush packet, `0000`. */
export const FLUSH: Uint8Array = encoder.encode("0000");

/** Reads pkt-lines from a {@linkcode FlowReader}. */
export class PktReader {
  #reader: FlowReader;

  /**
   * Wraps a reader.
   *
   * @param reader The buffered reader over the flow.
   */
  constructor(reader: FlowReader) {
    this.#reader = reader;
  }

  /**
   * Reads the next packet.
   *
   * @returns The packet, or `null` when the flow ends between packets.
   */
  async read(): Promise<Pkt | null> {
    const head = await this.#reader.readExact(4);
    if (head === null) return null;
    const hex = decoder.decode(head);
    if (!/^[0-9a-fA-F]{4}$/.test(hex)) {
      throw new ProtocolError(
        `not a pkt-line: the peer sent ${JSON.stringify(printable(head))}`,
      );
    }
    const length = parseInt(hex, 16);
    if (length === 0) return "flush";
    if (length === 1) return "delim";
    if (length === 2) return "response-end";
    if (length < 4) {
      throw new ProtocolError(`not a pkt-line: bad length ${hex}`);
    }
    const payload = await this.#reader.readExact(length - 4);
    if (payload === null && length > 4) {
      throw new ProtocolError("the peer closed in the middle of a pkt-line");
    }
    return payload ?? new Uint8Array(0);
  }
}

function printable(bytes: Uint8Array): string {
  return decoder.decode(bytes).replace(/[^\x20-\x7e]/g, ".");
}

/** One advertised reference. */
export interface Ref {
  /** The object id, in hex. */
  oid: string;
  /** The name, e.g. `HEAD`, `refs/heads/main`, `refs/tags/v1^{}`. */
  name: string;
}

/** What a server advertises before a fetch (protocol v0/v1). */
export interface Advertisement {
  /** The protocol version the server announced: 0 or 1. */
  version: number;
  /** The references, in the order advertised. */
  refs: Ref[];
  /** The capabilities sent with the first reference. */
  capabilities: string[];
}

/** The payload as text, without its trailing LF. */
function text(payload: Uint8Array): string {
  const s = decoder.decode(payload);
  return s.endsWith("\n") ? s.slice(0, -1) : s;
}

/**
 * Reads a reference advertisement (protocol v0 or v1) up to its flush.
 * An `ERR` packet from the server rejects with its message.
 *
 * @param pkts The packets, positioned at the advertisement.
 * @returns The advertisement.
 */
export async function readAdvertisement(
  pkts: PktReader,
): Promise<Advertisement> {
  const refs: Ref[] = [];
  let capabilities: string[] = [];
  let version = 0;
  let first = true;
  for (;;) {
    const pkt = await pkts.read();
    if (pkt === null) {
      throw new ProtocolError(
        first
          ? "the remote end hung up before advertising any reference"
          : "the remote end hung up in the middle of the advertisement",
      );
    }
    if (pkt === "flush") break;
    if (typeof pkt === "string") {
      throw new ProtocolError(`unexpected ${pkt} packet in the advertisement`);
    }
    let line = text(pkt);
    if (line.startsWith("ERR ")) {
      throw new ProtocolError(`the server said: ${line.slice(4)}`);
    }
    if (first && line === "version 1") {
      version = 1;
      continue;
    }
    if (first && line === "version 2") {
      throw new ProtocolError("the server speaks protocol v2 only");
    }
    if (first) {
      const nul = line.indexOf("\0");
      if (nul >= 0) {
        capabilities = line.slice(nul + 1).split(" ").filter((c) => c !== "");
        line = line.slice(0, nul);
      }
    }
    first = false;
    const m = /^([0-9a-f]{40}|[0-9a-f]{64}) (\S+)$/.exec(line);
    if (m === null) {
      throw new ProtocolError(
        `not a reference line: ${JSON.stringify(line.slice(0, 100))}`,
      );
    }
    // An empty repository advertises "<zero-id> capabilities^{}" only.
    if (m[2] === "capabilities^{}" && /^0+$/.test(m[1])) continue;
    refs.push({ oid: m[1], name: m[2] });
  }
  return { version, refs, capabilities };
}

/**
 * Formats references as `git ls-remote` prints them: `<oid>\t<name>` lines.
 *
 * @param refs The references.
 * @returns The lines, each ending in LF.
 */
export function formatRefs(refs: readonly Ref[]): string {
  return refs.map((r) => `${r.oid}\t${r.name}\n`).join("");
}

/**
 * The git:// request line: `git-upload-pack <path>\0host=<host>\0`.
 *
 * @param path The repository's path on the server.
 * @param host The `host=` parameter (`host` or `host:port`).
 * @returns The encoded pkt-line.
 */
export function daemonRequest(path: string, host: string): Uint8Array {
  return pktLine(`git-upload-pack ${path}\0host=${host}\0`);
}

/**
 * Reads the advertisement an `upload-pack` sends first on `flow`, then ends
 * the session politely with a flush (the server exits without sending a
 * pack). Used as is over git:// (after {@linkcode daemonRequest}) and SSH.
 *
 * @param flow The flow to the upload-pack.
 * @returns The advertisement.
 */
export async function lsRefs(flow: Flow): Promise<Advertisement> {
  const advertisement = await readAdvertisement(
    new PktReader(new FlowReader(flow)),
  );
  try {
    await writeAll(flow, FLUSH);
  } catch {
    // The server may already be gone; we have what we came for.
  }
  return advertisement;
}

/**
 * Reads the smart-HTTP `info/refs` body: the `# service=git-upload-pack`
 * packet and its flush, then the advertisement.
 *
 * @param flow The body, as a read-only flow.
 * @returns The advertisement.
 */
export async function lsRefsHttp(flow: Flow): Promise<Advertisement> {
  const pkts = new PktReader(new FlowReader(flow));
  const service = await pkts.read();
  if (
    !(service instanceof Uint8Array) ||
    !/^# service=git-upload-pack$/.test(text(service))
  ) {
    throw new ProtocolError(
      "not a smart HTTP advertisement: no '# service=git-upload-pack' packet",
    );
  }
  const flush = await pkts.read();
  if (flush !== "flush") {
    throw new ProtocolError("not a smart HTTP advertisement: no flush");
  }
  return await readAdvertisement(pkts);
}

/**
 * Quotes `s` for a POSIX shell, as Git's `sq_quote_buf` does: in single
 * quotes, with `'` and `!` escaped.
 *
 * @param s The string.
 * @returns The quoted string.
 */
export function shellQuote(s: string): string {
  return `'${s.replace(/['!]/g, (c) => `'\\${c}'`)}'`;
}
