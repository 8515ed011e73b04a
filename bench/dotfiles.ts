/**
 * `bun bench/dotfiles.ts` (after `bun run build`): what a dotfiles repo and secrets add to a
 * session's boot, measured side by side.
 *
 * Three environments made from the same fixture home: one plain, one with a dotfiles repo
 * on this disk (already set up: each boot asks the repo for the ref's commit with
 * `git ls-remote` and finds nothing to do), and the plain one again with two secrets set
 * (a handoff directory, decrypting, the entrypoint sourcing a file). `agentenv run --env E
 * DIR -- true` alternating, N rounds: medians and ratios against the plain environment.
 *
 * Uses its own golden store, environment volumes, data and config dirs, removed afterwards.
 * Prints Markdown for bench/RESULTS.md.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { benchUser, median, removeStoreVolume, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const binary = join(root, "dist", "agentenv");
const rounds = Number(process.env.ROUNDS ?? 20);
const id = `bench-${process.pid}`;
const env = benchUser(id);
const project = mkdtempSync(join(tmpdir(), "agentenv-bench-"));
const fixture = join(root, "test", "fixtures", "env");

const time = (argv: string[], extra: Record<string, string> = {}) => timed(argv, { ...env, ...extra }).ms;

if (!(await Bun.file(binary).exists())) throw new Error("dist/agentenv is missing: run `bun run build` first");
const names = { plain: `${id}-plain`, dotfiles: `${id}-dots`, secrets: `${id}-secrets` };
const lines: string[] = [];
try {
  // a repo with an install script: the first boot runs it, later boots only check the ref
  const repo = mkdtempSync(join(tmpdir(), "agentenv-bench-dots-"));
  writeFileSync(join(repo, "install.sh"), "#!/bin/sh\necho installed > ~/.installed\n", { mode: 0o755 });
  for (const args of [["init", "-q"], ["add", "-A"], ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "dots"]]) Bun.spawnSync(["git", "-C", repo, ...args]);

  time([binary, "env", "create", names.plain, fixture]);
  time([binary, "env", "create", names.dotfiles, fixture, "--dotfiles", repo]);
  time([binary, "env", "create", names.secrets, fixture]);
  for (const [secret, value] of [["BENCH_TOKEN", "t0ken"], ["OTHER_TOKEN", "0ther"]]) {
    const set = Bun.spawnSync([binary, "secret", "set", secret!, "--env", names.secrets], { env, stdin: new Blob([value!]) });
    if (set.exitCode !== 0) throw new Error(`secret set failed: ${set.stderr}`);
  }
  // first boots: tools installed, dotfiles cloned and set up
  for (const name of Object.values(names)) time([binary, "run", "--env", name, project, "--", "true"]);

  const runs: Record<keyof typeof names, number[]> = { plain: [], dotfiles: [], secrets: [] };
  for (let i = 0; i < rounds; i++) {
    for (const key of Object.keys(names) as Array<keyof typeof names>) runs[key].push(time([binary, "run", "--env", names[key], project, "--", "true"]));
  }
  const plain = median(runs.plain);
  const ratio = (key: keyof typeof names) => `${median(runs[key]).toFixed(0)} ms, **ratio ${(median(runs[key]) / plain).toFixed(3)}**`;
  lines.push(
    `- boot of an environment, nothing to apply: plain ${plain.toFixed(0)} ms; with a dotfiles repo on this disk (git ls-remote, inputs unchanged) ${ratio("dotfiles")}; with two secrets ${ratio("secrets")} — ${rounds} alternating rounds`,
  );
} finally {
  for (const name of Object.values(names)) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
  await removeStoreVolume(`agentenv-${id}-nix`);
}
console.log(lines.join("\n"));
