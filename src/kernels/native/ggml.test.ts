// Which ggml libraries load: DISTMOE_GGML_DIR, else a build of this machine's with a tested version, else the
// prebuilt package's; a folder named that does not hold ggml fails with the reason, in a real process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { GGML_DIR_ENV, LOCAL_GGML_STAMP, TESTED_GGML_VERSIONS, ggmlLibraries, localGgmlDir } from "./ggml.js";
import { nativeSkip } from "../../testing/backends.js";

const PREBUILT = "/prebuilt/bins/x";

/** loadGgml in a process of its own (it loads once per process), with `env`. */
const loadIn = (env: NodeJS.ProcessEnv) =>
  spawnSync(process.execPath, ["--input-type=module", "-e", `const { loadGgml } = await import(${JSON.stringify(new URL("./ggml.js", import.meta.url).href)}); loadGgml();`], { encoding: "utf8", env, timeout: 60_000 });

test("the ggml folder: as named, else a stamped build of this machine's of a tested version, else the prebuilt one", () => {
  const cache = mkdtempSync(path.join(os.tmpdir(), "distmoe-ggml-"));
  try {
    const env = { DISTMOE_CACHE: cache };
    const local = localGgmlDir(env);
    assert.equal(local, path.join(cache, "ggml-native", "bin"));
    // nothing built: the prebuilt package
    assert.deepEqual(ggmlLibraries(env, () => PREBUILT), { dir: PREBUILT, from: "prebuilt" });
    // built, with a stamp naming a tested version: taken
    mkdirSync(local, { recursive: true });
    writeFileSync(path.join(local, LOCAL_GGML_STAMP), JSON.stringify({ ggmlVersion: TESTED_GGML_VERSIONS[0] }));
    assert.deepEqual(ggmlLibraries(env, () => PREBUILT), { dir: local, from: "local" });
    // DISTMOE_GGML_DIR=prebuilt passes over it; a folder named is taken as it is
    assert.deepEqual(ggmlLibraries({ ...env, [GGML_DIR_ENV]: "prebuilt" }, () => PREBUILT), { dir: PREBUILT, from: "prebuilt" });
    assert.deepEqual(ggmlLibraries({ ...env, [GGML_DIR_ENV]: "/some/where" }, () => PREBUILT), { dir: "/some/where", from: "named" });
    assert.deepEqual(ggmlLibraries({ [GGML_DIR_ENV]: local }, () => PREBUILT), { dir: local, from: "local" });
    // another version, or a stamp that does not parse: not loaded (libraries of two ggml builds must not meet in one process), and said why
    for (const stamp of [JSON.stringify({ ggmlVersion: "0.1.0" }), "{not json"]) {
      writeFileSync(path.join(local, LOCAL_GGML_STAMP), stamp);
      const r = ggmlLibraries(env, () => PREBUILT);
      assert.equal(r.dir, PREBUILT);
      assert.match(r.skipped ?? "", /npm run build-ggml/);
    }
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test("DISTMOE_GGML_DIR: a folder without ggml fails --backend native with the reason, and auto runs on wasm saying it", { skip: nativeSkip() }, () => {
  const empty = mkdtempSync(path.join(os.tmpdir(), "distmoe-noggml-"));
  try {
    const env: NodeJS.ProcessEnv = { ...process.env, [GGML_DIR_ENV]: empty };
    delete env.DISTMOE_BACKEND;
    const probe = (backend: string) =>
      spawnSync(process.execPath, ["--input-type=module", "-e", `const { openBackend } = await import(${JSON.stringify(new URL("../select-backend.js", import.meta.url).href)}); const r = openBackend({ backend: "${backend}", threads: 1 }); console.log(r.why); r.backend.close();`], {
        encoding: "utf8",
        env,
        timeout: 60_000,
      });
    const native = probe("native");
    assert.notEqual(native.status, 0);
    assert.match(native.stderr, /holds no ggml-base library/);
    const auto = probe("auto");
    assert.equal(auto.status, 0, auto.stderr);
    assert.match(auto.stdout, /kernels: wasm \(.*native unavailable: .*holds no ggml-base library/);
    const missing = loadIn({ ...process.env, [GGML_DIR_ENV]: path.join(empty, "nowhere") });
    assert.match(missing.stderr, /DISTMOE_GGML_DIR: .*nowhere does not exist/);
    writeFileSync(path.join(empty, "a-file"), "");
    const file = loadIn({ ...process.env, [GGML_DIR_ENV]: path.join(empty, "a-file") });
    assert.match(file.stderr, /DISTMOE_GGML_DIR: .*a-file is not a folder/);
    // a stamped build of this machine's whose libraries are gone: the error says how to do without it
    const cache = path.join(empty, "cache");
    mkdirSync(localGgmlDir({ DISTMOE_CACHE: cache }), { recursive: true });
    writeFileSync(path.join(localGgmlDir({ DISTMOE_CACHE: cache }), LOCAL_GGML_STAMP), JSON.stringify({ ggmlVersion: TESTED_GGML_VERSIONS[0] }));
    const broken = loadIn({ ...env, [GGML_DIR_ENV]: "", DISTMOE_CACHE: cache });
    assert.match(broken.stderr, /holds no ggml-base library \(ggml built by npm run build-ggml: build it again, or set DISTMOE_GGML_DIR=prebuilt\)/);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});
