/**
 * Internal: the host's AEAD for the TLS engine's record protection, where
 * the runtime has a fast one (`node:crypto`: OpenSSL in Node, BoringSSL in
 * Bun, RustCrypto in Deno). WebAssembly has no AES instructions, so the
 * engine's own AES-GCM is ~10x slower than its ChaCha20-Poly1305; with the
 * host's, a server that picks AES-GCM is no cliff.
 *
 * The engine calls these synchronously (imports `env.mimic_host_*`, see
 * `wasm/src/host_aead.rs`); rustls keeps framing, nonces, sequence numbers
 * and key updates. Where `node:crypto` does not exist (browsers) the imports
 * refuse every key and the engine uses its own ciphers. The engine's
 * self-test (`mimic_host_aead_selftest`, known vectors through both paths)
 * decides which algorithms are enabled.
 *
 * @module
 */

/** Algorithm numbers of the imports (`Alg` in host_aead.rs). */
export const HOST_AEAD_ALGS: Readonly<Record<number, string>> = {
  1: "aes-128-gcm",
  2: "aes-256-gcm",
  3: "chacha20-poly1305",
};

/** Mask bit 0 (`PREFER_AES` in host_aead.rs): AES-GCM first by default. */
export const PREFER_AES = 1;

interface AeadCipher {
  setAAD(aad: Uint8Array, options: { plaintextLength: number }): unknown;
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
}
interface NodeCrypto {
  createCipheriv(
    alg: string,
    key: Uint8Array,
    iv: Uint8Array,
    options: { authTagLength: number },
  ): AeadCipher & { getAuthTag(): Uint8Array };
  createDecipheriv(
    alg: string,
    key: Uint8Array,
    iv: Uint8Array,
    options: { authTagLength: number },
  ): AeadCipher & { setAuthTag(tag: Uint8Array): unknown };
  getCiphers(): string[];
}

/** The host side of the engine's AEAD imports. */
export interface HostAead {
  /** Which runtime's crypto this is, e.g. "node:crypto (Deno 2.9.6)". */
  readonly name: string;
  /** Whether this host's AES-GCM beats the engine's ChaCha20 (suite order). */
  readonly preferAes: boolean;
  /** The algorithms it can do (bits `1 << alg`). */
  readonly mask: number;
  /** The `env` imports, over the engine's memory given later. */
  imports(memory: () => WebAssembly.Memory): Record<string, unknown>;
}

const NO_IMPORTS = {
  mimic_host_key: (): number => 0,
  mimic_host_key_drop: (): void => {},
  mimic_host_seal: (): number => -1,
  mimic_host_open: (): number => -1,
};

/** Imports that refuse every key: the engine's own ciphers only. */
export function noHostAeadImports(): Record<string, unknown> {
  return { ...NO_IMPORTS };
}

function runtimeName(): string {
  const g = globalThis as {
    Deno?: { version?: { deno?: string } };
    Bun?: { version?: string };
    process?: { versions?: { node?: string } };
  };
  if (g.Deno?.version?.deno) return `Deno ${g.Deno.version.deno}`;
  if (g.Bun?.version) return `Bun ${g.Bun.version}`;
  if (g.process?.versions?.node) return `Node ${g.process.versions.node}`;
  return "unknown runtime";
}

/**
 * Loads `node:crypto` if the runtime has it; null otherwise (browsers), or
 * when `disabled`.
 *
 * The suite order (measured with bench/engine_throughput.ts and
 * bench/tls_ratios.ts, see docs/performance.md): Node's and Bun's AES-GCM
 * (OpenSSL / BoringSSL with AES-NI) is faster than the engine's ChaCha20,
 * so AES-GCM goes first there; Deno's `node:crypto` AES-GCM is not, so
 * ChaCha20-Poly1305 stays first on Deno.
 */
export async function loadHostAead(
  disabled: boolean,
): Promise<HostAead | null> {
  if (disabled) return null;
  let nc: NodeCrypto;
  try {
    // A computed specifier: bundlers for browsers leave it alone, and there
    // the import fails and the engine keeps its own ciphers.
    const specifier = ["node", "crypto"].join(":");
    nc = await import(specifier) as NodeCrypto;
    if (typeof nc.createCipheriv !== "function") return null;
  } catch {
    return null;
  }
  let mask = 0;
  let have: string[] = [];
  try {
    have = nc.getCiphers();
  } catch {
    // Some runtimes lack getCiphers: try each algorithm below.
  }
  for (const [alg, name] of Object.entries(HOST_AEAD_ALGS)) {
    if (have.length === 0 || have.includes(name)) mask |= 1 << Number(alg);
  }
  const runtime = runtimeName();
  const preferAes = !runtime.startsWith("Deno");
  return {
    name: `node:crypto (${runtime})`,
    preferAes,
    mask,
    imports: (memory) => nodeImports(nc, memory),
  };
}

/** Testing only: counts of host AEAD calls, and a fault to inject. */
export const _hostAeadTesting: {
  seals: number;
  opens: number;
  /** When set, seal flips a bit of its output (a broken host). */
  corrupt: boolean;
} = { seals: 0, opens: 0, corrupt: false };

function nodeImports(
  nc: NodeCrypto,
  memory: () => WebAssembly.Memory,
): Record<string, unknown> {
  const keys = new Map<number, { name: string; key: Uint8Array }>();
  let next = 1;
  const view = (ptr: number, len: number): Uint8Array =>
    new Uint8Array(memory().buffer, ptr >>> 0, len >>> 0);
  return {
    mimic_host_key(alg: number, ptr: number, len: number): number {
      const name = HOST_AEAD_ALGS[alg];
      if (name === undefined) return 0;
      const handle = next++;
      keys.set(handle, { name, key: view(ptr, len).slice() });
      return handle;
    },
    mimic_host_key_drop(handle: number): void {
      keys.get(handle)?.key.fill(0);
      keys.delete(handle);
    },
    mimic_host_seal(
      handle: number,
      nonce: number,
      aad: number,
      aadLen: number,
      data: number,
      len: number,
      tag: number,
    ): number {
      const k = keys.get(handle);
      if (k === undefined) return -1;
      try {
        const c = nc.createCipheriv(k.name, k.key, view(nonce, 12), {
          authTagLength: 16,
        });
        c.setAAD(view(aad, aadLen), { plaintextLength: len });
        const out = c.update(view(data, len));
        const rest = c.final();
        const target = view(data, len);
        target.set(out);
        if (rest.length > 0) target.set(rest, out.length);
        view(tag, 16).set(c.getAuthTag());
        _hostAeadTesting.seals++;
        if (_hostAeadTesting.corrupt && len > 0) target[0] ^= 1;
        return 0;
      } catch {
        return -1;
      }
    },
    mimic_host_open(
      handle: number,
      nonce: number,
      aad: number,
      aadLen: number,
      data: number,
      len: number,
      tag: number,
    ): number {
      const k = keys.get(handle);
      if (k === undefined) return -1;
      let out: Uint8Array;
      let rest: Uint8Array;
      try {
        const d = nc.createDecipheriv(k.name, k.key, view(nonce, 12), {
          authTagLength: 16,
        });
        d.setAuthTag(view(tag, 16).slice());
        d.setAAD(view(aad, aadLen), { plaintextLength: len });
        out = d.update(view(data, len));
        try {
          rest = d.final();
        } catch {
          return 1; // wrong tag: nothing written
        }
      } catch {
        return -1;
      }
      const target = view(data, len);
      target.set(out);
      if (rest.length > 0) target.set(rest, out.length);
      _hostAeadTesting.opens++;
      return 0;
    },
  };
}
