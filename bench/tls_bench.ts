// Benchmarks of our TLS (startTls: rustls in WASM, over Deno.connect)
// against Deno's native TLS (Deno.connectTls, the baseline) and node:tls over
// a node:stream Duplex wrapping a Deno.Conn, on loopback against one
// Deno.listenTls server (the fixture ECDSA P-256 certificate, TLS 1.3) in
// this process. For side-by-side ratios with the server in another process,
// and memory per connection, run bench/tls_ratios.ts.
//
//   deno bench --allow-net --allow-read bench/tls_bench.ts
import {
  connectClient,
  download,
  listenBench,
  upload,
  type Way,
  WAYS,
} from "./_tls.ts";

const BULK = 8 * 1024 * 1024;

const server = listenBench();
globalThis.addEventListener("unload", () => {
  void server.close();
});

const NAMES: Partial<Record<Way, string>> = {
  ours: "startTls over Deno.connect",
  native: "Deno.connectTls",
  node: "node:tls over a Duplex",
};

for (const way of WAYS) {
  Deno.bench({
    name: `handshake: ${NAMES[way]}`,
    group: "handshake (TCP connect + TLS 1.3 + close)",
    baseline: way === "native",
    async fn() {
      (await connectClient(way, server.port)).close();
    },
  });
}

for (const way of WAYS) {
  Deno.bench({
    name: `client→server 8 MiB: ${NAMES[way]}`,
    group: "bulk client→server, 8 MiB in 64 KiB writes",
    baseline: way === "native",
    async fn(b) {
      const client = await connectClient(way, server.port);
      b.start();
      await upload(client, BULK);
      b.end();
      client.close();
    },
  });
}

for (const way of WAYS) {
  Deno.bench({
    name: `server→client 8 MiB: ${NAMES[way]}`,
    group: "bulk server→client, 8 MiB, from the first byte",
    baseline: way === "native",
    async fn(b) {
      const client = await connectClient(way, server.port);
      // Timed from the first byte received: see download().
      await download(client, BULK, () => b.start());
      b.end();
      client.close();
    },
  });
}
