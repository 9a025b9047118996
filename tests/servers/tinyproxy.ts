/**
 * A real, unmodified tinyproxy on a free loopback port, for tests.
 *
 * Only 127.0.0.1 may use it. With no `connectPorts`, CONNECT is allowed to
 * every port (tinyproxy allows all ports when its config has no
 * `ConnectPort` line); with `connectPorts`, only to those (others get
 * `403 Access violation`).
 *
 * @module
 */

import { ensureCommand, type Server, startServerProcess } from "./_util.ts";

export type { Server } from "./_util.ts";

/** Options of {@linkcode startTinyproxy}. */
export interface TinyproxyOptions {
  /** The only ports CONNECT may reach; default: every port. */
  connectPorts?: number[];
  /** Require `Proxy-Authorization: Basic` with this user and password. */
  basicAuth?: { user: string; password: string };
}

/**
 * Installs tinyproxy if missing (`apt-get install -y tinyproxy`) and runs
 * `tinyproxy -d -c <config>` listening on 127.0.0.1.
 *
 * @param options The ports CONNECT may reach, and optional credentials.
 * @returns The proxy; `close` kills it and removes its configuration.
 */
export async function startTinyproxy(
  options: TinyproxyOptions = {},
): Promise<Server> {
  const command = await ensureCommand("tinyproxy", "tinyproxy");
  const dir = await Deno.makeTempDir({ prefix: "mimic-tinyproxy-" });
  const config = `${dir}/tinyproxy.conf`;
  const isRoot = Deno.uid() === 0;
  return await startServerProcess({
    command,
    args: async (port) => {
      const lines = [
        `Port ${port}`,
        "Listen 127.0.0.1",
        "Timeout 60",
        "Allow 127.0.0.1",
        "MaxClients 64",
        "LogLevel Error",
        // tinyproxy refuses to run as root without dropping privileges.
        ...(isRoot ? ["User nobody", "Group nogroup"] : []),
        ...(options.connectPorts ?? []).map((p) => `ConnectPort ${p}`),
        ...(options.basicAuth
          ? [
            `BasicAuth ${options.basicAuth.user} ${options.basicAuth.password}`,
          ]
          : []),
      ];
      await Deno.writeTextFile(config, lines.join("\n") + "\n");
      return ["-d", "-c", config];
    },
    cleanup: () => Deno.remove(dir, { recursive: true }),
  });
}
