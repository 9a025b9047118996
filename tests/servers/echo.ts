/**
 * A TCP echo server on a free loopback port (`Deno.listen`), for tests: it
 * echoes every byte of every connection, and half-closes when the client
 * does.
 *
 * @module
 */

import type { Server } from "./_util.ts";

export type { Server } from "./_util.ts";

/**
 * Starts the echo server on 127.0.0.1 (or on `hostname`, e.g. `"::1"`).
 *
 * @param hostname The loopback address to listen on.
 * @returns The server; `close` stops listening, closes every connection and
 * waits for them.
 */
export function startEchoServer(hostname = "127.0.0.1"): Server {
  const listener = Deno.listen({ hostname, port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const serve = async (conn: Deno.Conn): Promise<void> => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (let off = 0; off < n;) {
          off += await conn.write(buf.subarray(off, n));
        }
      }
      await conn.closeWrite();
    } catch {
      // The client went away.
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch {
        // Already closed by close().
      }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const task = serve(conn);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch {
      // The listener was closed.
    }
  })();
  let closed: Promise<void> | undefined;
  return {
    port: listener.addr.port,
    close(): Promise<void> {
      closed ??= (async () => {
        listener.close();
        await accepting;
        for (const conn of conns) {
          try {
            conn.close();
          } catch {
            // Already closed.
          }
        }
        await Promise.all(tasks);
      })();
      return closed;
    },
  };
}

/** A one-connection TLS echo server: {@linkcode startTlsEchoOnce}. */
export interface TlsEchoOnce {
  /** The loopback port it listens on. */
  port: number;
  /** Settles once the one connection was echoed and closed. */
  served: Promise<void>;
}

/**
 * Starts a TLS echo server by Deno's own TLS (`Deno.listenTls`, independent
 * of ours) on 127.0.0.1, for one connection: it stops listening once that
 * connection is accepted, echoes it to its end, and closes it.
 *
 * @param cert The certificate chain, PEM.
 * @param key The private key, PEM.
 * @returns Its port, and when it is done.
 */
export function startTlsEchoOnce(cert: string, key: string): TlsEchoOnce {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
  });
  const served = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      const buf = new Uint8Array(64 * 1024);
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (let off = 0; off < n;) {
          off += await conn.write(buf.subarray(off, n));
        }
      }
    } catch {
      // The client went away.
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port, served };
}
