#!/usr/bin/env node
// What --poll costs (issue 14): the CPU time a native backend's pool takes after one graph while the process
// waits, per poll level. A 1024×1024 f32 product by 8 rows on 2 threads, then 300 ms of waiting; the process's
// CPU time over that window, minus the product's own, is the polling.
// Usage: node scripts/native-poll-cost.mjs [--levels 0,1,10,50]   (after npm run build; needs the native kernels)
import { parseScriptArgs } from "./lib/script-args.mjs";
import { NativeBackend } from "../dist/kernels/native/native-backend.js";

const { values: a } = parseScriptArgs(import.meta.url, { options: { levels: { type: "string", default: "0,1,10,50" } } });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
console.log("| poll | CPU ms in the 300 ms after one graph |\n|---|---|");
for (const poll of a.levels.split(",").map(Number)) {
  const be = new NativeBackend({ threads: 2, poll });
  try {
    const w = be.allocWeight("f32", 1024, 1024), x = be.alloc(1024 * 8 * 4), y = be.alloc(1024 * 8 * 4);
    be.f32(x).fill(1);
    be.matmul(y, x, w, 8);
    be.f32(y);
    await sleep(300);
    const c0 = process.cpuUsage();
    be.matmul(y, x, w, 8);
    be.f32(y);
    await sleep(300);
    const c = process.cpuUsage(c0);
    console.log(`| ${poll} | ${((c.user + c.system) / 1000).toFixed(1)} |`);
  } finally {
    be.close();
  }
}
