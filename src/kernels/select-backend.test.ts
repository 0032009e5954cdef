// Choosing the kernels: as asked, by $DISTMOE_BACKEND, native where it loads; with the native packages
// unavailable (hidden, in a real process) everything runs on wasm and says why.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { BACKEND_ENV, backendChoice, openBackend } from "./select-backend.js";
import { HIDE_NATIVE_ENV } from "./native/ggml.js";
import { initModel } from "../model/init-model.js";
import { nativeSkip } from "../testing/backends.js";
import { REPO_ROOT } from "../testing/shared.js";

const BIN = path.join(REPO_ROOT, "bin/distmoe.js");

test("wasm when asked; native when asked or by default where it loads, saying which and why", { skip: nativeSkip() }, () => {
  const wasm = openBackend({ backend: "wasm", threads: 1 });
  try {
    assert.match(wasm.backend.name, /^wasm-/);
    assert.match(wasm.why, /^kernels: wasm \(.*1 thread, as asked\)$/);
  } finally {
    wasm.backend.close();
  }
  for (const backend of ["native", undefined] as const) {
    const native = openBackend({ backend, threads: 2 });
    try {
      assert.match(native.backend.name, /^native-ggml-/);
      assert.match(native.why, /^kernels: native \(ggml \d+\.\d+\.\d+ (prebuilt \(@node-llama-cpp\/[\w-]+\), \S+ variant|built for this CPU by npm run build-ggml \(.+\)), 2 threads\)$/);
    } finally {
      native.backend.close();
    }
  }
});

test("$DISTMOE_BACKEND sets the default; an option given wins; a wrong value is refused", () => {
  const saved = process.env[BACKEND_ENV];
  try {
    delete process.env[BACKEND_ENV];
    assert.equal(backendChoice(), "auto");
    process.env[BACKEND_ENV] = "wasm";
    assert.equal(backendChoice(), "wasm");
    assert.equal(backendChoice("native"), "native");
    const { backend } = openBackend({ threads: 1 });
    assert.match(backend.name, /^wasm-/);
    backend.close();
    process.env[BACKEND_ENV] = "cuda";
    assert.throws(() => backendChoice(), /DISTMOE_BACKEND=cuda: expected auto, native, wasm/);
  } finally {
    if (saved === undefined) delete process.env[BACKEND_ENV];
    else process.env[BACKEND_ENV] = saved;
  }
});

test("with the native packages unavailable, auto runs on wasm and says why, and --backend native fails with the reason", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-nonative-"));
  try {
    initModel({ arch: "MixtralForCausalLM", out: dir, layers: 1, hidden: 64, experts: 2, topK: 1, seed: 2 });
    const env: NodeJS.ProcessEnv = { ...process.env, [HIDE_NATIVE_ENV]: "1" };
    delete env[BACKEND_ENV];
    const run = (...args: string[]) => spawnSync(process.execPath, [BIN, "generate", "--model", dir, "--prompt", "hi", "--max-tokens", "3", "--temperature", "0", "--threads", "1", ...args], { encoding: "utf8", env, timeout: 120_000 });
    const auto = run();
    assert.equal(auto.status, 0, auto.stderr);
    assert.match(auto.stderr, /kernels: wasm \(.*; native unavailable: the native packages are hidden \(DISTMOE_HIDE_NATIVE is set\)\)/);
    const native = run("--backend", "native");
    assert.equal(native.status, 1);
    assert.match(native.stderr, /the native backend does not load: the native packages are hidden/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
