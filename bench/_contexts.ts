// Contexts of a given size for the unfold benchmarks: a quarter plain
// values, a quarter fold functions chained on each other, a quarter fold
// functions with optional and default arguments, a quarter endpoints of a
// registered protocol.
import {
  type Context,
  dft,
  empty,
  type Flow,
  opt,
  register,
  req,
  value,
} from "../mod.ts";

const proto = register<number, Flow>(
  "bench-proto",
  () => Promise.reject(new Error("not connected in benchmarks")),
);

/** A context with `n` bindings. */
export function contextOf(n: number): Context {
  let ctx = empty;
  const quarter = Math.max(1, Math.floor(n / 4));
  const plain = Array.from(
    { length: quarter },
    (_, i) => value<number>(`p${i}`),
  );
  const chain = Array.from(
    { length: quarter },
    (_, i) => value<number>(`c${i}`),
  );
  let added = 0;
  for (let i = 0; i < quarter && added < n; i++, added++) {
    ctx = ctx.add(plain[i], i);
  }
  // A chain, added in reverse so the sort has work to do.
  for (let i = quarter - 1; i >= 0 && added < n; i--, added++) {
    ctx = i === 0
      ? ctx.fold(chain[0], [req(plain[0])], (x) => x + 1)
      : ctx.fold(chain[i], [req(chain[i - 1])], (x) => x + 1);
  }
  for (let i = 0; i < quarter && added < n; i++, added++) {
    ctx = ctx.fold(
      value<number>(`o${i}`),
      [opt(plain[i]), dft(chain[i], 0)],
      (a, b) => (a ?? 0) + b,
    );
  }
  for (let i = 0; added < n; i++, added++) ctx = ctx.add(proto.endpoint, i);
  return ctx;
}
