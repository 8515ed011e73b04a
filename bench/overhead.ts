/**
 * `bun run bench`: agentenv's overhead over the raw engine, measured side by side.
 *
 * 1. `agentenv run --no-store DIR -- true` (compiled binary) vs the exact raw `podman run`
 *    it prints with --dry-run, alternating, N rounds: median ratio (goal ≤ 1.15). The
 *    golden store's own cost is measured against this in bench/store.ts.
 * 2. `agentenv --version` of the compiled binary: median wall time (goal ≤ 25 ms).
 * 3. Peer: `@devcontainers/cli` `up` + `exec true` on the same image with
 *    `--docker-path podman` (with --peer; needs the npm package, installed into a temp prefix).
 *
 * Prints a Markdown block for bench/RESULTS.md.
 */
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { median, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const binary = join(root, "dist", "agentenv");
const rounds = Number(process.env.ROUNDS ?? 20);
const project = mkdtempSync(join(tmpdir(), "agentenv-bench-"));

const time = (argv: string[], env?: Record<string, string>) => timed(argv, { ...process.env, ...env }).ms;

if (!(await Bun.file(binary).exists())) throw new Error("dist/agentenv is missing: run `bun run build` first");
// no user config may add work to either side
const env = { HOME: mkdtempSync(join(tmpdir(), "agentenv-bench-home-")), XDG_CONFIG_HOME: "/nonexistent" };

// the raw command is the one agentenv prints; a fresh container name per round, as agentenv does
const dry = Bun.spawnSync([binary, "run", "--dry-run", "--no-store", project, "--", "true"], { env: { ...process.env, ...env } });
const rawLine = dry.stdout.toString().trim();
const raw = rawLine.split(" ");
const nameAt = raw.indexOf("--name") + 1;

const ours: number[] = [];
const theirs: number[] = [];
time([binary, "run", "--no-store", project, "--", "true"], env); // warm the page cache and storage
for (let i = 0; i < rounds; i++) {
  raw[nameAt] = `agentenv-bench-${process.pid}-${i}`;
  theirs.push(time(raw));
  ours.push(time([binary, "run", "--no-store", project, "--", "true"], env));
}
const versions: number[] = [];
for (let i = 0; i < 50; i++) versions.push(time([binary, "--version"]));

const lines = [
  `- raw engine (\`${rawLine.replace(/--name \S+/, "--name …")}\`): median ${median(theirs).toFixed(0)} ms`,
  `- \`agentenv run --no-store DIR -- true\` (compiled): median ${median(ours).toFixed(0)} ms`,
  `- **ratio ${(median(ours) / median(theirs)).toFixed(3)}** (goal ≤ 1.15), ${rounds} alternating rounds`,
  `- \`agentenv --version\` (compiled): median **${median(versions).toFixed(1)} ms** over 50 runs (goal ≤ 25 ms)`,
];

if (process.argv.includes("--peer")) {
  const prefix = mkdtempSync(join(tmpdir(), "agentenv-bench-peer-"));
  Bun.spawnSync(["npm", "install", "--silent", "--prefix", prefix, "@devcontainers/cli"], { stdout: "ignore", stderr: "ignore" });
  const devcontainer = join(prefix, "node_modules", ".bin", "devcontainer");
  const peer: number[] = [];
  for (let i = 0; i < Math.min(rounds, 5); i++) {
    const workspace = mkdtempSync(join(tmpdir(), "agentenv-bench-dc-"));
    mkdirSync(join(workspace, ".devcontainer"));
    writeFileSync(join(workspace, ".devcontainer", "devcontainer.json"), JSON.stringify({ image: "localhost/agentenv:latest" }));
    const args = ["--workspace-folder", workspace, "--docker-path", "podman"];
    const started = performance.now();
    time([devcontainer, "up", ...args]);
    time([devcontainer, "exec", ...args, "true"]);
    peer.push(performance.now() - started);
    Bun.spawnSync(["sh", "-c", `podman rm -f $(podman ps -aq --filter label=devcontainer.local_folder=${workspace})`]);
  }
  lines.push(`- peer \`devcontainer up\` + \`devcontainer exec true\` (@devcontainers/cli, --docker-path podman, same image): median ${median(peer).toFixed(0)} ms over ${peer.length} fresh workspaces`);
}

console.log(lines.join("\n"));
