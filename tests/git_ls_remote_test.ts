/**
 * `examples/git_ls_remote.ts` against real servers on loopback, with the real
 * `git ls-remote` as the oracle: git daemon (git://), git http-backend behind
 * a CGI bridge (http://, https://), OpenSSH's sshd (ssh://, scp-like).
 */

import assert from "node:assert/strict";
import {
  formatRefs,
  lsRefsHttp,
  pktLine,
  PktReader,
} from "../examples/_git.ts";
import { bodyFlow, FlowReader } from "../examples/_http.ts";
import { lsRemote, LsRemoteError } from "../examples/git_ls_remote.ts";
import {
  assertOneStderrLine,
  runExampleText,
  type TextRun as Run,
} from "./_helpers.ts";
import {
  createEmptyRepository,
  createRepository,
  freePort,
  git,
  startGitDaemon,
} from "./servers/git_daemon.ts";
import { startGitHttp } from "./servers/git_http.ts";
import { startHttpFiles } from "./servers/http_files.ts";
import { startSshd } from "./servers/sshd.ts";

const EXAMPLE = new URL("../examples/git_ls_remote.ts", import.meta.url)
  .pathname;
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const CA_FILE = `${FIXTURES}ca.pem`;

/** Runs the example as a subprocess. */
function runExample(
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  return runExampleText(EXAMPLE, args, env);
}

/** What the real client prints. */
function gitLsRemote(
  cwd: string,
  url: string,
  env: Record<string, string> = {},
): Promise<string> {
  return git(cwd, ["ls-remote", url], env);
}

/** Runs `fn` with a temp dir holding `repo.git` (refs) and `empty.git`. */
async function withRepositories(
  fn: (root: string) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "mimic-ls-remote-" });
  try {
    await createRepository(root);
    await createEmptyRepository(root);
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Checks one URL in-process and as a subprocess against `git ls-remote`. */
async function checkAgainstGit(
  root: string,
  url: string,
  options: {
    gitEnv?: Record<string, string>;
    inProcess?: Parameters<typeof lsRemote>[1];
    args?: string[];
    env?: Record<string, string>;
  } = {},
): Promise<string> {
  const expected = await gitLsRemote(root, url, options.gitEnv);
  assert.equal(await lsRemote(url, options.inProcess), expected);
  const run = await runExample([...(options.args ?? []), url], options.env);
  assert.equal(run.stderr, "");
  assert.equal(run.code, 0);
  assert.equal(run.stdout, expected);
  return expected;
}

/** Checks the shape of a failure: one line on stderr, no stack, non-zero. */
function assertOneLineError(run: Run, pattern: RegExp): void {
  assert.notEqual(run.code, 0, `expected a failure, got ${run.stdout}`);
  assert.equal(run.stdout, "");
  assertOneStderrLine(run.stderr, "git_ls_remote", pattern);
}

Deno.test("lsRemote() over git:// matches git ls-remote", async () => {
  await withRepositories(async (root) => {
    const daemon = await startGitDaemon({ root });
    try {
      const base = `git://127.0.0.1:${daemon.port}`;
      const refs = await checkAgainstGit(root, `${base}/repo.git`);
      // HEAD, branches, tags, and peeled annotated tags are all there.
      assert.match(refs, /^[0-9a-f]{40}\tHEAD\n/);
      assert.match(refs, /\trefs\/heads\/feature\/x\n/);
      assert.match(refs, /\trefs\/tags\/v1\.0\^\{\}\n/);
      assert.match(refs, /\trefs\/tags\/v1\.0-signed\^\{\}\n/);
      assert.equal(await checkAgainstGit(root, `${base}/empty.git`), "");
      // localhost resolves through Happy Eyeballs to the IPv4 listener.
      await checkAgainstGit(root, `git://localhost:${daemon.port}/repo.git`);
    } finally {
      await daemon.close();
    }
  });
});

Deno.test("lsRemote() over http:// matches git ls-remote", async () => {
  await withRepositories(async (root) => {
    const server = await startGitHttp({ root });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      await checkAgainstGit(root, `${base}/repo.git`);
      await checkAgainstGit(root, `${base}/repo.git/`);
      assert.equal(await checkAgainstGit(root, `${base}/empty.git`), "");
    } finally {
      await server.close();
    }
  });
});

Deno.test("lsRemote() over https:// matches git ls-remote", async () => {
  await withRepositories(async (root) => {
    const server = await startGitHttp({
      root,
      cert: await Deno.readTextFile(`${FIXTURES}localhost.pem`),
      key: await Deno.readTextFile(`${FIXTURES}localhost.key`),
    });
    try {
      const ca = await Deno.readTextFile(CA_FILE);
      for (const h of ["localhost", "127.0.0.1"]) {
        const url = `https://${h}:${server.port}/repo.git`;
        await checkAgainstGit(root, url, {
          gitEnv: { GIT_SSL_CAINFO: CA_FILE },
          inProcess: { caCerts: [ca] },
          args: ["--ca-file", CA_FILE],
        });
        // The CA from the environment, as git reads it.
        const run = await runExample([url], { GIT_SSL_CAINFO: CA_FILE });
        assert.equal(run.code, 0, run.stderr);
        assert.equal(
          run.stdout,
          await gitLsRemote(root, url, { GIT_SSL_CAINFO: CA_FILE }),
        );
      }
      // Without the test CA, the certificate is not trusted.
      const url = `https://localhost:${server.port}/repo.git`;
      await assert.rejects(lsRemote(url), (e: unknown) => {
        assert.ok(e instanceof LsRemoteError);
        assert.equal(e.step, "connect");
        assert.match(e.message, /^cannot connect to https:\/\/localhost:\d+/);
        assert.match(e.message, /UnknownIssuer|certificate/i);
        return true;
      });
      assertOneLineError(
        await runExample([url]),
        /cannot connect to https:\/\/localhost:\d+\/repo\.git: .*(UnknownIssuer|certificate)/i,
      );
    } finally {
      await server.close();
    }
  });
});

Deno.test("lsRemote() over ssh:// and scp-like URLs matches git ls-remote", async () => {
  await withRepositories(async (root) => {
    const sshd = await startSshd();
    try {
      const env = { GIT_SSH_COMMAND: sshd.sshCommand };
      const scp = `${sshd.destination}:${root}/repo.git`;
      const ssh = `ssh://${sshd.user}@127.0.0.1:${sshd.port}${root}/repo.git`;
      for (const url of [scp, ssh]) {
        await checkAgainstGit(root, url, {
          gitEnv: env,
          inProcess: { sshCommand: sshd.sshCommand },
          env,
        });
      }
      // The same with options instead of a whole command: the port from the
      // URL, the key and options as flags.
      const run = await runExample([
        "-i",
        sshd.identityFile,
        "--ssh-option",
        "IdentitiesOnly=yes",
        "--ssh-option",
        "StrictHostKeyChecking=no",
        "--ssh-option",
        "UserKnownHostsFile=/dev/null",
        "--ssh-option",
        "BatchMode=yes",
        "--ssh-option",
        "LogLevel=ERROR",
        ssh,
      ]);
      assert.equal(run.stderr, "");
      assert.equal(run.stdout, await gitLsRemote(root, ssh, env));
      // A command with shell quoting goes through sh, as in Git.
      const quoted = `${sshd.sshCommand} -o 'ConnectTimeout 10'`;
      assert.equal(
        await lsRemote(ssh, { sshCommand: quoted }),
        await gitLsRemote(root, ssh, { GIT_SSH_COMMAND: quoted }),
      );
      // A repository that is not there: upload-pack's own message.
      assertOneLineError(
        await runExample([`${sshd.destination}:${root}/nope.git`], env),
        /cannot read the references of .*nope\.git: .*does not appear to be a git repository/,
      );
    } finally {
      await sshd.close();
    }
  });
});

Deno.test("git_ls_remote fails with one clear line on bad input", async (t) => {
  const closed = freePort();
  const files = await startHttpFiles({ files: {} });
  const root = await Deno.makeTempDir({ prefix: "mimic-ls-remote-" });
  const daemon = await startGitDaemon({ root });
  try {
    await t.step("an unreachable server", async () => {
      const url = `git://127.0.0.1:${closed}/x`;
      assertOneLineError(
        await runExample([url]),
        new RegExp(`^git_ls_remote: cannot connect to ${url}: .*refused`, "i"),
      );
      assertOneLineError(
        await runExample([`http://127.0.0.1:${closed}/x`]),
        /cannot connect to http:\/\/127\.0\.0\.1:\d+\/x: .*refused/i,
      );
    });
    await t.step("git:// pointed at an HTTP server", async () => {
      assertOneLineError(
        await runExample([`git://127.0.0.1:${files.port}/x`]),
        /cannot read the references of git:\/\/127\.0\.0\.1:\d+\/x: not a pkt-line: the peer sent "HTTP"/,
      );
    });
    await t.step("a server that never answers, with --timeout", async () => {
      const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      const accepting = (async () => {
        for await (const conn of silent) held.push(conn);
      })().catch(() => {});
      const url = `git://127.0.0.1:${silent.addr.port}/x`;
      const run = await runExample(["--timeout", "1", url]);
      for (const conn of held) conn.close();
      silent.close();
      await accepting;
      assertOneLineError(
        run,
        /cannot read the references of git:\/\/127\.0\.0\.1:\d+\/x: timed out$/,
      );
    });
    await t.step("http:// pointed at a git daemon", async () => {
      assertOneLineError(
        await runExample([`http://127.0.0.1:${daemon.port}/x`]),
        /cannot (send the info\/refs request to|read the references of) http:\/\/127\.0\.0\.1:\d+\/x: /,
      );
    });
    await t.step("http:// pointed at a server that is not Git", async () => {
      assertOneLineError(
        await runExample([`http://127.0.0.1:${files.port}/x`]),
        /cannot read the references of http:\/\/127\.0\.0\.1:\d+\/x: the server answered 404 Not Found/,
      );
    });
    await t.step("a repository the daemon does not have", async () => {
      assertOneLineError(
        await runExample([`git://127.0.0.1:${daemon.port}/nope.git`]),
        /the server said: access denied or repository not exported: \/nope\.git/,
      );
    });
    await t.step("URLs it cannot handle", async () => {
      assertOneLineError(
        await runExample(["gopher://x"]),
        /^git_ls_remote: cannot parse gopher:\/\/x: scheme "gopher" is not supported$/,
      );
      assertOneLineError(
        await runExample(["tcp://127.0.0.1:1"]),
        /^git_ls_remote: cannot handle tcp:\/\/127\.0\.0\.1:1: not a Git URL/,
      );
      assertOneLineError(await runExample(["nonsense"]), /cannot parse/);
    });
    await t.step("ssh that exits early (connection refused)", async () => {
      const url = `ssh://127.0.0.1:${closed}/x.git`;
      assertOneLineError(
        await runExample([url], {
          GIT_SSH_COMMAND:
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }),
        /cannot read the references of ssh:\/\/127\.0\.0\.1:\d+\/x\.git: Process "ssh" exited with code 255: .*Connection refused/,
      );
    });
    await t.step("an ssh command that does not exist", async () => {
      assertOneLineError(
        await runExample(["--ssh-command", "/nonexistent/ssh", "host:x.git"]),
        /cannot connect to host:x\.git: .*nonexistent/,
      );
    });
    await t.step("usage errors", async () => {
      const none = await runExample([]);
      assert.equal(none.code, 2);
      assert.equal(
        none.stderr,
        "git_ls_remote: expected one URL (see --help)\n",
      );
      const bad = await runExample(["--nope", "git://x/y"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^git_ls_remote: unknown option --nope/);
    });
  } finally {
    await daemon.close();
    await files.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("git_ls_remote --help prints the usage", async () => {
  const run = await runExample(["--help"]);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /^Usage: git_ls_remote\.ts \[options\] <url>/);
  assert.match(run.stdout, /--ca-file/);
  assert.match(run.stdout, /--ssh-command/);
  assert.equal(run.stderr, "");
});

Deno.test("lsRefsHttp() reads a smart HTTP advertisement, v0 and v1", async () => {
  const oid = "a".repeat(40);
  const peeled = "b".repeat(40);
  const chunks = (...pkts: (string | Uint8Array)[]) =>
    (async function* () {
      for (const p of pkts) {
        yield typeof p === "string" ? pktLine(p) : p;
      }
    })();
  const flush = new TextEncoder().encode("0000");
  const ad = await lsRefsHttp(bodyFlow(chunks(
    "# service=git-upload-pack\n",
    flush,
    "version 1\n",
    `${oid} HEAD\0multi_ack symref=HEAD:refs/heads/main\n`,
    `${oid} refs/heads/main\n`,
    `${oid} refs/tags/v1\n`,
    `${peeled} refs/tags/v1^{}\n`,
    flush,
  )));
  assert.equal(ad.version, 1);
  assert.deepEqual(ad.capabilities, [
    "multi_ack",
    "symref=HEAD:refs/heads/main",
  ]);
  assert.equal(
    formatRefs(ad.refs),
    `${oid}\tHEAD\n${oid}\trefs/heads/main\n${oid}\trefs/tags/v1\n${peeled}\trefs/tags/v1^{}\n`,
  );
  await assert.rejects(
    lsRefsHttp(bodyFlow(chunks(
      "# service=git-upload-pack\n",
      flush,
      "ERR access denied\n",
    ))),
    /the server said: access denied/,
  );
  await assert.rejects(
    lsRefsHttp(bodyFlow(chunks("# service=git-upload-pack\n", flush))),
    /hung up before advertising/,
  );
  // Packets split across reads are reassembled.
  const whole = pktLine(`${oid} HEAD\0\n`);
  const pkts = new PktReader(
    new FlowReader(bodyFlow(chunks(whole.subarray(0, 3), whole.subarray(3)))),
  );
  assert.deepEqual(await pkts.read(), whole.subarray(4));
  assert.equal(await pkts.read(), null);
});
