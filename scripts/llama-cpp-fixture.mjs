#!/usr/bin/env node
// Records what llama.cpp itself does with GGUF files, as the fixture (src/model/fixtures/llama-cpp.json)
// that src/model/llama-cpp.test.ts holds distmoe to; CI has no llama.cpp build, so this script is how
// the fixture is regenerated:
//   - tokenization (llama-tokenize, special tokens parsed, BOS as the file says) of corpus samples and
//     edge texts, with brown-moe-q8_0.gguf (SentencePiece, written by llama.cpp's converter) and a
//     byte-level BPE vocabulary with merges (src/testing/byte-bpe-model.ts) converted by distmoe;
//   - greedy ids (scripts/llama-greedy.cpp, compiled here against llama.cpp's static libraries) from
//     the shipped brown-moe-bf16.gguf and brown-moe-q8_0.gguf and from small models of all four architectures converted by
//     distmoe (src/testing/converted-models.ts).
// llama.cpp is the source node-llama-cpp 3.21.1 bundles, built by scripts/llama-cpp/build.mjs (the
// same build the speed comparison uses) when it is not in the cache yet.
// Usage: node scripts/llama-cpp-fixture.mjs   (after npm run build)
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureLlamaCppTools } from "./llama-cpp/build.mjs";
import { parseScriptArgs } from "./lib/script-args.mjs";

parseScriptArgs(import.meta.url, { options: {} }); // no options: --help, or a stray one stops before the build

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { SHARED_DIR } = await import(path.join(ROOT, "dist/testing/shared.js"));
const { writeByteBpeModel } = await import(path.join(ROOT, "dist/testing/byte-bpe-model.js"));
const { writeConvertedModels } = await import(path.join(ROOT, "dist/testing/converted-models.js"));
const { convertToGguf } = await import(path.join(ROOT, "dist/model/gguf-convert.js"));
const { tokenizeSamples, FIXTURE, GREEDY_PROMPT, GREEDY_TOKENS } = await import(path.join(ROOT, "dist/model/llama-cpp-fixture.js"));

const { bin, dir: llamaDir } = await ensureLlamaCppTools(["llama-tokenize"]);
const tokenizeTool = bin["llama-tokenize"];

const run = (cmd, argv) => {
  const r = spawnSync(cmd, argv, { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.error || r.status !== 0) throw new Error(`${path.basename(cmd)} ${argv.slice(0, 2).join(" ")} failed: ${r.error?.message ?? r.stderr.trim().slice(-400)}`);
  return r.stdout;
};

const version = run(tokenizeTool, ["--version"]).trim().split("\n")[0] ?? "";
const tmp = mkdtempSync(path.join(tmpdir(), "llama-cpp-fixture-"));
try {
  const greedyTool = path.join(tmp, "llama-greedy");
  const lib = (p) => path.join(llamaDir, "build", p);
  run("g++", ["-O2", "-std=c++17", "-I", path.join(llamaDir, "src/include"), "-I", path.join(llamaDir, "src/ggml/include"), path.join(ROOT, "scripts/llama-greedy.cpp"), "-o", greedyTool,
    lib("src/libllama.a"), lib("ggml/src/libggml.a"), lib("ggml/src/libggml-cpu.a"), lib("ggml/src/libggml-base.a"), "-fopenmp", "-lpthread", "-ldl"]);

  const texts = tokenizeSamples(readFileSync(path.join(SHARED_DIR, "corpus/brown/valid.txt"), "utf8"));
  const bpeDir = path.join(tmp, "byte-bpe");
  writeByteBpeModel(bpeDir, path.join(SHARED_DIR, "models/brown-moe/tokenizer.json"));
  convertToGguf(bpeDir, `${bpeDir}.gguf`, { outtype: "bf16" });
  const vocabs = { "brown-moe-q8_0.gguf": path.join(SHARED_DIR, "models/brown-moe-gguf/brown-moe-q8_0.gguf"), "byte-bpe.gguf": `${bpeDir}.gguf` };
  const ids = {};
  for (const [name, file] of Object.entries(vocabs)) {
    // argv carries each text exactly
    ids[name] = texts.map((text) => JSON.parse(run(tokenizeTool, ["-m", file, "-p", text, "--ids", "--log-disable"]).trim().split("\n").pop()));
    console.error(`${name}: ${texts.length} texts, ${ids[name].flat().length} ids`);
  }

  const models = { "brown-moe-bf16.gguf": path.join(SHARED_DIR, "models/brown-moe-gguf/brown-moe-bf16.gguf"), "brown-moe-q8_0.gguf": vocabs["brown-moe-q8_0.gguf"], ...writeConvertedModels(tmp) };
  const greedy = {};
  for (const [name, file] of Object.entries(models)) {
    greedy[name] = run(greedyTool, [file, String(GREEDY_TOKENS), GREEDY_PROMPT]).trim().split(/\s+/).map(Number);
    console.error(`${name}: greedy ${greedy[name].join(" ")}`);
  }

  const out = path.join(ROOT, FIXTURE);
  writeFileSync(out, JSON.stringify({ llamaCpp: `${version} (node-llama-cpp 3.21.1's bundled source)`, texts, ids, greedy }) + "\n");
  console.error(`wrote ${out}`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
