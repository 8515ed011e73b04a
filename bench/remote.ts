/**
 * `bun bench/remote.ts` (as root, after bin/setup): what a session on a remote host costs
 * against the raw `ssh HOST podman run …` it amounts to, and what a first use moves.
 *
 * The remote is test/helpers/remote-host.ts's: sshd on loopback, a dedicated user with
 * their own rootless Podman. Interleaved (the order alternates each round), N rounds
 * after a warmup, on a warm shared connection:
 *   1. `agentenv run --host H H:/DIR -- true` (a project on the remote) vs the exact line
 *      `--dry-run` prints for it (ssh over the same shared connection, podman run there):
 *      median ratio, goal ≤ 1.15;
 *   2. the same with a local project, live-shared by reverse sshfs (its mount and unmount
 *      are agentenv's work, counted in its time) vs the same raw line;
 *   3. `agentenv exec --host H --env E -- true` into a running `up --host` container vs
 *      the raw `ssh … podman exec CONTAINER true` over the same shared connection.
 * First use: the image shipped (bytes, seconds), an environment's home made there.
 *
 * agentenv is a binary compiled here into a temp dir, as `bun run build` makes it
 * (AGENTENV="cmd …" overrides). Prints Markdown for bench/RESULTS.md.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { getHost } from "../core/hosts.ts";
import { controlDir, remoteCommand, sshArgv } from "../core/runtime/ssh.ts";
import { startRemoteHost } from "../test/helpers/remote-host.ts";
import { benchUser, median, removeStoreVolume, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const rounds = Number(process.env.ROUNDS ?? 20);
const id = `bench-remote-${process.pid}`;
const env = benchUser(id);
const host = "bench-box";

async function compiled(): Promise<string[]> {
  if (process.env.AGENTENV) return process.env.AGENTENV.split(" ");
  const out = join(mkdtempSync(join(tmpdir(), "agentenv-bench-bin-")), "agentenv");
  const build = Bun.spawnSync([process.execPath, "build", "--compile", "--minify", "--sourcemap=none", "--bytecode", "--no-compile-autoload-bunfig", "--no-compile-autoload-dotenv", "bin/agentenv.ts", "--outfile", out], { cwd: root, stdout: "ignore", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr}`);
  return [out];
}

const agentenv = await compiled();
const remote = await startRemoteHost(root);
try {
  timed([...agentenv, "host", "add", host, ...remote.addArgs, "--force"], env);
  const dir = remote.onRemote("mktemp -d /tmp/agentenv-bench-XXXXXX").stdout.trim();
  const localProject = mkdtempSync(join(tmpdir(), "agentenv-bench-project-"));
  writeFileSync(join(localProject, "README"), "bench\n");

  // first use: the image (removed there first, so it is shipped now)
  const image = env.AGENTENV_IMAGE || "localhost/agentenv:latest";
  remote.onRemote(`podman rmi --force ${image} >/dev/null 2>&1; true`);
  const ship = timed([...agentenv, "run", "--host", host, `${host}:${dir}`, "--", "true"], env);
  const shipped = /shipped to \S+: ([\d.]+ \S+) in ([\d.]+) s/.exec(ship.stderr);

  // first use of an environment there: its home made from this machine's
  const envName = `bench-remote-${process.pid}`;
  const template = mkdtempSync(join(tmpdir(), "agentenv-bench-template-"));
  for (let i = 0; i < 200; i++) writeFileSync(join(template, `file-${i}.txt`), `${"x".repeat(4096)}\n`);
  timed([...agentenv, "env", "create", envName, template], env);
  const home = timed([...agentenv, "run", "--host", host, "--env", envName, `${host}:${dir}`, "--", "true"], env).ms;
  const syncNothing = timed([...agentenv, "env", "sync", envName, "--host", host], env).ms;

  // first use of an environment's tools there: built here by a session, shipped into the host's own golden store
  const toolsEnv = `bench-tools-${process.pid}`;
  timed([...agentenv, "env", "create", toolsEnv, join(root, "test/fixtures/env")], env);
  timed([...agentenv, "run", "--env", toolsEnv, localProject, "--", "hello-env"], env);
  const toolsRun = timed([...agentenv, "run", "--host", host, "--store", "golden", "--env", toolsEnv, `${host}:${dir}`, "--", "hello-env"], env);
  const tools = /(\d+) store paths of its tools shipped to \S+ \(([\d.]+ MiB) compressed\)/.exec(toolsRun.stderr);
  const toolsAgain = timed([...agentenv, "run", "--host", host, "--store", "golden", "--env", toolsEnv, `${host}:${dir}`, "--", "hello-env"], env).ms;

  function dryRun(project: string): string[] {
    const line = timed([...agentenv, "run", "--dry-run", "--host", host, project, "--", "true"], env).stdout.trim();
    if (line.split("\n").length !== 1 || !line.startsWith("ssh ")) throw new Error(`unexpected --dry-run output: ${line}`);
    return ["sh", "-c", line];
  }

  function compare(a: string[], b: string[]): { a: number; b: number } {
    const as: number[] = [];
    const bs: number[] = [];
    for (let i = 0; i < 3; i++) timed(a, env), timed(b, env);
    for (let i = 0; i < rounds; i++) {
      if (i % 2) (as.push(timed(a, env).ms), bs.push(timed(b, env).ms));
      else (bs.push(timed(b, env).ms), as.push(timed(a, env).ms));
    }
    return { a: median(as), b: median(bs) };
  }

  const remoteRun = compare([...agentenv, "run", "--host", host, `${host}:${dir}`, "--", "true"], dryRun(`${host}:${dir}`));
  const sharedRun = compare([...agentenv, "run", "--host", host, localProject, "--", "true"], dryRun(`${host}:${dir}`));
  // an environment container there, joined warm
  timed([...agentenv, "up", "--host", host, "--env", envName, "--roots", `${host}:${dir}`], env);
  const rawExec = sshArgv(getHost(host, env), remoteCommand(["podman", "exec", `agentenv-up-${envName}`, "true"]), {}, controlDir(env));
  const execRun = compare([...agentenv, "exec", "--host", host, "--env", envName, "--", "true"], rawExec);
  timed([...agentenv, "down", "--host", host, "--env", envName], env);
  const ms = (x: number) => `${Math.round(x)} ms`;
  console.log(`## Remote hosts — ${new Date().toISOString().slice(0, 10)}, issue 23\n`);
  console.log(`Command: \`bun bench/remote.ts\` (ROUNDS=${rounds}, compiled binary), the remote a dedicated user's rootless Podman behind sshd on loopback\n`);
  console.log(`- \`agentenv run --host H H:/DIR -- true\`: median ${ms(remoteRun.a)}, the raw \`ssh … podman run …\` line it prints (\`--dry-run\`, same shared connection) ${ms(remoteRun.b)} — **ratio ${(remoteRun.a / remoteRun.b).toFixed(3)}** (goal ≤ 1.15)`);
  console.log(`- a local project live-shared by reverse sshfs (\`agentenv run --host H DIR -- true\`): median ${ms(sharedRun.a)} against the same raw line ${ms(sharedRun.b)} — ratio ${(sharedRun.a / sharedRun.b).toFixed(3)} (the mount and unmount are the difference)`);
  console.log(`- \`agentenv exec --host H --env E -- true\` into a running \`up --host\` container: median ${ms(execRun.a)}, the raw \`ssh … podman exec CONTAINER true\` over the same shared connection ${ms(execRun.b)} — ratio ${(execRun.a / execRun.b).toFixed(3)}`);
  console.log(`- first use, the image: ${shipped ? `${shipped[1]} shipped in ${shipped[2]} s` : "not shipped (?)"} (\`podman save | ssh … podman load\`); the session around it ${ms(ship.ms)}`);
  console.log(`- first use, an environment of 200 files × 4 KiB: the session that made its home there ${ms(home)}; a later \`env sync\` with nothing to move ${ms(syncNothing)}`);
  console.log(`- first use, an environment's tools (the input-less fixture): ${tools ? `${tools[1]} store paths, ${tools[2]} compressed` : "not shipped (?)"} moved into the host's own golden store (seeded there first); that session ${ms(toolsRun.ms)}, the next one with \`--store golden\` ${ms(toolsAgain)} (each copies the host's store for itself)`);
  for (const name of [envName, toolsEnv]) {
    timed([...agentenv, "env", "rm", name, "--force"], env);
    remote.onRemote(`podman volume rm --force agentenv-env-${name} >/dev/null 2>&1; true`);
  }
  remote.onRemote(`podman volume ls -q | grep '^agentenv-${id}-nix' | xargs -r podman volume rm --force >/dev/null 2>&1; rm -rf ${dir}; true`);
  await removeStoreVolume(`agentenv-${id}-nix`);
} finally {
  // its shared connection goes with it
  Bun.spawnSync([...agentenv, "host", "rm", host], { env });
  remote.stop();
}
