import { test } from "node:test";
import assert from "node:assert/strict";
import { parseLink, ShapedLink } from "./link.js";

test("link settings parse with their units and refuse the rest", () => {
  assert.deepEqual(parseLink("rate=20mbit,delay=5ms,jitter=1ms,loss=1%"), { downBps: 20e6, upBps: 20e6, delayMs: 5, jitterMs: 1, loss: 0.01 });
  assert.deepEqual(parseLink("down=1gbit, up=50mbit, delay=0.1s"), { downBps: 1e9, upBps: 50e6, delayMs: 100, jitterMs: 0, loss: 0 });
  assert.throws(() => parseLink("rate=20"), /needs a unit/);
  assert.throws(() => parseLink("speed=1mbit"), /is not one of/);
  assert.throws(() => parseLink("loss=1.5"), /loss must be in/);
});

test("frames take serialisation plus delay, queue behind each other, and never overtake", () => {
  const link = new ShapedLink("d", () => ({ downBps: 8e6, upBps: 0, delayMs: 10, jitterMs: 0, loss: 0 }));
  // 1 MB at 8 Mbit/s = 1000 ms on the wire
  assert.equal(link.delay("down", 1e6, 0), 1010);
  assert.equal(link.delay("down", 1e6, 0), 2010, "the second frame waits for the first");
  assert.equal(link.delay("up", 1e6, 0), 10, "the uplink is unlimited here");
  const jittery = new ShapedLink("d", () => ({ downBps: 0, upBps: 0, delayMs: 5, jitterMs: 50, loss: 0.5 }), 7);
  let last = 0;
  for (let i = 0; i < 100; i++) {
    const at = i + jittery.delay("down", 100, i);
    assert.ok(at >= last && at >= i + 5, "in order, never before the propagation delay");
    last = at;
  }
});
