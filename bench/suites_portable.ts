// Our TLS record protection per cipher suite and AEAD path, on whatever
// runtime runs this: Deno directly, or Node and Bun from a bundle:
//
//   deno run -A bench/suites_portable.ts [MiB]
//   deno bundle --platform deno -o /tmp/suites.js bench/suites_portable.ts
//   node /tmp/suites.js [MiB]; bun /tmp/suites.js [MiB]
//
// Both ends are ours, over an in-memory pipe (no kernel, one thread), so
// the figure is the cost of TLS itself: `MiB` (default 64) client→server,
// per suite (ChaCha20-Poly1305, AES-128-GCM, AES-256-GCM) and per path (the
// host AEAD, node:crypto, where the self-test passed; the engine's own
// ciphers), three rounds in rotating order, the median printed in MB/s.
// This is the measurement behind the default suite order per host.
import { acceptTls, startTls } from "../src/tls.ts";
import { pipe } from "../src/pipe.ts";
import { testPki } from "../src/testing.ts";
import { engineInfo } from "../src/_engine.ts";

const SUITES = [
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
];
const MiB = 1024 * 1024;

function args(): string[] {
  const g = globalThis as {
    Deno?: { args: string[] };
    process?: { argv: string[] };
  };
  return g.Deno?.args ?? g.process?.argv.slice(2) ?? [];
}

async function once(
  suite: string,
  hostAead: boolean,
  bytes: number,
): Promise<number> {
  const [a, b] = pipe({ highWaterMark: 1024 * 1024 });
  const options = { _hostAead: hostAead };
  const [client, server] = await Promise.all([
    startTls(
      a,
      {
        hostname: "localhost",
        caCerts: [testPki.ca],
        cipherSuites: [suite],
        ...options,
      } as Parameters<typeof startTls>[1],
    ),
    acceptTls(
      b,
      { ...testPki.server, ...options } as Parameters<
        typeof acceptTls
      >[1],
    ),
  ]);
  const chunk = new Uint8Array(64 * 1024).fill(0x6d);
  const t0 = performance.now();
  const sink = (async () => {
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < bytes) {
      const n = await server.read(buf);
      if (n === null) break;
      got += n;
    }
    return got;
  })();
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    await client.write(chunk);
  }
  const got = await sink;
  const ms = performance.now() - t0;
  client.close();
  server.close();
  if (got < bytes) throw new Error(`only ${got} of ${bytes} bytes arrived`);
  return bytes / 1e6 / (ms / 1000);
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1];

const bytes = Number(args()[0] ?? 64) * MiB;
const info = await engineInfo();
console.log(
  `suites_portable: ${bytes / MiB} MiB per run; host AEAD ${
    info.hostAead ?? "none"
  } (${info.hostAlgorithms.join(", ") || "-"}); default order ${
    info.suiteOrder.join(" > ")
  }`,
);
const ways = SUITES.flatMap((suite) =>
  [true, false].map((hostAead) => ({ suite, hostAead }))
);
const results = new Map<string, number[]>();
for (const w of ways) await once(w.suite, w.hostAead, 4 * MiB); // warm up
for (let round = 0; round < 3; round++) {
  for (let i = 0; i < ways.length; i++) {
    const w = ways[(i + round) % ways.length];
    const key = `${w.suite} ${w.hostAead ? "host" : "wasm"}`;
    const list = results.get(key) ?? [];
    list.push(await once(w.suite, w.hostAead, bytes));
    results.set(key, list);
  }
}
for (const [key, xs] of results) {
  console.log(
    `  ${key.padEnd(34)} ${median(xs).toFixed(0).padStart(5)} MB/s (${
      Math.min(...xs).toFixed(0)
    }-${Math.max(...xs).toFixed(0)})`,
  );
}
