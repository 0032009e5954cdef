// The repository's scripts (scripts/*.mjs) read their options through scripts/lib/script-args.mjs: `--help`
// prints the script's usage and exits 0; an unknown option costs one clear line and exit status 2, not a
// stack trace. Each script is run for real, so one that parses its options some other way is caught.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../testing/shared.js";

const scriptsDir = path.join(REPO_ROOT, "scripts");
const withOptions = readdirSync(scriptsDir)
  .filter((f) => f.endsWith(".mjs"))
  .filter((f) => /\bparse(Script)?Args\(/.test(readFileSync(path.join(scriptsDir, f), "utf8")));

const run = (script: string, ...args: string[]) =>
  spawnSync(process.execPath, [path.join(scriptsDir, script), ...args], { cwd: REPO_ROOT, encoding: "utf8", timeout: 60_000 });

test("the scripts that take options are found", () => {
  assert.ok(withOptions.length >= 10, `${withOptions.length} scripts`);
  assert.ok(withOptions.includes("bench-vs-llamacpp.mjs"));
});

for (const script of withOptions) {
  test(`${script}: --help prints its usage, an unknown option one line and exit 2`, () => {
    const help = run(script, "--help");
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, new RegExp(`Usage: node scripts/${script.replace(".", "\\.")}`));
    const bad = run(script, "--no-such-option");
    assert.equal(bad.status, 2, bad.stderr);
    assert.equal(bad.stderr, `${script}: Unknown option '--no-such-option'\n(--help lists the options)\n`);
  });
}

// a script that opens a model names the option in `paths`: a model that is not there costs one line, before any work
const withModel = withOptions.filter((f) => /paths: \["model"\]/.test(readFileSync(path.join(scriptsDir, f), "utf8")));

test("the scripts that open a model are found", () => {
  assert.ok(withModel.length >= 5, `${withModel.length} scripts`);
});

for (const script of withModel) {
  test(`${script}: a --model that is not there is one line and exit 2`, () => {
    const r = run(script, "--model", "/no/such/model");
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr, `${script}: --model "/no/such/model": no such file or folder\n(--help lists the options)\n`);
  });
}

test("a bad value costs one line and exit 2 before any work (profile-decode --tokens, bench-cluster --link)", () => {
  const tokens = run("profile-decode.mjs", "--tokens", "abc");
  assert.equal(tokens.status, 2, tokens.stderr);
  assert.equal(tokens.stderr, "profile-decode.mjs: --tokens must be a positive integer\n(--help lists the options)\n");
  // a --model that is there (the default one lies in ../shared, which a checkout may lack): the link is refused first
  const link = run("bench-cluster.mjs", "--model", scriptsDir, "--link", "bogus");
  assert.equal(link.status, 2, link.stderr);
  assert.match(link.stderr, /^bench-cluster\.mjs: --link: link setting "bogus" is not one of .*\n\(--help lists the options\)\n$/);
});
