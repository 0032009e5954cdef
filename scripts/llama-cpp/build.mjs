#!/usr/bin/env node
// Builds llama.cpp's own command-line tools (llama-bench, llama-quantize, llama-tokenize) from the llama.cpp
// source that node-llama-cpp 3.21.1 bundles, so the comparison scripts measure distmoe against exactly the
// llama.cpp (and ggml) whose prebuilt CPU libraries the native backend loads.
//
// Where the source comes from: `npm pack node-llama-cpp@3.21.1` (the npm registry only, nothing else is
// downloaded); its tarball holds the llama.cpp tree as llama/gitRelease.bundle, a git bundle, which is cloned.
// The build is CPU-only, Release, -DGGML_NATIVE=ON (-march=native, as a user building llama.cpp on this
// machine gets), static, without CURL, the server, examples or tests. It needs git, cmake and a C/C++
// compiler; without them it stops with one clear message (distmoe itself never needs a compiler).
//
// Output: ~/.cache/distmoe/llama.cpp-3.21.1/build/bin/<tool> (or $DISTMOE_CACHE/llama.cpp-3.21.1), reused when
// present. Several sessions may ask for the same tools at once: a lock directory in the cache folder
// (.build.lock, holding the builder's pid) makes one build at a time; a lock whose pid is dead is taken over.
//
// Usage: node scripts/llama-cpp/build.mjs [llama-bench llama-quantize llama-tokenize]   (prints the tool paths)
//        node scripts/llama-cpp/build.mjs --ggml   (npm run build-ggml: see ensureLocalGgml)
// Module: import { ensureLlamaCppTools, ensureLocalGgml } from "./llama-cpp/build.mjs";
//         const { bin, commit, ggmlVersion } = await ensureLlamaCppTools(["llama-bench"]);
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const NODE_LLAMA_CPP_VERSION = "3.21.1";
export const ALL_TOOLS = ["llama-bench", "llama-quantize", "llama-tokenize"];

/** The cache folder every generated llama.cpp artefact lives in (never inside the repository). */
export function cacheRoot() {
  return process.env.DISTMOE_CACHE ?? path.join(os.homedir(), ".cache", "distmoe");
}

export function llamaCppDir() {
  return path.join(cacheRoot(), `llama.cpp-${NODE_LLAMA_CPP_VERSION}`);
}

const log = (msg) => process.stderr.write(`[llama.cpp] ${msg}\n`);

// progress (cmake's, git's) goes to stderr: stdout is for results
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: opts.capture ? ["ignore", "pipe", "pipe"] : ["ignore", 2, 2], encoding: "utf8", ...opts });
  if (r.error) throw new Error(`${cmd} could not start: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.status})${opts.capture ? `:\n${r.stderr}` : ""}`);
  return r.stdout;
}

function requireTools(what = "building llama.cpp's tools", instead = `or put prebuilt llama-bench/llama-quantize/llama-tokenize binaries in ${path.join(llamaCppDir(), "build", "bin")}. distmoe itself does not need them; only this comparison does.`) {
  const missing = [];
  for (const [tool, args] of [["npm", ["--version"]], ["git", ["--version"]], ["cmake", ["--version"]], [process.env.CXX ?? "c++", ["--version"]], [process.env.CC ?? "cc", ["--version"]]]) {
    const r = spawnSync(tool, args, { stdio: "ignore" });
    if (r.error || r.status !== 0) missing.push(tool);
  }
  if (missing.length > 0) {
    throw new Error(
      `${what} needs npm, git, cmake and a C/C++ compiler; not found: ${missing.join(", ")}. Install them (e.g. apt-get install git cmake g++) ${instead}`,
    );
  }
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

async function withLock(dir, fn) {
  const lock = path.join(dir, ".build.lock");
  let waited = false;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(path.join(lock, "pid"), String(process.pid));
      break;
    } catch (e) {
      if (e.code !== "EEXIST") throw e;
      let holder = NaN;
      try {
        holder = Number(readFileSync(path.join(lock, "pid"), "utf8"));
      } catch {}
      if (Number.isInteger(holder) && holder > 0 && !pidAlive(holder)) {
        log(`taking over a stale lock from pid ${holder}`);
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (!waited) log(`another build holds ${lock} (pid ${Number.isNaN(holder) ? "?" : holder}); waiting`);
      waited = true;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** Clones llama.cpp from node-llama-cpp's npm tarball into `src` unless it is there already. */
function ensureSource(src) {
  if (existsSync(path.join(src, "CMakeLists.txt"))) return;
  const tmp = mkdtempSync(path.join(os.tmpdir(), "distmoe-nlc-"));
  try {
    log(`npm pack node-llama-cpp@${NODE_LLAMA_CPP_VERSION} (from the npm registry) into ${tmp}`);
    const name = run("npm", ["pack", `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`, "--silent"], { cwd: tmp, capture: true }).trim().split("\n").pop();
    run("tar", ["-xzf", name, "package/llama/gitRelease.bundle", "package/llama/binariesGithubRelease.json"], { cwd: tmp });
    const bundle = path.join(tmp, "package", "llama", "gitRelease.bundle");
    if (!existsSync(bundle)) throw new Error(`node-llama-cpp@${NODE_LLAMA_CPP_VERSION}'s tarball has no llama/gitRelease.bundle`);
    log(`cloning llama.cpp from ${path.basename(bundle)}`);
    rmSync(src, { recursive: true, force: true });
    run("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", bundle, src]);
    // the llama.cpp release the bundle was cut from (the bundle itself carries no tags)
    copyFileSync(path.join(tmp, "package", "llama", "binariesGithubRelease.json"), path.join(path.dirname(src), "binariesGithubRelease.json"));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function describeSource(src) {
  if (!existsSync(path.join(src, ".git"))) return { commit: "unknown (tools placed by hand)", tag: "", ggmlVersion: "unknown" };
  const commit = run("git", ["-C", src, "rev-parse", "HEAD"], { capture: true }).trim();
  let tag = "";
  try {
    tag = JSON.parse(readFileSync(path.join(path.dirname(src), "binariesGithubRelease.json"), "utf8")).release ?? "";
  } catch {}
  const cm = readFileSync(path.join(src, "ggml", "CMakeLists.txt"), "utf8");
  const v = (k) => cm.match(new RegExp(`set\\(GGML_VERSION_${k}\\s+(\\d+)\\)`))?.[1];
  const ggmlVersion = v("MAJOR") ? `${v("MAJOR")}.${v("MINOR")}.${v("PATCH")}` : "unknown";
  return { commit, tag, ggmlVersion };
}

/**
 * Makes sure the named llama.cpp tools exist in the cache, building what is missing; returns their paths and
 * the llama.cpp commit and ggml version they were built from.
 */
export async function ensureLlamaCppTools(tools = ALL_TOOLS) {
  for (const t of tools) if (!ALL_TOOLS.includes(t)) throw new Error(`unknown llama.cpp tool ${t}; known: ${ALL_TOOLS.join(", ")}`);
  const dir = llamaCppDir();
  const src = path.join(dir, "src");
  const build = path.join(dir, "build");
  const binDir = path.join(build, "bin");
  const bin = Object.fromEntries(tools.map((t) => [t, path.join(binDir, t)]));
  const missing = () => tools.filter((t) => !existsSync(bin[t]));
  if (missing().length > 0) {
    requireTools();
    mkdirSync(dir, { recursive: true });
    await withLock(dir, async () => {
      const todo = missing(); // another session may have built them while this one waited
      if (todo.length === 0) return;
      ensureSource(src);
      const { commit, ggmlVersion } = describeSource(src);
      log(`building ${todo.join(", ")} from llama.cpp ${commit.slice(0, 10)} (ggml ${ggmlVersion}) in ${build}; this takes several minutes`);
      if (!existsSync(path.join(build, "CMakeCache.txt"))) {
        // prettier-ignore
        run("cmake", ["-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
          "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
          "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF"]);
      }
      const jobs = String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
      run("cmake", ["--build", build, "--config", "Release", "-j", jobs, "--target", ...todo]);
      const still = missing();
      if (still.length > 0) throw new Error(`the build finished but ${still.join(", ")} is not in ${binDir} (files there: ${readdirSync(binDir).join(", ")})`);
    });
  }
  const { commit, tag, ggmlVersion } = describeSource(src);
  return { bin, commit, tag, ggmlVersion, dir };
}

/**
 * Builds ggml's two CPU libraries (ggml-base, ggml-cpu) from the same source, shared, for this machine's CPU
 * (-DGGML_NATIVE=ON, as llama.cpp's own build and the llama-bench above), into the folder the native backend
 * looks in first (localGgmlDir in src/kernels/native/ggml.ts), with a stamp naming the ggml version. Without
 * OpenMP: the backend drives ggml's own threadpool (polling, pausing), which an OpenMP build bypasses (measured
 * no faster here). Rebuilt when the stamp is missing or names another commit. Returns the folder.
 */
export async function ensureLocalGgml() {
  const ggml = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../dist/kernels/native/ggml.js");
  if (!existsSync(ggml)) throw new Error("distmoe is not built here: run npm run build first");
  const { LOCAL_GGML_STAMP, localGgmlDir } = await import(ggml);
  const binDir = localGgmlDir();
  const build = path.dirname(binDir);
  const dir = llamaCppDir();
  const src = path.join(dir, "src");
  const stampFile = path.join(binDir, LOCAL_GGML_STAMP);
  const current = () => {
    try {
      return existsSync(path.join(src, ".git")) && JSON.parse(readFileSync(stampFile, "utf8")).commit === describeSource(src).commit;
    } catch {
      return false;
    }
  };
  if (!current()) {
    requireTools("building ggml for this CPU", "or go on with the prebuilt ggml from npm, which distmoe loads without them.");
    mkdirSync(dir, { recursive: true });
    await withLock(dir, async () => {
      ensureSource(src);
      if (current()) return;
      const { commit, ggmlVersion } = describeSource(src);
      log(`building ggml ${ggmlVersion} (llama.cpp ${commit.slice(0, 10)}) for this CPU in ${build}; this takes about a minute`);
      rmSync(stampFile, { force: true });
      // prettier-ignore
      run("cmake", ["-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=ON",
        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
        "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF"]);
      const jobs = String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
      run("cmake", ["--build", build, "--config", "Release", "-j", jobs, "--target", "ggml-base", "ggml-cpu"]);
      const libs = existsSync(binDir) ? readdirSync(binDir) : [];
      for (const lib of ["ggml-base", "ggml-cpu"]) {
        if (!libs.some((f) => new RegExp(`^(lib)?${lib}\\.(so|dylib|dll)$`).test(f))) throw new Error(`the build finished but ${lib} is not in ${binDir} (files there: ${libs.join(", ")})`);
      }
      writeFileSync(stampFile, JSON.stringify({ ggmlVersion, commit, source: `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`, flags: "GGML_NATIVE=ON GGML_OPENMP=OFF", built: new Date().toISOString() }, null, 2) + "\n");
    });
  }
  return binDir;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const tools = process.argv.slice(2);
  if (tools.length === 1 && tools[0] === "--ggml") {
    try {
      const dir = await ensureLocalGgml();
      log(`ggml for this CPU in ${dir}: the native backend loads it from now on (DISTMOE_GGML_DIR=prebuilt for the npm package's)`);
      process.stdout.write(`${dir}\n`);
    } catch (e) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exit(1);
    }
    process.exit(0);
  }
  try {
    const r = await ensureLlamaCppTools(tools.length > 0 ? tools : ALL_TOOLS);
    log(`llama.cpp ${r.commit}${r.tag ? ` (release ${r.tag})` : ""}, ggml ${r.ggmlVersion}`);
    for (const [t, p] of Object.entries(r.bin)) process.stdout.write(`${t}\t${p}\n`);
  } catch (e) {
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(1);
  }
}
