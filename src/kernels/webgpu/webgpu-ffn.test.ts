// The WebGPU expert FFN in a real headless chromium (its adapter here is SwiftShader's, on the CPU) against
// the wasm kernels' FFN on the same weights: f32, f16 and bf16 weights, several experts and row counts in
// one batch. The page loads this folder's compiled modules from a loopback server (a secure context).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { WasmBackend } from "../wasm/wasm-backend.js";
import { f32ToF16 } from "../weight-layout.js";
import { f16ToF32 } from "../ggml-blocks.js";
import type { WeightDType } from "../backend.js";
import { Random } from "../../util/random.js";
import { relErr } from "../../testing/rel-err.js";
import { browserSkip, launchBrowser } from "../../testing/browser.js";

const MODULES = ["gpu-api.js", "ffn-shader.js", "webgpu-ffn.js"];
// widths that are multiples of 8 (as 16-bit rows must be) but not of the shaders' tiles
const HIDDEN = 72, FF = 136;
/** rows of each call in a batch, and the expert each computes: edges of the 8-row tiles, one expert twice */
const CALLS = [{ rows: 1, expert: 0 }, { rows: 9, expert: 1 }, { rows: 37, expert: 0 }];

/** A loopback server for this folder's compiled modules and an empty page to load them in. */
async function serveModules(): Promise<{ origin: string; close(): Promise<void> }> {
  const files = new Map(MODULES.map((f) => [`/${f}`, readFileSync(new URL(f, import.meta.url))]));
  const server = http.createServer((req, res) => {
    const body = req.url === "/" ? "<!doctype html><title>WebGPU FFN</title>" : files.get(req.url ?? "");
    if (body === undefined) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": req.url === "/" ? "text/html" : "text/javascript" }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((r) => server.close(() => r())) };
}

/** f32 values as f16 would hold them (the wasm kernels hold f16 weights as these f32s). */
const halfValues = (v: Float32Array) => v.map((x) => f16ToF32(f32ToF16(x)));

const base64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");

/** Two experts' weights (as the GPU gets them: `dtype` bytes) and the wasm kernels' outputs for CALLS. */
function reference(dtype: "f32" | "f16" | "bf16", seed: number) {
  const be = new WasmBackend({ threads: 1 });
  try {
    const rng = new Random(seed);
    // the wasm kernels hold f16 weights as f32: the same values, which the GPU gets as f16
    const held: WeightDType = dtype === "f16" ? "f32" : dtype;
    const experts = [0, 1].map(() => {
      const [gate, up, down] = ([[FF, HIDDEN], [FF, HIDDEN], [HIDDEN, FF]] as const).map(([rows, cols]) => {
        let v = rng.fillNormal(new Float32Array(rows * cols), 0.2);
        if (dtype === "f16") v = halfValues(v);
        const w = be.allocWeight(held, rows, cols);
        be.setWeight(w, v);
        const data = dtype === "f16" ? new Uint8Array(new Uint16Array(v.map(f32ToF16)).buffer) : be.weightData(w);
        return { w, gpu: { dtype, rows, cols, bytes: data.byteLength, data: base64(data) } };
      });
      return { gate: gate!, up: up!, down: down! };
    });
    const calls = CALLS.map(({ rows, expert }) => {
      const input = rng.fillNormal(new Float32Array(rows * HIDDEN), 1);
      const x = be.alloc(input.byteLength), y = be.alloc(input.byteLength);
      be.f32(x).set(input);
      const e = experts[expert]!;
      be.ffn(y, x, { gate: e.gate.w, up: e.up.w, down: e.down.w }, rows);
      return { rows, expert, input: base64(new Uint8Array(input.buffer)), want: be.f32(y).slice() };
    });
    return { experts: experts.map((e) => [e.gate.gpu, e.up.gpu, e.down.gpu]), calls };
  } finally {
    be.close();
  }
}

test("the WebGPU expert FFN gives the wasm kernels' outputs (f32, f16, bf16 weights; calls of 1, 9 and 37 rows in one batch); a lost device fails a batch, never hangs it", { skip: browserSkip }, async (t) => {
  const server = await serveModules();
  const browser = await launchBrowser({ webgpu: true });
  try {
    const page = await browser.context.newPage();
    await page.goto(`${server.origin}/`);
    const adapter = await page.evaluate(async () => ((await (navigator as unknown as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu?.requestAdapter()) ? "yes" : null));
    if (!adapter) return t.skip("the launched chromium offers no WebGPU adapter");
    const dtypes = ["f32", "f16", "bf16"] as const;
    const refs = dtypes.map((dtype, i) => reference(dtype, 15 + i));
    // one device for every batch (a software adapter builds each pipeline in seconds); closed, it is lost
    const { outputs, lost } = await page.evaluate(async (batches) => {
      const url = "/webgpu-ffn.js";
      const { WebGpuFfn } = await import(url);
      const bytes = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
      const ffn = await WebGpuFfn.open((navigator as unknown as { gpu: unknown }).gpu, (line: string) => console.log(line));
      const outputs: number[][][] = [];
      let w: unknown;
      for (const { experts, calls } of batches) {
        const held = experts.map((ws) => ffn.hold(...ws.map((m) => ({ ...m, data: bytes(m.data) }))));
        const ys: Float32Array[] = await ffn.run(calls.map((c) => ({ w: held[c.expert], rows: c.rows, input: new Float32Array(bytes(c.input).buffer) })));
        outputs.push(ys.map((y) => [...y]));
        w = held[0];
      }
      ffn.close();
      const lost = await ffn.run([{ w, rows: 1, input: new Float32Array(72) }]).then(() => "computed", (e: Error) => e.message);
      return { outputs, lost };
    }, refs.map((r) => ({ experts: r.experts, calls: r.calls.map(({ rows, expert, input }) => ({ rows, expert, input })) })));
    refs.forEach((ref, i) =>
      ref.calls.forEach((c, j) => {
        const err = relErr(new Float32Array(outputs[i]![j]!), c.want);
        assert.ok(err < 1e-5, `${dtypes[i]}, ${c.rows} rows: relative error ${err}`);
      }),
    );
    assert.match(lost, /the WebGPU device was lost/);
  } finally {
    await browser.close();
    await server.close();
  }
});
