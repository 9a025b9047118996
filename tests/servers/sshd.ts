/**
 * A real, unmodified OpenSSH server on a free loopback port, for tests (and
 * for Git over SSH): a generated host key, a generated client key that is
 * the only authorized key, no PAM, no passwords. The login user is the
 * current user (root in CI).
 *
 * @example Run a command through it
 * ```ts ignore
 * import { startSshd } from "./sshd.ts";
 *
 * await using sshd = await startSshd();
 * const out = await new Deno.Command("ssh", {
 *   args: [...sshd.sshArgs, sshd.destination, "echo hi"],
 * }).output();
 * ```
 *
 * @module
 */

import {
  ensureCommand,
  runCommand as run,
  type Server,
  startServerProcess,
} from "./_util.ts";

export type { Server } from "./_util.ts";

/** A running sshd, and what a client needs to log in. */
export interface Sshd extends Server, AsyncDisposable {
  /** The user to log in as (the current user). */
  user: string;
  /** `user@127.0.0.1`. */
  destination: string;
  /** The path of the client's private key (authorized by the server). */
  identityFile: string;
  /** The path of the server's public host key (OpenSSH format). */
  hostPublicKey: string;
  /**
   * The `ssh` arguments before the destination: port, key, and options
   * that skip host key checks and never prompt.
   */
  sshArgs: string[];
  /** The same as one shell command line, e.g. for `GIT_SSH_COMMAND`. */
  sshCommand: string;
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg)
    ? arg
    : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/**
 * Installs OpenSSH if missing (`apt-get install -y openssh-server
 * openssh-client`) and runs `/usr/sbin/sshd -D -e -f <config>` on
 * 127.0.0.1 with generated keys.
 *
 * @returns The server; `close` kills it and removes its keys.
 */
export async function startSshd(): Promise<Sshd> {
  const sshd = await ensureCommand("/usr/sbin/sshd", "openssh-server");
  const ssh = await ensureCommand("ssh", "openssh-client");
  const keygen = await ensureCommand("ssh-keygen", "openssh-client");
  const user = (await run("id", ["-un"])).trim();
  const isRoot = Deno.uid() === 0;
  if (isRoot) {
    // Privilege separation needs this directory (normally made by systemd).
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  }
  const dir = await Deno.makeTempDir({ prefix: "mimic-sshd-" });
  try {
    const hostKey = `${dir}/host_ed25519`;
    const identityFile = `${dir}/id_ed25519`;
    await run(keygen, [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "host",
      "-f",
      hostKey,
    ]);
    await run(keygen, [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "client",
      "-f",
      identityFile,
    ]);
    await Deno.copyFile(`${identityFile}.pub`, `${dir}/authorized_keys`);
    const config = `${dir}/sshd_config`;
    const server = await startServerProcess({
      command: sshd,
      args: async (port) => {
        const lines = [
          `Port ${port}`,
          "ListenAddress 127.0.0.1",
          `HostKey ${hostKey}`,
          `AuthorizedKeysFile ${dir}/authorized_keys`,
          `PidFile ${dir}/sshd.pid`,
          "StrictModes no",
          "UsePAM no",
          "PubkeyAuthentication yes",
          "PasswordAuthentication no",
          "KbdInteractiveAuthentication no",
          "PermitRootLogin prohibit-password",
          `AllowUsers ${user}`,
          "PrintMotd no",
          "PrintLastLog no",
          "LogLevel ERROR",
        ];
        await Deno.writeTextFile(config, lines.join("\n") + "\n");
        return ["-D", "-e", "-f", config];
      },
      cleanup: () => Deno.remove(dir, { recursive: true }),
    });
    const sshArgs = [
      "-p",
      String(server.port),
      "-i",
      identityFile,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "GlobalKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "LogLevel=ERROR",
      "-F",
      "/dev/null",
    ];
    return {
      port: server.port,
      user,
      destination: `${user}@127.0.0.1`,
      identityFile,
      hostPublicKey: `${hostKey}.pub`,
      sshArgs,
      sshCommand: [ssh, ...sshArgs].map(shellQuote).join(" "),
      close: () => server.close(),
      [Symbol.asyncDispose]: () => server.close(),
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}
