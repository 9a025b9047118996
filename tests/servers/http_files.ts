/**
 * A `Deno.serve` file server on a free loopback port (plain HTTP or TLS) for
 * the `http_get` tests, plus a raw listener for close-delimited bodies
 * (which `Deno.serve` never sends).
 *
 * Routes, for every `name` in `files`:
 *
 * - `GET /files/<name>`: the bytes, with a `Content-Length`;
 * - `GET /chunked/<name>`: the bytes from a `ReadableStream`, so
 *   `Transfer-Encoding: chunked`, in pieces of uneven sizes;
 * - `GET /redirect/<status>?to=<url>`: `<status>` with `Location: <url>`
 *   (relative or absolute, to another server too);
 * - `GET /chain/<n>/<name>`: `n` redirects (307), then the file;
 * - `GET /loop/<n>`: a redirect to `/loop/<n+1>`, forever;
 * - `GET /status/<code>`: that status, with a short text body;
 * - anything else: 404.
 *
 * On `rawPort`, `GET /files/<name>` is answered `HTTP/1.1 200` with
 * `Connection: close` and no length: the body ends when the connection does.
 *
 * @module
 */

/** A running server: its ports, and how to stop it. */
export interface HttpFilesServer {
  /** The `Deno.serve` port. */
  port: number;
  /** The port of the raw server sending close-delimited bodies. */
  rawPort: number;
  /** Stops both servers and waits for them. */
  close(): Promise<void>;
}

/** Options of {@linkcode startHttpFiles}. */
export interface HttpFilesOptions {
  /** The files, by name. */
  files: Record<string, Uint8Array<ArrayBuffer>>;
  /** A PEM certificate chain: serve HTTPS (on both ports). */
  cert?: string;
  /** The PEM key of `cert`. */
  key?: string;
}

const PIECES = [1, 7, 100, 1000, 4096, 16384, 65536];

function chunks(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller): void {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      const size = PIECES[i++ % PIECES.length];
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

function handle(
  request: Request,
  files: Record<string, Uint8Array<ArrayBuffer>>,
): Response {
  const url = new URL(request.url);
  const parts = url.pathname.split("/").slice(1).map(decodeURIComponent);
  const octets = { "content-type": "application/octet-stream" };
  if (parts[0] === "files" && parts.length === 2 && parts[1] in files) {
    return new Response(files[parts[1]], { headers: octets });
  }
  if (parts[0] === "chunked" && parts.length === 2 && parts[1] in files) {
    return new Response(chunks(files[parts[1]]), { headers: octets });
  }
  if (parts[0] === "redirect" && /^30[0-9]$/.test(parts[1] ?? "")) {
    const to = url.searchParams.get("to") ?? "/";
    return new Response(`see ${to}\n`, {
      status: Number(parts[1]),
      headers: { location: to },
    });
  }
  if (parts[0] === "loop" && /^\d+$/.test(parts[1] ?? "")) {
    return new Response(null, {
      status: 302,
      headers: { location: `/loop/${Number(parts[1]) + 1}` },
    });
  }
  if (
    parts[0] === "chain" && /^\d+$/.test(parts[1] ?? "") && parts.length === 3
  ) {
    const n = Number(parts[1]);
    if (n === 0) {
      return parts[2] in files
        ? new Response(files[parts[2]], { headers: octets })
        : new Response("not found\n", { status: 404 });
    }
    const location = `/chain/${n - 1}/${encodeURIComponent(parts[2])}`;
    return new Response(null, { status: 307, headers: { location } });
  }
  if (parts[0] === "status" && /^[1-5]\d\d$/.test(parts[1] ?? "")) {
    return new Response(`status ${parts[1]}\n`, { status: Number(parts[1]) });
  }
  return new Response("not found\n", { status: 404 });
}

async function writeAll(conn: Deno.Conn, p: Uint8Array): Promise<void> {
  for (let at = 0; at < p.length;) at += await conn.write(p.subarray(at));
}

/** Answers one request on a raw connection with a close-delimited body. */
async function handleRaw(
  conn: Deno.Conn,
  files: Record<string, Uint8Array>,
): Promise<void> {
  try {
    let head = "";
    const buf = new Uint8Array(4096);
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += new TextDecoder().decode(buf.subarray(0, n));
      if (head.length > 65536) return;
    }
    const target = head.split(" ", 2)[1] ?? "/";
    const m = /^\/files\/([^/?]+)$/.exec(target);
    const name = m === null ? undefined : decodeURIComponent(m[1]);
    const enc = new TextEncoder();
    if (name === undefined || !(name in files)) {
      await writeAll(
        conn,
        enc.encode(
          "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nnot found\n",
        ),
      );
      return;
    }
    await writeAll(
      conn,
      enc.encode(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
      ),
    );
    const body = files[name];
    for (let at = 0; at < body.length; at += 10000) {
      await writeAll(conn, body.subarray(at, at + 10000));
    }
    if ("closeWrite" in conn) await conn.closeWrite().catch(() => {});
  } catch {
    // The client went away.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

/**
 * Starts the file server (and its raw sibling) on free loopback ports.
 *
 * @param options The files, and a certificate for HTTPS.
 * @returns The server.
 */
export async function startHttpFiles(
  options: HttpFilesOptions,
): Promise<HttpFilesServer> {
  const { files } = options;
  const tls = options.cert !== undefined && options.key !== undefined
    ? { cert: options.cert, key: options.key }
    : undefined;
  const { promise, resolve } = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    ...tls,
    onListen: ({ port }) => resolve(port),
  }, (request) => handle(request, files));
  const port = await promise;

  const listener: Deno.Listener = tls === undefined
    ? Deno.listen({ hostname: "127.0.0.1", port: 0 })
    : Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tls });
  const rawPort = (listener.addr as Deno.NetAddr).port;
  const handlers = new Set<Promise<void>>();
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const p = handleRaw(conn, files);
        handlers.add(p);
        p.finally(() => handlers.delete(p));
      }
    } catch {
      // The listener was closed.
    }
  })();

  let closed: Promise<void> | undefined;
  return {
    port,
    rawPort,
    close(): Promise<void> {
      closed ??= (async () => {
        listener.close();
        await accepting;
        await Promise.all([...handlers]);
        await server.shutdown();
      })();
      return closed;
    },
  };
}
