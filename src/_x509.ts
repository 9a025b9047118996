/**
 * A small DER / X.509 reader for the peer's leaf certificate
 * ({@linkcode PeerCertificate}) and a compact synchronous SHA-256 for its
 * fingerprint. Not an entry point.
 *
 * Synchronous SHA-256 rather than WebCrypto: the handshake information is
 * built synchronously when the handshake completes, `crypto.subtle` is
 * absent from insecure browser contexts, and hashing one certificate (~1
 * KiB) takes microseconds.
 *
 * @module
 */

import { formatIp } from "./_ip.ts";

/** The peer's leaf certificate, parsed. */
export interface PeerCertificate {
  /**
   * The subject, attributes in certificate order, OpenSSL's short names,
   * RFC 4514 escaping, e.g. "CN=localhost, O=mimic test" (as `openssl x509
   * -subject -nameopt esc_2253,utf8,sep_comma_plus_space,sname`). A
   * multi-valued RDN joins its values with " + ".
   */
  subject: string;
  /** The issuer, as `subject`. */
  issuer: string;
  /**
   * The subject alternative names, in certificate order: "DNS:localhost",
   * "IP:127.0.0.1", "IP:::1" (IPv6 compressed, RFC 5952),
   * "URI:https://...", "email:a@b.example", "DirName:CN=x, O=y",
   * "RID:1.2.3.4", "othername:1.3.6.1.4.1.311.20.2.3" (the type only).
   */
  subjectAltNames: string[];
  /** The start of the validity period (notBefore). */
  validFrom: Date;
  /** The end of the validity period (notAfter). */
  validTo: Date;
  /** The serial number, upper-case hex of its DER bytes, e.g. "03E8" (as OpenSSL). */
  serialNumber: string;
  /** SHA-256 of the DER, upper-case hex bytes joined by colons (as OpenSSL and node:tls). */
  fingerprint256: string;
}

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4)
// ---------------------------------------------------------------------------

const K = new Uint32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);

/**
 * SHA-256 of `data`.
 *
 * @param data The bytes.
 * @returns The 32-byte digest.
 */
export function sha256(data: Uint8Array): Uint8Array {
  const h = new Uint32Array([
    0x6a09e667,
    0xbb67ae85,
    0x3c6ef372,
    0xa54ff53a,
    0x510e527f,
    0x9b05688c,
    0x1f83d9ab,
    0x5be0cd19,
  ]);
  const blocks = Math.ceil((data.length + 9) / 64);
  const msg = new Uint8Array(blocks * 64);
  msg.set(data);
  msg[data.length] = 0x80;
  const view = new DataView(msg.buffer);
  const bits = data.length * 8;
  view.setUint32(msg.length - 8, Math.floor(bits / 0x100000000));
  view.setUint32(msg.length - 4, bits >>> 0);
  const w = new Uint32Array(64);
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(b * 64 + i * 4);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15], y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^
        (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^
        (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, bb, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^
        ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) >>> 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^
        ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(i * 4, h[i]);
  return out;
}

// ---------------------------------------------------------------------------
// DER
// ---------------------------------------------------------------------------

/** One DER element: its tag byte, and the bytes of its contents and the whole. */
interface Tlv {
  tag: number;
  /** The contents. */
  value: Uint8Array;
  /** The whole element (tag, length, contents). */
  raw: Uint8Array;
}

function malformed(what: string): Error {
  return new Error(`malformed certificate: ${what}`);
}

/** Reads the DER elements of `bytes`, one after the other. */
function elements(bytes: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  let off = 0;
  while (off < bytes.length) {
    const start = off;
    const tag = bytes[off++];
    if ((tag & 0x1f) === 0x1f) throw malformed("high tag numbers");
    if (off >= bytes.length) throw malformed("truncated length");
    let len = bytes[off++];
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4 || off + n > bytes.length) {
        throw malformed("bad length");
      }
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + bytes[off++];
    }
    if (off + len > bytes.length) throw malformed("truncated element");
    out.push({
      tag,
      value: bytes.subarray(off, off + len),
      raw: bytes.subarray(start, off + len),
    });
    off += len;
  }
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined || t.tag !== tag) throw malformed(`expected ${what}`);
  return t;
}

function oid(bytes: Uint8Array): string {
  if (bytes.length === 0) throw malformed("empty OID");
  const parts: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      if (parts.length === 0) {
        const first = v < 80 ? Math.floor(v / 40) : 2;
        parts.push(first, v - first * 40);
      } else {
        parts.push(v);
      }
      v = 0;
    }
  }
  return parts.join(".");
}

const hexByte = (b: number): string =>
  b.toString(16).toUpperCase().padStart(2, "0");

function hex(bytes: Uint8Array, sep = ""): string {
  return Array.from(bytes, hexByte).join(sep);
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8", { fatal: false });

/** A directory string's text, or null for a type that is not text. */
function text(t: Tlv): string | null {
  switch (t.tag) {
    case 0x0c: // UTF8String
      return utf8.decode(t.value);
    case 0x12: // NumericString
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x1a: // VisibleString
      return latin1.decode(t.value);
    case 0x14: // TeletexString (as OpenSSL: Latin-1)
      return latin1.decode(t.value);
    case 0x1e: { // BMPString, UTF-16BE
      let s = "";
      for (let i = 0; i + 1 < t.value.length; i += 2) {
        s += String.fromCharCode((t.value[i] << 8) | t.value[i + 1]);
      }
      return s;
    }
    case 0x1c: { // UniversalString, UTF-32BE
      let s = "";
      for (let i = 0; i + 3 < t.value.length; i += 4) {
        const cp = ((t.value[i] << 24) | (t.value[i + 1] << 16) |
          (t.value[i + 2] << 8) | t.value[i + 3]) >>> 0;
        s += cp <= 0x10ffff ? String.fromCodePoint(cp) : "\ufffd";
      }
      return s;
    }
    default:
      return null;
  }
}

/** OpenSSL's short names of the attribute types. */
const NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.4": "SN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.9": "street",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.12": "title",
  "2.5.4.15": "businessCategory",
  "2.5.4.17": "postalCode",
  "2.5.4.42": "GN",
  "2.5.4.43": "initials",
  "2.5.4.44": "generationQualifier",
  "2.5.4.46": "dnQualifier",
  "2.5.4.65": "pseudonym",
  "2.5.4.97": "organizationIdentifier",
  "0.9.2342.19200300.100.1.1": "UID",
  "0.9.2342.19200300.100.1.25": "DC",
  "1.2.840.113549.1.9.1": "emailAddress",
  "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
  "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
  "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
};

/** RFC 4514 escaping of an attribute value. */
function escape(v: string): string {
  let s = v.replace(/[\\,+"<>;]/g, (c) => `\\${c}`).replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f]/g,
    (c) => `\\${hexByte(c.charCodeAt(0))}`,
  );
  if (s.startsWith("#") || s.startsWith(" ")) s = `\\${s}`;
  if (s.endsWith(" ") && s.length > 1) s = `${s.slice(0, -1)}\\ `;
  return s;
}

/** A Name as "CN=localhost, O=mimic test" (certificate order). */
function name(t: Tlv): string {
  const rdns: string[] = [];
  for (const rdn of elements(expect(t, 0x30, "a Name").value)) {
    const values: string[] = [];
    for (const atv of elements(expect(rdn, 0x31, "an RDN").value)) {
      const [type, value] = elements(expect(atv, 0x30, "an attribute").value);
      const id = oid(expect(type, 0x06, "an attribute type").value);
      if (value === undefined) throw malformed("an attribute without value");
      const str = text(value);
      values.push(
        `${NAMES[id] ?? id}=${
          str === null ? `#${hex(value.raw)}` : escape(str)
        }`,
      );
    }
    rdns.push(values.join(" + "));
  }
  return rdns.join(", ");
}

function time(t: Tlv): Date {
  const s = latin1.decode(t.value);
  let m: RegExpMatchArray | null;
  if (t.tag === 0x17) { // UTCTime
    m = s.match(/^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?Z$/);
    if (m) {
      const yy = Number(m[1]);
      m[1] = String(yy >= 50 ? 1900 + yy : 2000 + yy);
    }
  } else if (t.tag === 0x18) { // GeneralizedTime
    m = s.match(/^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?(?:\.\d+)?Z$/);
  } else {
    throw malformed("expected a time");
  }
  if (!m) throw malformed(`bad time ${JSON.stringify(s)}`);
  return new Date(Date.UTC(
    Number(m[1]),
    Number(m[2]) - 1,
    Number(m[3]),
    Number(m[4]),
    Number(m[5]),
    Number(m[6] ?? 0),
  ));
}

/** An IP address's text: dotted IPv4, or IPv6 compressed (RFC 5952). */
function ip(b: Uint8Array): string {
  return b.length === 4 || b.length === 16 ? formatIp(b) : hex(b, ":");
}

function altNames(extnValue: Uint8Array): string[] {
  const [seq] = elements(extnValue);
  const out: string[] = [];
  for (const g of elements(expect(seq, 0x30, "GeneralNames").value)) {
    switch (g.tag) {
      case 0x81:
        out.push(`email:${latin1.decode(g.value)}`);
        break;
      case 0x82:
        out.push(`DNS:${latin1.decode(g.value)}`);
        break;
      case 0x86:
        out.push(`URI:${latin1.decode(g.value)}`);
        break;
      case 0x87:
        out.push(`IP:${ip(g.value)}`);
        break;
      case 0x88:
        out.push(`RID:${oid(g.value)}`);
        break;
      case 0xa4: {
        const [n] = elements(g.value);
        out.push(`DirName:${name(n)}`);
        break;
      }
      case 0xa0: {
        const [type] = elements(g.value);
        out.push(`othername:${oid(expect(type, 0x06, "an OID").value)}`);
        break;
      }
      default:
        break; // x400Address, ediPartyName: not shown
    }
  }
  return out;
}

/**
 * Parses a DER X.509 certificate.
 *
 * @param der The certificate.
 * @returns Its subject, issuer, SANs, validity, serial and fingerprint.
 * @throws {Error} For a certificate that is not DER X.509.
 */
export function parseCertificate(der: Uint8Array): PeerCertificate {
  const [cert] = elements(der);
  const [tbs] = elements(expect(cert, 0x30, "a Certificate").value);
  const fields = elements(expect(tbs, 0x30, "a TBSCertificate").value);
  let i = 0;
  if (fields[i]?.tag === 0xa0) i++; // version
  const serial = expect(fields[i++], 0x02, "a serial number").value;
  expect(fields[i++], 0x30, "a signature algorithm");
  const issuer = name(fields[i++]);
  const [notBefore, notAfter] = elements(
    expect(fields[i++], 0x30, "a validity").value,
  );
  if (notBefore === undefined || notAfter === undefined) {
    throw malformed("a validity without both times");
  }
  const subject = name(fields[i++]);
  expect(fields[i++], 0x30, "a public key");
  let subjectAltNames: string[] = [];
  for (; i < fields.length; i++) {
    if (fields[i].tag !== 0xa3) continue;
    const [exts] = elements(fields[i].value);
    for (const ext of elements(expect(exts, 0x30, "extensions").value)) {
      const parts = elements(expect(ext, 0x30, "an extension").value);
      const id = oid(expect(parts[0], 0x06, "an extension id").value);
      const value = parts[parts.length - 1];
      if (id === "2.5.29.17") {
        subjectAltNames = altNames(
          expect(value, 0x04, "an OCTET STRING").value,
        );
      }
    }
  }
  // The serial's sign byte (a leading 0x00 before a high bit) is not shown,
  // as OpenSSL.
  const s = serial.length > 1 && serial[0] === 0 && serial[1] & 0x80
    ? serial.subarray(1)
    : serial;
  return {
    subject,
    issuer,
    subjectAltNames,
    validFrom: time(notBefore),
    validTo: time(notAfter),
    serialNumber: hex(s),
    fingerprint256: hex(sha256(der), ":"),
  };
}

/**
 * The parsed leaf, or null when there is none or it cannot be parsed (the
 * DER stays in `peerCertificates`).
 *
 * @param der The leaf certificate's DER, if any.
 * @returns The parsed certificate, or null.
 */
export function peerCertificate(
  der: Uint8Array | undefined,
): PeerCertificate | null {
  if (der === undefined) return null;
  try {
    return parseCertificate(der);
  } catch {
    return null;
  }
}
