/**
 * A real `git daemon` on a free loopback port, for tests, and a helper that
 * makes a small repository to serve (commits, branches, annotated and
 * lightweight tags).
 *
 * @module
 */

import { ensureCommand, freePort, runCommand, waitForPort } from "./_util.ts";

export { freePort };

/** A running server: its port, and how to stop it. */
export interface GitDaemon {
  /** The loopback port it listens on. */
  port: number;
  /** Kills the daemon and waits for it to exit. */
  close(): Promise<void>;
}

/** Options of {@linkcode startGitDaemon}. */
export interface GitDaemonOptions {
  /** The directory served (`--base-path` and the whitelist). */
  root: string;
}

/**
 * Runs `git` with `args` in `cwd`; rejects with its stderr when it fails.
 *
 * @param cwd The working directory.
 * @param args The arguments.
 * @param env More environment variables.
 * @returns What it printed on stdout.
 */
export async function git(
  cwd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  return await runCommand(await ensureCommand("git", "git"), args, {
    cwd,
    env: {
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_AUTHOR_NAME: "Test",
      GIT_AUTHOR_EMAIL: "test@example.com",
      GIT_COMMITTER_NAME: "Test",
      GIT_COMMITTER_EMAIL: "test@example.com",
      GIT_AUTHOR_DATE: "2024-01-01T00:00:00Z",
      GIT_COMMITTER_DATE: "2024-01-01T00:00:00Z",
      ...env,
    },
    what: `git ${args.join(" ")}`,
  });
}

/**
 * Makes a bare repository `<root>/<name>` with a few commits on `main`, two
 * more branches, an annotated tag, a lightweight tag and a tag of a tag.
 *
 * @param root The directory to create it in.
 * @param name The repository's directory name, e.g. `repo.git`.
 * @returns The repository's path.
 */
export async function createRepository(
  root: string,
  name = "repo.git",
): Promise<string> {
  const work = await Deno.makeTempDir({ prefix: "mimic-git-work-" });
  try {
    await git(work, ["init", "-q", "-b", "main"]);
    for (let i = 1; i <= 3; i++) {
      await Deno.writeTextFile(`${work}/file.txt`, `line ${i}\n`);
      await git(work, ["add", "file.txt"]);
      await git(work, ["commit", "-q", "-m", `commit ${i}`]);
      if (i === 1) await git(work, ["tag", "v0.1"]); // lightweight
      if (i === 2) {
        await git(work, ["tag", "-a", "v1.0", "-m", "release 1.0"]);
        await git(work, ["branch", "stable"]);
      }
    }
    await git(work, ["tag", "-a", "v1.0-signed", "-m", "tag of a tag", "v1.0"]);
    await git(work, ["checkout", "-q", "-b", "feature/x"]);
    await Deno.writeTextFile(`${work}/other.txt`, "feature\n");
    await git(work, ["add", "other.txt"]);
    await git(work, ["commit", "-q", "-m", "feature"]);
    await git(work, ["checkout", "-q", "main"]);
    const bare = `${root}/${name}`;
    await git(root, ["clone", "-q", "--bare", work, bare]);
    // A clone --bare keeps the tags and branches; make HEAD point at main.
    await git(bare, ["symbolic-ref", "HEAD", "refs/heads/main"]);
    return bare;
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/**
 * Makes an empty bare repository `<root>/<name>`.
 *
 * @param root The directory to create it in.
 * @param name The repository's directory name.
 * @returns The repository's path.
 */
export async function createEmptyRepository(
  root: string,
  name = "empty.git",
): Promise<string> {
  const bare = `${root}/${name}`;
  await git(root, ["init", "-q", "--bare", "-b", "main", bare]);
  return bare;
}

/**
 * Starts `git daemon --reuseaddr --listen=127.0.0.1 --port=<free>
 * --base-path=<root> --export-all <root>`, and waits until it listens.
 *
 * @param options The directory to serve.
 * @returns The daemon.
 */
export async function startGitDaemon(
  options: GitDaemonOptions,
): Promise<GitDaemon> {
  const command = await ensureCommand("git", "git");
  for (let attempt = 0;; attempt++) {
    const port = freePort();
    const child = new Deno.Command(command, {
      args: [
        "daemon",
        "--reuseaddr",
        "--listen=127.0.0.1",
        `--port=${port}`,
        `--base-path=${options.root}`,
        "--export-all",
        options.root,
      ],
      env: { GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null" },
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    try {
      await waitForPort(port, () => !exited);
    } catch (error) {
      if (!exited) child.kill("SIGKILL");
      await status;
      if (attempt < 3) continue; // the port was taken in between
      throw error;
    }
    let closed: Promise<void> | undefined;
    return {
      port,
      close(): Promise<void> {
        closed ??= (async () => {
          if (!exited) child.kill("SIGTERM");
          await status;
        })();
        return closed;
      },
    };
  }
}
