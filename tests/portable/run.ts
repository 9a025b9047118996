/**
 * Runs the portable suite outside Deno: bundles `node.ts` and `browser.ts`
 * with `deno bundle`, starts the peers on 127.0.0.1 (a real `openssl
 * s_server -www`, a real websockify in front of it, a Dante SOCKS server and
 * a tinyproxy for the proxied `fromUri` cases), and runs the bundles
 * under every runtime:
 *
 * | runtime | binary |
 * |---|---|
 * | `node20` (the machine's) | `$MIMIC_NODE20`, default `/usr/bin/node` |
 * | `node<major>` (an LTS from npm) | `$MIMIC_PORTABLE_TOOLS/node_modules/.bin/node` |
 * | `bun` (from npm) | `$MIMIC_PORTABLE_TOOLS/node_modules/.bin/bun` |
 * | `chromium` (Debian's headless shell) | `$MIMIC_CHROMIUM`, default `/usr/lib/chromium/chromium-headless-shell` |
 *
 * `MIMIC_PORTABLE_TOOLS` defaults to `~/.cache/mimic-portable`; `.ci/run`
 * installs `node@24` and `bun` there with npm. Each runtime prints one line
 * per case and `<runtime>: N passed, N failed`; this script prints those,
 * then `portable: N passed, N failed` over all runtimes, and exits 1 when a
 * case failed or a runtime is missing (`--allow-missing` skips those).
 *
 * Usage: `deno run -A tests/portable/run.ts [--allow-missing] [runtime...]`
 *
 * @module
 */

import { startServerProcess } from "../servers/_util.ts";
import { startDante } from "../servers/dante.ts";
import { startTinyproxy } from "../servers/tinyproxy.ts";
import { startWebsockify } from "../servers/websockify.ts";
import type { PortableConfig, Summary } from "./cases.ts";

const here = new URL(".", import.meta.url);
const root = new URL("../../", import.meta.url);
const fixtures = new URL("../fixtures/", import.meta.url);
const RUN_TIMEOUT_MS = 180_000;

const args = Deno.args.filter((a) => !a.startsWith("--"));
const allowMissing = Deno.args.includes("--allow-missing");
const home = Deno.env.get("HOME") ?? "/root";
const tools = Deno.env.get("MIMIC_PORTABLE_TOOLS") ??
  `${home}/.cache/mimic-portable`;

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && exists(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return undefined;
}

async function output(cmd: string, cmdArgs: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args: cmdArgs,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

async function bundle(entry: string, out: string, platform: string) {
  const result = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      `--platform=${platform}`,
      "-o",
      out,
      new URL(entry, here).pathname,
    ],
    cwd: root.pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new Error(
      `deno bundle ${entry} failed: ${new TextDecoder().decode(result.stderr)}`,
    );
  }
}

/** A summary line's counts, or undefined. */
function parseSummary(
  runtime: string,
  text: string,
): { passed: number; failed: number } | undefined {
  const m = text.match(
    new RegExp(`^${runtime}: (\\d+) passed, (\\d+) failed$`, "m"),
  );
  return m ? { passed: Number(m[1]), failed: Number(m[2]) } : undefined;
}

interface Outcome {
  runtime: string;
  passed: number;
  failed: number;
  missing?: string;
}

/** Runs a bundle under a Node-like runtime (Node, Bun). */
async function runNodeLike(
  runtime: string,
  binary: string,
  script: string,
  configPath: string,
): Promise<Outcome> {
  const child = new Deno.Command(binary, {
    args: [script, runtime, configPath],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
  }, RUN_TIMEOUT_MS);
  const out = await child.output();
  clearTimeout(timer);
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  for (const line of stdout.split("\n")) if (line) console.log(line);
  const counts = parseSummary(runtime, stdout);
  if (!counts) {
    console.log(`${runtime}: no summary (exit ${out.code}): ${stderr.trim()}`);
    console.log(`${runtime}: 0 passed, 1 failed`);
    return { runtime, passed: 0, failed: 1 };
  }
  if (!out.success && counts.failed === 0) {
    console.log(`${runtime}: exit ${out.code}: ${stderr.trim()}`);
    return { runtime, ...counts, failed: 1 };
  }
  return { runtime, ...counts };
}

/** Serves the browser bundle and runs it in headless Chromium. */
async function runChromium(
  binary: string,
  script: string,
  config: PortableConfig,
): Promise<Outcome> {
  const runtime = "chromium";
  const report = Promise.withResolvers<Summary>();
  const page = `<!doctype html>
<meta charset="utf-8">
<title>mimic portable suite</title>
<script>
globalThis.PORTABLE_CONFIG = ${JSON.stringify(config)};
globalThis.PORTABLE_RUNTIME = ${JSON.stringify(runtime)};
const fail = (what) => fetch("/report", { method: "POST", body: JSON.stringify(
  { passed: 0, failed: 1, lines: [${
    JSON.stringify(runtime)
  } + ": page error: " + what] }) });
addEventListener("error", (e) => fail(e.message));
addEventListener("unhandledrejection", (e) => fail(String(e.reason)));
</script>
<script type="module" src="/suite.js"></script>
`;
  const js = await Deno.readFile(script);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const { pathname } = new URL(req.url);
      if (req.method === "POST" && pathname === "/report") {
        report.resolve(await req.json());
        return new Response("ok");
      }
      if (pathname === "/suite.js") {
        return new Response(js, {
          headers: { "content-type": "text/javascript" },
        });
      }
      if (pathname === "/") {
        return new Response(page, {
          headers: { "content-type": "text/html; charset=utf-8" },
        });
      }
      return new Response("not found", { status: 404 });
    },
  );
  const profile = await Deno.makeTempDir({ prefix: "mimic-chromium-" });
  const child = new Deno.Command(binary, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-extensions",
      "--disable-dev-shm-usage",
      `--user-data-dir=${profile}`,
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0", // keeps the shell running until killed
      `http://127.0.0.1:${server.addr.port}/`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text().catch(() => "");
  let timer: ReturnType<typeof setTimeout> | undefined;
  let summary: Summary | undefined;
  try {
    summary = await Promise.race([
      report.promise,
      child.status.then(() => undefined),
      new Promise<undefined>((ok) =>
        timer = setTimeout(() => ok(undefined), RUN_TIMEOUT_MS)
      ),
    ]);
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
    await child.status;
    await server.shutdown();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
  if (!summary) {
    const log = (await stderr).trim().split("\n").slice(-5).join(" | ");
    console.log(`${runtime}: no report from the page: ${log}`);
    console.log(`${runtime}: 0 passed, 1 failed`);
    return { runtime, passed: 0, failed: 1 };
  }
  for (const line of summary.lines) console.log(line);
  return { runtime, passed: summary.passed, failed: summary.failed };
}

async function main(): Promise<number> {
  const work = await Deno.makeTempDir({ prefix: "mimic-portable-" });
  const nodeScript = `${work}/suite_node.mjs`;
  const browserScript = `${work}/suite_browser.js`;
  await bundle("node.ts", nodeScript, "deno");
  await bundle("browser.ts", browserScript, "browser");

  const pem = (name: string) => Deno.readTextFile(new URL(name, fixtures));
  const certFile = new URL("localhost.pem", fixtures).pathname;
  const keyFile = new URL("localhost.key", fixtures).pathname;
  const openssl = await startServerProcess({
    command: "openssl",
    args: (port) => [
      "s_server",
      "-accept",
      `127.0.0.1:${port}`,
      "-cert",
      certFile,
      "-key",
      keyFile,
      "-www",
    ],
  });
  const bridge = await startWebsockify({ targetPort: openssl.port });
  const dante = await startDante();
  const tinyproxy = await startTinyproxy();
  const config: PortableConfig = {
    ca: await pem("ca.pem"),
    cert: await pem("localhost.pem"),
    key: await pem("localhost.key"),
    opensslPort: openssl.port,
    websockifyPort: bridge.port,
    dantePort: dante.port,
    tinyproxyPort: tinyproxy.port,
  };
  const configPath = `${work}/config.json`;
  await Deno.writeTextFile(configPath, JSON.stringify(config));

  const outcomes: Outcome[] = [];
  const wanted = (name: string) =>
    args.length === 0 || args.some((a) => name.startsWith(a));
  try {
    const nodeLike: { name?: string; binary: string }[] = [
      { binary: Deno.env.get("MIMIC_NODE20") ?? "/usr/bin/node" },
      { binary: `${tools}/node_modules/.bin/node` },
      { name: "bun", binary: `${tools}/node_modules/.bin/bun` },
    ];
    for (const { name, binary } of nodeLike) {
      let runtime = name;
      if (runtime === undefined) {
        const version = exists(binary)
          ? await output(binary, ["--version"]).catch(() => "")
          : "";
        runtime = /^v(\d+)\./.test(version)
          ? `node${version.match(/^v(\d+)\./)![1]}`
          : "node";
      }
      if (!wanted(runtime)) continue;
      if (!exists(binary)) {
        outcomes.push({ runtime, passed: 0, failed: 0, missing: binary });
        continue;
      }
      outcomes.push(
        await runNodeLike(runtime, binary, nodeScript, configPath),
      );
    }
    if (wanted("chromium")) {
      // Debian's /usr/bin/chromium-headless-shell is a shell script that
      // runs the binary as its child: start the binary itself, so that
      // killing it ends the browser.
      const chromium = Deno.env.get("MIMIC_CHROMIUM") ??
        [
          "/usr/lib/chromium/chromium-headless-shell",
          which("chromium-headless-shell"),
          which("chromium"),
        ].find((p) => p !== undefined && exists(p));
      if (chromium === undefined) {
        outcomes.push({
          runtime: "chromium",
          passed: 0,
          failed: 0,
          missing: "chromium-headless-shell",
        });
      } else {
        outcomes.push(await runChromium(chromium, browserScript, config));
      }
    }
  } finally {
    await tinyproxy.close();
    await dante.close();
    await bridge.close();
    await openssl.close();
    await Deno.remove(work, { recursive: true });
  }

  let passed = 0;
  let failed = 0;
  console.log("");
  for (const o of outcomes) {
    if (o.missing !== undefined) {
      console.log(`${o.runtime}: not found (${o.missing})`);
      if (!allowMissing) failed++;
      continue;
    }
    console.log(`${o.runtime}: ${o.passed} passed, ${o.failed} failed`);
    passed += o.passed;
    failed += o.failed;
  }
  console.log(`portable: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

Deno.exit(await main());
