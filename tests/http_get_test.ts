/**
 * `examples/http_get.ts` against a real `Deno.serve` file server on loopback
 * (plain and TLS), byte for byte: Content-Length, chunked and close-delimited
 * bodies, redirects (HTTP to HTTP, HTTP to HTTPS on another port), errors.
 */

import assert from "node:assert/strict";
import {
  bodyFlow,
  FlowReader,
  readAll,
  readResponse,
  request,
} from "../examples/_http.ts";
import { httpGet, httpGetBytes, HttpGetError } from "../examples/http_get.ts";
import { pipe } from "../src/pipe.ts";
import {
  assertOneStderrLine,
  randomBytesEveryValue,
  type Run,
  runExample as runScript,
} from "./_helpers.ts";
import { freePort, startGitDaemon } from "./servers/git_daemon.ts";
import { startHttpFiles } from "./servers/http_files.ts";

const EXAMPLE = new URL("../examples/http_get.ts", import.meta.url).pathname;
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const CA_FILE = `${FIXTURES}ca.pem`;

function runExample(
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  return runScript(EXAMPLE, args, env);
}

function assertOneLineError(run: Run, pattern: RegExp): void {
  assert.notEqual(run.code, 0, "expected a failure");
  assertOneStderrLine(run.stderr, "http_get", pattern);
}

const FILES: Record<string, Uint8Array<ArrayBuffer>> = {
  "big.bin": randomBytesEveryValue(1_500_000),
  "small.bin": randomBytesEveryValue(300),
  "crlf.txt": new TextEncoder().encode("a\r\n\r\n0\r\n\r\nb\n"),
  "empty": new Uint8Array(0),
};

/** Starts a plain and a TLS file server; runs `fn`; stops them. */
async function withServers(
  fn: (
    plain: Awaited<ReturnType<typeof startHttpFiles>>,
    secure: Awaited<ReturnType<typeof startHttpFiles>>,
    ca: string,
  ) => Promise<void>,
): Promise<void> {
  const plain = await startHttpFiles({ files: FILES });
  const secure = await startHttpFiles({
    files: FILES,
    cert: await Deno.readTextFile(`${FIXTURES}localhost.pem`),
    key: await Deno.readTextFile(`${FIXTURES}localhost.key`),
  });
  try {
    await fn(plain, secure, await Deno.readTextFile(CA_FILE));
  } finally {
    await plain.close();
    await secure.close();
  }
}

/** Checks `url` in-process and as a subprocess: the body is `expected`. */
async function checkBody(
  url: string,
  expected: Uint8Array,
  options: { ca?: string; args?: string[]; env?: Record<string, string> } = {},
): Promise<void> {
  const caCerts = options.ca === undefined ? undefined : [options.ca];
  assert.deepEqual(await httpGetBytes(url, { caCerts }), expected);
  const run = await runExample([...(options.args ?? []), url], options.env);
  assert.equal(run.stderr, "");
  assert.equal(run.code, 0);
  assert.equal(run.stdout.length, expected.length);
  assert.deepEqual(run.stdout, expected);
}

Deno.test("http_get fetches http:// bodies byte for byte", async () => {
  await withServers(async (plain) => {
    const base = `http://127.0.0.1:${plain.port}`;
    for (const [name, bytes] of Object.entries(FILES)) {
      await checkBody(`${base}/files/${name}`, bytes); // Content-Length
      await checkBody(`${base}/chunked/${name}`, bytes); // chunked
      // Close-delimited, from the raw server.
      await checkBody(
        `http://127.0.0.1:${plain.rawPort}/files/${name}`,
        bytes,
      );
    }
    // The transfer coding is what we think it is.
    using chunked = await httpGet(`${base}/chunked/small.bin`);
    assert.equal(chunked.headers.get("transfer-encoding"), "chunked");
    await readAll(chunked.body);
    using sized = await httpGet(`${base}/files/small.bin`);
    assert.equal(sized.headers.get("content-length"), "300");
    await readAll(sized.body);
    await checkBody(
      `http://localhost:${plain.port}/files/small.bin`,
      FILES["small.bin"],
    );
  });
});

Deno.test("http_get fetches https:// bodies with ALPN http/1.1", async () => {
  await withServers(async (_plain, secure, ca) => {
    for (const h of ["localhost", "127.0.0.1"]) {
      const base = `https://${h}:${secure.port}`;
      await checkBody(`${base}/files/big.bin`, FILES["big.bin"], {
        ca,
        args: ["--ca-file", CA_FILE],
      });
      await checkBody(`${base}/chunked/big.bin`, FILES["big.bin"], {
        ca,
        env: { HTTP_GET_CA_FILE: CA_FILE },
      });
    }
    // The TLS flow negotiated HTTP/1.1 (Deno.serve also offers h2).
    using response = await httpGet(
      `https://localhost:${secure.port}/files/small.bin`,
      { caCerts: [ca] },
    );
    assert.equal(response.alpnProtocol, "http/1.1");
    assert.deepEqual(await readAll(response.body), FILES["small.bin"]);
    await checkBody(
      `https://localhost:${secure.rawPort}/files/big.bin`,
      FILES["big.bin"],
      { ca, args: ["--ca-file", CA_FILE] },
    );
    // Without the test CA, the server is not trusted.
    assertOneLineError(
      await runExample([`https://localhost:${secure.port}/files/empty`]),
      /^http_get: cannot connect to https:\/\/localhost:\d+\/files\/empty: .*(UnknownIssuer|certificate)/i,
    );
  });
});

Deno.test("http_get follows redirects by replacing the context's values", async () => {
  await withServers(async (plain, secure, ca) => {
    const base = `http://127.0.0.1:${plain.port}`;
    const big = FILES["big.bin"];
    // Every redirect status, relative Location.
    for (const status of [301, 302, 303, 307, 308]) {
      await checkBody(
        `${base}/redirect/${status}?to=/chunked/big.bin`,
        big,
      );
    }
    // http -> http on another server (the raw one: close-delimited).
    const other = `http://localhost:${plain.rawPort}/files/big.bin`;
    await checkBody(
      `${base}/redirect/302?to=${encodeURIComponent(other)}`,
      big,
    );
    // http -> https on another port, then https -> https relative.
    const tls = `https://localhost:${secure.port}/redirect/307?to=${
      encodeURIComponent("/chunked/big.bin")
    }`;
    const url = `${base}/redirect/301?to=${encodeURIComponent(tls)}`;
    const seen: string[] = [];
    assert.deepEqual(
      await httpGetBytes(url, {
        caCerts: [ca],
        onRedirect: (to, status) => seen.push(`${status} ${to}`),
      }),
      big,
    );
    assert.deepEqual(seen, [
      `301 ${tls}`,
      `307 https://localhost:${secure.port}/chunked/big.bin`,
    ]);
    await checkBody(url, big, { ca, args: ["--ca-file", CA_FILE] });
    // The query of the first URL is not carried over.
    using response = await httpGet(
      `${base}/redirect/302?to=${encodeURIComponent("/files/small.bin")}`,
    );
    assert.equal(response.url, `${base}/files/small.bin`);
    assert.deepEqual(await readAll(response.body), FILES["small.bin"]);
    // Ten redirects are followed, the eleventh is not.
    await checkBody(`${base}/chain/10/small.bin`, FILES["small.bin"]);
    assertOneLineError(
      await runExample([`${base}/chain/11/small.bin`]),
      /more than 10 redirects/,
    );
    assertOneLineError(
      await runExample([`${base}/loop/0`]),
      /^http_get: cannot GET http:\/\/127\.0\.0\.1:\d+\/loop\/0: more than 10 redirects/,
    );
    await assert.rejects(
      httpGetBytes(`${base}/chain/3/small.bin`, { maxRedirects: 2 }),
      (e: unknown) => e instanceof HttpGetError && e.step === "redirect",
    );
  });
});

Deno.test("http_get fails with one clear line on bad input", async (t) => {
  await withServers(async (plain) => {
    const closed = freePort();
    const root = await Deno.makeTempDir({ prefix: "mimic-http-get-" });
    const daemon = await startGitDaemon({ root });
    try {
      await t.step("a non-2xx final status", async () => {
        for (const status of [404, 500]) {
          const url = `http://127.0.0.1:${plain.port}/status/${status}`;
          const run = await runExample([url]);
          assertOneLineError(
            run,
            new RegExp(`cannot GET ${url}: the server answered ${status} `),
          );
          assert.equal(run.stdout.length, 0);
          await assert.rejects(
            httpGetBytes(url),
            (e: unknown) => e instanceof HttpGetError && e.status === status,
          );
        }
      });
      await t.step("an unreachable server", async () => {
        assertOneLineError(
          await runExample([`http://127.0.0.1:${closed}/x`]),
          new RegExp(
            `^http_get: cannot connect to http://127\\.0\\.0\\.1:${closed}/x: .*refused`,
            "i",
          ),
        );
        assertOneLineError(
          await runExample([`https://localhost:${closed}/x`]),
          /cannot connect to https:\/\/localhost:\d+\/x: .*refused/i,
        );
      });
      await t.step("a server that speaks another protocol", async () => {
        assertOneLineError(
          await runExample([`http://127.0.0.1:${daemon.port}/x`]),
          /^http_get: cannot GET http:\/\/127\.0\.0\.1:\d+\/x: /,
        );
        // TLS to a plain HTTP server.
        assertOneLineError(
          await runExample([`https://127.0.0.1:${plain.port}/x`]),
          /^http_get: cannot connect to https:\/\/127\.0\.0\.1:\d+\/x: /,
        );
      });
      await t.step("URLs it cannot handle", async () => {
        assertOneLineError(
          await runExample(["gopher://x"]),
          /^http_get: cannot parse gopher:\/\/x: scheme "gopher" is not supported$/,
        );
        assertOneLineError(
          await runExample(["git://127.0.0.1/x"]),
          /^http_get: cannot handle git:\/\/127\.0\.0\.1\/x: not an http/,
        );
        assertOneLineError(
          await runExample([
            `http://127.0.0.1:${plain.port}/redirect/302?to=ftp://x/`,
          ]),
          /cannot follow the redirect from .*: cannot follow a redirect to ftp:\/\/x\//,
        );
      });
      await t.step("usage errors", async () => {
        const run = await runExample([]);
        assert.equal(run.code, 2);
        assert.equal(run.stderr, "http_get: expected one URL (see --help)\n");
      });
    } finally {
      await daemon.close();
      await Deno.remove(root, { recursive: true });
    }
  });
});

Deno.test("http_get --help prints the usage", async () => {
  const run = await runExample(["--help"]);
  assert.equal(run.code, 0);
  assert.match(new TextDecoder().decode(run.stdout), /^Usage: http_get\.ts/);
});

Deno.test("request() parses responses written by hand over a pipe", async () => {
  const encoder = new TextEncoder();
  const serve = async (response: string): Promise<Uint8Array> => {
    const [client, server] = pipe();
    const answered = (async () => {
      const reader = new FlowReader(server);
      while ((await reader.readLine()) !== "") { /* the request head */ }
      const bytes = encoder.encode(response);
      for (let at = 0; at < bytes.length;) {
        at += await server.write(bytes.subarray(at, at + 5)); // short writes
      }
      await server.closeWrite();
    })();
    const res = await request(client, { target: "/", host: "x" });
    const body = await readAll(res.body);
    await answered;
    client.close();
    server.close();
    return body;
  };
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  // A 100 Continue first, chunk extensions and trailers.
  assert.equal(
    text(
      await serve(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "3;ext=1\r\nabc\r\n1\r\n\n\r\n0\r\nX-Trailer: y\r\n\r\n",
      ),
    ),
    "abc\n",
  );
  // HTTP/1.0, close-delimited.
  assert.equal(
    text(await serve("HTTP/1.0 200 OK\r\n\r\nuntil the end")),
    "until the end",
  );
  // A truncated Content-Length body is an error, not a short body.
  await assert.rejects(
    serve("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    /closed after 3 of 10 bytes/,
  );
  // A truncated chunked body too.
  await assert.rejects(
    serve("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
    /closed mid-chunk/,
  );
  // Not HTTP at all.
  await assert.rejects(
    serve("SSH-2.0-OpenSSH\r\n"),
    /not an HTTP\/1\.x status line/,
  );
  // bodyFlow turns a body back into a flow.
  const flow = bodyFlow((async function* () {
    yield encoder.encode("ab");
    yield encoder.encode("c");
  })());
  assert.equal(text(await readAll(flow.readable)), "abc");
  await assert.rejects(flow.write(new Uint8Array(1)), Deno.errors.BadResource);
  // readResponse is usable alone.
  const [a, b] = pipe();
  await b.write(encoder.encode("HTTP/1.1 204 No Content\r\n\r\n"));
  const res = await readResponse(new FlowReader(a));
  assert.equal(res.status, 204);
  assert.equal((await readAll(res.body)).length, 0);
  a.close();
  b.close();
});
