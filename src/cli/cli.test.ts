// The command line as a user runs it: real processes, stdout/stderr and exit codes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT } from "../testing/shared.js";
import { makePolicy } from "../policies/registry.js";
import { byteSize, unitTheta } from "./options.js";

const BIN = path.join(REPO_ROOT, "bin/distmoe.js");

function distmoe(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("init-model, inspect, generate --json, perplexity --json, bench --json on a generated model", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "distmoe-cli-"));
  try {
    const model = path.join(dir, "m");
    let r = distmoe("init-model", "--arch", "Qwen2MoeForCausalLM", "--out", model, "--layers", "2", "--hidden", "64", "--experts", "4");
    assert.equal(r.code, 0, r.err);

    r = distmoe("inspect", "--model", model, "--json");
    assert.equal(r.code, 0, r.err);
    const s = JSON.parse(r.out);
    assert.equal(s.architecture, "Qwen2MoeForCausalLM");
    assert.equal(s.experts, 4);
    assert.ok(s.active_parameters_per_token < s.parameters);

    r = distmoe("generate", "--model", model, "--prompt", "hi there", "--temperature", "0", "--max-tokens", "5", "--json", "--threads", "2");
    assert.equal(r.code, 0, r.err);
    const g = JSON.parse(r.out);
    assert.deepEqual(Object.keys(g).slice(0, 5), ["prompt_tokens", "tokens", "text", "prefill_tokens_per_s", "decode_tokens_per_s"]);
    assert.equal(g.prompt_tokens[0], 1, "BOS first");
    assert.equal(g.prompt_tokens.length, 1 + "hi there".length, "one token per byte after BOS");
    assert.ok(g.tokens.length <= 5);
    // greedy is deterministic, and the streamed text equals the JSON text
    const again = distmoe("generate", "--model", model, "--prompt", "hi there", "--temperature", "0", "--max-tokens", "5");
    assert.equal(again.code, 0, again.err);
    assert.equal(again.out.replace(/\n$/, ""), g.text);

    r = distmoe("generate", "--model", model, "--prompt", "hello", "--chat", "--temperature", "0", "--max-tokens", "3", "--json", "--trace", path.join(dir, "trace.jsonl"));
    assert.equal(r.code, 0, r.err);
    const trace = readFileSync(path.join(dir, "trace.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(trace.length >= 2 * 2, "prefill and decode steps for both layers");
    assert.deepEqual(Object.keys(trace[0]), ["step", "layer", "tokens"]);
    assert.equal(trace[0].tokens[0].experts.length, 2);

    const text = path.join(dir, "t.txt");
    writeFileSync(text, "one line of text\nand another line of text\n".repeat(20));
    r = distmoe("perplexity", "--model", model, "--text", text, "--tokens", "300", "--json");
    assert.equal(r.code, 0, r.err);
    const p = JSON.parse(r.out);
    assert.deepEqual(Object.keys(p), ["perplexity", "tokens", "nll_sum"]);
    assert.equal(p.tokens, 300);
    assert.ok(Math.abs(Math.exp(p.nll_sum / p.tokens) - p.perplexity) < 1e-9 * p.perplexity);

    r = distmoe("bench", "--model", model, "--prompt-tokens", "16", "--decode-tokens", "4", "--json", "--dtype", "q8");
    assert.equal(r.code, 0, r.err);
    const b = JSON.parse(r.out);
    for (const k of ["prefill_tokens_per_s", "decode_tokens_per_s", "decode_weight_gbps", "memory_read_gbps", "bandwidth_ratio"]) assert.ok(b[k] > 0, k);
    // the host's share of a decode token where the kernels run as graphs (native), and only there
    if (b.kernels.startsWith("native")) {
      assert.ok(b.decode_graphs_per_token >= 1, `${b.decode_graphs_per_token} graphs per token`);
      assert.ok(b.decode_host_ms_per_token > 0 && b.decode_host_ms_per_token < 1000 / b.decode_tokens_per_s, `host ${b.decode_host_ms_per_token} ms of a ${1000 / b.decode_tokens_per_s} ms token`);
      assert.ok(b.prefill_graphs >= 1, `${b.prefill_graphs} graphs per prefill`);
      assert.ok(b.prefill_host_ms > 0 && b.prefill_host_ms < (1000 * 16) / b.prefill_tokens_per_s, `host ${b.prefill_host_ms} ms of a ${(1000 * 16) / b.prefill_tokens_per_s} ms prefill`);
    } else assert.equal(b.decode_host_ms_per_token ?? b.prefill_host_ms, undefined);
    // --ops: where the kernels run graphs, each op's share of a prefill and of a decode token; elsewhere one clear error
    if (b.kernels.startsWith("native")) {
      r = distmoe("bench", "--model", model, "--prompt-tokens", "16", "--decode-tokens", "4", "--repeats", "2", "--json", "--ops");
      assert.equal(r.code, 0, r.err);
      const { ops } = JSON.parse(r.out);
      for (const step of [ops.prefill, ops.decode]) {
        assert.ok(step.some((x: { op: string }) => x.op === "attn") && step.some((x: { op: string }) => x.op.startsWith("moe")), JSON.stringify(step));
        assert.ok(step.every((x: { ms: number; graphs: number }) => x.ms > 0 && x.graphs > 0), JSON.stringify(step));
        assert.ok(step.every((x: { ms: number }, i: number) => i === 0 || x.ms <= step[i - 1].ms), "largest first");
      }
      assert.ok(ops.prefill_ms > 0 && ops.decode_ms_per_token > 0);
      r = distmoe("bench", "--model", model, "--prompt-tokens", "16", "--decode-tokens", "4", "--repeats", "1", "--ops");
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^prefill by op .*\n {2}\S+ +[\d.]+ ms +\d+ %/m);
    }
    r = distmoe("bench", "--model", model, "--prompt-tokens", "16", "--decode-tokens", "4", "--backend", "wasm", "--ops");
    assert.notEqual(r.code, 0);
    assert.match(r.err, /--ops: the \S+ kernels do not run their ops as graphs/);
    // a run smaller than the warm-up once was (it overran the context the run sized)
    r = distmoe("bench", "--model", model, "--prompt-tokens", "4", "--decode-tokens", "2", "--json");
    assert.equal(r.code, 0, r.err);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("errors are one clear line and a non-zero exit, not a stack trace", () => {
  let r = distmoe("generate", "--model", "/nonexistent/model", "--prompt", "x");
  assert.equal(r.code, 1);
  assert.match(r.err, /^distmoe: error: \/nonexistent\/model\/config\.json: cannot read \(ENOENT\)\n$/);
  r = distmoe("generate", "--model", "x", "--prompt", "x", "--dtype", "f64");
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Allowed choices are f32, bf16, q8/);
  r = distmoe("perplexity", "--model", "x", "--text", "y", "--tokens", "-3");
  assert.notEqual(r.code, 0);
  assert.match(r.err, /expected a positive integer/);
  // more threads than ggml runs: refused, not a hung or aborted process
  r = distmoe("generate", "--model", "x", "--prompt", "x", "--threads", "100000");
  assert.equal(r.code, 1);
  assert.match(r.err, /expected at most 512 threads/);
});

test("sizes such as --memory 2GiB are read in bytes; anything else is refused", () => {
  assert.equal(byteSize("2GiB"), 2 * 2 ** 30);
  assert.equal(byteSize("512 MiB"), 512 * 2 ** 20);
  assert.equal(byteSize("1.5GB"), 1.5e9);
  assert.equal(byteSize("4096"), 4096);
  assert.throws(() => byteSize("lots"), /expected a size such as 512MiB or 2GiB, got "lots"/);
});

test("--theta takes wlr's whole range [0, 1], as /admin/policy does; joint refuses 1 itself", () => {
  assert.equal(unitTheta("1"), 1);
  assert.equal(unitTheta("0"), 0);
  assert.throws(() => unitTheta("1.01"), /expected a number in \[0, 1\], got "1.01"/);
  assert.throws(() => unitTheta("x"), /expected a number in \[0, 1\]/);
  assert.throws(() => makePolicy({ name: "joint", theta: 1 }, 1), /joint: theta must be in \[0, 1\), got 1/);
});
