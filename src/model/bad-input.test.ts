// Corrupt, truncated or lying model files, impossible configs and unusable tokenizers stop with an
// error that names the file and the problem, before any kernel runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { initModel } from "./init-model.js";
import { SafetensorsFile, safetensorsHeader } from "./safetensors.js";
import { parseModelConfig } from "./config.js";
import { Engine } from "../runtime/engine.js";

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), "distmoe-bad-"));
}

function model(): string {
  const dir = tmp();
  initModel({ arch: "MixtralForCausalLM", out: dir, layers: 1, hidden: 32, heads: 2, experts: 2, topK: 1, seed: 1 });
  return dir;
}

/** A safetensors file whose header is `header` as JSON (or that raw text or those bytes) followed by `dataBytes` zero bytes. */
function rawFile(dir: string, header: unknown, dataBytes: number): string {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = path.join(dir, "x.safetensors");
  writeFileSync(p, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return p;
}

test("safetensors: every kind of broken file is refused with the file and the problem named", () => {
  const dir = tmp();
  try {
    const cases: Array<[string, () => string, RegExp]> = [
      ["shorter than the length prefix", () => (writeFileSync(path.join(dir, "x.safetensors"), Buffer.from([1, 2, 3])), path.join(dir, "x.safetensors")), /shorter than the 8-byte header/],
      ["header length beyond the file", () => { const p = rawFile(dir, {}, 0); const b = readFileSync(p); b.writeBigUInt64LE(1000000n); writeFileSync(p, b); return p; }, /header length 1000000 exceeds the file/],
      ["header not JSON", () => { const p = path.join(dir, "x.safetensors"); const len = Buffer.alloc(8); len.writeBigUInt64LE(5n); writeFileSync(p, Buffer.concat([len, Buffer.from("{oops")])); return p; }, /header is not valid JSON/],
      ["shape disagrees with the byte range", () => rawFile(dir, { a: { dtype: "F32", shape: [2, 3], data_offsets: [0, 16] } }, 16), /needs 24 bytes but data_offsets span 16/],
      ["data beyond the end (truncated)", () => rawFile(dir, { a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8), /data ends at byte 16 .* holds only 8 bytes/],
      ["overlapping tensors", () => rawFile(dir, { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, 12), /overlap/],
      ["unknown dtype", () => rawFile(dir, { a: { dtype: "F7", shape: [1], data_offsets: [0, 1] } }, 1), /unknown dtype "F7"/],
      ["negative shape", () => rawFile(dir, { a: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, 4), /not a list of non-negative integers/],
      ["offsets reversed", () => rawFile(dir, { a: { dtype: "F32", shape: [1], data_offsets: [4, 0] } }, 4), /not a \[begin, end\] byte range/],
      // found by safetensors.fuzz.test.ts
      ["a dtype Object.prototype has", () => rawFile(dir, { a: { dtype: "toString", shape: [1], data_offsets: [0, 4] } }, 4), /unknown dtype "toString"/],
      ["a shape nested too deep to show", () => rawFile(dir, `{"a":{"dtype":"F32","shape":${"[".repeat(20000)}${"]".repeat(20000)},"data_offsets":[0,4]}}`, 4), /shape \(a value nested too deep to show\) is not a list/],
      ["metadata that would set a prototype", () => rawFile(dir, '{"__metadata__":{"__proto__":{"format":"pt"}}}', 0), /__metadata__ .* is not a map of strings/],
      ["metadata that is not strings", () => rawFile(dir, { __metadata__: { step: 1 } }, 0), /__metadata__ \{"step":1\} is not a map of strings/],
      ["a header that is not UTF-8", () => rawFile(dir, Buffer.from([0x7b, 0xff, 0x7d]), 0), /header is not valid JSON \(.*encoded data was not valid/],
    ];
    for (const [what, make, msg] of cases) {
      const p = make();
      assert.throws(() => SafetensorsFile.open(p), (e: Error) => e.message.includes(p) && msg.test(e.message), what);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("safetensors: any tensor name is written and read back, its data 8-aligned", () => {
  const dir = tmp();
  try {
    const p = path.join(dir, "x.safetensors");
    const header = safetensorsHeader([{ name: "__proto__", dtype: "F32", shape: [1] }, { name: "é", dtype: "BF16", shape: [1] }], JSON.parse('{"__proto__":"kept"}') as Record<string, string>);
    assert.equal(header.length % 8, 0);
    writeFileSync(p, Buffer.concat([header, Buffer.alloc(6)]));
    const f = SafetensorsFile.open(p);
    f.close();
    assert.deepEqual([...f.tensors.keys()], ["__proto__", "é"]);
    assert.equal(Object.getPrototypeOf(f.metadata), Object.prototype);
    assert.ok(Object.hasOwn(f.metadata, "__proto__"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a truncated checkpoint is refused when the model loads, naming the file", () => {
  const dir = model();
  try {
    const p = path.join(dir, "model.safetensors");
    truncateSync(p, readFileSync(p).length - 100);
    assert.throws(() => Engine.load(dir, { threads: 1 }), (e: Error) => e.message.includes(p) && /file truncated/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a missing tensor and a mis-shaped tensor are named", () => {
  const dir = model();
  try {
    const p = path.join(dir, "model.safetensors");
    const f = SafetensorsFile.open(p);
    const entries = [...f.tensors.values()];
    const bytes = new Map(entries.map((t) => [t.name, f.read(t.name)]));
    f.close();
    const rewrite = (list: Array<{ name: string; shape: readonly number[] }>) =>
      writeFileSync(p, Buffer.concat([safetensorsHeader(list.map((t) => ({ name: t.name, dtype: "BF16", shape: t.shape }))), ...list.map((t) => bytes.get(t.name)!)]));

    rewrite(entries.filter((t) => t.name !== "model.layers.0.self_attn.k_proj.weight"));
    assert.throws(() => Engine.load(dir, { threads: 1 }), /tensor model\.layers\.0\.self_attn\.k_proj\.weight is missing \(required by MixtralForCausalLM\)/);

    // the same bytes declared with a transposed shape
    const w1 = "model.layers.0.block_sparse_moe.experts.1.w1.weight";
    rewrite(entries.map((t) => (t.name === w1 ? { name: t.name, shape: [...t.shape].reverse() } : t)));
    assert.throws(() => Engine.load(dir, { threads: 1 }), (e: Error) => e.message.includes(`tensor ${w1} has shape [32, 64] but config.json implies [64, 32]`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("configs with impossible dimensions or unsupported features are refused with the key named", () => {
  const good = {
    architectures: ["MixtralForCausalLM"], vocab_size: 300, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, intermediate_size: 128,
  };
  assert.doesNotThrow(() => parseModelConfig(good));
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ architectures: ["LlamaForCausalLM"] }, /LlamaForCausalLM is not supported; supported: MixtralForCausalLM, Qwen2MoeForCausalLM, OlmoeForCausalLM, Qwen3MoeForCausalLM/],
    [{ architectures: undefined }, /no "architectures" entry/],
    [{ num_key_value_heads: 3 }, /num_key_value_heads \(3\) must divide num_attention_heads \(4\)/],
    [{ num_experts_per_tok: 5 }, /num_experts_per_tok \(5\) exceeds num_local_experts \(4\)/],
    [{ hidden_size: -64 }, /hidden_size must be at least 1/],
    [{ hidden_size: 63 }, /hidden_size \(63\) is not a multiple of num_attention_heads/],
    [{ vocab_size: 1.5 }, /vocab_size must be an integer/],
    [{ intermediate_size: undefined }, /missing intermediate_size/],
    [{ rope_scaling: { type: "yarn", factor: 4 } }, /rope_scaling .* is not supported/],
    [{ hidden_act: "gelu" }, /hidden_act "gelu" is not supported/],
    [{ head_dim: 15 }, /head_dim \(15\) must be even/],
    // sizes no real model has, refused before anything is sized from them (a device takes its config from the base station)
    [{ hidden_size: 2 ** 40 }, /hidden_size must be at most 65536, got 1099511627776/],
    [{ num_hidden_layers: 1e9 }, /num_hidden_layers must be at most 1024/],
    [{ num_local_experts: 1e6 }, /num_local_experts must be at most 4096/],
    [{ intermediate_size: 2 ** 21 }, /intermediate_size must be at most 1048576/],
    [{ vocab_size: 2 ** 30 }, /vocab_size must be at most 16777216/],
  ];
  for (const [patch, msg] of bad) assert.throws(() => parseModelConfig({ ...good, ...patch }, "cfg.json"), (e: Error) => e.message.startsWith("cfg.json: ") && msg.test(e.message), JSON.stringify(patch));
});

test("config.json or tokenizer.json that does not parse is named", () => {
  const dir = model();
  try {
    writeFileSync(path.join(dir, "tokenizer.json"), "{ not json");
    assert.throws(() => Engine.load(dir, { threads: 1 }), (e: Error) => e.message.includes(path.join(dir, "tokenizer.json")) && /does not parse/.test(e.message));
    writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify({ model: { type: "NoSuchModel" } }));
    assert.throws(() => Engine.load(dir, { threads: 1 }), (e: Error) => e.message.includes("tokenizer.json") && /not a usable tokenizer/.test(e.message));
    writeFileSync(path.join(dir, "config.json"), "[1, 2");
    assert.throws(() => Engine.load(dir, { threads: 1 }), (e: Error) => e.message.includes(path.join(dir, "config.json")) && /not valid JSON/.test(e.message));
    assert.throws(() => Engine.load(path.join(dir, "nope"), { threads: 1 }), /config\.json: cannot read \(ENOENT\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
