// deno bench bench/unfold_bench.ts: unfold() over contexts of growing size.
import { unfold } from "../mod.ts";
import { contextOf } from "./_contexts.ts";

for (const n of [10, 100, 1_000, 10_000]) {
  const ctx = contextOf(n);
  Deno.bench({
    name: `unfold() of ${n} bindings`,
    group: "unfold",
    baseline: n === 10,
    async fn() {
      await unfold(ctx);
    },
  });
}
