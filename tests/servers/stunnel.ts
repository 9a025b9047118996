/**
 * A real, unmodified stunnel (Debian's `stunnel4`) in server mode on a free
 * loopback port, for tests: it accepts TLS and forwards the plaintext to a
 * loopback TCP port (e.g. to front an HTTP proxy, making it an HTTPS proxy).
 *
 * @module
 */

import { ensureCommand, type Server, startServerProcess } from "./_util.ts";

export type { Server } from "./_util.ts";

/** Options of {@linkcode startStunnel}. */
export interface StunnelOptions {
  /** The loopback TCP port to forward decrypted connections to. */
  connectPort: number;
  /** The path of the server's PEM certificate chain. */
  cert: string;
  /** The path of its PEM private key. */
  key: string;
}

/**
 * Installs stunnel if missing (`apt-get install -y stunnel4`) and runs it
 * in the foreground, accepting TLS on 127.0.0.1.
 *
 * @param options Where to forward, and the certificate and key.
 * @returns The server; `close` kills it and removes its configuration.
 */
export async function startStunnel(options: StunnelOptions): Promise<Server> {
  const command = await ensureCommand("stunnel4", "stunnel4");
  const dir = await Deno.makeTempDir({ prefix: "mimic-stunnel-" });
  const config = `${dir}/stunnel.conf`;
  return await startServerProcess({
    command,
    args: async (port) => {
      const lines = [
        "foreground = yes",
        "pid =",
        "debug = 3",
        "[tls]",
        `accept = 127.0.0.1:${port}`,
        `connect = 127.0.0.1:${options.connectPort}`,
        `cert = ${await Deno.realPath(options.cert)}`,
        `key = ${await Deno.realPath(options.key)}`,
      ];
      await Deno.writeTextFile(config, lines.join("\n") + "\n");
      return [config];
    },
    cleanup: () => Deno.remove(dir, { recursive: true }),
  });
}
