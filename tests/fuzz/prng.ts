/**
 * A small seeded pseudo-random generator for the fuzz tests and stress
 * scripts: the same seed gives the same sequence on every run and machine,
 * so a failing case is reproduced from its seed alone.
 *
 * The generator is sfc32 (Chris Doty-Humphrey's Small Fast Counting
 * generator, 128 bits of state), seeded through splitmix32.
 *
 * @module
 */

/** A seeded generator of numbers, integers, bytes and choices. */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;
  /** The seed it was made from. */
  readonly seed: number;

  /**
   * Makes a generator.
   *
   * @param seed Any 32-bit integer (other numbers are truncated).
   */
  constructor(seed: number) {
    this.seed = seed >>> 0;
    let s = this.seed;
    const split = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = split();
    this.#b = split();
    this.#c = split();
    this.#d = split();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /**
   * The next unsigned 32-bit integer.
   *
   * @returns An integer in 0..2^32-1.
   */
  u32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /**
   * A float in [0, 1).
   *
   * @returns The number.
   */
  next(): number {
    return this.u32() / 4294967296;
  }

  /**
   * An integer in [0, n).
   *
   * @param n The bound, at least 1.
   * @returns The integer.
   */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /**
   * An integer in [lo, hi].
   *
   * @param lo The lowest value.
   * @param hi The highest value.
   * @returns The integer.
   */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /**
   * True with probability p.
   *
   * @param p The probability.
   * @returns The coin.
   */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /**
   * One element of a non-empty array.
   *
   * @param xs The choices.
   * @returns One of them.
   */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }

  /**
   * `n` random bytes.
   *
   * @param n How many.
   * @returns Fresh bytes.
   */
  bytes(n: number): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const x = this.u32();
      out[i] = x;
      out[i + 1] = x >>> 8;
      out[i + 2] = x >>> 16;
      out[i + 3] = x >>> 24;
    }
    for (; i < n; i++) out[i] = this.u32();
    return out;
  }

  /**
   * A generator derived from this one (for a sub-case), advancing it once.
   *
   * @returns A new generator.
   */
  fork(): Prng {
    return new Prng(this.u32());
  }
}

/**
 * The seed to use: `--seed N` on the command line, the `FUZZ_SEED`
 * environment variable, or `fallback`.
 *
 * @param fallback The seed when none is given.
 * @returns The seed.
 */
export function seedFrom(fallback: number): number {
  const i = Deno.args.indexOf("--seed");
  if (i >= 0 && Deno.args[i + 1] !== undefined) {
    return Number(Deno.args[i + 1]) >>> 0;
  }
  let env: string | undefined;
  try {
    env = Deno.env.get("FUZZ_SEED");
  } catch {
    env = undefined;
  }
  return env !== undefined && env !== "" ? Number(env) >>> 0 : fallback;
}

/**
 * How many cases to run: the `FUZZ_COUNT` environment variable, or
 * `fallback`.
 *
 * @param fallback The count when none is given.
 * @returns The count.
 */
export function countFrom(fallback: number): number {
  let env: string | undefined;
  try {
    env = Deno.env.get("FUZZ_COUNT");
  } catch {
    env = undefined;
  }
  return env !== undefined && env !== "" ? Number(env) : fallback;
}
