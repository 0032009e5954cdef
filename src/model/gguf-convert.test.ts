// The converter against llama.cpp's own: brown-moe converted here is the shipped file (written by
// llama.cpp's convert_hf_to_gguf.py) byte for byte; models of all four architectures convert and read
// back as the same model (config, tokenizer ids, greedy tokens); what the converter cannot write
// faithfully is refused with one clear error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { sharedPath, SHARED_DIR } from "../testing/shared.js";
import { convertToGguf, defaultModelName, sizeLabel } from "./gguf-convert.js";
import { GgufFile } from "./gguf.js";
import { GgufModel } from "./gguf-model.js";
import { initModel } from "./init-model.js";
import { readModelConfig } from "./config.js";
import { TextTokenizer } from "./tokenizer.js";
import { Engine } from "../runtime/engine.js";

const HF = sharedPath("models/brown-moe");
const SHIPPED = sharedPath("models/brown-moe-gguf");
const tmp = mkdtempSync(path.join(tmpdir(), "distmoe-convert-"));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

// The shipped files' general.name is "Conv": llama.cpp titles the name of the directory it converts,
// and those files were converted from a copy of brown-moe in a directory of that name.
const SHIPPED_NAME = "Conv";

for (const outtype of ["bf16", "q8_0"] as const) {
  test(`brown-moe --outtype ${outtype} is llama.cpp's brown-moe-${outtype}.gguf byte for byte`, { skip: HF.skip || SHIPPED.skip }, () => {
    const out = path.join(tmp, `brown-${outtype}.gguf`);
    const s = convertToGguf(HF.path, out, { outtype, name: SHIPPED_NAME });
    assert.deepEqual(s.types, outtype === "bf16" ? { BF16: 30, F32: 13 } : { Q8_0: 30, F32: 13 });
    const ours = readFileSync(out), theirs = readFileSync(path.join(SHIPPED.path, `brown-moe-${outtype}.gguf`));
    assert.equal(ours.length, theirs.length);
    assert.ok(ours.equals(theirs), `first difference at byte ${ours.findIndex((b, i) => b !== theirs[i])}`);
  });
}

test("--outtype auto (the default) is the checkpoint's own 16-bit type: bf16 for brown-moe", { skip: HF.skip || SHIPPED.skip }, () => {
  const out = path.join(tmp, "brown-auto.gguf");
  assert.deepEqual(convertToGguf(HF.path, out, { outtype: "auto", name: SHIPPED_NAME }).types, { BF16: 30, F32: 13 });
  assert.ok(readFileSync(out).equals(readFileSync(path.join(SHIPPED.path, "brown-moe-bf16.gguf"))));
});

test("without a name the converter titles the directory's: only general.name differs from the shipped file, key for key and tensor for tensor", { skip: HF.skip || SHIPPED.skip }, () => {
  assert.equal(defaultModelName(HF.path), "Brown Moe");
  const out = path.join(tmp, "brown-default.gguf");
  convertToGguf(HF.path, out, { outtype: "q8_0" });
  const a = GgufFile.open(out), b = GgufFile.open(path.join(SHIPPED.path, "brown-moe-q8_0.gguf"));
  try {
    assert.deepEqual([...a.header.metadata.keys()], [...b.header.metadata.keys()]);
    for (const [k, v] of b.header.metadata) if (k !== "general.name") assert.deepEqual(a.header.metadata.get(k), v, k);
    assert.equal(a.header.metadata.get("general.name"), "Brown Moe");
    assert.deepEqual(a.header.tensors.map((t) => [t.name, t.dims, t.type, t.bytes]), b.header.tensors.map((t) => [t.name, t.dims, t.type, t.bytes]));
    const bytesOf = (f: GgufFile, t: { offset: number; bytes: number }) => readFileSync(f.path).subarray(t.offset, t.offset + t.bytes);
    for (let i = 0; i < a.header.tensors.length; i++) assert.ok(bytesOf(a, a.header.tensors[i]!).equals(bytesOf(b, b.header.tensors[i]!)), a.header.tensors[i]!.name);
  } finally {
    a.close();
    b.close();
  }
});

test("size labels as gguf-py writes them", () => {
  assert.equal(sizeLabel(15_476_992, 2_894_080, 1_572_864, 8), "8x4.5M");
  assert.equal(sizeLabel(734e6, 0, 0, 0), "734M");
  assert.equal(sizeLabel(950, 0, 0, 0), "1.0K");
  assert.equal(sizeLabel(125, 0, 0, 0), "0.12K"); // Python rounds the exact tie 0.125 to even, toFixed up
  assert.equal(sizeLabel(7_241_732_096, 0, 0, 0), "7.2B");
});

const ARCHS = [
  { arch: "MixtralForCausalLM" },
  { arch: "Qwen2MoeForCausalLM", sharedFfn: 48 },
  { arch: "OlmoeForCausalLM", kvHeads: 4 },
  { arch: "Qwen3MoeForCausalLM", normTopK: true },
];

for (const spec of ARCHS) {
  test(`${spec.arch}: converted, the GGUF file reads back as the same model (config, tokenizer ids, greedy tokens)`, async () => {
    const dir = path.join(tmp, spec.arch);
    initModel({ ...spec, out: dir, layers: 2, hidden: 64, heads: 4, experts: 4, topK: 2, fileDType: "bf16", seed: 3, attentionBias: spec.arch === "Qwen3MoeForCausalLM" });
    const notes: string[] = [];
    convertToGguf(dir, `${dir}.gguf`, { outtype: "f32", log: (m) => notes.push(m) });
    assert.ok(notes.some((n) => /written as "gpt-2"/.test(n)), "the byte-level tokenizer's pre-tokenizer is named by its regex");
    const g = GgufModel.open(`${dir}.gguf`);
    const ours = g.tokenizer();
    try {
      const hf = readModelConfig(dir);
      // OlmoeModel writes an RMSNorm epsilon of 1e-5 whatever the config says (llama.cpp's olmoe reads it from there)
      assert.deepEqual({ ...g.config, rmsEps: 0 }, { ...hf, rmsEps: 0 });
      assert.equal(g.config.rmsEps, spec.arch === "OlmoeForCausalLM" ? 1e-5 : hf.rmsEps);
    } finally {
      g.close();
    }
    const theirs = TextTokenizer.load(dir);
    const lines = readFileSync(path.join(SHARED_DIR, "corpus/brown/valid.txt"), "utf8").split("\n").slice(0, 200);
    for (const line of [...lines, "  two  spaces\tand ünïcödé ✓ 🙂 <s> </s>", ""]) assert.deepEqual(ours.encode(line), theirs.encode(line), JSON.stringify(line));
    assert.equal(ours.chatTemplate, theirs.chatTemplate);
    const greedy = async (model: string) => {
      const e = Engine.load(model, { dtype: "f32", threads: 1 });
      try {
        return (await e.generate(e.tokenizer.encode("The jury said"), { maxTokens: 10, temperature: 0 })).tokens;
      } finally {
        e.close();
      }
    };
    assert.deepEqual(await greedy(`${dir}.gguf`), await greedy(dir));
  });
}

test("what llama.cpp's GGUF cannot hold, or the directory does not say, is refused with one clear error", () => {
  const base = path.join(tmp, "refuse");
  const fresh = (name: string, o: Record<string, unknown> = {}) => {
    const dir = `${base}-${name}`;
    initModel({ arch: "Qwen2MoeForCausalLM", out: dir, layers: 2, hidden: 64, heads: 4, experts: 4, topK: 2, sharedFfn: 48, ...o });
    return dir;
  };
  const refuse = (dir: string, re: RegExp) => assert.throws(() => convertToGguf(dir, `${dir}.gguf`, { outtype: "bf16" }), re);
  refuse(fresh("norm", { normTopK: true }), /norm_topk_prob is true, but llama.cpp's qwen2moe always leaves the top-k weights as they are/);
  refuse(fresh("dense", { denseLayers: [1], denseFfn: 96 }), /dense MLP .* no tensors in llama.cpp's qwen2moe/);
  refuse(path.join(tmp, "nowhere"), /config\.json: cannot read/);
  // the output named as one of the inputs: refused before anything is read or written, the checkpoint left as it was
  const own = fresh("own"), weights = path.join(own, "model.safetensors"), before = readFileSync(weights);
  assert.throws(() => convertToGguf(own, weights, { outtype: "bf16" }), /must be named \*\.gguf/);
  assert.ok(readFileSync(weights).equals(before));
  const olmoe = `${base}-olmoe`;
  initModel({ arch: "OlmoeForCausalLM", out: olmoe, layers: 1, hidden: 64, heads: 4, kvHeads: 2, experts: 2, topK: 1 });
  refuse(olmoe, /2 key\/value heads for 4 query heads: llama\.cpp's olmoe .* no grouped-query attention/);
  const noTok = fresh("notok");
  rmSync(path.join(noTok, "tokenizer.json"));
  refuse(noTok, /no tokenizer\.model and no tokenizer\.json/);
  // a tokenizer or config that is a device, not a file: refused, not read forever
  const endless = fresh("endless");
  rmSync(path.join(endless, "tokenizer.json"));
  symlinkSync("/dev/zero", path.join(endless, "tokenizer.json"));
  refuse(endless, /tokenizer\.json: cannot read \(not a regular file\)/);
  rmSync(path.join(endless, "config.json"));
  symlinkSync("/dev/zero", path.join(endless, "config.json"));
  refuse(endless, /config\.json: cannot read \(not a regular file\)/);
  const odd = fresh("odd");
  const cfg = JSON.parse(readFileSync(path.join(odd, "config.json"), "utf8"));
  writeFileSync(path.join(odd, "config.json"), JSON.stringify({ ...cfg, num_experts: 8 }));
  refuse(odd, /mlp\.gate\.weight has shape \[4, 64\]; config\.json implies \[8, 64\]/);
  const fewer = fresh("fewer");
  writeFileSync(path.join(fewer, "config.json"), JSON.stringify({ ...cfg, num_experts: 2, num_experts_per_tok: 1 }));
  refuse(fewer, /experts\.2\.down_proj\.weight is not part of this Qwen2MoeForCausalLM configuration/);
});
