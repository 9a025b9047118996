/**
 * Shared plumbing for the test servers in this directory: installing a
 * missing program with apt-get, finding a free loopback port, waiting for a
 * port to accept connections, and running a server process that is killed
 * and awaited on close.
 *
 * @module
 */

/** A running test server: its loopback port, and how to stop it. */
export interface Server {
  /** The loopback port it listens on. */
  port: number;
  /** Kills the server and waits for it to exit. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@linkcode runCommand}. */
export interface RunCommandOptions {
  /** More environment variables. */
  env?: Record<string, string>;
  /** The working directory. */
  cwd?: string;
  /** Names the command in the error (default: the command and its arguments). */
  what?: string;
}

/**
 * Runs a command to its end with no stdin.
 *
 * @param command The program.
 * @param args Its arguments.
 * @param options Its environment, working directory, and name for errors.
 * @returns What it printed on stdout.
 * @throws {Error} `<what> failed: <its stderr>` when it exits non-zero.
 */
export async function runCommand(
  command: string,
  args: string[],
  options: RunCommandOptions = {},
): Promise<string> {
  const out = await new Deno.Command(command, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `${options.what ?? `${command} ${args.join(" ")}`} failed: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

const installing = new Map<string, Promise<void>>();

function findInPath(command: string): string | undefined {
  const dirs = command.includes("/") ? [""] : [
    ...(Deno.env.get("PATH") ?? "").split(":"),
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
  ];
  for (const dir of dirs) {
    const path = dir === "" ? command : `${dir}/${command}`;
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // Not there.
    }
  }
  return undefined;
}

/**
 * Returns the path of `command`, installing the Debian package `pkg` with
 * `apt-get install -y` first when it is missing (which needs root, as in CI).
 *
 * @param command A program name or an absolute path.
 * @param pkg The Debian package that provides it.
 * @returns The program's path.
 */
export async function ensureCommand(
  command: string,
  pkg: string,
): Promise<string> {
  const found = findInPath(command);
  if (found !== undefined) return found;
  let install = installing.get(pkg);
  if (install === undefined) {
    install = (async () => {
      if (Deno.uid() !== 0) {
        throw new Error(
          `Cannot find ${command}: install it with apt-get install -y ${pkg}`,
        );
      }
      await runCommand(
        "apt-get",
        ["install", "-y", "-o", "DPkg::Lock::Timeout=600", pkg],
        {
          env: { DEBIAN_FRONTEND: "noninteractive" },
          what: `apt-get install -y ${pkg}`,
        },
      );
    })();
    installing.set(pkg, install);
    install.catch(() => installing.delete(pkg));
  }
  await install;
  const path = findInPath(command);
  if (path === undefined) {
    throw new Error(`Cannot find ${command} after installing ${pkg}`);
  }
  return path;
}

/**
 * Finds a free TCP port on 127.0.0.1 (by binding port 0 and releasing it).
 *
 * @returns The port.
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/**
 * Waits until something accepts connections on `127.0.0.1:port`.
 *
 * @param port The port.
 * @param alive Whether the server process still runs.
 * @param timeoutMs How long to wait.
 */
export async function waitForPort(
  port: number,
  alive: () => boolean,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`The server on port ${port} exited early`);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }
  throw new Error(`Nothing listens on port ${port} after ${timeoutMs} ms`);
}

/** Options of {@linkcode startServerProcess}. */
export interface ServerProcessOptions {
  /** The program. */
  command: string;
  /** Its arguments, given the port it must listen on. */
  args: (port: number) => string[] | Promise<string[]>;
  /** More environment variables. */
  env?: Record<string, string>;
  /** The working directory. */
  cwd?: string;
  /** Called once the process exited (e.g. to remove a temporary directory). */
  cleanup?: () => Promise<void>;
}

/**
 * Runs a server process on a free loopback port (retrying when the port
 * is taken in between), waits until it accepts connections, and returns it.
 * Its stderr is kept and shown when it exits early.
 *
 * @param options The command, its arguments for a port, and a cleanup.
 * @returns The server.
 */
export async function startServerProcess(
  options: ServerProcessOptions,
): Promise<Server> {
  for (let attempt = 0;; attempt++) {
    const port = freePort();
    const child = new Deno.Command(options.command, {
      args: await options.args(port),
      env: options.env,
      cwd: options.cwd,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    const stderr = new Response(child.stderr).text().catch(() => "");
    try {
      await waitForPort(port, () => !exited);
    } catch (error) {
      if (!exited) child.kill("SIGKILL");
      await status;
      const log = await stderr;
      if (attempt < 3 && /in use/i.test(log)) continue;
      await options.cleanup?.();
      throw new Error(
        `${options.command} did not start: ${
          error instanceof Error ? error.message : error
        }\n${log}`,
      );
    }
    let closed: Promise<void> | undefined;
    return {
      port,
      close(): Promise<void> {
        closed ??= (async () => {
          if (!exited) {
            try {
              child.kill("SIGTERM");
            } catch {
              // It exited in the meantime.
            }
          }
          let timer: ReturnType<typeof setTimeout> | undefined;
          const done = await Promise.race([
            status.then(() => true),
            new Promise<false>((ok) =>
              timer = setTimeout(() => ok(false), 5000)
            ),
          ]);
          clearTimeout(timer);
          if (!done) {
            try {
              child.kill("SIGKILL");
            } catch {
              // It exited in the meantime.
            }
            await status;
          }
          await stderr;
          await options.cleanup?.();
        })();
        return closed;
      },
    };
  }
}
