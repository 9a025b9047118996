// Reliability: the TLS engine fuzzer (tests/fuzz/tls_fuzz.ts), bounded.
// Fresh client and server sessions are fed mutated records of real
// handshakes (TLS 1.3 and 1.2, ECDSA and RSA, mTLS, ALPN) and random
// records; each input must end in a TlsError or progress, never another
// exception or a hang (a watchdog stops a stalled worker), and the engine's
// memory must stay bounded. Reproduce with FUZZ_SEED=<seed>; FUZZ_COUNT
// sets the number of inputs; `deno run -A stress/fuzz_tls.ts --forever`
// runs it by hand.
import assert from "node:assert/strict";
import { runWatched } from "./fuzz/tls_fuzz_run.ts";
import { countFrom, seedFrom } from "./fuzz/prng.ts";

Deno.test("TLS engine fuzz: mutated and random records end in a TlsError or progress", async () => {
  const seed = seedFrom(0x7150);
  const count = countFrom(20_000);
  const start = performance.now();
  const outcome = await runWatched({
    seed,
    count,
    every: 100,
    stallMs: 20_000,
  });
  const ms = performance.now() - start;
  if (outcome.type === "hang") {
    assert.fail(
      `the engine hangs on case ${outcome.lastIndex}..${
        outcome.lastIndex + 99
      } ` +
        `(FUZZ_SEED=${seed}; first case seed ${outcome.lastCaseSeed})`,
    );
  }
  if (outcome.type === "failure") {
    assert.fail(
      `FUZZ_SEED=${seed}: ${outcome.message}` +
        (outcome.seed === undefined ? "" : ` (case seed ${outcome.seed})`),
    );
  }
  const s = outcome.stats;
  console.log(
    `tls fuzz: ${s.inputs} inputs (seed ${seed}) in ${ms.toFixed(0)} ms; ` +
      `errors ${JSON.stringify(s.tlsErrors)}; progressed ${s.progressed}; ` +
      `handshakes ${s.handshakesCompleted}; engine failures ${s.engineFailures}; ` +
      `wasm memory ≤ ${(s.maxMemoryBytes / 2 ** 20).toFixed(1)} MiB, ` +
      `heap ${s.heapBytesStart} → ${s.heapBytesEnd} bytes`,
  );
  assert.equal(s.inputs, count);
  assert.equal(s.engineFailures, 0, "the engine trapped (contained)");
  assert.ok(s.maxMemoryBytes <= 64 * 2 ** 20, "wasm memory over 64 MiB");
  // Sessions are freed: what stays is the configs' bounded caches.
  assert.ok(
    s.heapBytesEnd - s.heapBytesStart < 4 * 2 ** 20,
    `engine heap grew by ${s.heapBytesEnd - s.heapBytesStart} bytes`,
  );
});
