/**
 * `bun bench/registry.ts`: `env push`/`env pull` of a 100 MB home with 10,000 files against
 * a real registry on loopback (Debian's docker-registry), next to `env export`/`env import`
 * of the same home (one gzip-compressed tar through a file): median times and ratios over
 * ROUNDS rounds (default 5), each push to a registry of its own (so every blob is sent),
 * each pull and import into a new environment; then the second push after a one-file
 * change — what it uploads. Prints Markdown for bench/RESULTS.md.
 *
 * Runs `bun bin/agentenv.ts` (AGENTENV_BIN="dist/agentenv" for the compiled binary), with a
 * throwaway user and its own golden store; removes its environments and store after.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { startRegistry } from "../test/helpers/registry.ts";
import { benchUser, median, removeStoreVolume, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const bin = process.env.AGENTENV_BIN ? [join(root, process.env.AGENTENV_BIN)] : [process.execPath, join(root, "bin", "agentenv.ts")];
const rounds = Number(process.env.ROUNDS ?? 5);
const id = `bench-reg-${process.pid}`;
const env = benchUser(id);
const agentenv = (...args: string[]) => timed([...bin, ...args], env);

let registry = await startRegistry();
const made: string[] = [];
const lines: string[] = [];
const work = mkdtempSync(join(tmpdir(), "agentenv-bench-registry-"));
try {
  // the home: 100 dirs × 100 files of 10,000 bytes (half text, half noise: a realistic mix for gzip)
  const template = join(work, "template");
  const noise = () => Buffer.from(crypto.getRandomValues(new Uint8Array(5000)));
  for (let d = 0; d < 100; d++) {
    const dir = join(template, d % 10 === 0 ? `.claude/projects/p${d}` : `src/dir-${d}`);
    Bun.spawnSync(["mkdir", "-p", dir]);
    for (let f = 0; f < 100; f++) writeFileSync(join(dir, `file-${f}`), Buffer.concat([Buffer.from(`dir ${d} file ${f}\n`.repeat(5000).slice(0, 5000)), noise()]));
  }
  const source = `${id}-src`;
  made.push(source);
  agentenv("env", "create", source, template);

  const push: number[] = [];
  const pull: number[] = [];
  const exp: number[] = [];
  const imp: number[] = [];
  let pushedBytes = 0;
  for (let round = 0; round < rounds; round++) {
    // a registry of its own each round: every blob is sent (none there, none to mount)
    registry.stop();
    registry = await startRegistry();
    const ref = `${registry.address}/bench/r${round}:v1`;
    const pushed = agentenv("env", "push", source, ref, "--json", "--force");
    push.push(pushed.ms);
    pushedBytes = JSON.parse(pushed.stdout).transferred;
    const pulledName = `${id}-pull${round}`;
    made.push(pulledName);
    pull.push(agentenv("env", "pull", ref, pulledName).ms);
    const archive = join(work, `home-${round}.tar.gz`);
    exp.push(agentenv("env", "export", source, "-o", archive).ms);
    const importedName = `${id}-imp${round}`;
    made.push(importedName);
    imp.push(agentenv("env", "import", importedName, archive).ms);
    rmSync(archive, { force: true });
    for (const name of [pulledName, importedName]) agentenv("env", "rm", name, "--force");
  }

  // a second push after a one-file change: only the part holding it goes up
  const last = `${registry.address}/bench/r${rounds - 1}:v1`;
  const volume = Bun.spawnSync(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", `agentenv-env-${source}`]).stdout.toString().trim();
  writeFileSync(join(volume, "src/dir-1/file-1"), "changed\n");
  const again = agentenv("env", "push", source, last, "--json");
  const second = JSON.parse(again.stdout) as { transferred: number; layers: Array<{ part: string; status: string; size: number }> };
  writeFileSync(join(volume, ".claude/projects/p0/file-1"), "changed too\n");
  const memory = JSON.parse(agentenv("env", "push", source, last, "--json").stdout) as typeof second;

  const ms = (xs: number[]) => `${median(xs).toFixed(0)} ms`;
  lines.push(
    `- \`env push\` of a 100 MB home (10,000 files, ${(pushedBytes / 1e6).toFixed(1)} MB of blobs after gzip) to a registry on loopback: median **${ms(push)}**; \`env export\` of the same home to a file: ${ms(exp)} — **ratio ${(median(push) / median(exp)).toFixed(2)}** (${rounds} rounds, each push to a new registry: every blob sent)`,
    `- \`env pull\` of it into a new environment: median **${ms(pull)}**; \`env import\` of the export: ${ms(imp)} — **ratio ${(median(pull) / median(imp)).toFixed(2)}**`,
    `- second push after a one-file change in the home: **${(second.transferred / 1e6).toFixed(2)} MB sent** (${second.layers.map((l) => `${l.part} ${l.status}`).join(", ")}) in ${again.ms.toFixed(0)} ms; after a one-file change in an agent's memory: **${(memory.transferred / 1e6).toFixed(2)} MB sent** (${memory.layers.map((l) => `${l.part} ${l.status}`).join(", ")})`,
  );
} finally {
  registry.stop();
  for (const name of made) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
  await removeStoreVolume(`agentenv-${id}-nix`);
  rmSync(work, { recursive: true, force: true });
}
console.log(lines.join("\n"));
