import { mkdtempSync, mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "pathe";
import { trustProject } from "../../core/trust.ts";
import { sharePodmanStorage } from "./podman-home.ts";

export const repoRoot = join(import.meta.dir, "..", "..");
export const entry = join(repoRoot, "bin", "agentenv.ts");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A throwaway directory with the given files (path → content). */
export function tempTree(files: Record<string, string> = {}, prefix = "agentenv-test-"): string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

/** The golden store volume tests use, so they never touch the machine's own `agentenv-nix`. */
export const testStoreVolume = "agentenv-test-nix";

/**
 * An isolated HOME so no user config of the machine leaks into a test. Its user
 * config is what an offline user writes: no binary cache (this machine reaches none;
 * Nix would retry cache.nixos.org for seconds on every dev shell). The temp dir, where
 * tests make their projects, is a tree of the user's own work (`trust`): the trust
 * tests (test/integration/trust.test.ts) use a config home without it.
 */
export const isolatedHome = tempTree(
  {
    ".config/agentenv/config.ts": `export default { storeVolume: "${testStoreVolume}", extraEnv: { NIX_CONFIG: "substituters =" }, trust: [${JSON.stringify(realpathSync(tmpdir()))}] };\n`,
  },
  "agentenv-home-",
);

/** ENV, after its user trusted each of DIRS (`agentenv trust DIR`, recorded under ENV's HOME): for loadConfig in unit tests. */
export function trustIn<E extends Record<string, string | undefined>>(env: E, ...dirs: string[]): E {
  for (const dir of dirs) trustProject(dir, env);
  return env;
}

/** Whether the tests run as a normal user (rootless Podman: test/integration/rootless.test.ts). */
export const rootless = process.getuid?.() !== 0;

if (rootless) sharePodmanStorage(isolatedHome);

/** The environment every CLI run in tests gets: the isolated HOME and its config, no colours. */
export function isolatedEnv(): Record<string, string> {
  return { HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config"), NO_COLOR: "1" };
}

/** Runs the CLI (the script, or `bin` when given) as a user would; captures everything. */
export async function agentenv(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; stdin?: string; bin?: string[] } = {},
): Promise<CliResult> {
  const child = Bun.spawn([...(options.bin ?? [process.execPath, entry]), ...args], {
    cwd: options.cwd ?? repoRoot,
    env: { ...process.env, ...isolatedEnv(), ...options.env },
    stdin: options.stdin === undefined ? "ignore" : new Blob([options.stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  return { code: await child.exited, stdout, stderr };
}

/** Runs CMD (not agentenv: a wrapper, git…) with the isolated environment; captures everything. */
export function sh(cmd: string[], options: { cwd?: string; env?: Record<string, string> } = {}): CliResult {
  const out = Bun.spawnSync(cmd, { cwd: options.cwd, env: { ...process.env, ...isolatedEnv(), ...options.env } });
  return { code: out.exitCode, stdout: out.stdout.toString(), stderr: out.stderr.toString() };
}
