/**
 * TLS 1.3 record protection in the test harness (RFC 8446 sections 5.2,
 * 5.3, 7.1-7.3), over `node:crypto`: from a session's key log, the fuzzer
 * seals records *as the peer would*, with the peer's application traffic
 * secret and the sequence number the victim expects, so crafted inner
 * plaintext (KeyUpdate, alerts, garbage handshake messages) reaches the
 * engine's post-handshake parsing instead of failing the AEAD check.
 *
 * @module
 */

import { createCipheriv, createDecipheriv, createHmac } from "node:crypto";

/** The record protection of one direction of a TLS 1.3 connection. */
export class Tls13Keys {
  /** The traffic secret in use. */
  secret: Uint8Array;
  /** The next record's sequence number. */
  seq = 0;
  readonly #suite: string;
  #key: Uint8Array;
  #iv: Uint8Array;

  /**
   * @param suite The TLS 1.3 suite's IANA name.
   * @param secret The traffic secret (from the key log).
   */
  constructor(suite: string, secret: Uint8Array) {
    this.#suite = suite;
    this.secret = secret;
    [this.#key, this.#iv] = this.#derive();
  }

  get #hash(): string {
    return this.#suite.endsWith("SHA384") ? "sha384" : "sha256";
  }

  get #cipher(): string {
    if (this.#suite === "TLS_AES_128_GCM_SHA256") return "aes-128-gcm";
    if (this.#suite === "TLS_AES_256_GCM_SHA384") return "aes-256-gcm";
    return "chacha20-poly1305";
  }

  #derive(): [Uint8Array, Uint8Array] {
    const keyLen = this.#cipher === "aes-128-gcm" ? 16 : 32;
    return [
      expandLabel(this.#hash, this.secret, "key", keyLen),
      expandLabel(this.#hash, this.secret, "iv", 12),
    ];
  }

  /** Moves to the next traffic secret (after a KeyUpdate, RFC 8446 7.2). */
  update(): void {
    const len = this.#hash === "sha384" ? 48 : 32;
    this.secret = expandLabel(this.#hash, this.secret, "traffic upd", len);
    [this.#key, this.#iv] = this.#derive();
    this.seq = 0;
  }

  #nonce(seq: number): Uint8Array {
    const nonce = this.#iv.slice();
    const view = new DataView(nonce.buffer);
    view.setUint32(8, view.getUint32(8) ^ (seq >>> 0));
    view.setUint32(4, view.getUint32(4) ^ Math.floor(seq / 2 ** 32));
    return nonce;
  }

  /**
   * Seals one record: `content` with its inner content type and `padding`
   * zero bytes (or `inner` verbatim when given), at the next sequence number.
   */
  seal(
    type: number,
    content: Uint8Array,
    padding = 0,
    inner?: Uint8Array,
  ): Uint8Array {
    const plain = inner ?? new Uint8Array(content.length + 1 + padding);
    if (inner === undefined) {
      plain.set(content);
      plain[content.length] = type;
    }
    const len = plain.length + 16;
    const head = new Uint8Array([23, 3, 3, (len >> 8) & 255, len & 255]);
    const c = createCipheriv(this.#cipher, this.#key, this.#nonce(this.seq), {
      authTagLength: 16,
    } as never);
    // deno-lint-ignore no-explicit-any
    (c as any).setAAD(head, { plaintextLength: plain.length });
    const body = new Uint8Array(len);
    const out = c.update(plain);
    body.set(out);
    const rest = c.final();
    body.set(rest, out.length);
    // deno-lint-ignore no-explicit-any
    body.set((c as any).getAuthTag(), plain.length);
    this.seq++;
    const rec = new Uint8Array(5 + len);
    rec.set(head);
    rec.set(body, 5);
    return rec;
  }

  /**
   * Opens a record sealed at the next sequence number; null when it does
   * not authenticate (another key, or not application data). Advances the
   * sequence number on success.
   */
  open(record: Uint8Array): Uint8Array | null {
    if (record.length < 5 + 17 || record[0] !== 23) return null;
    const head = record.subarray(0, 5);
    const body = record.subarray(5);
    try {
      const d = createDecipheriv(
        this.#cipher,
        this.#key,
        this.#nonce(this.seq),
        { authTagLength: 16 } as never,
      );
      // deno-lint-ignore no-explicit-any
      (d as any).setAuthTag(body.subarray(body.length - 16));
      // deno-lint-ignore no-explicit-any
      (d as any).setAAD(head, { plaintextLength: body.length - 16 });
      const out = d.update(body.subarray(0, body.length - 16));
      d.final();
      this.seq++;
      return new Uint8Array(out);
    } catch {
      return null;
    }
  }
}

/** HKDF-Expand-Label with an empty context, for lengths up to one hash. */
function expandLabel(
  hash: string,
  secret: Uint8Array,
  label: string,
  length: number,
): Uint8Array {
  const full = new TextEncoder().encode("tls13 " + label);
  const info = new Uint8Array(2 + 1 + full.length + 1 + 1);
  info[0] = length >> 8;
  info[1] = length & 255;
  info[2] = full.length;
  info.set(full, 3);
  info[3 + full.length] = 0; // empty context
  info[4 + full.length] = 1; // HKDF-Expand's first block counter
  const t = createHmac(hash, secret).update(info).digest();
  return new Uint8Array(t.subarray(0, length));
}

/**
 * The traffic secrets of a key log (NSS format): label → secret.
 *
 * @param lines The key log lines.
 * @returns The secrets by label (the last connection's, if several).
 */
export function secretsOf(lines: readonly string[]): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const line of lines) {
    const [label, , hex] = line.trim().split(" ");
    if (hex === undefined) continue;
    const bytes = new Uint8Array(hex.length / 2);
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    }
    out.set(label, bytes);
  }
  return out;
}
