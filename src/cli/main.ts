// distmoe's command line: one subcommand per job, each in ./commands.
import { Command } from "commander";
import { generateCommand } from "./commands/generate.js";
import { perplexityCommand } from "./commands/perplexity.js";
import { benchCommand } from "./commands/bench.js";
import { inspectCommand } from "./commands/inspect.js";
import { initModelCommand } from "./commands/init-model.js";
import { convertCommand } from "./commands/convert.js";
import { deviceCommand } from "./commands/device.js";
import { serveCommand } from "./commands/serve.js";
import { evalCommand } from "./commands/eval.js";
import { simulateCommand } from "./commands/simulate.js";

const program = new Command("distmoe")
  .description("Mixture-of-Experts inference spread over devices and memory tiers")
  .showHelpAfterError()
  .addCommand(generateCommand())
  .addCommand(perplexityCommand())
  .addCommand(evalCommand())
  .addCommand(simulateCommand())
  .addCommand(benchCommand())
  .addCommand(inspectCommand())
  .addCommand(initModelCommand())
  .addCommand(convertCommand())
  .addCommand(deviceCommand())
  .addCommand(serveCommand());

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.stderr.write(`distmoe: error: ${(e as Error).message}\n`);
  if (process.env.DISTMOE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
  // exit now: a failed command may leave a listening socket or a child behind
  process.exit(1);
}
