/**
 * Byte-string and text mutators for the fuzz tests: each takes a seeded
 * {@linkcode Prng}, so a mutation is reproduced from its seed.
 *
 * @module
 */

import { concat } from "../_helpers.ts";
import type { Prng } from "./prng.ts";

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x16, 0x17, 0x15, 0x14];

/** The names of the byte mutations {@linkcode mutateBytes} applies. */
export const BYTE_MUTATIONS = [
  "bitflip",
  "byte",
  "interesting",
  "truncate",
  "drop-head",
  "delete",
  "insert",
  "duplicate",
  "splice",
  "length",
  "swap",
] as const;

/** One of {@linkcode BYTE_MUTATIONS}. */
export type ByteMutation = typeof BYTE_MUTATIONS[number];

/**
 * Applies one mutation to a copy of `input`.
 *
 * @param rng The generator.
 * @param input The bytes to mutate (not changed).
 * @param donors Other inputs to splice from.
 * @param kind The mutation; random when not given.
 * @returns The mutated bytes.
 */
export function mutateBytes(
  rng: Prng,
  input: Uint8Array,
  donors: readonly Uint8Array[] = [],
  kind: ByteMutation = rng.pick(BYTE_MUTATIONS),
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(input);
  const n = out.length;
  if (n === 0) return rng.bytes(rng.range(1, 16));
  switch (kind) {
    case "bitflip": {
      const flips = rng.chance(0.7) ? 1 : rng.range(2, 8);
      for (let i = 0; i < flips; i++) out[rng.int(n)] ^= 1 << rng.int(8);
      return out;
    }
    case "byte":
      out[rng.int(n)] = rng.u32();
      return out;
    case "interesting":
      out[rng.int(n)] = rng.pick(INTERESTING);
      return out;
    case "truncate":
      return out.slice(0, rng.int(n));
    case "drop-head":
      return out.slice(rng.range(1, n));
    case "delete": {
      const at = rng.int(n);
      const len = rng.range(1, Math.min(64, n - at));
      return concat([out.subarray(0, at), out.subarray(at + len)]);
    }
    case "insert": {
      const at = rng.int(n + 1);
      return concat([
        out.subarray(0, at),
        rng.bytes(rng.range(1, 32)),
        out.subarray(at),
      ]);
    }
    case "duplicate": {
      const at = rng.int(n);
      const len = rng.range(1, Math.min(256, n - at));
      const piece = out.slice(at, at + len);
      const to = rng.int(n + 1);
      return concat([out.subarray(0, to), piece, out.subarray(to)]);
    }
    case "splice": {
      const donor = donors.length > 0 ? rng.pick(donors) : out;
      if (donor.length === 0) return out;
      const at = rng.int(n + 1);
      const from = rng.int(donor.length);
      const len = rng.range(1, donor.length - from);
      return concat([
        out.subarray(0, at),
        donor.subarray(from, from + len),
        out.subarray(rng.chance(0.5) ? at : Math.min(n, at + len)),
      ]);
    }
    case "length": {
      // TLS record or handshake length fields: 16-bit big endian words.
      if (n < 2) return out;
      const at = rng.int(n - 1);
      const v = rng.pick([0, 1, 0xff, 0x100, 0x3fff, 0x4000, 0x4001, 0xffff]);
      out[at] = v >>> 8;
      out[at + 1] = v & 0xff;
      return out;
    }
    case "swap": {
      const i = rng.int(n);
      const j = rng.int(n);
      [out[i], out[j]] = [out[j], out[i]];
      return out;
    }
  }
}

/**
 * Applies 1 to `max` random mutations in a row.
 *
 * @param rng The generator.
 * @param input The bytes to mutate (not changed).
 * @param donors Other inputs to splice from.
 * @param max The most mutations.
 * @returns The mutated bytes.
 */
export function mutateBytesMany(
  rng: Prng,
  input: Uint8Array,
  donors: readonly Uint8Array[] = [],
  max = 3,
): Uint8Array<ArrayBuffer> {
  let out: Uint8Array<ArrayBuffer> = new Uint8Array(input);
  const k = rng.range(1, max);
  for (let i = 0; i < k; i++) out = mutateBytes(rng, out, donors);
  return out;
}

const TEXT_ALPHABET =
  "abcXYZ019:/@[]?#%.-_+~!$&'()*,;= \t\r\n\0\\\u00e9\u4e2d\ud83d\ude00\u0130\uff0e\u3002";

/**
 * A random string of up to `max` characters, biased towards URL syntax.
 *
 * @param rng The generator.
 * @param max The most characters.
 * @returns The string.
 */
export function randomText(rng: Prng, max = 40): string {
  const n = rng.int(max + 1);
  let s = "";
  for (let i = 0; i < n; i++) {
    if (rng.chance(0.85)) s += rng.pick([...TEXT_ALPHABET]);
    else s += String.fromCharCode(rng.int(0x10000));
  }
  return s;
}

/**
 * Applies one text mutation: change, insert or delete characters, splice
 * with a donor, duplicate, or percent-encode.
 *
 * @param rng The generator.
 * @param input The string to mutate.
 * @param donors Other strings to splice from.
 * @returns The mutated string.
 */
export function mutateText(
  rng: Prng,
  input: string,
  donors: readonly string[] = [],
): string {
  const chars = [...input];
  const n = chars.length;
  const at = rng.int(n + 1);
  switch (rng.int(8)) {
    case 0:
      if (n > 0) chars[rng.int(n)] = rng.pick([...TEXT_ALPHABET]);
      return chars.join("");
    case 1:
      chars.splice(at, 0, randomText(rng, 4));
      return chars.join("");
    case 2:
      chars.splice(at, rng.range(1, 6));
      return chars.join("");
    case 3: {
      const d = [...(donors.length > 0 ? rng.pick(donors) : input)];
      const from = rng.int(d.length + 1);
      const piece = d.slice(from, from + rng.range(1, 12)).join("");
      chars.splice(at, rng.chance(0.5) ? 0 : rng.range(0, 6), piece);
      return chars.join("");
    }
    case 4: {
      const piece = chars.slice(at, at + rng.range(1, 8));
      chars.splice(at, 0, ...piece);
      return chars.join("");
    }
    case 5: {
      if (n === 0) return input;
      const i = rng.int(n);
      const code = chars[i].codePointAt(0)!;
      if (code < 0x80) {
        chars[i] = "%" + code.toString(16).padStart(2, "0").toUpperCase();
      } else {
        try {
          chars[i] = encodeURIComponent(chars[i]);
        } catch {
          chars[i] = "%ED%A0%80"; // a lone surrogate, as WTF-8
        }
      }
      return chars.join("");
    }
    case 6:
      // A number, maybe out of range, after the last ':'.
      return input.replace(
        /:(\d*)/,
        ":" +
          rng.pick([
            "",
            "0",
            "1",
            "65535",
            "65536",
            "99999999999999999999",
            "-1",
            "1e3",
            "0x50",
            String(rng.int(70000)),
          ]),
      );
    default:
      return rng.chance(0.5) ? input.toUpperCase() : input.slice(0, at);
  }
}
