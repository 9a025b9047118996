/**
 * `git ls-remote <url>` over mimic: lists a repository's references as Git
 * prints them (`<oid>\t<ref>` lines, HEAD and peeled tags included).
 *
 * The Git protocol code (`./_git.ts`) is written once against a
 * {@linkcode Flow}; only the context changes with the URL:
 *
 * - `git://host[:port]/path`: a TCP flow, then the `git-upload-pack` request
 *   line;
 * - `http://` and `https://`: a TCP (or TLS, ALPN `http/1.1`) flow carrying a
 *   hand-written `GET /path/info/refs?service=git-upload-pack` (smart HTTP);
 * - `ssh://[user@]host[:port]/path` and `[user@]host:path`: a subprocess
 *   running `ssh host "git-upload-pack '<path>'"`.
 *
 * ```sh
 * deno run --allow-net --allow-run --allow-read --allow-env \
 *   examples/git_ls_remote.ts git://127.0.0.1:9418/repo.git
 * ```
 *
 * @module
 */

import { type Context, type Flow, opt, req, resolve } from "../mod.ts";
import { processProtocol } from "../src/process.ts";
import { host, path, port, scheme, user } from "../src/uri.ts";
import {
  daemonRequest,
  formatRefs,
  lsRefs,
  lsRefsHttp,
  shellQuote,
} from "./_git.ts";
import {
  eachArg,
  parseTimeout,
  readCaFile,
  runMain,
  UsageError,
} from "./_cli.ts";
import {
  bodyFlow,
  closeQuietly,
  explain,
  httpContext,
  request,
  writeAll,
} from "./_http.ts";

/** Options of {@linkcode lsRemote}. */
export interface LsRemoteOptions {
  /** PEM certificates of the CAs to trust for `https://` (as `GIT_SSL_CAINFO`). */
  caCerts?: string[];
  /**
   * The SSH command, as `GIT_SSH_COMMAND`: run by `sh` when it has quotes or
   * other shell syntax, else split on white space. @default {"ssh"}
   */
  sshCommand?: string;
  /** Extra arguments for `ssh`, before the host (e.g. `["-o", "BatchMode=yes"]`). */
  sshArgs?: string[];
  /** Gives up (and closes the flow) when aborted. */
  signal?: AbortSignal;
}

/**
 * A failure of {@linkcode lsRemote}, naming the step that failed: its
 * message reads `cannot <step> <url>: <reason>`.
 */
export class LsRemoteError extends Error {
  /** What was being done: `parse`, `connect`, `read`. */
  readonly step: "parse" | "connect" | "read";

  /**
   * Makes the error.
   *
   * @param step The step that failed.
   * @param message The message.
   * @param options The cause.
   */
  constructor(
    step: "parse" | "connect" | "read",
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "LsRemoteError";
    this.step = step;
  }
}

/** `host` or `[v6]`, plus `:port` unless it is the default. */
function authority(h: string, p: number, defaultPort: number): string {
  const name = h.includes(":") ? `[${h}]` : h;
  return p === defaultPort ? name : `${name}:${p}`;
}

/** The command and arguments that run `ssh`. */
function sshInvocation(
  command: string,
  args: string[],
): { command: string; args: string[] } {
  if (/^[\w/.,:=@+~-]+(?:\s+[\w/.,:=@+~-]+)*$/.test(command.trim())) {
    const [first, ...rest] = command.trim().split(/\s+/);
    return { command: first, args: [...rest, ...args] };
  }
  // As Git does: let the shell parse the command, and pass ours as "$@".
  return { command: "sh", args: ["-c", `${command} "$@"`, command, ...args] };
}

/**
 * Adds to a context the `process` endpoint that runs `ssh` for an SSH URL.
 *
 * @param ctx The context made by `fromUri`.
 * @param options The SSH command and its extra arguments.
 * @returns The context with a fold for the `process` endpoint.
 */
export function withSsh(
  ctx: Context,
  options: Pick<LsRemoteOptions, "sshCommand" | "sshArgs"> = {},
): Context {
  return ctx.fold(
    processProtocol.endpoint,
    [req(scheme), req(host), req(port), opt(user), req(path)],
    (s, h, p, u, repo) => {
      if (s !== "ssh") return undefined;
      // ssh://host/~user/repo means ~user/repo, as in Git.
      const where = repo.startsWith("/~") ? repo.slice(1) : repo;
      const args = [...(options.sshArgs ?? [])];
      if (p !== 22) args.push("-p", String(p));
      args.push(u === undefined ? h : `${u}@${h}`);
      args.push(`git-upload-pack ${shellQuote(where)}`);
      return sshInvocation(options.sshCommand ?? "ssh", args);
    },
  );
}

/** Closes `flow` when `signal` aborts, so a pending read ends. */
function closeOnAbort(flow: Flow, signal: AbortSignal | undefined): () => void {
  if (signal === undefined) return () => {};
  const onAbort = () => closeQuietly(flow);
  signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

/** Half-closes and waits (at most 2 s) for the peer to end, then closes. */
async function finish(flow: Flow): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((ok) => {
    timer = setTimeout(() => ok(null), 2000);
  });
  try {
    await flow.closeWrite();
    const buf = new Uint8Array(4096);
    while ((await Promise.race([flow.read(buf), late])) !== null) {
      // Drain what the server still says (nothing, usually).
    }
  } catch {
    // The session is over either way.
  } finally {
    clearTimeout(timer);
    closeQuietly(flow);
  }
}

/**
 * Lists the references of the repository at `url`, exactly as
 * `git ls-remote <url>` prints them.
 *
 * @example List a local daemon's references
 * ```ts ignore
 * import { lsRemote } from "./git_ls_remote.ts";
 *
 * console.log(await lsRemote("git://127.0.0.1:9418/repo.git"));
 * ```
 *
 * @param url A `git://`, `http://`, `https://`, `ssh://` or scp-like URL.
 * @param options CAs for HTTPS, the SSH command, a signal.
 * @returns The `<oid>\t<ref>\n` lines.
 * @throws {LsRemoteError} When a step fails; its message names the step.
 */
export async function lsRemote(
  url: string,
  options: LsRemoteOptions = {},
): Promise<string> {
  const { signal } = options;
  let ctx: Context;
  try {
    ctx = httpContext(url, { caCerts: options.caCerts });
  } catch (error) {
    const why = explain(error).replace(/^Cannot parse URL .*?: /, "");
    throw new LsRemoteError("parse", `cannot parse ${url}: ${why}`, {
      cause: error,
    });
  }
  const kind = ctx.get(scheme)!;
  if (!["git", "http", "https", "ssh"].includes(kind)) {
    throw new LsRemoteError(
      "parse",
      `cannot handle ${url}: not a Git URL (use git://, http://, https://, ssh:// or [user@]host:path)`,
    );
  }
  if (kind === "ssh") ctx = withSsh(ctx, options);

  let flow: Flow;
  try {
    flow = await resolve(ctx, { signal });
  } catch (error) {
    throw new LsRemoteError(
      "connect",
      `cannot connect to ${url}: ${explain(error)}`,
      { cause: error },
    );
  }
  const release = closeOnAbort(flow, signal);
  const h = ctx.get(host)!;
  const p = ctx.get(port)!;
  const repo = ctx.get(path) ?? "/";
  let step = "read the references of";
  try {
    if (kind === "git") {
      step = "send the upload-pack request to";
      await writeAll(flow, daemonRequest(repo, authority(h, p, 9418)));
      step = "read the references of";
      const { refs } = await lsRefs(flow);
      await finish(flow);
      return formatRefs(refs);
    }
    if (kind === "ssh") {
      const { refs } = await lsRefs(flow);
      await finish(flow);
      return formatRefs(refs);
    }
    step = "send the info/refs request to";
    const base = repo.endsWith("/") ? repo : `${repo}/`;
    const response = await request(flow, {
      target: `${base}info/refs?service=git-upload-pack`,
      host: authority(h, p, kind === "https" ? 443 : 80),
      headers: { accept: "*/*", "pragma": "no-cache" },
    });
    step = "read the references of";
    if (response.status !== 200) {
      throw new Error(
        `the server answered ${response.status} ${response.reason}`.trim(),
      );
    }
    const type = response.headers.get("content-type") ?? "";
    if (type !== "application/x-git-upload-pack-advertisement") {
      throw new Error(
        `not a smart HTTP Git server (content type ${
          JSON.stringify(type)
        }); dumb HTTP is not supported`,
      );
    }
    const { refs } = await lsRefsHttp(bodyFlow(response.body));
    return formatRefs(refs);
  } catch (error) {
    const why = signal?.aborted ? explain(signal.reason) : explain(error);
    throw new LsRemoteError("read", `cannot ${step} ${url}: ${why}`, {
      cause: error,
    });
  } finally {
    release();
    closeQuietly(flow);
  }
}

const USAGE = `Usage: git_ls_remote.ts [options] <url>

Lists the references of a remote repository, as 'git ls-remote <url>' does.

URLs:
  git://host[:port]/path          the Git daemon protocol, over TCP
  http://host[:port]/path         smart HTTP
  https://host[:port]/path        smart HTTP over TLS
  ssh://[user@]host[:port]/path   SSH (runs ssh ... git-upload-pack '<path>')
  [user@]host:path                SSH, Git's scp-like syntax

Options:
  --ca-file <pem>        trust the CAs in this PEM file for https:// (env: GIT_SSL_CAINFO)
  --ssh-command <cmd>    the ssh command (env: GIT_SSH_COMMAND; default: ssh)
  --ssh-option <opt>     pass '-o <opt>' to ssh (repeatable)
  -i, --identity <file>  pass '-i <file>' to ssh
  --timeout <seconds>    give up after this long (default: 60)
  -h, --help             print this help
`;

async function main(args: string[]): Promise<number> {
  const options: LsRemoteOptions = { sshArgs: [] };
  let caFile = Deno.env.get("GIT_SSL_CAINFO");
  options.sshCommand = Deno.env.get("GIT_SSH_COMMAND") || undefined;
  let timeout = 60;
  const urls: string[] = [];
  for (const [a, next] of eachArg(args)) {
    if (a === "-h" || a === "--help") {
      console.log(USAGE);
      return 0;
    } else if (a === "--ca-file") caFile = next();
    else if (a === "--ssh-command") options.sshCommand = next();
    else if (a === "--ssh-option") options.sshArgs!.push("-o", next());
    else if (a === "-i" || a === "--identity") {
      options.sshArgs!.push("-i", next());
    } else if (a === "--timeout") timeout = parseTimeout(next());
    else if (a.startsWith("-") && a !== "-") {
      throw new UsageError(`unknown option ${a}`);
    } else urls.push(a);
  }
  if (urls.length !== 1) throw new UsageError("expected one URL");
  if (caFile !== undefined && caFile !== "") {
    options.caCerts = await readCaFile(caFile);
  }
  options.signal = AbortSignal.timeout(timeout * 1000);
  const out = await lsRemote(urls[0], options);
  await writeAll(Deno.stdout, new TextEncoder().encode(out));
  return 0;
}

if (import.meta.main) await runMain("git_ls_remote", main);
