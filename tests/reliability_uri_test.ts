// Reliability: random strings and mutations of valid URLs into fromUri().
// It returns a context or throws TypeError / RangeError, nothing else; what
// it binds is well formed, agrees with WHATWG URL for http:, and unfolds to
// well-formed endpoints. Reproduce a failure with FUZZ_SEED=<seed> (printed
// on failure); FUZZ_COUNT sets the number of inputs.
import assert from "node:assert/strict";
import { type Context, unfold } from "../mod.ts";
import { tcp, unix } from "../src/tcp.ts";
import { fromUri, host, path, port, query, scheme, user } from "../src/uri.ts";
import { mutateText, randomText } from "./fuzz/mutate.ts";
import { countFrom, Prng, seedFrom } from "./fuzz/prng.ts";

const VALID = [
  "tcp://127.0.0.1:80",
  "tcp://[::1]:8080",
  "tcp://localhost:1",
  "tcp://h:65535",
  "http://example.com/",
  "http://example.com",
  "HTTP://Example.COM:8080/a/b?c=d#e",
  "http://user:pass@[::1]:8080/a?b#c",
  "http://user@127.0.0.1/",
  "http://xn--nxasmq6b.example/",
  "http://\u00e9xample.com/",
  "http://%61bc.example/",
  "http://0x7f.1/",
  "http://[::ffff:127.0.0.1]/",
  "http://[fe80::1%25eth0]/",
  "git://example.com/org/repo.git",
  "git://example.com:9419/repo",
  "ssh://git@example.com/org/repo.git",
  "ssh://git@example.com:2222/repo",
  "ssh://[::1]/x",
  "git@github.com:org/repo.git",
  "example.com:repo.git",
  "user@[::1]:path",
  "[host:2222]:path/to/repo",
  "unix:/tmp/socket",
  "unix:///tmp/socket",
  "unix://localhost/tmp/socket",
  "unix:relative.sock",
  "unix:/tmp/a%20b?x",
  "tls://localhost:443",
  "https://localhost/",
  "C:\\path\\file",
  "",
];

const HTTP = VALID.filter((s) => /^https?:/i.test(s));

const ERRORS = new Set(["TypeError", "RangeError"]);

interface Stats {
  accepted: number;
  rejected: number;
  unfolded: number;
  compared: number;
}

function checkBound(ctx: Context, input: string): void {
  const s = ctx.get(scheme);
  assert.equal(typeof s, "string", "scheme bound");
  assert.match(s!, /^[a-z][a-z0-9+.-]*$/, "scheme lower-case");
  const h = ctx.get(host);
  if (h !== undefined) {
    assert.equal(typeof h, "string");
    assert.ok(h.length > 0, "host not empty");
    assert.ok(!/[\s/?#@\\]/.test(h), `host ${JSON.stringify(h)} of ${input}`);
    assert.ok(!h.startsWith("["), "host without brackets");
  }
  const p = ctx.get(port);
  if (p !== undefined) {
    assert.ok(Number.isInteger(p) && p >= 1 && p <= 65535, `port ${p}`);
  }
  for (const v of [path, user, query]) {
    const x = ctx.get(v);
    if (x !== undefined) assert.equal(typeof x, "string", v.name);
  }
  const u = ctx.get(user);
  if (u !== undefined) assert.ok(u.length > 0, "user not empty");
}

async function checkUnfold(ctx: Context): Promise<void> {
  for (const e of await unfold(ctx)) {
    if (e.value === tcp.endpoint) {
      const d = e.data as { hostname: string; port: number };
      assert.ok(typeof d.hostname === "string" && d.hostname.length > 0);
      assert.ok(Number.isInteger(d.port) && d.port >= 1 && d.port <= 65535);
    } else if (e.value === unix.endpoint) {
      const d = e.data as { path: string };
      assert.ok(typeof d.path === "string" && d.path.length > 0);
      assert.ok(!d.path.includes("\0"), "no NUL in a socket path");
    }
  }
}

/** For http: URLs both accept, host and port must agree with WHATWG URL. */
function compareWhatwg(ctx: Context, input: string): boolean {
  if (ctx.get(scheme) !== "http") return false;
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    return false;
  }
  if (url.protocol !== "http:") return false;
  const h = url.hostname.startsWith("[")
    ? url.hostname.slice(1, -1)
    : url.hostname;
  assert.equal(ctx.get(host), h, `host of ${JSON.stringify(input)}`);
  assert.equal(
    ctx.get(port),
    url.port === "" ? 80 : Number(url.port),
    `port of ${JSON.stringify(input)}`,
  );
  return true;
}

async function one(input: string, stats: Stats, deep: boolean) {
  let ctx: Context;
  try {
    ctx = fromUri(input);
  } catch (error) {
    assert.ok(
      error instanceof Error && ERRORS.has(error.constructor.name),
      `fromUri(${JSON.stringify(input)}) threw ${error}`,
    );
    assert.ok(
      (error as Error).message.startsWith("Cannot parse URL "),
      `message: ${(error as Error).message}`,
    );
    stats.rejected++;
    return;
  }
  stats.accepted++;
  checkBound(ctx, input);
  if (compareWhatwg(ctx, input)) stats.compared++;
  if (deep) {
    await checkUnfold(ctx);
    stats.unfolded++;
    // A redirect on top: fromUri on its own result.
    const again = fromUri(input, ctx);
    checkBound(again, input);
  }
}

Deno.test("fromUri() on random and mutated URLs: a context, or TypeError / RangeError", async () => {
  const seed = seedFrom(0x0a11);
  const count = countFrom(30_000);
  const rng = new Prng(seed);
  const stats: Stats = { accepted: 0, rejected: 0, unfolded: 0, compared: 0 };
  const corpus = [...VALID];
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    let input: string;
    const r = rng.int(10);
    if (r === 0) input = randomText(rng);
    else {
      // A third from http: URLs, which are compared with WHATWG URL.
      input = rng.pick(rng.chance(1 / 3) ? HTTP : corpus);
      const k = rng.range(1, 4);
      for (let j = 0; j < k; j++) input = mutateText(rng, input, corpus);
    }
    try {
      await one(input, stats, i % 8 === 0);
    } catch (error) {
      console.error(
        `uri fuzz: input ${i} ${JSON.stringify(input)} failed; ` +
          `reproduce with FUZZ_SEED=${seed}`,
      );
      throw error;
    }
    // Keep inputs that parse, to mutate further (bounded).
    if (stats.accepted > corpus.length - VALID.length && corpus.length < 2000) {
      try {
        fromUri(input);
        corpus.push(input);
      } catch {
        // Not kept.
      }
    }
  }
  const ms = performance.now() - start;
  console.log(
    `uri fuzz: ${count} inputs (seed ${seed}) in ${ms.toFixed(0)} ms: ` +
      JSON.stringify(stats),
  );
  assert.ok(stats.accepted > count / 10 && stats.rejected > count / 10);
});

Deno.test("fromUri() accepts a URL object as its href", () => {
  for (const s of VALID) {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      continue;
    }
    try {
      checkBound(fromUri(url), s);
    } catch (error) {
      assert.ok(error instanceof TypeError || error instanceof RangeError);
    }
  }
});

Deno.test("fromUri() never reads a host WHATWG URL does not (backslash in the authority)", () => {
  // WHATWG URL: host "us", path "/r@127.0.0.1/"; connecting to 127.0.0.1
  // would be a parser differential (the SSRF kind).
  for (
    const input of [
      "http://us\\r@127.0.0.1/",
      "http://a\\b@example.com/",
      "HTTP://x\\@[::1]:8080/",
    ]
  ) {
    let ctx: Context;
    try {
      ctx = fromUri(input);
    } catch (error) {
      assert.ok(error instanceof TypeError || error instanceof RangeError);
      continue;
    }
    compareWhatwg(ctx, input);
  }
});
