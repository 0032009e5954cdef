import { Command, Option } from "commander";
import { RoutingTraceFile } from "../../moe/trace.js";
import { addModelOptions, nonNegativeInt, nonNegativeNumber, openEngine, positiveInt, unitInterval, type ModelCliOptions } from "../options.js";

interface GenerateCliOptions extends ModelCliOptions {
  prompt: string;
  chat?: boolean;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed?: number;
  stop: string[];
  json?: boolean;
  trace?: string;
}

export function generateCommand(): Command {
  return addModelOptions(new Command("generate").description("generate text from a prompt, streaming it to stdout"))
    .requiredOption("-p, --prompt <text>", "the prompt")
    .option("--chat", "wrap the prompt as a user message with the model's chat template")
    .option("-n, --max-tokens <n>", "tokens to generate at most", positiveInt, 128)
    .option("--temperature <t>", "sampling temperature; 0 = greedy", nonNegativeNumber, 0.8)
    .option("--top-k <k>", "sample among the k most likely tokens (0 = all)", nonNegativeInt, 40)
    .option("--top-p <p>", "nucleus sampling mass", unitInterval, 0.95)
    .option("--seed <s>", "random seed (default: time-based)", nonNegativeInt)
    .option("--stop <text>", "end before this text (repeatable)", (v: string, all: string[]) => [...all, v], [] as string[])
    .option("--json", "print one JSON object instead of streaming text")
    .addOption(new Option("--trace <file>", "write every layer's routing (experts and weights per token) as JSON Lines"))
    .action(async (o: GenerateCliOptions) => {
      const trace = o.trace ? new RoutingTraceFile(o.trace) : undefined;
      const { engine, close } = await openEngine(o, { trace });
      try {
        const tk = engine.tokenizer;
        const prompt = o.chat ? tk.encode(tk.applyChatTemplate([{ role: "user", content: o.prompt }]), false) : tk.encode(o.prompt);
        const stream = o.json ? undefined : (piece: string) => process.stdout.write(piece);
        const r = await engine.generate(prompt, { maxTokens: o.maxTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, stop: o.stop }, stream);
        const decodeTps = r.decodeSteps > 0 ? r.decodeSteps / (r.decodeMs / 1000) : 0;
        if (o.json) {
          process.stdout.write(
            JSON.stringify({
              prompt_tokens: r.promptTokens,
              tokens: r.tokens,
              text: r.text,
              prefill_tokens_per_s: r.promptTokens.length / (r.prefillMs / 1000),
              decode_tokens_per_s: decodeTps,
              stop_reason: r.stopReason,
              experts: r.experts,
              latency_ms_per_token: r.latency,
            }) + "\n",
          );
        } else {
          process.stdout.write("\n");
          process.stderr.write(
            `[${r.promptTokens.length} prompt tokens at ${(r.promptTokens.length / (r.prefillMs / 1000)).toFixed(1)} tok/s, ` +
              `${r.tokens.length} generated at ${decodeTps.toFixed(1)} tok/s; stop: ${r.stopReason}]\n`,
          );
        }
      } finally {
        await close();
        trace?.close();
      }
    });
}
