import { test } from "node:test";
import assert from "node:assert/strict";
import { findStop, heldBack } from "./stop-strings.js";

test("the earliest stop sequence is found, and text that could begin one is held back", () => {
  assert.equal(findStop("hello world\n\nbye", ["\n\n", "bye"]), 11);
  assert.equal(findStop("abc", ["x"]), -1);
  assert.equal(findStop("xx abc xx", ["xx"], 2), 7);
  assert.equal(heldBack("the end\n", ["\n\n"]), 1);
  assert.equal(heldBack("say END", ["ENDING", "x"]), 3);
  assert.equal(heldBack("nothing", ["zz"]), 0);
});
