/**
 * Runs the TLS engine fuzzer (./tls_fuzz.ts) in a worker, so the spawning
 * side can watch for progress and stop a hung engine.
 *
 * Messages in: `{ seed, count, every }` (`count` may be `null`: forever).
 * Messages out: `{ type: "progress", i, caseSeed, stats }`,
 * `{ type: "done", stats }`, `{ type: "failure", message, seed }`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { fuzz, FuzzFailure } from "./tls_fuzz.ts";

self.onmessage = async (event: MessageEvent) => {
  const { seed, count, every } = event.data as {
    seed: number;
    count: number | null;
    every: number;
  };
  try {
    const stats = await fuzz(
      seed,
      count ?? Infinity,
      (i, caseSeed, stats) =>
        self.postMessage({ type: "progress", i, caseSeed, stats }),
      every,
    );
    self.postMessage({ type: "done", stats });
  } catch (error) {
    self.postMessage({
      type: "failure",
      message: error instanceof Error
        ? `${error.message}\n${error.stack}\ncause: ${
          (error.cause as Error | undefined)?.stack ?? error.cause
        }`
        : String(error),
      seed: error instanceof FuzzFailure ? error.seed : undefined,
    });
  }
};
