// Command-line options for the scripts: node's parseArgs, plus `--help` (the script's own header comment,
// where each script documents its usage) and one clear line instead of a stack trace for an unknown or
// malformed option.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** The leading `//` comment of the script at `url`, without the comment marks (the shebang skipped). */
function headerComment(url) {
  const lines = readFileSync(fileURLToPath(url), "utf8").split("\n");
  if (lines[0]?.startsWith("#!")) lines.shift();
  const header = [];
  for (const line of lines) {
    if (!line.startsWith("//")) break;
    header.push(line.replace(/^\/\/ ?/, ""));
  }
  return header.join("\n");
}

/** Ends the script at `url` on a bad option or value: one line naming the script, exit status 2. */
export function refuseOption(url, message) {
  process.stderr.write(`${path.basename(fileURLToPath(url))}: ${message}\n(--help lists the options)\n`);
  process.exit(2);
}

/**
 * parseArgs(config) for the script at `url`; `--help` prints `usage()` (by default the script's header comment)
 * and exits 0, a bad option exits 2, as does an option named in `config.paths` whose file or folder is not there.
 */
export function parseScriptArgs(url, { paths = [], ...config }, usage = () => headerComment(url)) {
  const refuse = (message) => refuseOption(url, message);
  let parsed;
  try {
    parsed = parseArgs({ ...config, options: { ...config.options, help: { type: "boolean", short: "h" } } });
  } catch (err) {
    if (!err.code?.startsWith("ERR_PARSE_ARGS_")) throw err;
    refuse(err.message);
  }
  if (parsed.values.help) {
    process.stdout.write(`${usage() || `${path.basename(fileURLToPath(url))}: no usage written`}\n`);
    process.exit(0);
  }
  delete parsed.values.help;
  for (const name of paths) {
    const value = parsed.values[name];
    if (value === undefined) refuse(`--${name} is needed`);
    if (!existsSync(value)) refuse(`--${name} ${JSON.stringify(value)}: no such file or folder`);
  }
  return parsed;
}
