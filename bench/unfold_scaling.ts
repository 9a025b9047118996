// deno run bench/unfold_scaling.ts: prints the per-binding cost of unfold()
// for 10 to 10,000 bindings, and the growth factor per 10x (linear: 10).
import { unfold } from "../mod.ts";
import { contextOf } from "./_contexts.ts";

async function perBinding(n: number): Promise<number> {
  const ctx = contextOf(n);
  const rounds = Math.max(5, Math.floor(200_000 / n));
  for (let i = 0; i < Math.min(rounds, 50); i++) await unfold(ctx); // warm up
  const samples: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = performance.now();
    for (let i = 0; i < rounds; i++) await unfold(ctx);
    samples.push((performance.now() - t0) / rounds);
  }
  samples.sort((a, b) => a - b);
  return samples[3] / n; // median, ms per binding
}

let previous: number | undefined;
console.log("bindings  µs/binding  total ms  growth per 10x");
for (const n of [10, 100, 1_000, 10_000]) {
  const cost = await perBinding(n);
  const growth = previous === undefined
    ? ""
    : ((cost * n) / (previous * n / 10)).toFixed(1);
  console.log(
    `${String(n).padStart(8)}  ${(cost * 1000).toFixed(3).padStart(10)}  ${
      (cost * n).toFixed(3).padStart(8)
    }  ${growth.padStart(14)}`,
  );
  previous = cost;
}
