/**
 * A real, unmodified Dante SOCKS server (Debian's `dante-server`, `danted`)
 * on a free loopback port, for tests: SOCKS5 CONNECT from 127.0.0.0/8 to any
 * address (IPv4 and IPv6: its external side is `lo`), with no
 * authentication or with username/password (RFC 1929).
 *
 * Dante checks usernames and passwords against the system's users
 * (`socksmethod: username`: getpwnam and the shadow password). So with
 * `auth`, this helper creates a system user for the server's lifetime
 * (`useradd -M -N -s /usr/sbin/nologin`, its password set by `chpasswd`)
 * and deletes it on close (`userdel`), which needs root, as in CI.
 *
 * @module
 */

import {
  ensureCommand,
  runCommand,
  type Server,
  startServerProcess,
} from "./_util.ts";

export type { Server } from "./_util.ts";

/** Options of {@linkcode startDante}. */
export interface DanteOptions {
  /**
   * Require RFC 1929 authentication as a system user this helper creates.
   * `password` may hold any byte but NUL and newline.
   */
  auth?: { password: string };
  /** Ports CONNECT may not reach: Dante answers reply 2 (not allowed). */
  blockPorts?: number[];
}

/** A running Dante, and the user it accepts when it wants one. */
export interface Dante extends Server, AsyncDisposable {
  /** The user name that authenticates (when `auth` was given). */
  user?: string;
  /** Its password (when `auth` was given). */
  password?: string;
}

/**
 * Installs Dante if missing (`apt-get install -y dante-server`) and runs
 * `danted -f <config> -N 1` in the foreground on 127.0.0.1.
 *
 * @param options With `auth`: username/password authentication.
 * @returns The server; `close` kills it, removes its configuration and the
 * user it created.
 */
export async function startDante(options: DanteOptions = {}): Promise<Dante> {
  const command = await ensureCommand("/usr/sbin/danted", "dante-server");
  let user: string | undefined;
  if (options.auth !== undefined) {
    if (Deno.uid() !== 0) {
      throw new Error("Dante with authentication needs root (to add a user)");
    }
    user = `mimicsocks${crypto.randomUUID().slice(0, 8)}`;
    await runCommand("useradd", ["-M", "-N", "-s", "/usr/sbin/nologin", user]);
    const set = new Deno.Command("chpasswd", {
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const writer = set.stdin.getWriter();
    await writer.write(
      new TextEncoder().encode(`${user}:${options.auth.password}\n`),
    );
    await writer.close();
    const out = await set.output();
    if (!out.success) {
      await runCommand("userdel", [user]).catch(() => {});
      throw new Error(
        `chpasswd failed: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
  }
  const removeUser = async () => {
    if (user !== undefined) await runCommand("userdel", [user]).catch(() => {});
  };
  const dir = await Deno.makeTempDir({ prefix: "mimic-dante-" });
  const config = `${dir}/danted.conf`;
  const cleanup = async () => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await removeUser();
  };
  try {
    const server = await startServerProcess({
      command,
      args: async (port) => {
        const lines = [
          "logoutput: stderr",
          `internal: 127.0.0.1 port = ${port}`,
          "external: lo",
          `socksmethod: ${user === undefined ? "none" : "username"}`,
          "clientmethod: none",
          "user.privileged: root",
          "user.unprivileged: nobody",
          "client pass {",
          "  from: 127.0.0.0/8 to: 0/0",
          "}",
          ...(options.blockPorts ?? []).flatMap((p) => [
            "socks block {",
            `  from: 0/0 to: 0/0 port = ${p}`,
            "}",
          ]),
          "socks pass {",
          "  from: 127.0.0.0/8 to: 0/0",
          "  command: connect",
          "}",
        ];
        await Deno.writeTextFile(config, lines.join("\n") + "\n");
        return ["-f", config, "-N", "1", "-p", `${dir}/danted.pid`];
      },
      cleanup,
    });
    return {
      port: server.port,
      user,
      password: options.auth?.password,
      close: () => server.close(),
      [Symbol.asyncDispose]: () => server.close(),
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
