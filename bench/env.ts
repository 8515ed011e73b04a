/**
 * `bun bench/env.ts` (after `bun run build`): what environments cost, measured side by side.
 *
 * 1. Second boot: `agentenv run --env E DIR -- true` (the environment exists, its
 *    ~/flake.nix tools are installed) vs `agentenv run DIR -- true`, both with the golden
 *    store, alternating, N rounds: median ratio (goal ≤ 1.1). The environment's boot makes
 *    no Nix call when ~/flake.nix is unchanged; this is where that shows.
 * 2. `agentenv env create` of a 10,000-file template vs the peer `podman volume create` +
 *    `podman volume import` of a tar of the same template (creating the tar not counted).
 *
 * Uses its own golden store and environment volumes, removed afterwards. Prints Markdown
 * for bench/RESULTS.md.
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

const time = (argv: string[]) => timed(argv, env).ms;

if (!(await Bun.file(binary).exists())) throw new Error("dist/agentenv is missing: run `bun run build` first");
const volumes = [`agentenv-env-${id}`, `agentenv-env-${id}-big`, `agentenv-${id}-peer`, `agentenv-env-${id}-u`];
const lines: string[] = [];
try {
  // 1. second boot with an environment (fixture template: a tools flake with no inputs)
  // a trusted project: an untrusted one keeps nothing in the golden store, so the tools
  // would be built again at every boot (README: Security model, known limits)
  time([binary, "trust", project]);
  time([binary, "env", "create", id, join(root, "test", "fixtures", "env")]);
  time([binary, "run", "--env", id, project, "--", "true"]); // first boot: installs the tools
  time([binary, "run", project, "--", "true"]);
  const withEnv: number[] = [];
  const without: number[] = [];
  for (let i = 0; i < rounds; i++) {
    without.push(time([binary, "run", project, "--", "true"]));
    withEnv.push(time([binary, "run", "--env", id, project, "--", "true"]));
  }
  lines.push(
    `- second boot: \`agentenv run --env E DIR -- true\` median ${median(withEnv).toFixed(0)} ms, \`agentenv run DIR -- true\` median ${median(without).toFixed(0)} ms — **ratio ${(median(withEnv) / median(without)).toFixed(3)}** (goal ≤ 1.1), ${rounds} alternating rounds`,
  );

  // 1b. the same in an untrusted project, on a fresh environment: its tools are installed
  // into the golden store by the step before the first session (plugins/env/tools.ts)
  const untrusted = mkdtempSync(join(tmpdir(), "agentenv-bench-untrusted-"));
  time([binary, "env", "create", `${id}-u`, join(root, "test", "fixtures", "env")]);
  const firstUntrusted = time([binary, "run", "--env", `${id}-u`, untrusted, "--", "true"]);
  const withEnvU: number[] = [];
  const withoutU: number[] = [];
  for (let i = 0; i < rounds; i++) {
    withoutU.push(time([binary, "run", untrusted, "--", "true"]));
    withEnvU.push(time([binary, "run", "--env", `${id}-u`, untrusted, "--", "true"]));
  }
  lines.push(
    `- second boot in an **untrusted** project: \`agentenv run --env E DIR -- true\` median ${median(withEnvU).toFixed(0)} ms, \`agentenv run DIR -- true\` median ${median(withoutU).toFixed(0)} ms — **ratio ${(median(withEnvU) / median(withoutU)).toFixed(3)}** (goal ≤ 1.1), ${rounds} alternating rounds; its first boot (the tools step, then the session) ${firstUntrusted.toFixed(0)} ms`,
  );

  // 2. env create of a 10k-file template vs podman volume import of the same tree as a tar
  const template = mkdtempSync(join(tmpdir(), "agentenv-bench-template-"));
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(template, `.config/dir-${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) writeFileSync(join(template, `.config/dir-${d}/file-${f}`), `dir ${d} file ${f}\n`.repeat(8));
  }
  const bytes = 100 * 100 * "dir 0 file 0\n".length * 8;
  const tar = join(tmpdir(), `agentenv-${id}.tar`);
  Bun.spawnSync(["tar", "-C", template, "-cf", tar, "."]);
  const create = time([binary, "env", "create", `${id}-big`, template]);
  const peerStarted = performance.now();
  time(["podman", "volume", "create", volumes[2]!]);
  time(["podman", "volume", "import", volumes[2]!, tar]);
  const peer = performance.now() - peerStarted;
  lines.push(
    `- \`agentenv env create\` of a 10,000-file template (100 dirs × 100 files, ≈${(bytes / 1e6).toFixed(1)} MB): **${create.toFixed(0)} ms** (validating + hashing the template, one helper container copying it, the record); peer \`podman volume create\` + \`podman volume import\` of a tar of the same tree: ${peer.toFixed(0)} ms`,
  );
} finally {
  for (const volume of volumes) Bun.spawnSync(["podman", "volume", "rm", "--force", volume]);
  await removeStoreVolume(`agentenv-${id}-nix`);
}
console.log(lines.join("\n"));
