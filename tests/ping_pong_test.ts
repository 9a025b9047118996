// Tests of the tutorial example: run as a subprocess (as `deno task demo`
// does), and its client imported and played over in-memory pipes.
import assert from "node:assert/strict";
import { empty } from "../mod.ts";
import { listenPipe, pipe, pipeProtocol } from "../src/pipe.ts";
import { serve } from "../src/serve.ts";
import {
  answerPings,
  client,
  LineReader,
  pingPong,
  unixUri,
} from "../examples/ping_pong.ts";

const EXAMPLE = new URL("../examples/ping_pong.ts", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write"];

function command(args: string[]): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...PERMISSIONS, EXAMPLE, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

async function run(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await command(args).output();
  const decoder = new TextDecoder();
  return {
    code,
    stdout: decoder.decode(stdout),
    stderr: decoder.decode(stderr),
  };
}

Deno.test("ping_pong.ts runs the demo over tcp, unix and tls and exits 0", async () => {
  const { code, stdout, stderr } = await run([]);
  assert.equal(stderr, "");
  assert.equal(code, 0);
  assert.match(stdout, /^ping-pong: 100 round trips over each transport$/m);
  assert.match(
    stdout,
    /^tcp {3}tcp:\/\/127\.0\.0\.1:\d+: 100 round trips over tcp in [\d.]+ ms$/m,
  );
  assert.match(
    stdout,
    /^unix {2}unix:\/\S+\/ping\.sock: 100 round trips over unix in [\d.]+ ms$/m,
  );
  assert.match(
    stdout,
    /^tls {3}tls:\/\/localhost:\d+: 100 round trips over tls in [\d.]+ ms$/m,
  );
  assert.match(stdout, /^tcp {3}server answered 100 pings, shut down$/m);
  assert.match(stdout, /^unix {2}server answered 100 pings, shut down$/m);
  assert.match(stdout, /^tls {3}server answered 100 pings, shut down$/m);
  assert.match(stdout, /^ok$/m);
  // In this order: TCP, Unix, then TLS.
  const order = [...stdout.matchAll(/^(\w+) +\S+: 100 round trips/gm)].map((
    m,
  ) => m[1]);
  assert.deepEqual(order, ["tcp", "unix", "tls"]);
});

Deno.test("ping_pong.ts --rounds sets the round trips", async () => {
  const { code, stdout } = await run(["--rounds", "7"]);
  assert.equal(code, 0);
  assert.match(stdout, /over tcp/);
  assert.equal(
    stdout.match(/: 7 round trips over (tcp|unix|tls) in /g)?.length,
    3,
  );
});

Deno.test("ping_pong.ts --help prints the usage", async () => {
  const { code, stdout } = await run(["--help"]);
  assert.equal(code, 0);
  assert.match(stdout, /^Usage: ping_pong\.ts/);
  assert.match(stdout, /--client URI/);
  assert.match(stdout, /--server URI/);
  assert.match(stdout, /--ca-file PEM/);
});

Deno.test("ping_pong.ts rejects bad arguments with exit code 2", async () => {
  for (
    const args of [
      ["--nope"],
      ["--client"],
      ["--rounds", "0"],
      [
        "--client",
        "unix:/a",
        "--server",
        "unix:/b",
      ],
      ["--ca-file", "ca.pem"],
      ["--client", "tls://h:1", "--ca-file"],
      [
        "--client",
        "tls://h:1",
        "--key-file",
        "k.pem",
      ],
      ["--server", "tls://h:1", "--ca-file", "ca.pem"],
    ]
  ) {
    const { code, stdout, stderr } = await run(args);
    assert.equal(code, 2, args.join(" "));
    assert.equal(stdout, "");
    assert.match(stderr, /^error: .*\n\nUsage:/);
  }
});

Deno.test("ping_pong.ts --client fails with exit code 1 when nothing listens", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { code, stderr } = await run([
      "--client",
      unixUri(`${dir}/nobody.sock`),
    ]);
    assert.equal(code, 1);
    assert.match(stderr, /^error: Cannot resolve/);
    const bad = await run(["--client", "tcp://127.0.0.1:99999"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /port is out of range/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ping_pong.ts --server and --client play over a Unix socket", async () => {
  const dir = await Deno.makeTempDir();
  const uri = unixUri(`${dir}/ping pong.sock`);
  const server = command(["--server", uri]).spawn();
  try {
    // Wait for the server's first line: it is listening.
    const lines = server.stdout
      .pipeThrough(new TextDecoderStream())
      .getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) break;
      out += value;
    }
    assert.equal(out.split("\n")[0], `serving ping-pong on ${uri}`);

    const played = await run(["--client", uri, "--rounds", "5"]);
    assert.equal(played.stderr, "");
    assert.equal(played.code, 0);
    assert.match(
      played.stdout,
      /: 5 round trips over unix in [\d.]+ ms\n$/,
    );

    server.kill("SIGTERM");
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      out += value;
    }
    const status = await server.status;
    assert.equal(status.code, 0);
    assert.match(out, /answered 5 pings, shut down\n$/);
    // The server removed its socket file.
    await assert.rejects(
      Deno.stat(`${dir}/ping pong.sock`),
      Deno.errors.NotFound,
    );
  } finally {
    try {
      server.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await server.stderr.cancel().catch(() => {});
    await server.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client() plays ping-pong over a pipe listener", async () => {
  const listener = listenPipe();
  let answered = 0;
  await using _server = serve(listener, async (flow) => {
    answered += await answerPings(flow);
  });
  const ctx = empty.add(pipeProtocol.endpoint, listener);
  const result = await client(ctx, { rounds: 25 });
  assert.equal(result.protocol, "pipe");
  assert.equal(result.rounds, 25);
  assert.ok(result.milliseconds >= 0);
  assert.equal(answered, 25);
});

Deno.test("pingPong() and answerPings() play over a pipe pair", async () => {
  const [a, b] = pipe({ highWaterMark: 3 });
  try {
    const [, answered] = await Promise.all([pingPong(a, 10), answerPings(b)]);
    assert.equal(answered, 10);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("pingPong() rejects a server that answers something else", async () => {
  const [a, b] = pipe();
  try {
    const fake = (async () => {
      const lines = new LineReader(b);
      await lines.readLine();
      await b.write(new TextEncoder().encode("pang\n"));
    })();
    await assert.rejects(pingPong(a, 3), {
      name: "TypeError",
      message: 'Cannot play ping-pong: round 1 expected "pong", got "pang"',
    });
    await fake;
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("answerPings() rejects a client that sends something else", async () => {
  const [a, b] = pipe();
  try {
    await a.write(new TextEncoder().encode("ping\nhello\n"));
    await assert.rejects(answerPings(b), {
      name: "TypeError",
      message: 'Cannot play ping-pong: expected "ping", got "hello"',
    });
    const lines = new LineReader(a);
    assert.equal(await lines.readLine(), "pong");
    assert.equal(await lines.readLine(), "error: expected ping");
  } finally {
    a.close();
    b.close();
  }
});

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

/** Spawns `--server uri ...`, waits for its first line, returns it and the process. */
async function startServer(args: string[]): Promise<{
  process: Deno.ChildProcess;
  first: string;
  rest: () => Promise<string>;
}> {
  const process = command(["--server", ...args]).spawn();
  const lines = process.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    out += value;
  }
  return {
    process,
    first: out.split("\n")[0],
    rest: async () => {
      for (;;) {
        const { value, done } = await lines.read();
        if (done) return out;
        out += value;
      }
    },
  };
}

Deno.test("ping_pong.ts --server tls:// and --client tls:// --ca-file play over TLS", async () => {
  // A free port: listen, note it, close.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const free = probe.addr.port;
  probe.close();
  const server = await startServer([
    `tls://127.0.0.1:${free}`,
    "--cert-file",
    `${FIXTURES}localhost.pem`,
    "--key-file",
    `${FIXTURES}localhost.key`,
  ]);
  try {
    assert.equal(
      server.first,
      `serving ping-pong on tls://127.0.0.1:${free}`,
    );
    const played = await run([
      "--client",
      `tls://localhost:${free}`,
      `--ca-file=${FIXTURES}ca.pem`,
      "--rounds",
      "5",
    ]);
    assert.equal(played.stderr, "");
    assert.equal(played.code, 0);
    assert.match(played.stdout, /: 5 round trips over tls in [\d.]+ ms\n$/);

    // Without the CA, the server's certificate is not trusted.
    const untrusted = await run(["--client", `tls://127.0.0.1:${free}`]);
    assert.equal(untrusted.code, 1);
    assert.equal(
      untrusted.stderr,
      "error: Cannot resolve: tls: invalid peer certificate: UnknownIssuer\n",
    );

    server.process.kill("SIGTERM");
    const out = await server.rest();
    assert.equal((await server.process.status).code, 0);
    assert.match(out, /answered 5 pings, shut down\n$/);
    // The untrusting client's alert: reported, not fatal.
    assert.equal(
      await new Response(server.process.stderr).text(),
      "server: received fatal alert: unknown_ca\n",
    );
  } finally {
    try {
      server.process.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await server.process.stderr.cancel().catch(() => {});
    await server.process.status;
  }
});

Deno.test("ping_pong.ts --server tls:// needs --cert-file and --key-file", async () => {
  const { code, stderr } = await run(["--server", "tls://127.0.0.1:1"]);
  assert.equal(code, 1);
  assert.match(
    stderr,
    /^error: Cannot serve tls:\/\/127\.0\.0\.1:1: --cert-file and --key-file are required\n$/,
  );
});
