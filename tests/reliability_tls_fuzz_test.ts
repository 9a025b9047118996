// Reliability: the TLS engine fuzzer (tests/fuzz/tls_fuzz.ts), bounded.
// Fresh client and server sessions, on the host AEAD and on the engine's
// own ciphers, are fed mutated records of real handshakes (TLS 1.3 with
// ChaCha20-Poly1305, AES-128-GCM and AES-256-GCM, X25519MLKEM768,
// HelloRetryRequest, resumption; TLS 1.2 ECDHE suites, mTLS, ALPN), random
// records, records mutated in flight, post-handshake records (mutated
// application data, truncated records, clear-text garbage, records sealed
// with the peer's real keys: KeyUpdate-like garbage, alerts, bad inner
// types), ClientHellos through the acceptor (sync and async SNI
// function), acceptTls over a pipe, the exporter with odd arguments and
// options with a mutated field. Every input must end in a TlsError
// with a known code (sticky: the same code on every later call) or
// cleanly, never another exception, a trap or a hang (a watchdog stops a
// stalled worker); the host AEAD must really be used where chosen and
// never where not; the engines' heaps must be back near their warm-up
// level. Reproduce with FUZZ_SEED=<seed>; FUZZ_COUNT sets the number of
// inputs; `deno run -A stress/fuzz_tls.ts --count N` runs long.
import assert from "node:assert/strict";
import { runWatched } from "./fuzz/tls_fuzz_run.ts";
import { countFrom, seedFrom } from "./fuzz/prng.ts";

const MiB = 2 ** 20;

Deno.test("TLS engine fuzz: every path ends in a TlsError or progress, bounded", async () => {
  const seed = seedFrom(0x7150);
  const count = countFrom(600);
  const start = performance.now();
  const outcome = await runWatched({
    seed,
    count,
    every: 50,
    stallMs: 30_000,
  });
  const ms = performance.now() - start;
  if (outcome.type === "hang") {
    assert.fail(
      `the engine hangs on case ${outcome.lastIndex}..${
        outcome.lastIndex + 49
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
  const { host, wasm } = s.heap;
  console.log(
    `tls fuzz: ${s.inputs} inputs (seed ${seed}) in ${ms.toFixed(0)} ms; ` +
      `targets ${JSON.stringify(s.targets)}; errors ${
        JSON.stringify(s.tlsErrors)
      }; ` +
      `handshakes ${s.handshakesCompleted} (resumed ${s.resumed}); sticky ${s.stickyChecked}; ` +
      `host seals/opens ${s.hostSeals}/${s.hostOpens}; wasm-only cases ${s.wasmCasesChecked}; ` +
      `crafted ${JSON.stringify(s.crafted)}, read back ${s.craftedReadBack}, ` +
      `key updates ${s.keyUpdatesFollowed}; acceptor hellos ${s.acceptorHellos} ` +
      `(sync ${s.chooserSync}, async ${s.chooserAsync}, handshakes ${s.acceptorHandshakes}); ` +
      `acceptTls ${
        JSON.stringify(s.acceptTls)
      }; engine failures ${s.engineFailures}; ` +
      `heap host ${host.heapBytesStart} → ${host.heapBytesEnd}, wasm ${wasm.heapBytesStart} → ${wasm.heapBytesEnd} bytes`,
  );
  assert.equal(s.inputs, count);
  assert.equal(s.engineFailures, 0, "the engine trapped (contained)");
  // Each path was really exercised.
  for (const target of ["server", "client", "established", "acceptor"]) {
    assert.ok((s.targets[target] ?? 0) > 0, `no ${target} case`);
  }
  assert.ok(s.stickyChecked > 0, "no sticky error was probed");
  assert.ok(s.resumed > 0, "no live handshake resumed");
  assert.ok(s.hostSeals > 0 && s.hostOpens > 0, "the host AEAD was not used");
  assert.ok(s.wasmCasesChecked > 0, "no case on the engine's own ciphers");
  assert.ok(s.craftedReadBack > 0, "no crafted record was read back");
  assert.ok(s.truncatedEof > 0, "no truncated record was checked");
  assert.ok(s.acceptorHellos > 0 && s.chooserSync > 0 && s.chooserAsync > 0);
  assert.ok(s.acceptorHandshakes > 0, "no handshake through the acceptor");
  if (count >= 500) {
    assert.ok(Object.keys(s.acceptTls).length > 0, "no acceptTls case");
    assert.ok(s.keyUpdatesFollowed > 0, "no crafted KeyUpdate was followed");
  }
  // Memory: bounded, and back near the warm-up level once sessions are freed.
  for (const [name, h] of [["host", host], ["wasm", wasm]] as const) {
    assert.ok(h.maxMemoryBytes <= 64 * MiB, `${name}: wasm memory over 64 MiB`);
    assert.ok(
      h.heapBytesEnd - h.heapBytesStart < 1 * MiB,
      `${name} engine heap grew by ${h.heapBytesEnd - h.heapBytesStart} bytes`,
    );
  }
});
