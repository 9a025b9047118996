/**
 * `examples/https_via_proxy.ts` against a real tinyproxy (an HTTP proxy),
 * a real tinyproxy fronted by stunnel (an HTTPS proxy: then TLS runs inside
 * TLS), and a `Deno.serve` HTTPS file server with the fixture certificate,
 * all on 127.0.0.1: bodies byte for byte, and every step's failure as one
 * clear stderr line and a non-zero exit.
 */

import assert from "node:assert/strict";
import {
  connectViaProxy,
  getViaProxy,
  HttpsViaProxyError,
  type HttpsViaProxyStep,
} from "../examples/https_via_proxy.ts";
import { readAll } from "../examples/_http.ts";
import {
  assertOneStderrLine,
  randomBytesEveryValue,
  type Run,
  runExample as runScript,
} from "./_helpers.ts";
import { freePort } from "./servers/_util.ts";
import { type HttpFilesServer, startHttpFiles } from "./servers/http_files.ts";
import { startStunnel } from "./servers/stunnel.ts";
import { type Server, startTinyproxy } from "./servers/tinyproxy.ts";

const EXAMPLE = new URL("../examples/https_via_proxy.ts", import.meta.url)
  .pathname;
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const CA_FILE = `${FIXTURES}ca.pem`;
const CERT_FILE = `${FIXTURES}localhost.pem`;
const KEY_FILE = `${FIXTURES}localhost.key`;
const ca = await Deno.readTextFile(CA_FILE);

function runExample(args: string[]): Promise<Run> {
  return runScript(EXAMPLE, args);
}

function assertOneLineError(run: Run, pattern: RegExp): void {
  assert.notEqual(run.code, 0, "expected a failure");
  assert.equal(run.stdout.length, 0, "expected nothing on stdout");
  assertOneStderrLine(run.stderr, "https_via_proxy", pattern);
}

const FILES: Record<string, Uint8Array<ArrayBuffer>> = {
  "big.bin": randomBytesEveryValue(1_500_000),
  "small.bin": randomBytesEveryValue(300),
  "crlf.txt": new TextEncoder().encode("a\r\n\r\n0\r\n\r\nb\n"),
  "empty": new Uint8Array(0),
};

interface Setup {
  files: HttpFilesServer;
  /** A plain tinyproxy allowing CONNECT to every port. */
  proxy: Server;
  /** stunnel in front of `proxy`: an HTTPS proxy. */
  httpsProxy: Server;
  /** The target's https:// URL of a path. */
  url(path: string): string;
}

/** Starts the HTTPS file server, tinyproxy and stunnel; runs `fn`; stops them. */
async function withSetup(fn: (setup: Setup) => Promise<void>): Promise<void> {
  const files = await startHttpFiles({
    files: FILES,
    cert: await Deno.readTextFile(CERT_FILE),
    key: await Deno.readTextFile(KEY_FILE),
  });
  const proxy = await startTinyproxy().catch(async (error) => {
    await files.close();
    throw error;
  });
  const httpsProxy = await startStunnel({
    connectPort: proxy.port,
    cert: CERT_FILE,
    key: KEY_FILE,
  }).catch(async (error) => {
    await proxy.close();
    await files.close();
    throw error;
  });
  try {
    await fn({
      files,
      proxy,
      httpsProxy,
      url: (path) => `https://127.0.0.1:${files.port}${path}`,
    });
  } finally {
    await httpsProxy.close();
    await proxy.close();
    await files.close();
  }
}

function assertBytes(actual: Uint8Array, expected: Uint8Array): void {
  assert.equal(actual.length, expected.length, "length");
  assert.ok(
    actual.every((b, i) => b === expected[i]),
    "the bytes differ",
  );
}

Deno.test("https_via_proxy GETs byte for byte through an HTTP and an HTTPS proxy", async (t) => {
  await withSetup(async (s) => {
    const proxies = [
      {
        kind: "http (tinyproxy)",
        args: ["--proxy", `http://127.0.0.1:${s.proxy.port}`],
      },
      {
        kind: "https (stunnel + tinyproxy, TLS inside TLS)",
        args: [
          "--proxy",
          `https://localhost:${s.httpsProxy.port}`,
          "--proxy-ca-file",
          CA_FILE,
        ],
      },
    ];
    for (const { kind, args } of proxies) {
      for (
        const [route, name] of [
          ["files", "big.bin"],
          ["chunked", "big.bin"],
          ["files", "small.bin"],
          ["files", "crlf.txt"],
          ["files", "empty"],
        ]
      ) {
        await t.step(`${kind}: /${route}/${name}`, async () => {
          const run = await runExample([
            s.url(`/${route}/${name}`),
            ...args,
            "--ca-file",
            CA_FILE,
          ]);
          assert.equal(run.code, 0, run.stderr);
          assert.equal(run.stderr, "");
          assertBytes(run.stdout, FILES[name]);
        });
      }
    }
  });
});

Deno.test("https_via_proxy verifies the target by its name through the tunnel", async () => {
  await withSetup(async (s) => {
    // The tunnel leads to "localhost": the proxy resolves it, TLS checks it.
    const run = await runExample([
      `https://localhost:${s.files.port}/files/small.bin`,
      "--proxy",
      `https://127.0.0.1:${s.httpsProxy.port}`,
      "--proxy-ca-file",
      CA_FILE,
      "--ca-file",
      CA_FILE,
    ]);
    assert.equal(run.code, 0, run.stderr);
    assertBytes(run.stdout, FILES["small.bin"]);
  });
});

Deno.test("getViaProxy() negotiates http/1.1 with the target inside the tunnel", async () => {
  await withSetup(async (s) => {
    using response = await getViaProxy(s.url("/files/big.bin"), {
      proxy: `https://localhost:${s.httpsProxy.port}`,
      proxyCaCerts: [ca],
      caCerts: [ca],
    });
    assert.equal(response.status, 200);
    assertBytes(await readAll(response.body), FILES["big.bin"]);
    const flow = await connectViaProxy(s.url("/"), {
      proxy: `http://127.0.0.1:${s.proxy.port}`,
      caCerts: [ca],
    });
    try {
      const info = await flow.handshake();
      assert.equal(info.alpnProtocol, "http/1.1");
    } finally {
      flow.close();
    }
  });
});

Deno.test("https_via_proxy names the proxy step when the proxy answers 403", async () => {
  await withSetup(async (s) => {
    // Allows CONNECT to one port only, not the target's.
    const strict = await startTinyproxy({ connectPorts: [s.files.port + 1] });
    try {
      const run = await runExample([
        s.url("/files/small.bin"),
        "--proxy",
        `http://127.0.0.1:${strict.port}`,
        "--ca-file",
        CA_FILE,
      ]);
      assertOneLineError(
        run,
        new RegExp(
          `cannot open a tunnel to 127\\.0\\.0\\.1:${s.files.port} through the proxy http://127\\.0\\.0\\.1:${strict.port}/: it answered 403`,
        ),
      );
      assert.equal(run.code, 1);
      await assert.rejects(
        connectViaProxy(s.url("/"), {
          proxy: `http://127.0.0.1:${strict.port}`,
          caCerts: [ca],
        }),
        (error) => isStep(error, "tunnel"),
      );
    } finally {
      await strict.close();
    }
  });
});

Deno.test("https_via_proxy sends proxy credentials from the proxy URL", async () => {
  await withSetup(async (s) => {
    const guarded = await startTinyproxy({
      basicAuth: { user: "alice", password: "s3cret" },
    });
    try {
      const ok = await runExample([
        s.url("/files/small.bin"),
        "--proxy",
        `http://alice:s3cret@127.0.0.1:${guarded.port}`,
        "--ca-file",
        CA_FILE,
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      assertBytes(ok.stdout, FILES["small.bin"]);
      const refused = await runExample([
        s.url("/files/small.bin"),
        "--proxy",
        `http://alice:wrong@127.0.0.1:${guarded.port}`,
        "--ca-file",
        CA_FILE,
      ]);
      // tinyproxy answers 401 (not 407) to a CONNECT with bad credentials.
      assertOneLineError(refused, /through the proxy .*: it answered 40[17]/);
      // The credentials are never shown.
      assert.doesNotMatch(refused.stderr, /alice|wrong/);
    } finally {
      await guarded.close();
    }
  });
});

Deno.test("https_via_proxy fails with one line when the proxy is unreachable", async () => {
  const port = freePort();
  for (const scheme of ["http", "https"]) {
    const run = await runExample([
      "https://127.0.0.1:9/",
      "--proxy",
      `${scheme}://127.0.0.1:${port}`,
    ]);
    assertOneLineError(
      run,
      new RegExp(
        `cannot connect to the proxy ${scheme}://127\\.0\\.0\\.1:${port}/: .*refused`,
        "i",
      ),
    );
    assert.equal(run.code, 1);
  }
  await assert.rejects(
    connectViaProxy("https://127.0.0.1:9/", {
      proxy: `http://127.0.0.1:${port}`,
    }),
    (error) => isStep(error, "proxy"),
  );
});

Deno.test("https_via_proxy tells a proxy certificate failure from a target one", async () => {
  await withSetup(async (s) => {
    const proxyUntrusted = await runExample([
      s.url("/files/small.bin"),
      "--proxy",
      `https://localhost:${s.httpsProxy.port}`,
      "--ca-file",
      CA_FILE,
    ]);
    assertOneLineError(
      proxyUntrusted,
      /cannot connect to the proxy https:\/\/localhost:\d+\/: .*UnknownIssuer/,
    );
    const targetUntrusted = await runExample([
      s.url("/files/small.bin"),
      "--proxy",
      `https://localhost:${s.httpsProxy.port}`,
      "--proxy-ca-file",
      CA_FILE,
    ]);
    assertOneLineError(
      targetUntrusted,
      /cannot establish TLS with 127\.0\.0\.1:\d+ through the proxy https:\/\/localhost:\d+\/: .*UnknownIssuer/,
    );
    await assert.rejects(
      connectViaProxy(s.url("/"), {
        proxy: `http://127.0.0.1:${s.proxy.port}`,
      }),
      (error) => isStep(error, "tls"),
    );
  });
});

Deno.test("https_via_proxy fails with one line on a status that is not 2xx", async () => {
  await withSetup(async (s) => {
    const run = await runExample([
      s.url("/status/404"),
      "--proxy",
      `http://127.0.0.1:${s.proxy.port}`,
      "--ca-file",
      CA_FILE,
    ]);
    assertOneLineError(
      run,
      /cannot GET https:\/\/127\.0\.0\.1:\d+\/status\/404: the server answered 404/,
    );
  });
});

Deno.test("https_via_proxy prints its help, and rejects bad usage with exit code 2", async () => {
  const help = await runExample(["--help"]);
  assert.equal(help.code, 0);
  const text = new TextDecoder().decode(help.stdout);
  assert.match(text, /^Usage: https_via_proxy\.ts/);
  assert.match(text, /--proxy-ca-file/);
  for (
    const [args, pattern] of [
      [["https://127.0.0.1/"], /--proxy is required/],
      [["--proxy", "http://127.0.0.1:1"], /expected one URL/],
      [["--nope"], /unknown option --nope/],
      [[
        "https://127.0.0.1/",
        "--proxy",
        "http://127.0.0.1:1",
        "--ca-file",
        "/nonexistent.pem",
      ], /cannot read the CA file/],
    ] as const
  ) {
    const run = await runExample([...args]);
    assertOneLineError(run, pattern);
    assert.equal(run.code, 2);
  }
  for (
    const [args, pattern] of [
      [
        ["http://127.0.0.1/", "--proxy", "http://127.0.0.1:1"],
        /only https:\/\/ URLs/,
      ],
      [
        ["https://127.0.0.1/", "--proxy", "socks5://127.0.0.1:1"],
        /http:\/\/ or https:\/\/ proxy/,
      ],
      [
        ["https://127.0.0.1/", "--proxy", "not a url"],
        /cannot parse the proxy URL/,
      ],
    ] as const
  ) {
    const run = await runExample([...args]);
    assertOneLineError(run, pattern);
    assert.equal(run.code, 1);
  }
});

function isStep(error: unknown, step: HttpsViaProxyStep): boolean {
  assert.ok(error instanceof HttpsViaProxyError, String(error));
  assert.equal(error.step, step, error.message);
  return true;
}
