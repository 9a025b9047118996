/**
 * OpenSSH's dynamic forwarding (`ssh -N -D 127.0.0.1:<port>`) as a SOCKS
 * server, against the test sshd ({@linkcode startSshd}): a real, unmodified
 * SOCKS4/SOCKS5 server (no authentication) whose connections to targets are
 * made by sshd.
 *
 * @module
 */

import { ensureCommand, type Server, startServerProcess } from "./_util.ts";
import type { Sshd } from "./sshd.ts";

export type { Server } from "./_util.ts";

/**
 * Runs `ssh -N -D 127.0.0.1:<port>` to `sshd` and waits until the SOCKS
 * port accepts connections.
 *
 * @param sshd The test sshd to forward through.
 * @returns The SOCKS server; `close` kills ssh.
 */
export async function startSshSocks(sshd: Sshd): Promise<Server> {
  const ssh = await ensureCommand("ssh", "openssh-client");
  return await startServerProcess({
    command: ssh,
    args: (port) => [
      ...sshd.sshArgs,
      "-N",
      "-o",
      "ExitOnForwardFailure=yes",
      "-D",
      `127.0.0.1:${port}`,
      sshd.destination,
    ],
  });
}
