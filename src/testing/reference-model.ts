// A deliberately plain float64 implementation of the Hugging Face forward passes of the supported
// families (MixtralForCausalLM, Qwen2MoeForCausalLM, OlmoeForCausalLM, Qwen3MoeForCausalLM), for
// tests only. It reads config.json and the safetensors itself and shares no code with the engine's
// loader, architecture table or kernels, so that agreement between the two means something.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { SafetensorsFile } from "../model/safetensors.js";

type Vec = Float64Array;

function decode(file: SafetensorsFile, name: string): Vec {
  const t = file.tensors.get(name);
  if (!t) throw new Error(`reference: missing ${name}`);
  const raw = file.read(name);
  const n = t.bytes / (t.dtype === "F32" ? 4 : 2);
  const out = new Float64Array(n);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < n; i++) {
    if (t.dtype === "F32") out[i] = dv.getFloat32(i * 4, true);
    else if (t.dtype === "BF16") out[i] = new Float32Array(new Uint32Array([dv.getUint16(i * 2, true) << 16]).buffer)[0]!;
    else {
      const h = dv.getUint16(i * 2, true);
      const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1;
      out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? s * Infinity : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return out;
}

export interface ReferenceOutput {
  /** T × vocab */
  logits: Vec;
  /** [layer][token] → chosen experts, best first (empty for dense layers) */
  experts: number[][][];
  /** [layer][token] → the softmax probabilities of every expert */
  probs: number[][][];
}

export class ReferenceModel {
  private readonly c: Record<string, any>;
  private readonly files: SafetensorsFile[] = [];
  private readonly where = new Map<string, SafetensorsFile>();
  private readonly cache = new Map<string, Vec>();

  constructor(dir: string) {
    this.c = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8"));
    const index = path.join(dir, "model.safetensors.index.json");
    const shards = existsSync(index) ? [...new Set(Object.values(JSON.parse(readFileSync(index, "utf8")).weight_map as Record<string, string>))] : ["model.safetensors"];
    for (const s of shards) {
      const f = SafetensorsFile.open(path.join(dir, s));
      this.files.push(f);
      for (const n of f.tensors.keys()) this.where.set(n, f);
    }
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  private has(name: string): boolean {
    return this.where.has(name);
  }

  private w(name: string): Vec {
    let v = this.cache.get(name);
    if (!v) {
      const f = this.where.get(name);
      if (!f) throw new Error(`reference: missing ${name}`);
      v = decode(f, name);
      this.cache.set(name, v);
    }
    return v;
  }

  forward(ids: number[]): ReferenceOutput {
    const c = this.c;
    const arch: string = c.architectures[0];
    const mixtral = arch === "MixtralForCausalLM", qwen2 = arch === "Qwen2MoeForCausalLM", olmoe = arch === "OlmoeForCausalLM", qwen3 = arch === "Qwen3MoeForCausalLM";
    const H: number = c.hidden_size, nH: number = c.num_attention_heads, nKV: number = c.num_key_value_heads ?? nH;
    const hd: number = c.head_dim ?? H / nH, L: number = c.num_hidden_layers, V: number = c.vocab_size;
    const eps: number = c.rms_norm_eps, theta: number = c.rope_theta ?? 10000;
    const K: number = c.num_experts_per_tok;
    const normTopK = mixtral ? true : !!c.norm_topk_prob;
    const attnBias = qwen2 || ((olmoe || qwen3) && !!c.attention_bias);
    const oBias = (olmoe || qwen3) && !!c.attention_bias;
    const T = ids.length;

    const rms = (x: Vec, w: Vec): Vec => {
      let ss = 0;
      for (const v of x) ss += v * v;
      const inv = 1 / Math.sqrt(ss / x.length + eps);
      return x.map((v, i) => v * inv * w[i]!);
    };
    const linear = (x: Vec, name: string, bias?: string): Vec => {
      const W = this.w(name), n = W.length / x.length;
      const y = new Float64Array(n);
      for (let o = 0; o < n; o++) {
        let s = 0;
        for (let i = 0; i < x.length; i++) s += W[o * x.length + i]! * x[i]!;
        y[o] = s + (bias ? this.w(bias)[o]! : 0);
      }
      return y;
    };
    const silu = (v: number) => v / (1 + Math.exp(-v));
    const ffn = (x: Vec, g: string, u: string, d: string) => {
      const a = linear(x, g), b = linear(x, u);
      return linear(a.map((v, i) => silu(v) * b[i]!), d);
    };
    const rope = (x: Vec, heads: number, pos: number) => {
      const half = hd / 2;
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < half; i++) {
          const ang = pos / Math.pow(theta, (2 * i) / hd);
          const a = x[h * hd + i]!, b = x[h * hd + i + half]!;
          x[h * hd + i] = a * Math.cos(ang) - b * Math.sin(ang);
          x[h * hd + i + half] = b * Math.cos(ang) + a * Math.sin(ang);
        }
      }
    };

    const embed = this.w("model.embed_tokens.weight");
    let xs: Vec[] = ids.map((id) => embed.slice(id * H, (id + 1) * H));
    const expertsOut: number[][][] = [], probsOut: number[][][] = [];
    for (let l = 0; l < L; l++) {
      const p = `model.layers.${l}.`;
      const hs = xs.map((x) => rms(x, this.w(p + "input_layernorm.weight")));
      const qs: Vec[] = [], ks: Vec[] = [], vs: Vec[] = [];
      hs.forEach((h, t) => {
        let q = linear(h, p + "self_attn.q_proj.weight", attnBias ? p + "self_attn.q_proj.bias" : undefined);
        let k = linear(h, p + "self_attn.k_proj.weight", attnBias ? p + "self_attn.k_proj.bias" : undefined);
        let v = linear(h, p + "self_attn.v_proj.weight", attnBias ? p + "self_attn.v_proj.bias" : undefined);
        if (olmoe) {
          q = rms(q, this.w(p + "self_attn.q_norm.weight"));
          k = rms(k, this.w(p + "self_attn.k_norm.weight"));
          if (c.clip_qkv) {
            const cl = (a: Vec) => a.map((z) => Math.min(Math.max(z, -c.clip_qkv), c.clip_qkv));
            q = cl(q);
            k = cl(k);
            v = cl(v);
          }
        }
        if (qwen3) {
          const perHead = (a: Vec, heads: number, w: Vec) => {
            const out = new Float64Array(a.length);
            for (let hh = 0; hh < heads; hh++) out.set(rms(a.slice(hh * hd, (hh + 1) * hd), w), hh * hd);
            return out;
          };
          q = perHead(q, nH, this.w(p + "self_attn.q_norm.weight"));
          k = perHead(k, nKV, this.w(p + "self_attn.k_norm.weight"));
        }
        rope(q, nH, t);
        rope(k, nKV, t);
        qs.push(q);
        ks.push(k);
        vs.push(v);
      });
      const group = nH / nKV;
      xs = xs.map((x, t) => {
        const att = new Float64Array(nH * hd);
        for (let h = 0; h < nH; h++) {
          const g = Math.floor(h / group);
          const sc: number[] = [];
          for (let j = 0; j <= t; j++) {
            let s = 0;
            for (let d = 0; d < hd; d++) s += qs[t]![h * hd + d]! * ks[j]![g * hd + d]!;
            sc.push(s / Math.sqrt(hd));
          }
          const m = Math.max(...sc);
          const e = sc.map((s) => Math.exp(s - m));
          const z = e.reduce((a, b) => a + b, 0);
          for (let j = 0; j <= t; j++) for (let d = 0; d < hd; d++) att[h * hd + d]! += (e[j]! / z) * vs[j]![g * hd + d]!;
        }
        const o = linear(att, p + "self_attn.o_proj.weight", oBias ? p + "self_attn.o_proj.bias" : undefined);
        return x.map((v, i) => v + o[i]!);
      });

      const onlyDense: number[] = c.mlp_only_layers ?? [];
      const sparse = !onlyDense.includes(l) && (l + 1) % (c.decoder_sparse_step ?? 1) === 0;
      const layerExperts: number[][] = [], layerProbs: number[][] = [];
      xs = xs.map((x) => {
        const h = rms(x, this.w(p + "post_attention_layernorm.weight"));
        let out: Vec;
        if (!sparse) out = ffn(h, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight");
        else {
          const logits = linear(h, p + (mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"));
          const m = Math.max(...logits);
          const ex = Array.from(logits, (z) => Math.exp(z - m));
          const z = ex.reduce((a, b) => a + b, 0);
          const probs = ex.map((e) => e / z);
          const top = probs.map((pr, i) => [pr, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, K);
          const sum = top.reduce((s, [pr]) => s + pr, 0);
          out = new Float64Array(H);
          for (const [pr, e] of top) {
            const w = normTopK ? pr / sum : pr;
            const y = mixtral
              ? ffn(h, `${p}block_sparse_moe.experts.${e}.w1.weight`, `${p}block_sparse_moe.experts.${e}.w3.weight`, `${p}block_sparse_moe.experts.${e}.w2.weight`)
              : ffn(h, `${p}mlp.experts.${e}.gate_proj.weight`, `${p}mlp.experts.${e}.up_proj.weight`, `${p}mlp.experts.${e}.down_proj.weight`);
            for (let i = 0; i < H; i++) out[i]! += w * y[i]!;
          }
          if (qwen2) {
            const sg = 1 / (1 + Math.exp(-linear(h, p + "mlp.shared_expert_gate.weight")[0]!));
            const y = ffn(h, p + "mlp.shared_expert.gate_proj.weight", p + "mlp.shared_expert.up_proj.weight", p + "mlp.shared_expert.down_proj.weight");
            for (let i = 0; i < H; i++) out[i]! += sg * y[i]!;
          }
          layerExperts.push(top.map(([, e]) => e));
          layerProbs.push(probs);
        }
        return x.map((v, i) => v + out[i]!);
      });
      expertsOut.push(layerExperts);
      probsOut.push(layerProbs);
    }
    const head = this.has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight";
    const logits = new Float64Array(T * V);
    xs.forEach((x, t) => logits.set(linear(rms(x, this.w("model.norm.weight")), head), t * V));
    return { logits, experts: expertsOut, probs: probsOut };
  }
}
