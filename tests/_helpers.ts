/**
 * Helpers shared by the tests: random bytes and their digests, whole-flow
 * reads and writes, the fixtures, and running an example as a subprocess.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Flow } from "../mod.ts";

/** The smallest flow a read helper needs. */
type Readable = Pick<Flow, "read">;
/** The smallest flow a write helper needs. */
type Writable = Pick<Flow, "write">;

/**
 * Waits `ms` milliseconds.
 *
 * @param ms How long.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((ok) => setTimeout(ok, ms));
}

/**
 * `n` random bytes (filled 64 KiB at a time, the most
 * `crypto.getRandomValues` takes).
 *
 * @param n How many.
 * @returns The bytes.
 */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)));
  }
  return out;
}

/**
 * `n` random bytes whose first 256 are 0, 1, ..., 255: every byte value
 * included.
 *
 * @param n How many.
 * @returns The bytes.
 */
export function randomBytesEveryValue(n: number): Uint8Array<ArrayBuffer> {
  const out = randomBytes(n);
  for (let i = 0; i < Math.min(256, n); i++) out[i] = i;
  return out;
}

/**
 * SHA-256 of `bytes`, hex.
 *
 * @param bytes The bytes.
 * @returns The digest.
 */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new Uint8Array(bytes));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/**
 * The parts, one after the other, in a new array.
 *
 * @param parts The parts.
 * @returns Their concatenation.
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Writes all of `data` in writes of at most `chunk` bytes.
 *
 * @param flow The flow.
 * @param data The bytes.
 * @param chunk The most bytes per write.
 */
export async function writeAll(
  flow: Writable,
  data: Uint8Array,
  chunk = 65536,
): Promise<void> {
  for (let off = 0; off < data.length;) {
    const n = await flow.write(data.subarray(off, off + chunk));
    if (!(n > 0)) throw new Error(`write returned ${n}`);
    off += n;
  }
}

/**
 * Reads to end of flow with reads of at most `size` bytes.
 *
 * @param flow The flow.
 * @param size The read buffer size.
 * @returns Every byte read.
 */
export async function readAll(
  flow: Readable,
  size = 65536,
): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(size);
  for (;;) {
    const n = await flow.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
  }
  return concat(parts);
}

/**
 * Writes all of `data` in writes of random sizes (1 to 100 000 bytes), then
 * half-closes.
 *
 * @param flow The flow.
 * @param data The bytes.
 */
export async function writeAllRandomly(
  flow: Pick<Flow, "write" | "closeWrite">,
  data: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const size = 1 + Math.floor(Math.random() * 100_000);
    const n = await flow.write(data.subarray(offset, offset + size));
    assert.ok(n > 0);
    offset += n;
  }
  await flow.closeWrite();
}

/**
 * Reads to end of flow into buffers of random sizes (1 to `max` bytes),
 * checking every read's count.
 *
 * @param flow The flow.
 * @param max The largest buffer.
 * @returns Every byte read.
 */
export async function readAllRandomly(
  flow: Readable,
  max = 70_000,
): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  for (;;) {
    const buf = new Uint8Array(1 + Math.floor(Math.random() * max));
    const n = await flow.read(buf);
    if (n === null) break;
    assert.ok(n > 0 && n <= buf.length);
    chunks.push(buf.subarray(0, n));
  }
  return concat(chunks);
}

/**
 * Reads exactly `n` bytes.
 *
 * @param flow The flow.
 * @param n How many.
 * @returns The bytes.
 * @throws {Error} At end of flow before `n` bytes.
 */
export async function readExactly(
  flow: Readable,
  n: number,
): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const got = await flow.read(buf.subarray(off));
    if (got === null) {
      throw new Error(`Unexpected end of flow after ${off} of ${n} bytes`);
    }
    off += got;
  }
  return buf;
}

/**
 * Writes `data` in writes of at most `chunk` bytes while reading as many
 * bytes back (from an echo).
 *
 * @param flow The flow.
 * @param data The bytes.
 * @param chunk The most bytes per write.
 * @returns The bytes read back.
 */
export async function roundTrip(
  flow: Readable & Writable,
  data: Uint8Array,
  chunk = 100_000,
): Promise<Uint8Array> {
  const writing = (async () => {
    for (let off = 0; off < data.length;) {
      off += await flow.write(data.subarray(off, off + chunk));
    }
  })();
  const [, echoed] = await Promise.all([
    writing,
    readExactly(flow, data.length),
  ]);
  return echoed;
}

/**
 * The DER of the first certificate of a PEM chain.
 *
 * @param pem The PEM.
 * @returns The DER bytes.
 */
export function der(pem: string): Uint8Array {
  const body = pem.split("-----")[2].replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

/**
 * The file path of a test fixture.
 *
 * @param name The path under tests/fixtures.
 * @returns Its absolute path.
 */
export function fixturePath(name: string): string {
  return new URL(`./fixtures/${name}`, import.meta.url).pathname;
}

/**
 * Reads a test fixture (tests/fixtures/...).
 *
 * @param name The path under tests/fixtures.
 * @returns Its text.
 */
export function fixture(name: string): string {
  return Deno.readTextFileSync(new URL(`./fixtures/${name}`, import.meta.url));
}

/** What an example run as a subprocess did. */
export interface Run {
  /** The exit code. */
  code: number;
  /** Its stdout. */
  stdout: Uint8Array;
  /** Its stderr, as text. */
  stderr: string;
}

/**
 * Runs `deno run --allow-all --quiet <script> <args>` with `NO_COLOR=1`,
 * no stdin, and both outputs collected.
 *
 * @param script The script's path.
 * @param args Its arguments.
 * @param env More environment variables.
 * @returns Its exit code and outputs.
 */
export async function runExample(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", script, ...args],
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: out.stdout,
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** {@linkcode Run} with stdout as text. */
export interface TextRun {
  /** The exit code. */
  code: number;
  /** Its stdout, as text. */
  stdout: string;
  /** Its stderr, as text. */
  stderr: string;
}

/**
 * {@linkcode runExample}, with stdout decoded as text.
 *
 * @param script The script's path.
 * @param args Its arguments.
 * @param env More environment variables.
 * @returns Its exit code and outputs.
 */
export async function runExampleText(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<TextRun> {
  const run = await runExample(script, args, env);
  return { ...run, stdout: new TextDecoder().decode(run.stdout) };
}

/**
 * Checks an example's stderr: one line, `<name>: ` then `pattern`, no
 * stack trace.
 *
 * @param stderr The example's stderr.
 * @param name The example's name, the line's prefix.
 * @param pattern What the line must match.
 */
export function assertOneStderrLine(
  stderr: string,
  name: string,
  pattern: RegExp,
): void {
  const lines = stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0], new RegExp(`^${name}: `));
  assert.match(lines[0], pattern);
  assert.doesNotMatch(stderr, /\n\s+at |Uncaught|error: /);
}
