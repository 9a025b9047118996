/**
 * The TLS engine fuzzer, long runs: every path of tests/fuzz/tls_fuzz.ts
 * (client and server, ChaCha20 and AES-GCM, TLS 1.2 suites, host AEAD and
 * the engine's own ciphers, X25519MLKEM768, resumption, post-handshake
 * records sealed with real keys, the ClientHello acceptor and acceptTls
 * with an SNI function) into fresh rustls-in-wasm sessions, under a
 * watchdog.
 *
 *   deno run -A stress/fuzz_tls.ts [--seed N] [--count N | --forever] [--quick]
 *
 * `--quick` runs 600 inputs (what `deno task test` runs, via
 * tests/reliability_tls_fuzz_test.ts); the default is 100,000. Progress,
 * the engines' wasm memory and heap are printed every 10,000 inputs; a
 * failure prints the seeds that reproduce it (`--seed`, and the case seed:
 * `--case <case seed>` replays that one case, in this process, with its
 * stack) and exits with status 1.
 * The run ends with the same checks as the test (heap back near its
 * warm-up level, the host AEAD used, no trap). `--forever` runs fresh seeds
 * one after another until interrupted.
 *
 * @module
 */

import { runWatched } from "../tests/fuzz/tls_fuzz_run.ts";
import { corpus, newStats, one } from "../tests/fuzz/tls_fuzz.ts";

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

if (flag("--case") !== undefined) {
  const caseSeed = Number(flag("--case")) >>> 0;
  const stats = newStats();
  await one(caseSeed, await corpus(), stats);
  console.log(`case ${caseSeed}: passed`, stats);
  Deno.exit(0);
}

const forever = Deno.args.includes("--forever");
const count = Deno.args.includes("--quick")
  ? 600
  : Number(flag("--count") ?? 100_000);
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
            `wasm memory host ${
              (s.heap.host.maxMemoryBytes / 2 ** 20).toFixed(1)
            } MiB, wasm ${
              (s.heap.wasm.maxMemoryBytes / 2 ** 20).toFixed(1)
            } MiB; heap host ${s.heap.host.heapBytesEnd}, wasm ${s.heap.wasm.heapBytesEnd} bytes; ` +
            `errors ${
              JSON.stringify(s.tlsErrors)
            }; traps ${s.engineFailures}; ` +
            `sticky ${s.stickyChecked}; host seals ${s.hostSeals}`,
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
  const { host, wasm } = s.heap;
  console.log(
    `  done: ${s.inputs} inputs; targets ${JSON.stringify(s.targets)}\n` +
      `  errors ${JSON.stringify(s.tlsErrors)}; progressed ${s.progressed}; ` +
      `handshakes ${s.handshakesCompleted} (resumed ${s.resumed}); traps ${s.engineFailures}; ` +
      `known upstream issues ${JSON.stringify(s.knownIssues)}\n` +
      `  sticky errors probed ${s.stickyChecked}; host AEAD seals/opens ${s.hostSeals}/${s.hostOpens}; ` +
      `cases on the engine's own ciphers ${s.wasmCasesChecked}\n` +
      `  crafted ${
        JSON.stringify(s.crafted)
      }; read back ${s.craftedReadBack}; ` +
      `key updates followed ${s.keyUpdatesFollowed}; truncated+EOF ${s.truncatedEof}\n` +
      `  acceptor hellos ${s.acceptorHellos} (sync ${s.chooserSync}, async ${s.chooserAsync}), ` +
      `handshakes ${s.acceptorHandshakes}; acceptTls ${
        JSON.stringify(s.acceptTls)
      }\n` +
      `  wasm memory ≤ ${
        (s.maxMemoryBytes / 2 ** 20).toFixed(1)
      } MiB; heap host ${host.heapBytesStart} → ${host.heapBytesMid} → ${host.heapBytesEnd}, ` +
      `wasm ${wasm.heapBytesStart} → ${wasm.heapBytesMid} → ${wasm.heapBytesEnd} bytes (start, half, end)`,
  );
  const problems = [
    s.engineFailures > 0 && `${s.engineFailures} engine traps`,
    s.hostSeals === 0 && "the host AEAD was not used",
    ...[["host", host], ["wasm", wasm]].flatMap(([name, h]) => {
      const { heapBytesStart: a, heapBytesMid: m, heapBytesEnd: b } =
        h as typeof host;
      // rustls's session caches (256 entries per server config) fill in
      // the first tens of thousands of cases, then the heap is flat: a
      // leak grows in the second half.
      return [
        b - a >= 2 * 2 ** 20 && `${name} engine heap grew by ${b - a} bytes`,
        s.inputs >= 50_000 && b - m >= 256 * 1024 &&
        `${name} engine heap grew by ${b - m} bytes in the second half`,
      ];
    }),
  ].filter(Boolean);
  if (problems.length > 0) {
    console.error(`FAILURE: seed ${seed}: ${problems.join("; ")}`);
    Deno.exit(1);
  }
  seed = (seed + 0x9e3779b9) >>> 0;
} while (forever);
console.log(
  `${total} inputs in ${((performance.now() - start) / 1000).toFixed(1)} s`,
);
