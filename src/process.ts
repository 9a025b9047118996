/**
 * A subprocess's stdin and stdout as a {@linkcode Flow}: how Git speaks SSH
 * (`ssh user@host "git-upload-pack '/repo.git'"`), or any program that talks
 * a protocol over its standard streams.
 *
 * Reading reads the process's stdout, writing writes its stdin,
 * `closeWrite` closes its stdin, `close` kills it if it still runs. Its
 * stderr is kept (the last 64 KiB) for error messages, and its exit status is
 * checked: when stdout ends and the process exited unsuccessfully, the read
 * rejects with a {@linkcode ProcessExitError} naming the command, its exit
 * code and the tail of its stderr, so a process that dies early is a clear
 * error rather than a silent end of flow.
 *
 * @example Talk to `cat`
 * ```ts
 * import { spawnFlow } from "@mimic/mimic/process";
 * import assert from "node:assert/strict";
 *
 * await using flow = await spawnFlow("cat");
 * await flow.write(new TextEncoder().encode("hello"));
 * await flow.closeWrite();
 * const text = await new Response(flow.readable).text();
 * assert.equal(text, "hello");
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

/** The default number of trailing stderr bytes a {@linkcode ProcessFlow} keeps. */
export const DEFAULT_STDERR_LIMIT = 64 * 1024;

/** What to run: the endpoint of {@linkcode processProtocol}. */
export interface ProcessEndpoint {
  /** The program: a path, or a name looked up in `PATH`. */
  command: string;
  /** Its arguments (not interpreted by a shell). */
  args?: string[];
  /** Environment variables added to (not replacing) the current environment. */
  env?: Record<string, string>;
  /** The working directory; default: the current one. */
  cwd?: string;
}

/** Options of {@linkcode spawnFlow}. */
export interface SpawnFlowOptions {
  /** Its arguments (not interpreted by a shell). */
  args?: string[];
  /** Environment variables added to (not replacing) the current environment. */
  env?: Record<string, string>;
  /** The working directory; default: the current one. */
  cwd?: string;
  /**
   * Kills the process when aborted (as `Deno.Command`'s `signal`): pending
   * and later reads and writes reject with the signal's reason.
   */
  signal?: AbortSignal;
  /**
   * How many trailing bytes of stderr to keep for error messages and
   * {@linkcode ProcessFlow.stderr}.
   *
   * @default {65536}
   */
  stderrLimit?: number;
}

/**
 * A process exited unsuccessfully (a non-zero code, or killed by a signal)
 * while its flow was being read. Carries the exit status and the tail of its
 * stderr.
 *
 * @example Tell a failed command from other errors
 * ```ts
 * import { ProcessExitError, spawnFlow } from "@mimic/mimic/process";
 * import assert from "node:assert/strict";
 *
 * await using flow = await spawnFlow("sh", { args: ["-c", "echo oops >&2; exit 3"] });
 * const error = await flow.read(new Uint8Array(16)).catch((e) => e);
 * assert.ok(error instanceof ProcessExitError);
 * assert.equal(error.code, 3);
 * assert.equal(error.stderr, "oops\n");
 * ```
 */
export class ProcessExitError extends Error {
  /** The command that was run. */
  readonly command: string;
  /** Its exit code (by convention 128 + the signal's number when killed). */
  readonly code: number;
  /** The signal that killed it, if any. */
  readonly signal: Deno.Signal | null;
  /** The last bytes it wrote to stderr, decoded as UTF-8. */
  readonly stderr: string;

  /**
   * Makes the error.
   *
   * @param command The command that was run.
   * @param status Its exit status.
   * @param stderr The tail of its stderr.
   */
  constructor(command: string, status: Deno.CommandStatus, stderr: string) {
    super(`${describeExit(command, status)}${stderrSuffix(stderr)}`);
    this.name = "ProcessExitError";
    this.command = command;
    this.code = status.code;
    this.signal = status.signal;
    this.stderr = stderr;
  }
}

function describeExit(command: string, status: Deno.CommandStatus): string {
  return status.signal !== null
    ? `Process "${command}" was killed by ${status.signal} (exit code ${status.code})`
    : `Process "${command}" exited with code ${status.code}`;
}

function stderrSuffix(stderr: string): string {
  const tail = stderr.trim();
  return tail === "" ? "" : `: ${tail}`;
}

/** Keeps the last `limit` bytes written to it. */
class Tail {
  #chunks: Uint8Array[] = [];
  #size = 0;
  #limit: number;

  constructor(limit: number) {
    this.#limit = limit;
  }

  push(chunk: Uint8Array): void {
    if (this.#limit === 0) return;
    this.#chunks.push(chunk.slice());
    this.#size += chunk.length;
    while (this.#size - this.#chunks[0].length >= this.#limit) {
      this.#size -= this.#chunks.shift()!.length;
    }
  }

  text(): string {
    const all = new Uint8Array(this.#size);
    let offset = 0;
    for (const c of this.#chunks) {
      all.set(c, offset);
      offset += c.length;
    }
    const start = Math.max(0, all.length - this.#limit);
    return new TextDecoder().decode(all.subarray(start));
  }
}

/**
 * A running process's stdout (read) and stdin (write) as a flow. Made by
 * {@linkcode spawnFlow} or by resolving a {@linkcode processProtocol}
 * endpoint.
 *
 * - `read` resolves to `null` when stdout ends and the process exited
 *   successfully; it rejects with {@linkcode ProcessExitError} when it exited
 *   unsuccessfully. (It waits for the process to exit once stdout ends.)
 * - `write` rejects with `errors.BrokenPipe`, naming the command and,
 *   when known, its exit status and stderr, when the process no longer reads
 *   its stdin, and after `closeWrite`; with `errors.BadResource` after
 *   `close`.
 * - `closeWrite` closes stdin (the process reads end of file).
 * - `close` kills the process (`SIGTERM`) if it still runs and releases the
 *   pipes; `await using` (`Symbol.asyncDispose`) also waits for it to exit.
 *
 * @example Read what a command prints
 * ```ts
 * import { spawnFlow } from "@mimic/mimic/process";
 * import assert from "node:assert/strict";
 *
 * await using flow = await spawnFlow("echo", { args: ["hi"] });
 * assert.equal(await new Response(flow.readable).text(), "hi\n");
 * assert.equal((await flow.status).code, 0);
 * ```
 */
export class ProcessFlow implements Flow, Disposable, AsyncDisposable {
  /** The command that was run. */
  readonly command: string;
  /** The exit status; settles when the process exits. Never rejects. */
  readonly status: Promise<Deno.CommandStatus>;

  #child: Deno.ChildProcess;
  #stdout: ReadableStreamDefaultReader<Uint8Array>;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr: Tail;
  #stderrDone: Promise<void>;
  #stderrReader: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array | null = null;
  #exited: Deno.CommandStatus | null = null;
  #error: unknown = undefined;
  #signal: AbortSignal | undefined;
  #onAbort: (() => void) | undefined;
  #flow: SourceFlow;

  /**
   * Wraps a child process spawned with `stdin`, `stdout` and `stderr` all
   * `"piped"`. Prefer {@linkcode spawnFlow}.
   *
   * @param command The command's name, for errors.
   * @param child The child process.
   * @param options How much stderr to keep, and a signal that closes the flow.
   */
  constructor(
    command: string,
    child: Deno.ChildProcess,
    options: { stderrLimit?: number; signal?: AbortSignal } = {},
  ) {
    const limit = options.stderrLimit ?? DEFAULT_STDERR_LIMIT;
    if (!Number.isInteger(limit) || limit < 0) {
      throw new RangeError(
        `Cannot spawn "${command}": stderrLimit must be a non-negative integer, got ${limit}`,
      );
    }
    this.command = command;
    this.#child = child;
    this.#stdout = child.stdout.getReader();
    this.#stdin = child.stdin.getWriter();
    this.#stdin.closed.catch(() => {});
    this.#stderr = new Tail(limit);
    this.#stderrReader = child.stderr.getReader();
    this.#stderrDone = this.#pumpStderr();
    this.status = child.status.then((status) => {
      this.#exited = status;
      this.#signal?.removeEventListener("abort", this.#onAbort!);
      return status;
    });
    this.#flow = new SourceFlow({
      read: (p) => this.#read(p),
      write: (p) => this.#write(p),
      closeWrite: () => this.#closeWrite(),
      close: () => this.#close(),
    }, { name: `process "${command}"` });
    const signal = options.signal;
    if (signal !== undefined) {
      this.#signal = signal;
      this.#onAbort = () => {
        this.#error ??= signal.reason;
        this.close();
      };
      if (signal.aborted) this.#onAbort();
      else signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** The bytes read (stdout), as a stream sharing `read`'s position. */
  get readable(): ReadableStream<Uint8Array> {
    return this.#flow.readable;
  }

  /** The bytes to write (stdin), as a stream; closing it closes stdin. */
  get writable(): WritableStream<Uint8Array> {
    return this.#flow.writable;
  }

  /**
   * The last bytes the process wrote to stderr so far (up to the
   * `stderrLimit`), decoded as UTF-8.
   *
   * @returns The tail of stderr.
   */
  stderr(): string {
    return this.#stderr.text();
  }

  async #pumpStderr(): Promise<void> {
    try {
      while (true) {
        const { done, value } = await this.#stderrReader.read();
        if (done) return;
        this.#stderr.push(value);
      }
    } catch {
      // stderr is best effort: a broken pipe only loses messages.
    }
  }

  /** After an abort, the signal's reason rather than the flow's own error. */
  #aborted<T>(op: Promise<T>): Promise<T> {
    if (this.#signal === undefined) return op;
    return op.catch((error) => {
      throw this.#error ?? error;
    });
  }

  /**
   * Reads stdout into `p`. Concurrent reads are served in call order.
   *
   * @param p The buffer to fill.
   * @returns The number of bytes read, or `null` at the end of stdout once
   * the process exited successfully.
   */
  read(p: Uint8Array): Promise<number | null> {
    return this.#aborted(this.#flow.read(p));
  }

  async #read(p: Uint8Array): Promise<number | null> {
    if (this.#pending === null) {
      const result = await this.#stdout.read();
      if (result.done) return await this.#end();
      this.#pending = result.value;
    }
    const chunk = this.#pending;
    const n = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, n));
    this.#pending = n === chunk.length ? null : chunk.subarray(n);
    return n;
  }

  async #end(): Promise<null> {
    const status = await this.status;
    // Let stderr drain so the error carries it; a grandchild holding stderr
    // open must not hang the read, hence the bound.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#stderrDone,
      new Promise<void>((ok) => timer = setTimeout(ok, 200)),
    ]);
    clearTimeout(timer);
    if (!status.success) {
      throw new ProcessExitError(this.command, status, this.stderr());
    }
    return null;
  }

  /**
   * Writes `p` to stdin, entirely. Concurrent writes go out in call order.
   *
   * @param p The bytes to write.
   * @returns `p.length`, once written to the pipe.
   */
  write(p: Uint8Array): Promise<number> {
    return this.#aborted(this.#flow.write(p));
  }

  async #write(p: Uint8Array): Promise<number> {
    try {
      await this.#stdin.write(p);
    } catch (error) {
      throw await this.#brokenPipe(error);
    }
    return p.length;
  }

  async #brokenPipe(cause: unknown): Promise<Error> {
    // The process stopped reading stdin, most often because it exited: give
    // it a moment to, so the error can say how.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      this.status,
      new Promise<null>((ok) => timer = setTimeout(() => ok(null), 200)),
    ]);
    clearTimeout(timer);
    const how = status === null
      ? `Cannot write to process "${this.command}": it does not read its stdin`
      : `Cannot write to process "${this.command}": ${
        describeExit(this.command, status).replace(/^Process "[^"]*" /, "it ")
      }${stderrSuffix(this.stderr())}`;
    return new errors.BrokenPipe(how, { cause });
  }

  /**
   * Closes stdin: the process reads end of file. Idempotent; never rejects
   * because the process already exited; a later `write` rejects with
   * `errors.BrokenPipe`.
   *
   * @returns A promise settled once stdin is closed.
   */
  closeWrite(): Promise<void> {
    return this.#aborted(this.#flow.closeWrite());
  }

  async #closeWrite(): Promise<void> {
    try {
      await this.#stdin.close();
    } catch {
      // Already broken: the process closed its end, which is what we want.
    }
  }

  /**
   * Kills the process (`SIGTERM`) if it still runs and releases its pipes.
   * Pending reads and writes reject with `errors.Interrupted` (with the
   * signal's reason after an abort), later ones with `errors.BadResource`.
   * Idempotent. Await {@linkcode ProcessFlow.status} (or use `await using`)
   * to wait for the process to exit.
   */
  close(): void {
    this.#flow.close();
  }

  #close(): void {
    this.#signal?.removeEventListener("abort", this.#onAbort!);
    if (this.#exited === null) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // It exited in the meantime.
      }
    }
    this.#pending = null;
    this.#stdout.cancel().catch(() => {});
    this.#stdin.abort().catch(() => {});
    this.#stderrReader.cancel().catch(() => {});
  }

  /** Closes the flow (see {@linkcode ProcessFlow.close}). */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Closes the flow and waits for the process to exit.
   *
   * @returns A promise settled once the process exited.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.status;
    await this.#stderrDone;
  }
}

/**
 * Spawns a command with its stdin and stdout as a flow (see
 * {@linkcode ProcessFlow}). Rejects with `errors.NotFound` when the
 * command does not exist, with `errors.PermissionDenied` when it cannot
 * be run.
 *
 * @example Run `git-upload-pack` over SSH
 * ```ts ignore
 * import { spawnFlow } from "@mimic/mimic/process";
 *
 * const flow = await spawnFlow("ssh", {
 *   args: ["-p", "2222", "git@127.0.0.1", "git-upload-pack '/srv/repo.git'"],
 * });
 * const head = new Uint8Array(4);
 * await flow.read(head); // the first pkt-line's length
 * ```
 *
 * @example Echo through `cat`
 * ```ts
 * import { spawnFlow } from "@mimic/mimic/process";
 * import assert from "node:assert/strict";
 *
 * await using flow = await spawnFlow("cat");
 * await flow.write(new Uint8Array([1, 2, 3]));
 * const buf = new Uint8Array(3);
 * assert.equal(await flow.read(buf), 3);
 * assert.deepEqual([...buf], [1, 2, 3]);
 * ```
 *
 * @param command The program: a path, or a name looked up in `PATH`.
 * @param options Its arguments, environment, working directory, a signal
 * that kills it, and how much stderr to keep.
 * @returns The flow, once the process is spawned.
 */
export function spawnFlow(
  command: string,
  options: SpawnFlowOptions = {},
): Promise<ProcessFlow> {
  try {
    options.signal?.throwIfAborted();
    const child = new Deno.Command(command, {
      args: options.args,
      env: options.env,
      cwd: options.cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return Promise.resolve(
      new ProcessFlow(command, child, {
        stderrLimit: options.stderrLimit,
        signal: options.signal,
      }),
    );
  } catch (error) {
    if (options.signal?.aborted && error === options.signal.reason) {
      return Promise.reject(error);
    }
    if (error instanceof errors.NotFound) {
      return Promise.reject(
        new errors.NotFound(`Cannot spawn "${command}": not found`, {
          cause: error,
        }),
      );
    }
    if (error instanceof errors.PermissionDenied) {
      return Promise.reject(
        new errors.PermissionDenied(
          `Cannot spawn "${command}": ${error.message}`,
          { cause: error },
        ),
      );
    }
    return Promise.reject(error);
  }
}

/**
 * The `process` protocol: its endpoint says what to run, and connecting
 * spawns it (see {@linkcode spawnFlow}). The resolution's signal only guards
 * the spawn: aborting it later does not kill the process; close the flow.
 *
 * @example Resolve a context to a process
 * ```ts
 * import { empty, resolve } from "@mimic/mimic";
 * import { processProtocol } from "@mimic/mimic/process";
 * import assert from "node:assert/strict";
 *
 * const ctx = empty.add(processProtocol.endpoint, { command: "cat" });
 * const flow = await resolve(ctx);
 * assert.ok(processProtocol.is(flow));
 * flow.close();
 * await flow.status;
 * ```
 */
export const processProtocol: Protocol<ProcessEndpoint, ProcessFlow> = register(
  "process",
  (endpoint, signal) => {
    signal.throwIfAborted();
    return spawnFlow(endpoint.command, {
      args: endpoint.args,
      env: endpoint.env,
      cwd: endpoint.cwd,
    });
  },
  {
    describe: (endpoint) =>
      ["process", endpoint?.command, ...(endpoint?.args ?? [])].join(" "),
  },
);
