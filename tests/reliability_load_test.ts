// Reliability: load, bounded for CI (stress/load.ts runs 1,000 flows by
// hand). Concurrent TLS flows over loopback TCP, our client to our server
// (serve() + acceptTls) and to Deno.listenTls, each echoing random bytes
// verified by SHA-256 on both sides; then concurrent resolve() calls with
// Happy Eyeballs candidates. Zero loss; Deno's sanitizers (on) check that
// every resource is closed at the end.
import assert from "node:assert/strict";
import {
  describeReport,
  type LoadReport,
  resolveStorm,
  tlsEcho,
} from "../stress/load_lib.ts";

function check(report: LoadReport): void {
  console.log(describeReport(report));
  assert.deepEqual(report.errors, []);
  assert.equal(report.ok, report.flows, "zero loss");
}

for (const server of ["mimic", "deno"] as const) {
  Deno.test(`load: 50 concurrent TLS flows × 256 KiB echoed, our client → ${server} server`, async () => {
    check(await tlsEcho({ flows: 50, bytes: 256 * 1024, server }));
  });
}

Deno.test("load: 200 concurrent resolve() with Happy Eyeballs candidates", async () => {
  check(await resolveStorm({ count: 200 }));
  check(await resolveStorm({ count: 200, dualStack: true }));
});
