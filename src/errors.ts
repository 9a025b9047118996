/**
 * The I/O errors of every flow the package makes, named as Deno's (Flow
 * contract, rule 7). On Deno they are the `Deno.errors` classes themselves,
 * so `instanceof Deno.errors.BadResource` holds; on other runtimes (Node, Bun,
 * browsers) they are classes of the same names. Either way `err.name` is
 * `"BadResource"`, `"BrokenPipe"`, `"Interrupted"`, ... and `instanceof
 * errors.BadResource` holds.
 *
 * @example Tell a closed flow from a reset one
 * ```ts
 * import { errors } from "@mimic/mimic";
 * import assert from "node:assert/strict";
 *
 * const error = new errors.BadResource("Cannot read: the flow is closed");
 * assert.equal(error.name, "BadResource");
 * assert.ok(error instanceof errors.BadResource);
 * ```
 *
 * @module
 */

/** A constructor of one of the named I/O errors. */
export type IoErrorClass = new (
  message?: string,
  options?: ErrorOptions,
) => Error;

/** The error classes flows reject with, by name. */
export interface IoErrors {
  /** The flow (or resource) is closed: a read, write or closeWrite after `close()`. */
  BadResource: IoErrorClass;
  /** A write after `closeWrite()`, or to a peer that stopped reading. */
  BrokenPipe: IoErrorClass;
  /** A pending read or write ended by `close()`. */
  Interrupted: IoErrorClass;
  /** The peer reset the connection. */
  ConnectionReset: IoErrorClass;
  /** The peer refused the connection. */
  ConnectionRefused: IoErrorClass;
  /** The connection was aborted. */
  ConnectionAborted: IoErrorClass;
  /** Not connected. */
  NotConnected: IoErrorClass;
  /** A transport accepted zero bytes of a non-empty write. */
  WriteZero: IoErrorClass;
  /** The stream ended before the bytes expected. */
  UnexpectedEof: IoErrorClass;
  /** Another read (or write) is in progress where only one may be. */
  Busy: IoErrorClass;
  /** Data that cannot be what it claims to be. */
  InvalidData: IoErrorClass;
  /** The operation took too long. */
  TimedOut: IoErrorClass;
  /** No such file or path. */
  NotFound: IoErrorClass;
  /** Not allowed by the operating system. */
  PermissionDenied: IoErrorClass;
  /** The address is already in use. */
  AddrInUse: IoErrorClass;
  /** The address is not available. */
  AddrNotAvailable: IoErrorClass;
}

const NAMES: readonly (keyof IoErrors)[] = [
  "BadResource",
  "BrokenPipe",
  "Interrupted",
  "ConnectionReset",
  "ConnectionRefused",
  "ConnectionAborted",
  "NotConnected",
  "WriteZero",
  "UnexpectedEof",
  "Busy",
  "InvalidData",
  "TimedOut",
  "NotFound",
  "PermissionDenied",
  "AddrInUse",
  "AddrNotAvailable",
];

function portableClass(name: string): IoErrorClass {
  const cls = class extends Error {
    constructor(message?: string, options?: ErrorOptions) {
      super(message, options);
      this.name = name;
    }
  };
  Object.defineProperty(cls, "name", { value: name });
  return cls;
}

function makeErrors(): IoErrors {
  const deno = (globalThis as {
    Deno?: { errors?: Record<string, IoErrorClass> };
  }).Deno?.errors;
  const out: Partial<Record<keyof IoErrors, IoErrorClass>> = {};
  for (const name of NAMES) out[name] = deno?.[name] ?? portableClass(name);
  return out as IoErrors;
}

/**
 * The named I/O errors: `Deno.errors`' classes on Deno, classes of the same
 * names elsewhere.
 *
 * @example A closed flow's read
 * ```ts
 * import { errors } from "@mimic/mimic";
 * import { pipe } from "@mimic/mimic/pipe";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = pipe();
 * a.close();
 * await assert.rejects(a.read(new Uint8Array(1)), errors.BadResource);
 * b.close();
 * ```
 */
export const errors: IoErrors = makeErrors();
