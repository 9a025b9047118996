/**
 * Spawns the TLS engine fuzzer in a worker and watches it: no progress for
 * `stallMs` is a hang (the worker is terminated, the last case's seed
 * reported).
 *
 * @module
 */

import type { FuzzStats } from "./tls_fuzz.ts";

/** How a watched run ended. */
export type FuzzOutcome =
  | { type: "done"; stats: FuzzStats }
  | { type: "failure"; message: string; seed?: number }
  | { type: "hang"; lastCaseSeed: number; lastIndex: number };

/** Options of {@linkcode runWatched}. */
export interface WatchOptions {
  /** The run's seed. */
  seed: number;
  /** How many inputs; `null`: forever. */
  count: number | null;
  /** Inputs per progress report (the watchdog's granularity). */
  every?: number;
  /** No progress for this long is a hang. */
  stallMs?: number;
  /** Called at each progress report. */
  onProgress?: (i: number, caseSeed: number, stats: FuzzStats) => void;
}

/**
 * Runs the fuzzer in a worker under a watchdog.
 *
 * @param options Seed, count and watchdog settings.
 * @returns How it ended.
 */
export function runWatched(options: WatchOptions): Promise<FuzzOutcome> {
  const every = options.every ?? 100;
  const stallMs = options.stallMs ?? 20_000;
  const worker = new Worker(
    new URL("./tls_fuzz_worker.ts", import.meta.url),
    { type: "module" },
  );
  let last = { i: -1, caseSeed: 0 };
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new Promise<FuzzOutcome>((resolve) => {
    const finish = (outcome: FuzzOutcome) => {
      clearTimeout(timer);
      worker.terminate();
      resolve(outcome);
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () =>
          finish({
            type: "hang",
            lastCaseSeed: last.caseSeed,
            lastIndex: last.i,
          }),
        stallMs,
      );
    };
    worker.onmessage = (event: MessageEvent) => {
      const m = event.data;
      if (m.type === "progress") {
        last = { i: m.i, caseSeed: m.caseSeed };
        options.onProgress?.(m.i, m.caseSeed, m.stats);
        arm();
      } else if (m.type === "done") {
        finish({ type: "done", stats: m.stats });
      } else {
        finish({ type: "failure", message: m.message, seed: m.seed });
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      finish({ type: "failure", message: `worker error: ${event.message}` });
    };
    arm();
    worker.postMessage({ seed: options.seed, count: options.count, every });
  });
}
