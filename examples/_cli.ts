/**
 * The command-line scaffolding the examples share: walking the arguments,
 * reading a CA file, and running `main` so that any failure is one clear
 * line on stderr and a non-zero exit code.
 *
 * @module
 */

import { explain } from "./_http.ts";

/** A bad command line: exit code 2, and a hint to see `--help`. */
export class UsageError extends Error {}

/**
 * Walks the arguments: yields each with a function that takes the next one
 * as its value (a {@linkcode UsageError} when there is none), which the
 * walk then skips.
 *
 * @param args The arguments.
 * @yields Each argument, and how to take its value.
 */
export function* eachArg(
  args: readonly string[],
): Generator<[string, () => string]> {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = (): string => {
      if (i + 1 >= args.length) throw new UsageError(`${a} needs a value`);
      return args[++i];
    };
    yield [a, next];
  }
}

/**
 * The value of `--timeout`, in seconds.
 *
 * @param value The argument.
 * @returns The seconds.
 * @throws {UsageError} When it is not a positive number.
 */
export function parseTimeout(value: string): number {
  const timeout = Number(value);
  if (!(timeout > 0)) throw new UsageError("--timeout must be positive");
  return timeout;
}

/**
 * Reads a PEM file of CA certificates.
 *
 * @param file The file's path.
 * @returns Its text, as the one element of a `caCerts` list.
 * @throws {UsageError} When it cannot be read.
 */
export async function readCaFile(file: string): Promise<string[]> {
  try {
    return [await Deno.readTextFile(file)];
  } catch (error) {
    throw new UsageError(`cannot read the CA file ${file}: ${explain(error)}`);
  }
}

/**
 * Runs `main` with `Deno.args` and exits with its code. A failure, or an
 * unhandled rejection, is one line `<name>: <reason>` on stderr and exit
 * code 1; a {@linkcode UsageError} adds ` (see --help)` and exits with 2.
 *
 * @param name The example's name, the prefix of its error line.
 * @param main The command line's entry point, returning the exit code.
 */
export async function runMain(
  name: string,
  main: (args: string[]) => Promise<number>,
): Promise<never> {
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    console.error(`${name}: ${explain(e.reason)}`);
    Deno.exit(1);
  });
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    const hint = error instanceof UsageError ? " (see --help)" : "";
    console.error(`${name}: ${explain(error)}${hint}`);
    code = error instanceof UsageError ? 2 : 1;
  }
  Deno.exit(code);
}
