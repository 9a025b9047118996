/**
 * The portable suite's entry for browsers, bundled by `deno bundle
 * --platform browser`: the pipe cases, then TLS over the browser's own
 * WebSocket (`src/websocket.ts`) to websockify and `openssl s_server`. The
 * page that loads it sets `globalThis.PORTABLE_CONFIG` first; the results
 * go to the console and, as JSON, to `POST /report` on the page's origin.
 *
 * @module
 */

import { empty, resolve } from "../../mod.ts";
import { tls, type TlsFlow } from "../../src/tls.ts";
import { websocket } from "../../src/websocket.ts";
import {
  type Case,
  check,
  getFromOpenssl,
  pipeCases,
  type PortableConfig,
  runCases,
} from "./cases.ts";

const config = (globalThis as { PORTABLE_CONFIG?: PortableConfig })
  .PORTABLE_CONFIG!;
const runtime = (globalThis as { PORTABLE_RUNTIME?: string })
  .PORTABLE_RUNTIME ?? "browser";

const browserCases: Case[] = [
  {
    name: "TLS over a browser WebSocket to websockify and openssl s_server",
    run: async () => {
      check(config.websockifyPort, "no websockify port");
      const flow = await resolve(
        empty.add(tls.endpoint, {
          hostname: "localhost",
          caCerts: [config.ca],
          over: empty.add(websocket.endpoint, {
            url: `ws://127.0.0.1:${config.websockifyPort}`,
            protocols: ["binary"],
          }),
        }),
      ) as TlsFlow;
      check(tls.is(flow), "not a tls flow");
      await getFromOpenssl(flow);
    },
  },
];

let summary;
try {
  summary = await runCases(
    runtime,
    [...pipeCases(config), ...browserCases],
    (line) => console.log(line),
  );
} catch (e) {
  summary = { passed: 0, failed: 1, lines: [`${runtime}: crashed: ${e}`] };
}
await fetch("/report", { method: "POST", body: JSON.stringify(summary) });
