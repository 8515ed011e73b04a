import { createConsola, type ConsolaInstance, type ConsolaReporter, type LogObject } from "consola/core";
import { formatWithOptions } from "node:util";

export type Log = ConsolaInstance;

const marks: Record<string, string> = {
  fatal: "✖ ",
  error: "✖ ",
  warn: "⚠ ",
  success: "✔ ",
  start: "… ",
  fail: "✖ ",
};

/**
 * consola's core without its fancy reporter: the full `consola` entry costs ~30 ms
 * of startup in the compiled binary. Everything goes to stderr: stdout belongs to
 * the command running in the container and to `--json` / `--dry-run` output.
 */
const stderrReporter: ConsolaReporter = {
  log(entry: LogObject) {
    const text = formatWithOptions({ colors: false }, ...entry.args);
    process.stderr.write(`${marks[entry.type] ?? ""}${text}\n`);
  },
};

export function createLog(options: { verbose?: boolean; quiet?: boolean } = {}): Log {
  const level = options.quiet ? 1 : options.verbose ? 4 : 3;
  return createConsola({ level, reporters: [stderrReporter] });
}

/** 1536 → "1.5 KiB": sizes for people. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
