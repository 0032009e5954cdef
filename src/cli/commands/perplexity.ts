import { Command } from "commander";
import { perplexity, protocolTokens } from "../../eval/perplexity.js";
import { ProgressBar } from "../progress.js";
import { addModelOptions, openEngine, positiveInt, readTextFile, type ModelCliOptions } from "../options.js";

interface PerplexityCliOptions extends ModelCliOptions {
  text: string;
  tokens: number;
  json?: boolean;
}

export function perplexityCommand(): Command {
  return addModelOptions(
    new Command("perplexity").description(
      "perplexity of a text: BOS before every line, lines concatenated, first N+1 tokens, windows of 256 targets each from an empty cache",
    ),
  )
    .requiredOption("--text <file>", "UTF-8 text, one paragraph per line")
    .option("--tokens <n>", "number of predicted tokens N", positiveInt, 4096)
    .option("--json", 'print {"perplexity", "tokens", "nll_sum"}')
    .action(async (o: PerplexityCliOptions) => {
      const text = readTextFile(o.text);
      const { engine, close } = await openEngine(o);
      try {
        const tokens = protocolTokens(engine.tokenizer, text, o.tokens + 1);
        const bar = new ProgressBar("evaluating");
        const t0 = performance.now();
        const r = await perplexity(engine.model, tokens, { onProgress: (d, t) => bar.update(d, t, "tokens") });
        const seconds = (performance.now() - t0) / 1000;
        if (o.json) process.stdout.write(JSON.stringify({ perplexity: r.perplexity, tokens: r.tokens, nll_sum: r.nll_sum }) + "\n");
        else {
          process.stdout.write(`perplexity ${r.perplexity.toFixed(4)} over ${r.tokens} tokens (nll sum ${r.nll_sum.toFixed(4)}, next-token accuracy ${(r.correct / r.tokens).toFixed(4)})\n`);
          process.stderr.write(`[${(r.tokens / seconds).toFixed(0)} tokens/s]\n`);
        }
      } finally {
        await close();
      }
    });
}
