// Tests of the process flow (`./process`): real subprocesses (cat, sh,
// git-upload-pack) and Git over a real OpenSSH server on 127.0.0.1.
import assert from "node:assert/strict";
import { empty, resolve } from "../mod.ts";
import {
  ProcessExitError,
  type ProcessFlow,
  processProtocol,
  spawnFlow,
} from "../src/process.ts";
import { readExactly } from "./_helpers.ts";
import { createRepository, git } from "./servers/git_daemon.ts";
import { startSshd } from "./servers/sshd.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads one pkt-line; `null` for a flush packet. */
async function readPktLine(flow: ProcessFlow): Promise<string | null> {
  const length = parseInt(decoder.decode(await readExactly(flow, 4)), 16);
  if (length === 0) return null;
  return decoder.decode(await readExactly(flow, length - 4));
}

/** Reads a ref advertisement: ref name -> object id. */
async function readRefs(flow: ProcessFlow): Promise<Map<string, string>> {
  const refs = new Map<string, string>();
  for (let line; (line = await readPktLine(flow)) !== null;) {
    const [id, name] = line.split("\0")[0].trimEnd().split(" ");
    refs.set(name, id);
  }
  return refs;
}

function lsRemote(output: string): Map<string, string> {
  const refs = new Map<string, string>();
  for (const line of output.trim().split("\n")) {
    const [id, name] = line.split("\t");
    refs.set(name, id);
  }
  return refs;
}

Deno.test("spawnFlow() round-trips 1 MiB through cat", async () => {
  await using flow = await spawnFlow("cat");
  const data = new Uint8Array(1024 * 1024);
  for (let i = 0; i < data.length; i += 65536) {
    crypto.getRandomValues(data.subarray(i, i + 65536));
  }
  const [, echoed] = await Promise.all([
    ReadableStream.from([data]).pipeTo(flow.writable),
    new Response(flow.readable).arrayBuffer(),
  ]);
  assert.deepEqual(new Uint8Array(echoed), data);
  assert.deepEqual({ ...await flow.status }, {
    success: true,
    code: 0,
    signal: null,
  });
});

Deno.test("spawnFlow() reads and writes with read() and write()", async () => {
  await using flow = await spawnFlow("cat");
  assert.equal(await flow.write(encoder.encode("hello")), 5);
  const buf = new Uint8Array(2);
  assert.equal(await flow.read(buf), 2);
  assert.equal(decoder.decode(buf), "he");
  await flow.closeWrite();
  await flow.closeWrite(); // idempotent
  const rest = new Uint8Array(10);
  assert.equal(await flow.read(rest), 3);
  assert.equal(decoder.decode(rest.subarray(0, 3)), "llo");
  assert.equal(await flow.read(rest), null);
  assert.equal(await flow.read(rest), null);
  // Flow contract rule 3: a write after closeWrite() is a BrokenPipe.
  await assert.rejects(
    flow.write(encoder.encode("x")),
    Deno.errors.BrokenPipe,
  );
});

Deno.test("spawnFlow() rejects the read with the exit code of a failed process", async () => {
  await using flow = await spawnFlow("sh", { args: ["-c", "exit 3"] });
  await assert.rejects(flow.read(new Uint8Array(8)), (error) => {
    assert.ok(error instanceof ProcessExitError);
    assert.equal(error.code, 3);
    assert.equal(error.command, "sh");
    assert.match(error.message, /^Process "sh" exited with code 3$/);
    return true;
  });
});

Deno.test("spawnFlow() puts the stderr of a failed process in the error", async () => {
  await using flow = await spawnFlow("sh", {
    args: [
      "-c",
      "printf partial; echo 'fatal: not a git repository' >&2; exit 1",
    ],
  });
  const buf = new Uint8Array(64);
  assert.equal(await flow.read(buf), 7); // what it printed is read first
  await assert.rejects(
    flow.read(buf),
    new ProcessExitError(
      "sh",
      { success: false, code: 1, signal: null },
      "fatal: not a git repository\n",
    ),
  );
  assert.equal(flow.stderr(), "fatal: not a git repository\n");
});

Deno.test("spawnFlow() keeps only the tail of stderr", async () => {
  await using flow = await spawnFlow("sh", {
    args: [
      "-c",
      "head -c 200000 /dev/zero | tr '\\0' a >&2; echo END >&2; exit 1",
    ],
    stderrLimit: 1000,
  });
  const error = await flow.read(new Uint8Array(8)).catch((e) => e);
  assert.ok(error instanceof ProcessExitError);
  assert.equal(error.stderr.length, 1000);
  assert.ok(error.stderr.endsWith("aaaEND\n"));
});

Deno.test("spawnFlow() rejects writes to a dead process with BrokenPipe", async () => {
  await using flow = await spawnFlow("sh", {
    args: ["-c", "echo 'gone' >&2; exit 2"],
  });
  await flow.status;
  const big = new Uint8Array(1024 * 1024);
  await assert.rejects(flow.write(big), (error) => {
    assert.ok(error instanceof Deno.errors.BrokenPipe);
    assert.match(
      error.message,
      /Cannot write to process "sh": it exited with code 2: gone/,
    );
    return true;
  });
  await flow.closeWrite(); // does not throw on a dead process
  await assert.rejects(flow.read(new Uint8Array(8)), ProcessExitError);
});

Deno.test("spawnFlow() rejects a missing command with NotFound", async () => {
  await assert.rejects(
    spawnFlow("mimic-no-such-command"),
    (error) => {
      assert.ok(error instanceof Deno.errors.NotFound);
      assert.match(error.message, /Cannot spawn "mimic-no-such-command"/);
      return true;
    },
  );
});

Deno.test("ProcessFlow.close() kills a running process", async () => {
  const flow = await spawnFlow("sleep", { args: ["30"] });
  const pending = flow.read(new Uint8Array(8));
  flow.close();
  flow.close(); // idempotent
  await assert.rejects(pending, Deno.errors.Interrupted); // contract rule 4
  const status = await flow.status;
  assert.equal(status.signal, "SIGTERM");
  await assert.rejects(flow.write(new Uint8Array(1)), Deno.errors.BadResource);
  await flow[Symbol.asyncDispose]();
});

Deno.test("spawnFlow() kills the process when the signal aborts", async () => {
  const controller = new AbortController();
  await using flow = await spawnFlow("sleep", {
    args: ["30"],
    signal: controller.signal,
  });
  const pending = flow.read(new Uint8Array(8));
  controller.abort(new Error("stop"));
  await assert.rejects(pending, { message: "stop" });
  assert.equal((await flow.status).signal, "SIGTERM");
  await assert.rejects(
    spawnFlow("cat", { signal: controller.signal }),
    { message: "stop" },
  );
});

Deno.test("spawnFlow() passes args, env and cwd", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using flow = await spawnFlow("sh", {
      args: [
        "-c",
        'printf "%s %s %s" "$1" "$MIMIC_TEST" "$(pwd)"',
        "sh",
        "a b",
      ],
      env: { MIMIC_TEST: "yes" },
      cwd: dir,
    });
    const text = await new Response(flow.readable).text();
    assert.equal(text, `a b yes ${await Deno.realPath(dir)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("processProtocol connects through resolve()", async () => {
  const ctx = empty.add(processProtocol.endpoint, {
    command: "sh",
    args: ["-c", "echo resolved"],
  });
  const flow = await resolve(ctx);
  assert.ok(processProtocol.is(flow));
  await using _ = flow;
  assert.equal(await new Response(flow.readable).text(), "resolved\n");
});

Deno.test("spawnFlow() speaks to git-upload-pack", async () => {
  const root = await Deno.makeTempDir({ prefix: "mimic-process-git-" });
  try {
    const repo = await createRepository(root);
    const expected = lsRemote(await git(root, ["ls-remote", repo]));
    await using flow = await spawnFlow("git-upload-pack", { args: [repo] });
    const first = await readPktLine(flow);
    assert.ok(first !== null);
    assert.match(first, /^[0-9a-f]{40} HEAD\0/);
    const refs = await readRefs(flow);
    refs.set("HEAD", first.slice(0, 40));
    assert.deepEqual(refs, expected);
    await flow.write(encoder.encode("0000")); // no wants: done
    assert.equal(await flow.read(new Uint8Array(8)), null);
    assert.equal((await flow.status).code, 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("spawnFlow() speaks to git-upload-pack over a real sshd", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "mimic-process-ssh-" });
  const sshd = await startSshd();
  try {
    const repo = await createRepository(root);
    const expected = lsRemote(await git(root, ["ls-remote", repo]));

    await t.step("reads the refs", async () => {
      await using flow = await spawnFlow("ssh", {
        args: [...sshd.sshArgs, sshd.destination, `git-upload-pack '${repo}'`],
      });
      const first = await readPktLine(flow);
      assert.ok(first !== null);
      const refs = await readRefs(flow);
      refs.set("HEAD", first.slice(0, 40));
      assert.deepEqual(refs, expected);
      await flow.write(encoder.encode("0000"));
      assert.equal(await flow.read(new Uint8Array(8)), null);
      assert.equal((await flow.status).code, 0);
    });

    await t.step("through the process protocol", async () => {
      const flow = await resolve(empty.add(processProtocol.endpoint, {
        command: "ssh",
        args: [...sshd.sshArgs, sshd.destination, `git-upload-pack '${repo}'`],
      }));
      assert.ok(processProtocol.is(flow));
      await using _ = flow;
      const first = await readPktLine(flow);
      assert.match(first ?? "", /^[0-9a-f]{40} HEAD\0/);
    });

    await t.step(
      "a missing repository is an error with git's message",
      async () => {
        await using flow = await spawnFlow("ssh", {
          args: [
            ...sshd.sshArgs,
            sshd.destination,
            `git-upload-pack '${root}/missing.git'`,
          ],
        });
        await assert.rejects(flow.read(new Uint8Array(64)), (error) => {
          assert.ok(error instanceof ProcessExitError);
          assert.equal(error.code, 128);
          assert.match(
            error.message,
            /^Process "ssh" exited with code 128: .*missing\.git/s,
          );
          return true;
        });
      },
    );
  } finally {
    await sshd.close();
    await Deno.remove(root, { recursive: true });
  }
});
