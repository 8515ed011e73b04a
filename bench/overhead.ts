/**
 * `bun run bench`: agentenv's overhead over the raw engine, measured side by side.
 *
 * 1. `agentenv run --no-store DIR -- true` (compiled binary) vs the exact raw `podman run`
 *    it prints with --dry-run, alternating, N rounds: median ratio (goal ≤ 1.15). The
 *    golden store's own cost is measured against this in bench/store.ts.
 *    Run as a normal user it measures rootless Podman (issue 8), and adds
 *    `agentenv run DIR -- true` with the golden store (its overlay clone made inside
 *    Podman's user namespace) against the same raw line.
 *    The project has an `agentenv.config.ts` the user trusted (`agentenv trust`): each
 *    session checks that trust (a stat and a hash of the file) and imports it.
 * 2. `agentenv --version` of the compiled binary: median wall time (goal ≤ 25 ms).
 * 3. Peer: `@devcontainers/cli` `up` + `exec true` on the same image with
 *    `--docker-path podman` (with --peer; needs the npm package, installed into a temp prefix).
 *
 * Prints a Markdown block for bench/RESULTS.md.
 */
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { sharePodmanStorage } from "../test/helpers/podman-home.ts";
import { median, removeStoreVolume, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const binary = join(root, "dist", "agentenv");
const rounds = Number(process.env.ROUNDS ?? 20);
const project = mkdtempSync(join(tmpdir(), "agentenv-bench-"));

const time = (argv: string[], env?: Record<string, string>) => timed(argv, { ...process.env, ...env }).ms;

if (!(await Bun.file(binary).exists())) throw new Error("dist/agentenv is missing: run `bun run build` first");
// no user config may add work to either side; rootless Podman keeps its config and images
// under HOME, so a normal user's throwaway HOME gets those (and nothing of agentenv's)
const rootless = process.getuid?.() !== 0;
const home = mkdtempSync(join(tmpdir(), "agentenv-bench-home-"));
if (rootless) sharePodmanStorage(home);
const env = { HOME: home, XDG_CONFIG_HOME: rootless ? join(home, ".config") : "/nonexistent" };
const storeVolume = `agentenv-bench-nix-${process.pid}`;

// a trusted project with a config: the session pays the trust check and the import
writeFileSync(join(project, "agentenv.config.ts"), "export default {};\n");
const trusted = Bun.spawnSync([binary, "trust", project], { env: { ...process.env, ...env } });
if (trusted.exitCode !== 0) throw new Error(`agentenv trust failed: ${trusted.stderr}`);

// the raw command is the one agentenv prints; a fresh container name per round, as agentenv does
const dry = Bun.spawnSync([binary, "run", "--dry-run", "--no-store", project, "--", "true"], { env: { ...process.env, ...env } });
const rawLine = dry.stdout.toString().trim();
const raw = rawLine.split(" ");
const nameAt = raw.indexOf("--name") + 1;

const ours: number[] = [];
const theirs: number[] = [];
const withStore: number[] = [];
const storeEnv = { ...env, AGENTENV_STORE_VOLUME: storeVolume };
time([binary, "run", "--no-store", project, "--", "true"], env); // warm the page cache and storage
if (rootless) time([binary, "run", project, "--", "true"], storeEnv); // seeds the store
for (let i = 0; i < rounds; i++) {
  raw[nameAt] = `agentenv-bench-${process.pid}-${i}`;
  theirs.push(time(raw));
  ours.push(time([binary, "run", "--no-store", project, "--", "true"], env));
  if (rootless) withStore.push(time([binary, "run", project, "--", "true"], storeEnv));
}
if (rootless) await removeStoreVolume(storeVolume);
const versions: number[] = [];
for (let i = 0; i < 50; i++) versions.push(time([binary, "--version"]));

const lines = [
  `- raw engine (\`${rawLine.replace(/--name \S+/, "--name …")}\`): median ${median(theirs).toFixed(0)} ms`,
  `- \`agentenv run --no-store DIR -- true\` (compiled): median ${median(ours).toFixed(0)} ms`,
  `- **ratio ${(median(ours) / median(theirs)).toFixed(3)}** (goal ≤ 1.15), ${rounds} alternating rounds${rootless ? ", rootless Podman" : ""}`,
  ...(rootless ? [`- \`agentenv run DIR -- true\` with the golden store (rootless: overlay clone inside Podman's namespace, promotion check): median ${median(withStore).toFixed(0)} ms — **ratio ${(median(withStore) / median(theirs)).toFixed(3)}** to the raw line`] : []),
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
