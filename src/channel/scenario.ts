// A cell scenario: the BS, its bandwidth and power, the propagation model, and the devices with their
// distances, powers and speeds. Read from a JSON file and checked against the schema below, so a
// mistake is reported with the file and the field.
import { readFileSync } from "node:fs";
import { z } from "zod";

const pathLoss = z.discriminatedUnion("model", [
  z.object({ model: z.literal("log-distance"), exponent: z.number().positive(), referenceDb: z.number(), referenceM: z.number().positive() }),
  z.object({ model: z.literal("3gpp-umi"), carrierGHz: z.number().min(0.5).max(100), los: z.boolean() }),
]);

const fading = z.discriminatedUnion("model", [
  z.object({ model: z.literal("none") }),
  z.object({ model: z.literal("rayleigh") }),
  z.object({ model: z.literal("rician"), kFactor: z.number().min(0) }),
]);

const correlation = z.discriminatedUnion("model", [
  z.object({ model: z.literal("iid") }),
  z.object({ model: z.literal("gauss-markov"), rho: z.number().min(0).max(1), stepMs: z.number().positive() }),
  z.object({ model: z.literal("jakes"), dopplerHz: z.number().min(0) }),
]);

const device = z.object({
  name: z.string().min(1),
  distanceM: z.number().positive(),
  /** uplink transmit power */
  powerDbm: z.number().default(23),
  /** compute rate and memory read bandwidth: an expert call's time is the larger of FLOPs / rate and weight bytes / bandwidth */
  gflops: z.number().positive(),
  readGbps: z.number().positive(),
});

export const scenarioSchema = z.object({
  name: z.string().min(1),
  description: z.string().optional(),
  seed: z.number().int().default(1),
  /** total bandwidth B of the cell, shared among the devices by frequency division */
  bandwidthHz: z.number().positive(),
  noiseDbmPerHz: z.number().default(-174),
  noiseFigureDb: z.number().min(0).default(0),
  /** BS transmit power (all of it, see downPowerSplit) */
  bsPowerDbm: z.number(),
  /** true: the BS splits its power over the devices in proportion to their bandwidth shares; false: every link gets all of it */
  downPowerSplit: z.boolean().default(true),
  pathLoss: pathLoss.default({ model: "log-distance", exponent: 3.76, referenceDb: 128.1, referenceM: 1000 }),
  /** standard deviation of log-normal shadowing, drawn once per device */
  shadowingDb: z.number().min(0).default(0),
  fading: fading.default({ model: "rayleigh" }),
  correlation: correlation.default({ model: "jakes", dopplerHz: 5 }),
  /** one-way delay of the radio access (scheduling, propagation, processing), each direction */
  delayMs: z.number().min(0).default(0),
  /**
   * the BS's edge server, which runs attention, the routers and the LM head (default: a data-centre GPU),
   * and, given a budget (`eval --bs-budget`), hot experts too: it copies them in from its store (the
   * checkpoint on its disk; default an NVMe SSD's 3 GB/s and 0.1 ms per read)
   */
  bs: z
    .object({ gflops: z.number().positive(), readGbps: z.number().positive(), storeGbps: z.number().positive().default(3), storeDelayMs: z.number().min(0).default(0.1) })
    .default({ gflops: 100000, readGbps: 1000, storeGbps: 3, storeDelayMs: 0.1 }),
  devices: z.array(device).min(1),
});

export type Scenario = z.infer<typeof scenarioSchema>;

/** Checks a parsed scenario; `source` names it in errors. */
export function parseScenario(value: unknown, source = "scenario"): Scenario {
  const r = scenarioSchema.safeParse(value);
  if (!r.success) throw new Error(`${source} is not a valid scenario:\n${z.prettifyError(r.error)}`);
  const names = new Set<string>();
  for (const d of r.data.devices) {
    if (names.has(d.name)) throw new Error(`${source}: device name ${d.name} appears twice`);
    names.add(d.name);
  }
  return r.data;
}

export function loadScenario(file: string): Scenario {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`cannot read scenario ${file}: ${(e as Error).message}`);
  }
  return parseScenario(value, file);
}
