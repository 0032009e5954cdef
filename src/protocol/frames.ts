// The device protocol's frames. Every WebSocket binary message is one frame:
//   magic "DM" (2 bytes) · protocol version (u8) · type (u8) · header length (u32 LE) · JSON header · payload
// The header names what the payload holds; decodeFrame checks every field and every size against the
// limits below before anything uses it, and throws ProtocolError (with the reason) otherwise.
import { WIRE_DTYPES, wireBytes, type WireDType } from "./activations.js";
import { KEY_HEX, NONCE_HEX, PROOF_HEX, SIGNATURE_HEX } from "./handshake.js";
import type { SourceDType } from "../kernels/backend.js";
import { isSourceDType, sourceBytes, SOURCE_DTYPES } from "../model/weights.js";

export const PROTOCOL_VERSION = 8;
const MAGIC0 = 0x44, MAGIC1 = 0x4d; // "DM"
const PREFIX = 8;

export const LIMITS = {
  frameBytes: 256 << 20,
  headerBytes: 64 << 10,
  /** rows of one frame, summed over its experts */
  rows: 1 << 16,
  hidden: 1 << 16,
  /** experts in one call frame */
  experts: 1 << 12,
  /** nesting of the free-form JSON a frame carries (an assigned config): deeper values cannot even be written back */
  jsonDepth: 16,
} as const;

export class ProtocolError extends Error {}

/** What a device can do, measured by itself. */
export interface Capabilities {
  memoryBytes: number;
  gflops: number;
  readGbps: number;
  weightDTypes: string[];
  wireDTypes: WireDType[];
  /** what the device is: a Node process (the default where a hello does not say) or a browser tab */
  kind?: DeviceKind;
  /** a browser's user agent, as it says (printable ASCII, at most USER_AGENT_CHARS): shown, never trusted */
  userAgent?: string;
  /** what computes its experts (gflops is that compute's measured rate): the wasm or native kernels, or a browser's WebGPU */
  compute?: ComputeKind;
  /** the WebGPU adapter, as the browser names it (printable ASCII, at most ADAPTER_CHARS): shown, never trusted */
  adapter?: string;
}

export type DeviceKind = "node" | "browser";
export const DEVICE_KINDS: readonly DeviceKind[] = ["node", "browser"];
export const USER_AGENT_CHARS = 256;
export type ComputeKind = "wasm" | "native" | "webgpu";
export const COMPUTE_KINDS: readonly ComputeKind[] = ["wasm", "native", "webgpu"];
export const ADAPTER_CHARS = 128;

/** What a device's power source says: battery level in 0..1 and whether it is charging. */
export interface Battery {
  level: number;
  charging: boolean;
}

export type Message =
  /** BS → device, first: a fresh nonce for the device to prove it holds the join token with (protocol/handshake.ts) */
  | { type: "challenge"; nonce: string }
  /**
   * device → BS, answering the challenge: who it is, what it can do, the experts it still holds from an
   * earlier connection (kept where placement allows), its nonce, its proof of the join token (none for
   * a base station that admits anyone) and its identity: an Ed25519 public key and its signature of the
   * handshake (protocol/handshake.ts). `unbound`: the device cannot bind the handshake to the TLS session
   * (a browser has no TLS exporter), so its proofs are over an empty binding (see hub/admission.ts).
   */
  | { type: "hello"; name: string; capabilities: Capabilities; holds?: Array<[layer: number, expert: number]>; nonce?: string; proof?: string; key?: string; signature?: string; unbound?: true }
  /** BS → device: admitted; with the base station's proof of the join token when the device's hello had a nonce */
  | { type: "welcome"; proof?: string }
  | {
      type: "assign";
      /** the model directory at the base station (a device with its own copy at that path reads it) */
      model: string;
      /** identifies the checkpoint (config and tensor layout), for a device's weight cache */
      modelId: string;
      /** the model's config.json, for a device without the files */
      config: Record<string, unknown>;
      weightDType: string;
      wireDType: WireDType;
      experts: Array<[layer: number, expert: number]>;
    }
  /** device → BS: send me these experts' weights; `have` holds the SHA-256 of tensors I hold already */
  | { type: "fetch"; experts: Array<[layer: number, expert: number]>; have: Record<string, string> }
  /** BS → device: one tensor of the checkpoint, as stored there: floats, or a GGUF file's ggml blocks (Q8_0 …) */
  | { type: "weights"; name: string; dtype: SourceDType; shape: [number, number]; sha256: string; payload: Uint8Array }
  /** BS → device: every tensor of a fetch has been sent (or was held already) */
  | { type: "fetched"; sent: number; bytes: number }
  | { type: "ready"; experts: Array<[layer: number, expert: number]> }
  /** BS → device: these experts are no longer routed here (a re-plan moved them); free their weights */
  | { type: "release"; experts: Array<[layer: number, expert: number]> }
  /**
   * BS → device: one layer's experts that this device serves in a step, each with its rows; the payload
   * holds every expert's rows in that order. One frame per device and layer, so round trips are shared.
   */
  | { type: "call"; id: number; layer: number; experts: Array<[expert: number, rows: number]>; hidden: number; dtype: WireDType; payload: Uint8Array }
  /** device → BS: a call's outputs, for the same experts and rows in the same order; computeMs for them all */
  | { type: "result"; id: number; experts: Array<[expert: number, rows: number]>; hidden: number; dtype: WireDType; computeMs: number; payload: Uint8Array }
  /** BS → device: send me your copy of this expert's weights, as you hold them (a fast tier copying it in) */
  | { type: "pull"; id: number; layer: number; expert: number }
  /** device → BS: a pulled expert's gate, up and down matrices as held in `dtype`, their bytes one after another */
  | { type: "expert"; id: number; layer: number; expert: number; /** one dtype, or gate/up/down joined by "/" (ffnDTypeName) */ dtype: string; shapes: Array<[rows: number, cols: number]>; payload: Uint8Array }
  | { type: "error"; id?: number; message: string }
  /**
   * device → BS: leaving. The base station routes it no new calls, and closes the connection once the
   * calls in flight are answered (a page being hidden drains this way, and rejoins when shown again).
   */
  | { type: "leave"; reason: string }
  /** device → BS, now and then: how it is doing; its battery where it reports one (replica choice spares a device on low battery) */
  | { type: "heartbeat"; battery?: Battery };

const TYPES = ["hello", "assign", "ready", "call", "result", "error", "leave", "fetch", "weights", "fetched", "release", "pull", "expert", "challenge", "welcome", "heartbeat"] as const;
type MessageType = (typeof TYPES)[number];

export function encodeFrame(m: Message): Uint8Array {
  const { type, ...rest } = m;
  const payload = "payload" in m ? m.payload : new Uint8Array(0);
  if ("payload" in rest) delete (rest as { payload?: unknown }).payload;
  const header = new TextEncoder().encode(JSON.stringify(rest));
  const out = new Uint8Array(PREFIX + header.length + payload.length);
  out[0] = MAGIC0;
  out[1] = MAGIC1;
  out[2] = PROTOCOL_VERSION;
  out[3] = TYPES.indexOf(type);
  new DataView(out.buffer).setUint32(4, header.length, true);
  out.set(header, PREFIX);
  out.set(payload, PREFIX + header.length);
  return out;
}

function fail(msg: string): never {
  throw new ProtocolError(msg);
}

const isInt = (v: unknown, min: number, max: number): v is number => Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
const isStr = (v: unknown, max = 4096): v is string => typeof v === "string" && v.length <= max;
const isPairs = (v: unknown): v is Array<[number, number]> =>
  Array.isArray(v) && v.length <= 1 << 16 && v.every((p) => Array.isArray(p) && p.length === 2 && isInt(p[0], 0, 1 << 16) && isInt(p[1], 0, 1 << 16));
const isWire = (v: unknown): v is WireDType => WIRE_DTYPES.includes(v as WireDType);
const isAmount = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0;
/** A JSON object (not an array) nesting at most `depth` objects and arrays. */
const isObject = (v: unknown, depth = 1): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v) && isShallow(v, depth);
const isShallow = (v: unknown, depth: number): boolean => v === null || typeof v !== "object" || (depth > 0 && Object.values(v).every((x) => isShallow(x, depth - 1)));
/** Lowercase hex of exactly `length` characters: a nonce or a proof. */
const isHex = (v: unknown, length: number): v is string => typeof v === "string" && v.length === length && /^[0-9a-f]+$/.test(v);
/** A name that is safe as one path component (no separator, not "." or ".."): the device files a tensor or a model id under it. */
const isFileName = (v: unknown, max: number): v is string => isStr(v, max) && /^[\w-][\w.-]*$/.test(v);

/**
 * JSON.parse reviver: numbers that overflow a double (1e400) are refused, and -0 becomes 0; either would
 * pass a range check yet not be the number it claims to be once written back.
 */
function finiteNumbers(_key: string, v: unknown): unknown {
  if (typeof v !== "number") return v;
  if (!Number.isFinite(v)) throw new ProtocolError("a number beyond the range of a double");
  return v === 0 ? 0 : v;
}

export function decodeFrame(data: Uint8Array): Message {
  if (data.length > LIMITS.frameBytes) fail(`frame of ${data.length} bytes exceeds the limit of ${LIMITS.frameBytes}`);
  if (data.length < PREFIX || data[0] !== MAGIC0 || data[1] !== MAGIC1) fail("not a distmoe frame (bad magic)");
  if (data[2] !== PROTOCOL_VERSION) fail(`protocol version ${data[2]} is not supported (this side speaks ${PROTOCOL_VERSION})`);
  const type: MessageType | undefined = TYPES[data[3]!];
  if (!type) fail(`unknown message type ${data[3]}`);
  const headerLen = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(4, true);
  if (headerLen > LIMITS.headerBytes || PREFIX + headerLen > data.length) fail(`header length ${headerLen} does not fit the frame`);
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(PREFIX, PREFIX + headerLen)), finiteNumbers);
  } catch (e) {
    fail(`${type} header is not valid JSON (${(e as Error).message})`);
  }
  if (!h || typeof h !== "object" || Array.isArray(h)) fail(`${type} header is not an object`);
  const payload = data.subarray(PREFIX + headerLen);
  const noPayload = () => payload.length === 0 || fail(`${type} carries no payload, got ${payload.length} bytes`);
  /** The experts with their rows, checked against the limits and the payload. */
  const activations = (): Array<[number, number]> => {
    const experts = h.experts as unknown;
    if (!Array.isArray(experts) || experts.length < 1 || experts.length > LIMITS.experts) fail(`${type}: experts must be a list of 1..${LIMITS.experts} [expert, rows] pairs`);
    let rows = 0;
    for (const p of experts as unknown[]) {
      if (!Array.isArray(p) || p.length !== 2 || !isInt(p[0], 0, 1 << 16) || !isInt(p[1], 1, LIMITS.rows)) fail(`${type}: each of experts must be [expert, rows] with rows in 1..${LIMITS.rows}`);
      rows += p[1] as number;
    }
    if (rows > LIMITS.rows) fail(`${type}: ${rows} rows in all exceed the limit of ${LIMITS.rows}`);
    if (!isInt(h.hidden, 1, LIMITS.hidden)) fail(`${type}: hidden must be an integer in 1..${LIMITS.hidden}`);
    if (!isWire(h.dtype)) fail(`${type}: dtype must be one of ${WIRE_DTYPES.join(", ")}`);
    const want = rows * (h.hidden as number) * wireBytes(h.dtype as WireDType);
    if (payload.length !== want) fail(`${type}: ${rows}×${h.hidden} ${h.dtype} needs ${want} payload bytes, got ${payload.length}`);
    return experts as Array<[number, number]>;
  };
  switch (type) {
    case "hello": {
      noPayload();
      const c = h.capabilities;
      if (!isStr(h.name, 256) || !isObject(c, 2)) fail("hello needs a name and capabilities");
      const { memoryBytes, gflops, readGbps, weightDTypes, wireDTypes } = c;
      if (!isAmount(memoryBytes) || !isAmount(gflops) || !isAmount(readGbps)) fail("hello: capabilities need memoryBytes, gflops, readGbps ≥ 0");
      const dtypes = (v: unknown, max: number, valid: (d: unknown) => boolean) => Array.isArray(v) && v.length <= max && v.every(valid);
      if (!dtypes(weightDTypes, 64, (d) => isStr(d, 16)) || !dtypes(wireDTypes, WIRE_DTYPES.length, isWire)) fail("hello: capabilities need weightDTypes (names) and wireDTypes (of f32, f16, bf16)");
      if (h.holds !== undefined && !isPairs(h.holds)) fail("hello: holds must be [[layer, expert], …]");
      if ((h.nonce !== undefined && !isHex(h.nonce, NONCE_HEX)) || (h.proof !== undefined && !isHex(h.proof, PROOF_HEX))) fail(`hello: nonce and proof must be ${NONCE_HEX} and ${PROOF_HEX} hex digits`);
      if (h.proof !== undefined && h.nonce === undefined) fail("hello: a proof needs the nonce it was made with");
      if ((h.key !== undefined && !isHex(h.key, KEY_HEX)) || (h.signature !== undefined && !isHex(h.signature, SIGNATURE_HEX))) fail(`hello: key and signature must be ${KEY_HEX} and ${SIGNATURE_HEX} hex digits`);
      if ((h.key === undefined) !== (h.signature === undefined) || (h.key !== undefined && h.nonce === undefined)) fail("hello: a key comes with its signature of the handshake, and the nonce it was made with");
      if (h.unbound !== undefined && (h.unbound !== true || h.nonce === undefined)) fail("hello: unbound is true or absent, and comes with a nonce");
      const { kind, userAgent } = c;
      if (kind !== undefined && !DEVICE_KINDS.includes(kind as DeviceKind)) fail(`hello: capabilities.kind must be one of ${DEVICE_KINDS.join(", ")}`);
      if (userAgent !== undefined && (kind !== "browser" || !isStr(userAgent, USER_AGENT_CHARS) || !/^[\x20-\x7e]*$/.test(userAgent))) fail(`hello: capabilities.userAgent is a browser's, printable ASCII of at most ${USER_AGENT_CHARS} characters`);
      // the kind shown in /health and /metrics is the one the handshake bears out: a page cannot bind its hello to the TLS session, a Node device always can
      if ((h.unbound === true) !== (kind === "browser")) fail("hello: a browser's hello (capabilities.kind browser) is unbound, and only a browser's is");
      const { compute, adapter } = c;
      if (compute !== undefined && !COMPUTE_KINDS.includes(compute as ComputeKind)) fail(`hello: capabilities.compute must be one of ${COMPUTE_KINDS.join(", ")}`);
      if (adapter !== undefined && (compute !== "webgpu" || !isStr(adapter, ADAPTER_CHARS) || !/^[\x20-\x7e]*$/.test(adapter))) fail(`hello: capabilities.adapter is a WebGPU adapter's name (compute webgpu), printable ASCII of at most ${ADAPTER_CHARS} characters`);
      const capabilities: Capabilities = {
        memoryBytes,
        gflops,
        readGbps,
        weightDTypes: weightDTypes as string[],
        wireDTypes: wireDTypes as WireDType[],
        ...(kind === undefined ? {} : { kind: kind as DeviceKind }),
        ...(userAgent === undefined ? {} : { userAgent: userAgent as string }),
        ...(compute === undefined ? {} : { compute: compute as ComputeKind }),
        ...(adapter === undefined ? {} : { adapter: adapter as string }),
      };
      return {
        type,
        name: h.name as string,
        capabilities,
        ...(h.holds === undefined ? {} : { holds: h.holds as Array<[number, number]> }),
        ...(h.nonce === undefined ? {} : { nonce: h.nonce as string }),
        ...(h.proof === undefined ? {} : { proof: h.proof as string }),
        ...(h.key === undefined ? {} : { key: h.key as string, signature: h.signature as string }),
        ...(h.unbound === undefined ? {} : { unbound: true as const }),
      };
    }
    case "challenge":
      noPayload();
      if (!isHex(h.nonce, NONCE_HEX)) fail(`challenge needs a nonce of ${NONCE_HEX} hex digits`);
      return { type, nonce: h.nonce as string };
    case "welcome": {
      noPayload();
      if (h.proof !== undefined && !isHex(h.proof, PROOF_HEX)) fail(`welcome: a proof is ${PROOF_HEX} hex digits`);
      return { type, ...(h.proof === undefined ? {} : { proof: h.proof as string }) };
    }
    case "assign":
      noPayload();
      if (!isStr(h.model) || !isFileName(h.modelId, 128) || !isObject(h.config, LIMITS.jsonDepth) || !isStr(h.weightDType, 16) || !isWire(h.wireDType) || !isPairs(h.experts)) {
        fail(`assign needs model, modelId (letters, digits, _ . -, not a dot first), config (an object nesting ≤ ${LIMITS.jsonDepth} deep), weightDType, wireDType and experts [[layer, expert], …]`);
      }
      return {
        type,
        model: h.model as string,
        modelId: h.modelId as string,
        config: h.config as Record<string, unknown>,
        weightDType: h.weightDType as string,
        wireDType: h.wireDType as WireDType,
        experts: h.experts as Array<[number, number]>,
      };
    case "fetch": {
      noPayload();
      const have = h.have;
      if (!isPairs(h.experts) || !isObject(have) || !Object.values(have).every((v) => isStr(v, 64))) fail("fetch needs experts [[layer, expert], …] and have {tensor: sha256}");
      return { type, experts: h.experts as Array<[number, number]>, have: have as Record<string, string> };
    }
    case "weights": {
      const shape = h.shape as unknown;
      if (!isFileName(h.name, 512) || !isSourceDType(h.dtype) || !isStr(h.sha256, 64)) fail(`weights needs name (letters, digits, _ . -, not a dot first), dtype (${SOURCE_DTYPES.join(", ")}) and sha256`);
      if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => isInt(d, 1, 1 << 20))) fail("weights needs a shape [rows, cols]");
      const [rows, cols] = shape as [number, number];
      const want = sourceBytes(h.dtype as SourceDType, rows, cols);
      if (want === null) fail(`weights ${h.name}: rows of ${cols} values are not whole ${h.dtype} blocks`);
      if (payload.length !== want) fail(`weights ${h.name}: ${JSON.stringify(shape)} ${h.dtype} needs ${want} payload bytes, got ${payload.length}`);
      return { type, name: h.name as string, dtype: h.dtype as SourceDType, shape: [rows, cols], sha256: h.sha256 as string, payload };
    }
    case "fetched":
      noPayload();
      if (!isInt(h.sent, 0, Number.MAX_SAFE_INTEGER) || !isInt(h.bytes, 0, Number.MAX_SAFE_INTEGER)) fail("fetched needs sent and bytes counts");
      return { type, sent: h.sent as number, bytes: h.bytes as number };
    case "ready":
    case "release":
      noPayload();
      if (!isPairs(h.experts)) fail(`${type} needs experts [[layer, expert], …]`);
      return { type, experts: h.experts as Array<[number, number]> };
    case "call": {
      if (!isInt(h.id, 0, Number.MAX_SAFE_INTEGER) || !isInt(h.layer, 0, 1 << 16)) fail("call needs integer id and layer");
      const experts = activations();
      return { type, id: h.id as number, layer: h.layer as number, experts, hidden: h.hidden as number, dtype: h.dtype as WireDType, payload };
    }
    case "result": {
      if (!isInt(h.id, 0, Number.MAX_SAFE_INTEGER)) fail("result needs an integer id");
      if (!isAmount(h.computeMs)) fail("result needs a finite computeMs ≥ 0");
      const experts = activations();
      return { type, id: h.id as number, experts, hidden: h.hidden as number, dtype: h.dtype as WireDType, computeMs: h.computeMs as number, payload };
    }
    case "pull":
      noPayload();
      if (!isInt(h.id, 0, Number.MAX_SAFE_INTEGER) || !isInt(h.layer, 0, 1 << 16) || !isInt(h.expert, 0, 1 << 16)) fail("pull needs integer id, layer and expert");
      return { type, id: h.id as number, layer: h.layer as number, expert: h.expert as number };
    case "expert": {
      if (!isInt(h.id, 0, Number.MAX_SAFE_INTEGER) || !isInt(h.layer, 0, 1 << 16) || !isInt(h.expert, 0, 1 << 16) || !isStr(h.dtype, 16)) fail("expert needs integer id, layer, expert and a dtype");
      if (!isPairs(h.shapes) || (h.shapes as unknown[]).length !== 3 || (h.shapes as Array<[number, number]>).some(([r, c]) => r < 1 || c < 1)) fail("expert needs the shapes of its three matrices");
      if (payload.length === 0) fail("expert carries its weights as payload");
      return { type, id: h.id as number, layer: h.layer as number, expert: h.expert as number, dtype: h.dtype as string, shapes: h.shapes as Array<[number, number]>, payload };
    }
    case "error":
      noPayload();
      if (!isStr(h.message) || (h.id !== undefined && !isInt(h.id, 0, Number.MAX_SAFE_INTEGER))) fail("error needs a message (and an integer id, if any)");
      return { type, ...(h.id === undefined ? {} : { id: h.id as number }), message: h.message as string };
    case "leave":
      noPayload();
      return { type, reason: isStr(h.reason) ? (h.reason as string) : "" };
    case "heartbeat": {
      noPayload();
      const b = h.battery;
      if (b === undefined) return { type };
      if (!isObject(b) || typeof b.level !== "number" || b.level < 0 || b.level > 1 || typeof b.charging !== "boolean") fail("heartbeat: battery is {level in 0..1, charging: true or false}");
      return { type, battery: { level: b.level, charging: b.charging } };
    }
  }
}
