// The engine loads with no permission at all: `deno run` with none, a TLS
// handshake over an in-memory pipe (so no --allow-net), certificates inlined
// (so no --allow-read). The same holds from JSR: the engine is a module in
// the graph, not a file fetched at run time.
import assert from "node:assert/strict";

const fixtures = new URL("./fixtures/", import.meta.url);

Deno.test("the TLS engine loads and handshakes with no permission", async () => {
  const read = (name: string) => Deno.readTextFile(new URL(name, fixtures));
  const [ca, cert, key] = await Promise.all([
    read("ca.pem"),
    read("localhost.pem"),
    read("localhost.key"),
  ]);
  const src = new URL("../src/", import.meta.url).href;
  const script = `
    import { pipe } from "${src}pipe.ts";
    import { acceptTls, startTls } from "${src}tls.ts";
    const [a, b] = pipe();
    const [client, server] = await Promise.all([
      startTls(a, { hostname: "localhost", caCerts: [${JSON.stringify(ca)}] }),
      acceptTls(b, { cert: ${JSON.stringify(cert)}, key: ${
    JSON.stringify(key)
  } }),
    ]);
    await client.write(new TextEncoder().encode("hello"));
    const buf = new Uint8Array(5);
    const n = await server.read(buf);
    console.log(new TextDecoder().decode(buf.subarray(0, n ?? 0)), (await client.handshake()).protocol);
    client.close();
    server.close();
  `;
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/no_permissions.ts`;
    await Deno.writeTextFile(file, script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--no-config", file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "hello TLSv1.3");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
