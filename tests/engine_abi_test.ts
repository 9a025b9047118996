// The constants the engine and its binding share (status codes, status
// flags, option tags): wasm/src/abi.rs (the source of truth), the committed
// engine's `mimic_abi(i)` and src/_engine.ts's ENGINE_ABI must be the same
// table, so that a change on one side alone fails here.
import assert from "node:assert/strict";
import {
  checkAbi,
  ENGINE_ABI,
  ENGINE_ABI_END,
  TlsError,
} from "../src/_engine.ts";
import { ENGINE_WASM_BASE64 } from "../src/_engine_wasm.ts";

const ABI_RS = new URL("../wasm/src/abi.rs", import.meta.url);

/** `[name, value]` of wasm/src/abi.rs, in the order of its TABLE. */
async function rustTable(): Promise<[string, number][]> {
  const src = await Deno.readTextFile(ABI_RS);
  const values = new Map<string, number>();
  for (const m of src.matchAll(/^pub const (\w+): i32 = (-?\d+);$/gm)) {
    values.set(m[1], Number(m[2]));
  }
  const table = src.match(/^pub const TABLE: \[i32; (\d+)\] = \[([^\]]*)\];$/m);
  assert.ok(table, "wasm/src/abi.rs has no TABLE");
  const names = table[2].split(",").map((s) => s.trim()).filter((s) => s);
  assert.equal(names.length, Number(table[1]));
  return names.map((n) => {
    assert.ok(values.has(n), `${n} of TABLE has no value in abi.rs`);
    return [n, values.get(n)!];
  });
}

/** The committed engine's exports, instantiated with inert imports. */
async function engineExports(): Promise<WebAssembly.Exports> {
  const bytes = Uint8Array.from(
    atob(ENGINE_WASM_BASE64),
    (c) => c.charCodeAt(0),
  );
  const module = await WebAssembly.compile(bytes);
  const env: Record<string, () => number> = {};
  for (const i of WebAssembly.Module.imports(module)) {
    assert.equal(i.module, "env");
    env[i.name] = () => 0;
  }
  const instance = await WebAssembly.instantiate(module, { env });
  return instance.exports;
}

Deno.test("abi: the binding's table is wasm/src/abi.rs's", async () => {
  assert.deepEqual(ENGINE_ABI.map(([n, v]) => [n, v]), await rustTable());
  // Every value is distinct within its group, none is the end marker.
  for (const prefix of ["ERR_", "STATUS_", "TAG_"]) {
    const vs = ENGINE_ABI.filter(([n]) => n.startsWith(prefix)).map((e) =>
      e[1]
    );
    assert.equal(new Set(vs).size, vs.length, prefix);
  }
  assert.ok(ENGINE_ABI.every(([, v]) => v !== ENGINE_ABI_END));
});

Deno.test("abi: the committed engine exports the same table", async () => {
  const x = await engineExports();
  const abi = x.mimic_abi as (i: number) => number;
  const got = ENGINE_ABI.map((_, i) => abi(i));
  assert.deepEqual(got, ENGINE_ABI.map(([, v]) => v));
  assert.equal(abi(ENGINE_ABI.length), ENGINE_ABI_END);
  assert.equal(abi(0xffffffff), ENGINE_ABI_END);
  // The old single-purpose export is gone: one export for every constant.
  assert.equal(x.mimic_status_flag, undefined);
  checkAbi({ mimic_abi: abi });
});

Deno.test("abi: checkAbi refuses an engine that differs in any entry", () => {
  const values = ENGINE_ABI.map(([, v]) => v);
  const engine = (table: number[]) => ({
    mimic_abi: (i: number): number => table[i] ?? ENGINE_ABI_END,
  });
  checkAbi(engine(values));
  ENGINE_ABI.forEach(([name, value], i) => {
    const changed = values.slice();
    changed[i] = value + 64;
    assert.throws(
      () => checkAbi(engine(changed)),
      (e: unknown) =>
        e instanceof TlsError && e.code === "EngineFailure" &&
        e.message.includes(`${name} (ABI entry ${i}) is ${value + 64}`),
    );
  });
  // One entry fewer, one more.
  assert.throws(
    () => checkAbi(engine(values.slice(0, -1))),
    (e: unknown) =>
      e instanceof TlsError &&
      e.message.includes(`it has no ${ENGINE_ABI.at(-1)![0]}`),
  );
  assert.throws(
    () => checkAbi(engine([...values, 99])),
    (e: unknown) =>
      e instanceof TlsError && e.message.includes("more than the"),
  );
});
