// Bulk throughput of the TLS engine (rustls + ring in wasm).
//
//   deno run -A bench/engine_throughput.ts [rounds] [MiB]
//
// (a) mem:   engine to engine in memory (client session -> server session,
//            one thread: encrypt + decrypt), MB/s of plaintext.
// (b) tcp:   our client (Deno.connect + startTls) against Deno.listenTls in a
//            separate process, vs Deno.connectTls to the same server, both
//            directions ("down": the server sends, "up": the client sends).
// Every round runs every way once, interleaved; medians are reported.
// MIMIC_ROOT=/path/to/tree measures another checkout's engine and pump.

import process from "node:process";
import { median } from "./_stats.ts";

const ROUNDS = Number(Deno.args[0] ?? 5);
const MIB = Number(Deno.args[1] ?? 128);
const BULK = MIB * 1024 * 1024;
const CHUNK = 1024 * 1024;
const READ_BUF = 256 * 1024;
const root = Deno.env.get("MIMIC_ROOT") ??
  new URL("..", import.meta.url).pathname;
const fixture = (n: string) =>
  Deno.readTextFileSync(`${root}/tests/fixtures/${n}`);

async function server(): Promise<void> {
  // Two TLS listeners: down (send BULK then close_notify), up (drain, say ok).
  const opts = {
    hostname: "127.0.0.1",
    port: 0,
    cert: fixture("localhost.pem"),
    key: fixture("localhost.key"),
  };
  const bulk = Number(Deno.args[1]);
  const down = Deno.listenTls(opts);
  const up = Deno.listenTls(opts);
  console.log(JSON.stringify({ down: down.addr.port, up: up.addr.port }));
  const data = new Uint8Array(CHUNK).fill(7);
  (async () => {
    for await (const c of down) {
      (async () => {
        try {
          let left = bulk;
          while (left > 0) {
            const n = Math.min(left, CHUNK);
            left -= await c.write(data.subarray(0, n));
          }
          await c.closeWrite();
          const b = new Uint8Array(16);
          while (await c.read(b) !== null) { /* until the client closes */ }
        } catch {
          /* client went away */
        } finally {
          try {
            c.close();
          } catch { /* closed */ }
        }
      })();
    }
  })();
  for await (const c of up) {
    (async () => {
      try {
        const b = new Uint8Array(READ_BUF);
        let got = 0;
        for (;;) {
          const n = await c.read(b);
          if (n === null) break;
          got += n;
          if (got >= bulk) break;
        }
        await c.write(new TextEncoder().encode("ok"));
        await c.closeWrite();
      } catch {
        /* client went away */
      } finally {
        try {
          c.close();
        } catch { /* closed */ }
      }
    })();
  }
}

async function client(): Promise<void> {
  const { clientSession, serverSession } = await import(
    `file://${root}/src/_engine.ts`
  );
  const { startTls } = await import(`file://${root}/src/tls.ts`);
  const ca = fixture("ca.pem");
  const cert = fixture("localhost.pem");
  const key = fixture("localhost.key");

  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "server",
      String(BULK),
    ],
    env: { MIMIC_ROOT: root },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value } = await reader.read();
    line += value ?? "";
  }
  const ports = JSON.parse(line.split("\n")[0]) as { down: number; up: number };

  // CPU=1: MB per second of this process's CPU time (user + system), which
  // other jobs on the machine disturb less than wall time.
  const useCpu = Deno.env.get("CPU") === "1";
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const now = () => useCpu ? cpuMs() : performance.now();
  const mbps = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000);

  // (a) engine to engine in memory.
  async function mem(): Promise<{ mbps: number; suite: string }> {
    const c = await clientSession({ hostname: "localhost", caCerts: [ca] });
    const s = await serverSession({ cert, key });
    // Handshake.
    for (let i = 0; i < 10 && (c.isHandshaking || s.isHandshaking); i++) {
      let o = c.takeOutgoing();
      if (o) s.feed(o);
      o = s.takeOutgoing();
      if (o) c.feed(o);
    }
    const suite = c.handshakeInfo().cipherSuite;
    const data = new Uint8Array(256 * 1024).fill(9);
    const out = new Uint8Array(256 * 1024);
    let sent = 0, recv = 0;
    const t0 = now();
    while (sent < BULK) {
      let off = 0;
      while (off < data.length) {
        off += c.write(off === 0 ? data : data.subarray(off));
        const tls = c.takeOutgoing();
        if (tls === null) continue;
        let fed = 0;
        while (fed < tls.length) {
          fed += s.feed(fed === 0 ? tls : tls.subarray(fed));
          for (;;) {
            const n = s.read(out);
            if (!n) break;
            recv += n;
          }
        }
      }
      sent += data.length;
    }
    const ms = now() - t0;
    if (recv !== sent) throw new Error(`mem: ${recv} != ${sent}`);
    c.free();
    s.free();
    return { mbps: mbps(sent, ms), suite };
  }

  async function download(
    conn: Deno.Conn | {
      read(p: Uint8Array): Promise<number | null>;
      close(): void;
    },
  ) {
    const b = new Uint8Array(READ_BUF);
    let got = 0;
    const t0 = now();
    for (;;) {
      const n = await conn.read(b);
      if (n === null) break;
      got += n;
    }
    const ms = now() - t0;
    conn.close();
    if (got !== BULK) throw new Error(`down: got ${got}`);
    return mbps(got, ms);
  }

  async function upload(
    conn: {
      read(p: Uint8Array): Promise<number | null>;
      write(p: Uint8Array): Promise<number>;
      close(): void;
    },
  ) {
    const data = new Uint8Array(CHUNK).fill(3);
    const t0 = now();
    for (let sent = 0; sent < BULK;) {
      sent += await conn.write(data.subarray(0, Math.min(CHUNK, BULK - sent)));
    }
    const b = new Uint8Array(16);
    const n = await conn.read(b); // "ok" once the server has everything
    const ms = now() - t0;
    conn.close();
    if (n !== 2) throw new Error("up: no ok");
    return mbps(BULK, ms);
  }

  async function ours(port: number) {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    return await startTls(tcp, { hostname: "localhost", caCerts: [ca] });
  }
  async function native(port: number) {
    const c = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [ca],
    });
    await c.handshake();
    return c;
  }

  const ways: Record<string, () => Promise<number>> = {
    "mem": async () => (await mem()).mbps,
    "ours down": async () => download(await ours(ports.down)),
    "native down": async () => download(await native(ports.down)),
    "ours up": async () => upload(await ours(ports.up)),
    "native up": async () => upload(await native(ports.up)),
  };
  const only = Deno.env.get("WAYS")?.split(",");
  const results: Record<string, number[]> = {};
  {
    const m = await mem();
    const o = await ours(ports.down);
    console.log(
      `suites: mem ${m.suite}, tcp ours ${(await o.handshake()).cipherSuite}`,
    );
    o.close();
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, f] of Object.entries(ways)) {
      if (only && !only.includes(name)) continue;
      (results[name] ??= []).push(await f());
    }
  }
  const med: Record<string, number> = {};
  for (const [name, xs] of Object.entries(results)) {
    med[name] = median(xs);
    console.log(
      `${name.padEnd(12)} median ${med[name].toFixed(1).padStart(7)} MB/s   [${
        xs.map((x) => x.toFixed(0)).join(" ")
      }]`,
    );
  }
  for (const dir of ["down", "up"]) {
    if (med[`ours ${dir}`] && med[`native ${dir}`]) {
      console.log(
        `ratio ${dir}: ${
          (med[`ours ${dir}`] / med[`native ${dir}`]).toFixed(3)
        }x`,
      );
    }
  }
  child.kill();
  await child.status;
}

if (Deno.args[0] === "server") await server();
else await client();
