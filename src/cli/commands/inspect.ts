import { Command } from "commander";
import { inspectModel } from "../../model/inspect.js";

const human = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n));
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

export function inspectCommand(): Command {
  return new Command("inspect")
    .description("architecture, parameters (total and active per token), experts, tensor types, bytes per dtype")
    .requiredOption("-m, --model <dir>", "Hugging Face model directory, or a .gguf file")
    .option("--json", "print the summary as JSON")
    .action((o: { model: string; json?: boolean }) => {
      const s = inspectModel(o.model);
      if (o.json) {
        process.stdout.write(JSON.stringify(s, null, 2) + "\n");
        return;
      }
      const lines = [
        `architecture      ${s.architecture}`,
        `layers            ${s.layers} (${s.sparse_layers} MoE)`,
        `hidden size       ${s.hidden_size}; ${s.attention_heads} query heads, ${s.kv_heads} key/value heads of ${s.head_dim}`,
        `vocabulary        ${s.vocab_size}`,
        `experts           ${s.experts} per layer, ${s.experts_per_token} per token, FFN ${s.expert_ffn}` + (s.shared_expert_ffn ? `; shared expert FFN ${s.shared_expert_ffn}` : ""),
        `parameters        ${human(s.parameters)} total, ${human(s.expert_parameters)} in experts, ${human(s.active_parameters_per_token)} active per token`,
        `file dtypes       ${Object.entries(s.file_dtypes).map(([d, n]) => `${d} ${human(n)}`).join(", ")} (mostly ${s.file_dtype}: weights ${s.default_dtype} in memory unless --dtype)`,
        `tensors           ${Object.entries(s.tensor_types).map(([d, n]) => `${n} ${d}`).join(", ")}`,
        `weights in memory ${Object.entries(s.bytes).map(([d, b]) => `${d} ${mib(b)}`).join(", ")}`,
      ];
      process.stdout.write(lines.join("\n") + "\n");
    });
}
