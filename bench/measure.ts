import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";

/** What every benchmark here needs: a timed command that must succeed, and the median. */

export interface Timed {
  ms: number;
  stdout: string;
  stderr: string;
}

/** Runs ARGV to its end; its wall time in ms. A failure stops the benchmark. */
export function timed(argv: string[], env: Record<string, string | undefined> = process.env): Timed {
  const started = performance.now();
  const result = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", env });
  const ms = performance.now() - started;
  if (result.exitCode !== 0) throw new Error(`${argv.join(" ")} failed: ${result.stderr}`);
  return { ms, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Removes a golden store volume a benchmark made, unmounting what its sessions left mounted first. */
export async function removeStoreVolume(volume: string): Promise<void> {
  const store = Bun.spawnSync(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", volume]).stdout.toString().trim();
  if (!store) return;
  const { GoldenStore } = await import("../plugins/golden/layout.ts");
  const golden = new GoldenStore(store);
  for (const session of golden.sessionNames()) await golden.removeSession(session);
  Bun.spawnSync(["podman", "volume", "rm", "--force", volume]);
}

/**
 * A throwaway user for a benchmark: HOME with a config whose golden store volume is the
 * benchmark's own (`agentenv-ID-nix`) and no binary cache (offline machine), its XDG dirs
 * under that HOME. Returns the environment to run agentenv with.
 */
export function benchUser(id: string): Record<string, string | undefined> {
  const home = mkdtempSync(join(tmpdir(), "agentenv-bench-home-"));
  mkdirSync(join(home, ".config", "agentenv"), { recursive: true });
  writeFileSync(join(home, ".config", "agentenv", "config.ts"), `export default { storeVolume: "agentenv-${id}-nix", extraEnv: { NIX_CONFIG: "substituters =" } };\n`);
  return { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, ".config"), XDG_DATA_HOME: join(home, ".local/share") };
}
