import { Command, Option } from "commander";
import { convertToGguf, OUT_TYPES, type OutType } from "../../model/gguf-convert.js";
import { ProgressBar } from "../progress.js";

export function convertCommand(): Command {
  return new Command("convert")
    .description("write a Hugging Face model directory as GGUF, as llama.cpp's convert_hf_to_gguf.py writes it")
    .argument("<hf-dir>", "Hugging Face model directory (config.json, safetensors, tokenizer)")
    .argument("<out.gguf>", "GGUF file to write")
    .addOption(new Option("--outtype <type>", "type of the weight matrices; auto: the checkpoint's own 16-bit type (norms, biases and routers stay f32)").choices([...OUT_TYPES]).default("auto"))
    .option("--name <name>", "general.name (default: the directory's name, titled as llama.cpp's converter does)")
    .action((dir: string, out: string, o: { outtype: OutType; name?: string }) => {
      const bar = new ProgressBar("converting");
      const t0 = Date.now();
      const s = convertToGguf(dir, out, { outtype: o.outtype, name: o.name, onProgress: (d, t) => bar.update(d, t), log: (m) => process.stderr.write(`${m}\n`) });
      const types = Object.entries(s.types).map(([t, n]) => `${n} ${t}`).join(", ");
      process.stderr.write(`wrote ${out}: ${s.tensors} tensors (${types}), ${(s.bytes / 2 ** 20).toFixed(1)} MiB of tensor data in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    });
}
