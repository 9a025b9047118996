/**
 * A real, unmodified websockify on a free loopback port, for tests: it
 * accepts WebSocket connections and bridges each to a new TCP connection to
 * a loopback target port.
 *
 * @module
 */

import { ensureCommand, type Server, startServerProcess } from "./_util.ts";

export type { Server } from "./_util.ts";

/** Options of {@linkcode startWebsockify}. */
export interface WebsockifyOptions {
  /** The loopback TCP port to bridge to. */
  targetPort: number;
  /** Serve `wss:` with this PEM certificate (path). */
  cert?: string;
  /** The PEM key of `cert` (path). */
  key?: string;
}

/**
 * Installs websockify if missing (`apt-get install -y websockify`) and runs
 * `websockify 127.0.0.1:<port> 127.0.0.1:<targetPort>`.
 *
 * @param options The target port, and optionally a certificate for `wss:`.
 * @returns The server; `close` kills it.
 */
export async function startWebsockify(
  options: WebsockifyOptions,
): Promise<Server> {
  const command = await ensureCommand("websockify", "websockify");
  const tls = options.cert !== undefined
    ? [
      `--cert=${options.cert}`,
      ...(options.key ? [`--key=${options.key}`] : []),
    ]
    : [];
  return await startServerProcess({
    command,
    args: (port) => [
      ...tls,
      `127.0.0.1:${port}`,
      `127.0.0.1:${options.targetPort}`,
    ],
  });
}
