/**
 * The TLS engine fuzzer, by hand: mutated real records and random records
 * into fresh rustls-in-wasm sessions, under a watchdog.
 *
 *   deno run -A stress/fuzz_tls.ts [--seed N] [--count N | --forever] [--quick]
 *
 * `--quick` runs 20,000 inputs (what CI runs, via
 * tests/reliability_tls_fuzz_test.ts); the default is 200,000. Progress,
 * the engine's wasm memory and heap are printed every 10,000 inputs; a
 * failure prints the seeds that reproduce it and exits with status 1.
 * `--forever` runs fresh seeds one after another until interrupted.
 *
 * @module
 */

import { runWatched } from "../tests/fuzz/tls_fuzz_run.ts";

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const forever = Deno.args.includes("--forever");
const count = Deno.args.includes("--quick")
  ? 20_000
  : Number(flag("--count") ?? 200_000);
let seed = flag("--seed") !== undefined
  ? Number(flag("--seed")) >>> 0
  : (Math.random() * 2 ** 32) >>> 0;

let total = 0;
const start = performance.now();
do {
  console.log(`seed ${seed}: ${forever ? "10,000 per seed" : count} inputs`);
  const outcome = await runWatched({
    seed,
    count: forever ? 10_000 : count,
    every: 100,
    stallMs: 30_000,
    onProgress: (i, _caseSeed, s) => {
      if (i > 0 && i % 10_000 === 0) {
        console.log(
          `  ${i} inputs, ${(performance.now() - start) / 1000 | 0} s: ` +
            `wasm memory ${(s.maxMemoryBytes / 2 ** 20).toFixed(1)} MiB; ` +
            `errors ${JSON.stringify(s.tlsErrors)}; traps ${s.engineFailures}`,
        );
      }
    },
  });
  if (outcome.type === "hang") {
    console.error(
      `HANG: seed ${seed}, inputs ${outcome.lastIndex}..${
        outcome.lastIndex + 99
      } (first case seed ${outcome.lastCaseSeed})`,
    );
    Deno.exit(1);
  }
  if (outcome.type === "failure") {
    console.error(
      `FAILURE: seed ${seed}${
        outcome.seed === undefined ? "" : `, case seed ${outcome.seed}`
      }\n${outcome.message}`,
    );
    Deno.exit(1);
  }
  const s = outcome.stats;
  total += s.inputs;
  console.log(
    `  done: ${s.inputs} inputs; errors ${JSON.stringify(s.tlsErrors)}; ` +
      `progressed ${s.progressed}; handshakes ${s.handshakesCompleted}; ` +
      `traps ${s.engineFailures}; wasm memory ≤ ${
        (s.maxMemoryBytes / 2 ** 20).toFixed(1)
      } MiB; heap ${s.heapBytesStart} → ${s.heapBytesEnd} bytes`,
  );
  seed = (seed + 0x9e3779b9) >>> 0;
} while (forever);
console.log(
  `${total} inputs in ${((performance.now() - start) / 1000).toFixed(1)} s`,
);
