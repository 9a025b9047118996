/**
 * IP address literals as bytes and back, without the `Deno` global: what the
 * SOCKS client puts on the wire and what `no_proxy` CIDR ranges compare. Not
 * an entry point.
 *
 * @module
 */

/**
 * The four bytes of a dotted-quad IPv4 address (`127.0.0.1`), or `undefined`
 * when `text` is not one (no leading zeros, each part 0-255).
 *
 * @param text The address.
 * @returns Its bytes, or `undefined`.
 */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/**
 * The sixteen bytes of an IPv6 address (`::1`, `2001:db8::8:800:200c:417a`,
 * `::ffff:192.0.2.1`), with or without brackets, or `undefined` when `text`
 * is not one. A zone (`fe80::1%eth0`) is not accepted.
 *
 * @param text The address.
 * @returns Its bytes, or `undefined`.
 */
export function parseIpv6(text: string): Uint8Array | undefined {
  let s = text;
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  if (!s.includes(":") || !/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  // An embedded IPv4 address may only be the very last piece.
  const groups = (half: string, last: boolean): number[] | undefined => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (last && i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (v4 === undefined) return undefined;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1], true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/**
 * The bytes of an IPv4 or IPv6 literal, or `undefined`.
 *
 * @param text The address (IPv6 with or without brackets).
 * @returns Four or sixteen bytes, or `undefined` for anything else.
 */
export function parseIp(text: string): Uint8Array | undefined {
  return parseIpv4(text) ?? parseIpv6(text);
}

/**
 * Formats four or sixteen bytes as an address: dotted quad, or RFC 5952's
 * canonical IPv6 text (lower case, the longest run of two or more zero groups
 * as `::`).
 *
 * @param bytes Four or sixteen bytes.
 * @returns The address.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${
    hex.slice(best + bestLength).join(":")
  }`;
}

/**
 * Whether `address` is in the range `network`/`bits` (both of one family).
 *
 * @param address Four or sixteen bytes.
 * @param network As many bytes.
 * @param bits The prefix length, 0 to 8 times the byte count.
 * @returns Whether the first `bits` bits are equal.
 */
export function inPrefix(
  address: Uint8Array,
  network: Uint8Array,
  bits: number,
): boolean {
  if (address.length !== network.length) return false;
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) {
    if (address[i] !== network[i]) return false;
  }
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (address[whole] & mask) === (network[whole] & mask);
}
