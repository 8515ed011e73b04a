import { expect } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { entry, isolatedEnv, repoRoot } from "../helpers/cli.ts";

/**
 * The fault-injection suite's tools: agentenv run as a user would, optionally stopped by
 * SIGKILL at a named step (the test hook AGENTENV_TEST_CRASH_AT, see core/volumes.ts
 * crashPoint), and the checks that nothing was lost or left half-made.
 */

export const fixture = join(repoRoot, "test", "fixtures", "env");

export interface Run {
  code: number | null;
  /** the run was stopped by the test hook (SIGKILL) */
  killed: boolean;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string>;
  stdin?: string;
  /** AGENTENV_TEST_CRASH_AT: STEP, or STEP+MS */
  crashAt?: string;
  /** AGENTENV_TEST_STEPS: the file each step reached is appended to */
  stepsFile?: string;
  cwd?: string;
}

export async function run(args: string[], options: RunOptions = {}): Promise<Run> {
  const env: Record<string, string | undefined> = { ...process.env, ...isolatedEnv(), ...options.env };
  if (options.crashAt) env.AGENTENV_TEST_CRASH_AT = options.crashAt;
  if (options.stepsFile) env.AGENTENV_TEST_STEPS = options.stepsFile;
  const child = Bun.spawn([process.execPath, entry, ...args], {
    cwd: options.cwd ?? repoRoot,
    env,
    stdin: options.stdin === undefined ? "ignore" : new Blob([options.stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  await child.exited;
  return { code: child.exitCode, killed: child.signalCode === "SIGKILL", stdout, stderr };
}

/** Runs ARGS once to completion, recording the steps it passes; returns them (each once, in order). */
export async function stepsOf(args: string[], options: RunOptions = {}): Promise<{ result: Run; steps: string[] }> {
  const file = join(mkdtempSync(join(tmpdir(), "agentenv-steps-")), "steps");
  const result = await run(args, { ...options, stepsFile: file });
  const steps = existsSync(file) ? [...new Set(readFileSync(file, "utf8").split("\n").filter(Boolean))] : [];
  rmSync(join(file, ".."), { recursive: true, force: true });
  return { result, steps };
}

/**
 * Podman's stdout; "" when it fails (an inspect of what is not there). A listing (`ls`,
 * `ps`) must answer: an empty one would pass every "nothing is left" check, so a failing
 * one is retried, then thrown.
 */
export function podman(args: string[], env: Record<string, string> = {}): string {
  const listing = args.includes("ls") || args[0] === "ps";
  for (let attempt = 1; ; attempt++) {
    const out = Bun.spawnSync(["podman", ...args], { env: { ...process.env, ...env } });
    if (out.exitCode === 0) return out.stdout.toString();
    if (!listing) return "";
    if (attempt === 3) throw new Error(`podman ${args.join(" ")} failed (exit ${out.exitCode}): ${out.stderr.toString().trim()}`);
    Bun.sleepSync(200);
  }
}

export function volumeName(name: string): string {
  return `agentenv-env-${name}`;
}

export function volumeExists(name: string): boolean {
  return Bun.spawnSync(["podman", "volume", "exists", volumeName(name)]).exitCode === 0;
}

export function volumeDir(name: string): string {
  return podman(["volume", "inspect", "--format", "{{.Mountpoint}}", volumeName(name)]).trim();
}

/**
 * A home's content: every path with its type, mode and link target, and every file's
 * sha256. Left out: what agentenv rewrites by design (the home's copy of the record, the
 * last-used stamp) and, with IGNORE, more paths.
 */
export function homeHash(name: string, ignore: string[] = []): string {
  const dir = volumeDir(name);
  if (!dir) return "(no volume)";
  const skip = ["./.local/state/agentenv/env.json", "./.local/state/agentenv/last-used", ...ignore].map((p) => `! -path '${p}'`).join(" ");
  const script = `cd '${dir}' && { find . ${skip} -printf '%p %y %m %l\\n' | sort; find . -type f ${skip} -exec sha256sum {} + | sort; } | sha256sum`;
  return Bun.spawnSync(["sh", "-c", script]).stdout.toString().split(" ")[0]!;
}

/** agentenv's state dir in the tests' isolated HOME (or STATE). */
export function stateDir(state?: string): string {
  return join(state ?? join(isolatedEnv().HOME!, ".local", "state"), "agentenv");
}

/**
 * What may not be left of environments named PREFIX…: a volume without this host's record
 * or without its home's record (half-made), a record without a volume, an unfinished
 * command's journal, a helper container. Called after "the next command".
 */
export function expectNothingHalfMade(prefix: string, options: { state?: string; when?: string } = {}): void {
  const when = options.when ?? "";
  const volumes = podman(["volume", "ls", "--format", "{{.Name}}"])
    .split("\n")
    .filter((v) => v.startsWith(volumeName(prefix)));
  const envs = join(stateDir(options.state), "envs");
  const files = existsSync(envs) ? readdirSync(envs).filter((f) => f.startsWith(`podman-${prefix}`)) : [];
  const records = files.filter((f) => f.endsWith(".json")).map((f) => f.slice("podman-".length, -".json".length));
  for (const volume of volumes) {
    const name = volume.slice("agentenv-env-".length);
    expect({ when, name, record: records.includes(name) }).toEqual({ when, name, record: true });
    expect({ when, name, complete: existsSync(join(volumeDir(name), ".local/state/agentenv/env.json")) }).toEqual({ when, name, complete: true });
  }
  for (const name of records) expect({ when, name, volume: volumes.includes(volumeName(name)) }).toEqual({ when, name, volume: true });
  expect({ when, pending: files.filter((f) => f.endsWith(".pending")).map((f) => [f, ...readdirSync(join(envs, f))]) }).toEqual({ when, pending: [] });
  const helpers = volumes.flatMap((volume) => podman(["ps", "-a", "--filter", `volume=${volume}`, "--filter", "label=agentenv.helper", "--format", "{{.Names}}"]).split("\n").filter(Boolean));
  expect({ when, helpers }).toEqual({ when, helpers: [] });
}

/** Removes the test's volumes (and what uses them). */
export function removeVolumes(prefix: string): void {
  const volumes = podman(["volume", "ls", "--format", "{{.Name}}"])
    .split("\n")
    .filter((v) => v.startsWith(volumeName(prefix)));
  for (const volume of volumes) Bun.spawnSync(["podman", "volume", "rm", "--force", volume]);
}
