/**
 * Load, by hand: 1,000 concurrent TLS flows in one process, each echoing
 * 1 MiB of random bytes verified by SHA-256 on both sides, against our
 * server (`serve()` + `acceptTls`) and against `Deno.listenTls`; then 1,000
 * concurrent `resolve()` calls with Happy Eyeballs candidates. Prints wall
 * time, peak RSS and memory per connection; exits with status 1 on any loss.
 *
 *   ulimit -n 65536   # 1,000 TLS flows over loopback hold ~2,000 descriptors
 *   deno run -A stress/load.ts [--quick] [--flows N] [--bytes N] [--only tls|deno|storm]
 *
 * `--quick` is the bounded form CI runs (50 flows × 256 KiB, 200 resolves;
 * tests/reliability_load_test.ts).
 *
 * @module
 */

import {
  describeReport,
  type LoadReport,
  resolveStorm,
  tlsEcho,
} from "./load_lib.ts";

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const quick = Deno.args.includes("--quick");
const flows = Number(flag("--flows") ?? (quick ? 50 : 1000));
const bytes = Number(flag("--bytes") ?? (quick ? 256 * 1024 : 1024 * 1024));
const storm = Number(flag("--resolves") ?? (quick ? 200 : 1000));
const only = flag("--only");

// Descriptors: each TLS flow over loopback is two sockets in this process.
const need = 2 * Math.max(flows, storm) + 64;
try {
  const out = new Deno.Command("sh", { args: ["-c", "ulimit -n"] })
    .outputSync();
  const limit = Number(new TextDecoder().decode(out.stdout).trim());
  if (Number.isFinite(limit) && limit < need) {
    console.error(
      `ulimit -n is ${limit}, ${need} needed: run \`ulimit -n 65536\` first`,
    );
    Deno.exit(2);
  }
} catch {
  // No shell: try anyway.
}

/** Open file descriptors of this process (Linux), or -1. */
function openFds(): number {
  try {
    const fds = [...Deno.readDirSync("/proc/self/fd")].map((e) => {
      try {
        return Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      } catch {
        return "?";
      }
    });
    if (Deno.args.includes("--list-fds")) console.log(fds.sort().join(" "));
    return fds.length;
  } catch {
    return -1;
  }
}
// A small round first: the runtime allocates a few descriptors once, lazily
// (a Unix socket pair appears on the first TLS round and stays).
await tlsEcho({ flows: 2, bytes: 1000, server: "mimic" });
await tlsEcho({ flows: 2, bytes: 1000, server: "deno" });
await resolveStorm({ count: 2, dualStack: true });
await new Promise((ok) => setTimeout(ok, 100));
const fdsBefore = openFds();

const log = (line: string) => console.log(line);
const reports: LoadReport[] = [];
if (only === undefined || only === "tls") {
  console.log(`TLS echo: ${flows} flows × ${bytes} bytes, our server`);
  reports.push(await tlsEcho({ flows, bytes, server: "mimic", log }));
  console.log(describeReport(reports.at(-1)!));
}
if (only === undefined || only === "deno") {
  console.log(`TLS echo: ${flows} flows × ${bytes} bytes, Deno.listenTls`);
  reports.push(await tlsEcho({ flows, bytes, server: "deno", log }));
  console.log(describeReport(reports.at(-1)!));
}
if (only === undefined || only === "storm") {
  for (const dualStack of [false, true]) {
    console.log(`resolve() storm: ${storm} concurrent`);
    reports.push(await resolveStorm({ count: storm, dualStack, log }));
    console.log(describeReport(reports.at(-1)!));
  }
}
await new Promise((ok) => setTimeout(ok, 100));
const fdsAfter = openFds();
console.log(`open file descriptors: ${fdsBefore} before, ${fdsAfter} after`);
if (fdsAfter > fdsBefore) {
  console.error(`FAILED: ${fdsAfter - fdsBefore} descriptors left open`);
  Deno.exit(1);
}
const lost = reports.filter((r) => r.failed > 0 || r.errors.length > 0);
if (lost.length > 0) {
  console.error(`FAILED: ${lost.map((r) => r.scenario).join("; ")}`);
  Deno.exit(1);
}
console.log("zero loss; every descriptor closed");
