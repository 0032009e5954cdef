#!/usr/bin/env node
// Records llama.cpp's own tokenization (its llama-tokenize tool) of sample text from the shipped corpus
// with two GGUF vocabularies, as the fixture src/model/gguf-tokenizer.test.ts compares distmoe's GGUF
// tokenizer to (CI has no llama.cpp build; this script is how the fixture is regenerated):
//   - llama/SentencePiece: ../shared/models/brown-moe-gguf/brown-moe-q8_0.gguf (written by llama.cpp's converter)
//   - gpt2/byte-level BPE: a tiny Qwen3-MoE with brown-moe's vocabulary carried over to bytes
//     (src/testing/byte-bpe-model.ts), converted by `distmoe convert`
// llama-tokenize is built from the llama.cpp source that node-llama-cpp 3.21.1 bundles (CPU only):
//   mkdir -p /tmp/nlc && cd /tmp/nlc && npm pack node-llama-cpp@3.21.1 && tar xzf node-llama-cpp-3.21.1.tgz
//   git clone -q package/llama/gitRelease.bundle ~/.cache/distmoe/llama.cpp-3.21.1/src
//   cmake -S ~/.cache/distmoe/llama.cpp-3.21.1/src -B ~/.cache/distmoe/llama.cpp-3.21.1/build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
//   cmake --build ~/.cache/distmoe/llama.cpp-3.21.1/build --target llama-tokenize -j 2
// Usage (after `npm run build`): node scripts/llama-tokenize-fixture.mjs [--llama-tokenize PATH]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { SHARED_DIR } = await import(path.join(ROOT, "dist/testing/shared.js"));
const { writeByteBpeModel } = await import(path.join(ROOT, "dist/testing/byte-bpe-model.js"));
const { convertToGguf } = await import(path.join(ROOT, "dist/model/gguf-convert.js"));
const { tokenizeSamples, FIXTURE } = await import(path.join(ROOT, "dist/model/llama-tokenize-fixture.js"));

const args = process.argv.slice(2);
const at = args.indexOf("--llama-tokenize");
const tool = at >= 0 ? args[at + 1] : process.env.LLAMA_TOKENIZE ?? path.join(homedir(), ".cache/distmoe/llama.cpp-3.21.1/build/bin/llama-tokenize");

const version = spawnSync(tool, ["--version"], { encoding: "utf8" });
if (version.error || version.status !== 0) {
  console.error(`llama-tokenize not runnable at ${tool} (${version.error?.message ?? version.stderr.trim()}); build it as the header of this script says, or pass --llama-tokenize PATH`);
  process.exit(1);
}

const texts = tokenizeSamples(readFileSync(path.join(SHARED_DIR, "corpus/brown/valid.txt"), "utf8"));
const tmp = mkdtempSync(path.join(tmpdir(), "llama-tokenize-fixture-"));
try {
  const bpeDir = path.join(tmp, "byte-bpe");
  writeByteBpeModel(bpeDir, path.join(SHARED_DIR, "models/brown-moe/tokenizer.json"));
  convertToGguf(bpeDir, `${bpeDir}.gguf`, { outtype: "bf16" });
  const models = { "brown-moe-q8_0.gguf": path.join(SHARED_DIR, "models/brown-moe-gguf/brown-moe-q8_0.gguf"), "byte-bpe.gguf": `${bpeDir}.gguf` };
  const ids = {};
  for (const [name, file] of Object.entries(models)) {
    ids[name] = texts.map((text) => {
      // argv carries the text exactly; llama-tokenize parses special tokens and adds BOS as the file says, by default
      const r = spawnSync(tool, ["-m", file, "-p", text, "--ids", "--log-disable"], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`llama-tokenize failed on ${JSON.stringify(text.slice(0, 60))}: ${r.stderr.trim().slice(-300)}`);
      return JSON.parse(r.stdout.trim().split("\n").pop());
    });
    console.error(`${name}: ${texts.length} texts, ${ids[name].flat().length} ids`);
  }
  const out = path.join(ROOT, FIXTURE);
  writeFileSync(out, JSON.stringify({ llamaCpp: version.stdout.trim().split("\n")[0] + " (node-llama-cpp 3.21.1's bundled source)", tool: "llama-tokenize -m FILE -p TEXT --ids", texts, ids }) + "\n");
  console.error(`wrote ${out}`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
