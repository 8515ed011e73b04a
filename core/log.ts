import { createConsola, type ConsolaInstance } from "consola";

export type Log = ConsolaInstance;

/**
 * All of agentenv's own messages go to stderr: stdout belongs to the command
 * running in the container (and to `--json` / `--dry-run` output).
 */
export function createLog(options: { verbose?: boolean; quiet?: boolean } = {}): Log {
  const level = options.quiet ? 1 : options.verbose ? 4 : 3;
  return createConsola({
    level,
    stdout: process.stderr,
    stderr: process.stderr,
    formatOptions: { date: false },
  });
}
