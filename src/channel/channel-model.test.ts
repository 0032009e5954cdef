import { test } from "node:test";
import assert from "node:assert/strict";
import { Random } from "../util/random.js";
import { besselJ0, correlationAfter, FadingProcess, type Correlation, type Fading } from "./fading.js";
import { linkRates, pathLossDb, shannonRateBps } from "./radio.js";
import { loadScenario, parseScenario } from "./scenario.js";
import { readdirSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../testing/shared.js";
import { ChannelModel } from "./channel-model.js";

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test("Shannon rate: r = βB·log2(1 + P·g·|h|²/(βB·N0)); with the BS power split, the downlink SNR does not depend on the share", () => {
  // 1 MHz at an SNR of 3 (rx/N0 = 3e6 Hz): 1e6 · log2(4) = 2 Mbit/s
  close(shannonRateBps(1e6, 3e6), 2e6, 1e-6, "rate");
  assert.equal(shannonRateBps(0, 3e6), 0);
  const link = { downRxOverN0: 3e7, upRxOverN0: 3e6, downPowerSplit: true };
  const half = linkRates(link, 20e6, 0.5);
  close(half.upBps, 10e6 * Math.log2(1 + 3e6 / 10e6), 1e-6, "uplink on 10 MHz");
  close(half.downBps, 10e6 * Math.log2(1 + 3e7 / 20e6), 1e-6, "split downlink: SNR of the whole band");
  close(linkRates({ ...link, downPowerSplit: false }, 20e6, 0.5).downBps, 10e6 * Math.log2(1 + 3e7 / 10e6), 1e-6, "whole power on the link");
});

test("path loss: log-distance matches its formula; 3GPP UMi grows with distance and NLOS is never below LOS", () => {
  close(pathLossDb({ model: "log-distance", exponent: 3.76, referenceDb: 128.1, referenceM: 1000 }, 100), 128.1 - 37.6, 1e-9, "128.1 + 37.6 log10(0.1)");
  let last = 0;
  for (const d of [10, 50, 100, 300, 600, 1000]) {
    const los = pathLossDb({ model: "3gpp-umi", carrierGHz: 3.5, los: true }, d);
    const nlos = pathLossDb({ model: "3gpp-umi", carrierGHz: 3.5, los: false }, d);
    assert.ok(los > last && nlos >= los, `${d} m: LOS ${los.toFixed(1)} dB, NLOS ${nlos.toFixed(1)} dB`);
    last = los;
  }
  // TR 38.901 UMi LOS at 100 m, 3.5 GHz: 32.4 + 21·log10(100.4) + 20·log10(3.5) ≈ 85.3 dB
  close(pathLossDb({ model: "3gpp-umi", carrierGHz: 3.5, los: true }, 100), 85.3, 0.1, "UMi LOS 100 m");
});

test("fading: mean |h|² = 1 for Rayleigh and Rician; Rician with a large K barely fades", () => {
  for (const fading of [{ model: "rayleigh" }, { model: "rician", kFactor: 3 }] as Fading[]) {
    const f = new FadingProcess(fading, { model: "iid" }, new Random(7));
    let sum = 0;
    const n = 200_000;
    for (let i = 0; i < n; i++) {
      f.advance(1);
      sum += f.power();
    }
    close(sum / n, 1, 0.01, `mean |h|² (${fading.model})`);
  }
  const steady = new FadingProcess({ model: "rician", kFactor: 1000 }, { model: "iid" }, new Random(3));
  for (let i = 0; i < 100; i++) {
    steady.advance(1);
    close(steady.power(), 1, 0.2, "K = 1000");
  }
});

test("fading: the correlation between draws is the configured one (Gauss-Markov ρ, Jakes J0(2π f_D Δt))", () => {
  close(besselJ0(0), 1, 1e-12, "J0(0)");
  close(besselJ0(2.404825557695773), 0, 1e-12, "first zero of J0");
  close(besselJ0(1), 0.7651976865579666, 1e-12, "J0(1)");
  const cases: Array<[Correlation, number]> = [
    [{ model: "gauss-markov", rho: 0.9, stepMs: 10 }, 0.9],
    [{ model: "jakes", dopplerHz: 10 }, besselJ0(2 * Math.PI * 10 * 0.01)],
    [{ model: "iid" }, 0],
  ];
  for (const [c, rho] of cases) {
    close(correlationAfter(c, 10), rho, 1e-12, `${c.model} ρ`);
    // for Rayleigh fading, E[|h(t)|²·|h(t+Δ)|²] − 1 = ρ²; measured over independent pairs
    const rng = new Random(11);
    let sum = 0;
    const n = 400_000;
    for (let i = 0; i < n; i++) {
      const f = new FadingProcess({ model: "rayleigh" }, c, rng);
      const p0 = f.power();
      f.advance(10);
      sum += p0 * f.power();
    }
    close(sum / n - 1, rho * rho, 0.03, `${c.model}: power correlation = ρ²`);
  }
  close(correlationAfter({ model: "gauss-markov", rho: 0.9, stepMs: 10 }, 20), 0.81, 1e-12, "ρ over two steps");
});

const cell = {
  name: "test cell",
  seed: 5,
  bandwidthHz: 20e6,
  bsPowerDbm: 43,
  fading: { model: "none" },
  devices: [
    { name: "near", distanceM: 50, gflops: 100, readGbps: 50 },
    { name: "far", distanceM: 400, gflops: 100, readGbps: 50 },
  ],
};

test("a scenario is checked field by field; the channel model is reproducible and nearer devices get faster links", () => {
  assert.throws(() => parseScenario({ ...cell, bandwidthHz: -1 }, "s.json"), /s\.json is not a valid scenario:[\s\S]*bandwidthHz/);
  assert.throws(() => parseScenario({ ...cell, pathLoss: { model: "free-space" } }, "s.json"), /pathLoss/);
  assert.throws(() => parseScenario({ ...cell, devices: [cell.devices[0], cell.devices[0]] }, "s.json"), /device name near appears twice/);
  const s = parseScenario({ ...cell, fading: { model: "rayleigh" }, shadowingDb: 6 });
  const a = new ChannelModel(s), b = new ChannelModel(s);
  a.advanceTo(500);
  b.advanceTo(500);
  assert.deepEqual(a.linkParams(), b.linkParams(), "same seed, same channel");
  const flat = new ChannelModel(parseScenario(cell));
  const [near, far] = flat.linkParams();
  assert.ok(near!.downBps > far!.downBps && near!.upBps > far!.upBps, JSON.stringify(flat.linkParams()));
  assert.ok(near!.downBps > near!.upBps, "43 dBm down, 23 dBm up");
  assert.throws(() => flat.indexOf("phone-9"), /no device phone-9 \(it has near, far\)/);

  // the runtime's link shaping reads the same cell, its clock starting at the first frame
  const shaping = new ChannelModel(s).linkModel();
  const reference = new ChannelModel(s);
  assert.deepEqual(shaping("far", 1000), reference.linkParams()[1]);
  reference.advanceTo(500);
  assert.deepEqual(shaping("near", 1500), reference.linkParams()[0]);
});

test("the shipped scenarios are valid and give every device a working link", () => {
  const dir = path.join(REPO_ROOT, "scenarios");
  const files = readdirSync(dir).filter((f) => f.endsWith(".json"));
  assert.ok(files.length >= 3, files.join(", "));
  for (const f of files) {
    const links = new ChannelModel(loadScenario(path.join(dir, f))).linkParams();
    assert.ok(links.length >= 1 && links.every((l) => l.downBps > 1e5 && l.upBps > 1e5), `${f}: ${JSON.stringify(links)}`);
  }
});
