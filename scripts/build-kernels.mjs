// Compiles the AssemblyScript kernels twice: plain SIMD128 and relaxed SIMD (picked at run time).
// Usage: node scripts/build-kernels.mjs   (npm run build runs it; writes dist/kernels)
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { parseScriptArgs } from "./lib/script-args.mjs";

parseScriptArgs(import.meta.url, { options: {} }); // no options: --help, or a stray one stops before the build

const require = createRequire(import.meta.url);
const asc = require.resolve("assemblyscript/bin/asc.js");
mkdirSync("dist/kernels", { recursive: true });
for (const variant of ["simd", "relaxed"]) {
  const args = [
    asc, "src/kernels/assembly/index.ts", "-O3", "--noAssert", "--runtime", "stub",
    "--importMemory", "--sharedMemory", "--initialMemory", "1", "--maximumMemory", "65536",
    "--enable", "simd", "--enable", "threads",
    ...(variant === "relaxed" ? ["--enable", "relaxed-simd"] : []),
    "-o", `dist/kernels/kernels-${variant}.wasm`,
  ];
  execFileSync(process.execPath, args, { stdio: "inherit" });
}
