/**
 * `bun bench/wrap.ts`: what wrappers and environment containers (`agentenv up`) cost,
 * measured side by side.
 *
 * The fixture: an environment from test/fixtures/env (its ~/flake.nix installs `hello-env`
 * on the first boot), `agentenv up` with one root, `agentenv wrap hello-env` into a bin dir.
 * C, the environment container, is the one the wrapper's fast path names.
 *
 * 1. Warm, interleaved (the order rotates each round), N rounds after a warmup, from
 *    inside the root:
 *    - the wrapper `hello-env` (its fast path: `podman exec … agentenv-exec hello-env`);
 *    - raw `podman exec -i -w DIR C /root/.local/state/agentenv/profile/bin/hello-env`
 *      (the same binary, by its path): median ratio wrapper/raw, goal ≤ 1.15;
 *    - raw `podman exec -i -w DIR -e AGENTENV_NIX_DEVELOP=never C agentenv-exec hello-env`,
 *      the wrapper's own exec line: wrapper/this isolates the wrapper script's cost, and
 *      this/raw the in-container agentenv-exec's;
 *    - `agentenv exec --env E -- hello-env` (the CLI path; context).
 *    Plus the wrapper script alone (a copy whose engine is /bin/true) vs /bin/true.
 * 2. Cold, interleaved, COLD_ROUNDS rounds: `agentenv down` (untimed), then timed
 *    `agentenv exec --env E -- hello-env`, vs a plain container of the same image made once
 *    with `podman create --init … sleep infinity`: `podman stop -t0` (untimed), then timed
 *    `podman start` + `podman exec X true`; and, as agentenv makes a new container at each
 *    start, `podman run -d --init … sleep infinity` + `podman exec X true` (removed untimed).
 *
 * agentenv is dist/agentenv when it is newer than every source file, else
 * `bun bin/agentenv.ts` (AGENTENV="cmd …" overrides). Uses its own user, store and
 * environment, removed afterwards. Prints Markdown for bench/RESULTS.md.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { benchUser, median, removeStoreVolume, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const rounds = Number(process.env.ROUNDS ?? 60);
const coldRounds = Number(process.env.COLD_ROUNDS ?? 12);
const warmup = 3;
const id = `bench-${process.pid}`;
const env = benchUser(id);
const plain = `agentenv-bench-plain-${process.pid}`;
const image = "localhost/agentenv:latest";
const inside = "/root/.local/state/agentenv/profile/bin/hello-env";

/** The newest modification time of the sources the binary is built from. */
function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (/\.(ts|sh)$/.test(entry.name)) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

function agentenvCommand(): { argv: string[]; label: string } {
  if (process.env.AGENTENV) return { argv: process.env.AGENTENV.split(" "), label: process.env.AGENTENV };
  const binary = join(root, "dist", "agentenv");
  let built = 0;
  try {
    built = statSync(binary).mtimeMs;
  } catch {
    // not built
  }
  const sources = Math.max(...["bin", "core", "plugins", "image"].map((d) => newestSource(join(root, d))));
  if (built > sources) return { argv: [binary], label: "dist/agentenv (compiled)" };
  console.error(built ? "dist/agentenv is older than the sources: using bun bin/agentenv.ts" : "no dist/agentenv: using bun bin/agentenv.ts");
  return { argv: [process.execPath, join(root, "bin", "agentenv.ts")], label: "`bun bin/agentenv.ts`, from source: dist/agentenv was missing or stale" };
}

const agentenv = agentenvCommand();
const ae = (...args: string[]) => [...agentenv.argv, ...args];
const time = (argv: string[]) => timed(argv, env).ms;
/** Runs ARGV and checks it printed what hello-env prints. */
const hello = (argv: string[]) => {
  const result = timed(argv, env);
  if (result.stdout.trim() !== "hello-env v1") throw new Error(`${argv.join(" ")} printed ${JSON.stringify(result.stdout)}`);
  return result.ms;
};

// the root is a physical path (the wrapper and agentenv compare roots with `cd -P`)
const dir = realpathSync(mkdtempSync(join(tmpdir(), "agentenv-bench-root-")));
const binDir = realpathSync(mkdtempSync(join(tmpdir(), "agentenv-bench-bin-")));
const wrapper = join(binDir, "hello-env");
process.chdir(dir); // every command below runs from inside the root

const ms = (x: number) => `${x.toFixed(0)} ms`;
const ratio = (a: number[], b: number[]) => (median(a) / median(b)).toFixed(3);
/** The middle half of XS: podman exec's times here fall in two clusters, so it is wide. */
const quartiles = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `quartiles ${s[Math.floor(s.length / 4)]!.toFixed(0)}–${s[Math.floor((3 * s.length) / 4)]!.toFixed(0)}`;
};
const lines: string[] = [];
try {
  time(ae("env", "create", id, join(root, "test", "fixtures", "env")));
  time(ae("up", "--env", id, "--roots", dir, "--quiet")); // first boot: seeds the store, installs hello-env
  time(ae("wrap", "hello-env", "--env", id, "--roots", dir, "--bin-dir", binDir, "--quiet"));
  const script = readFileSync(wrapper, "utf8");
  // the engine and the container's name, as the wrapper's fast path has them
  const fast = /^\s*exec (\S+) exec -i -w "\$PWD" -e AGENTENV_NIX_DEVELOP=never (\S+) agentenv-exec hello-env "\$@"$/m.exec(script);
  if (!fast) throw new Error(`no fast path in ${wrapper}:\n${script}`);
  const [, engine, container] = fast as unknown as [string, string, string];
  // the wrapper's own work: the same script, its engine replaced by /bin/true
  const scriptOnly = join(binDir, "hello-env-script-only");
  writeFileSync(scriptOnly, script.replaceAll(`exec ${engine} exec `, "exec /bin/true exec "));
  chmodSync(scriptOnly, 0o755);

  // 1 + 3: warm container, interleaved
  const sides: Record<string, { argv: string[]; check: boolean; times: number[] }> = {
    wrapper: { argv: [wrapper], check: true, times: [] },
    raw: { argv: ["podman", "exec", "-i", "-w", dir, container, inside], check: true, times: [] },
    rawExec: { argv: ["podman", "exec", "-i", "-w", dir, "-e", "AGENTENV_NIX_DEVELOP=never", container, "agentenv-exec", "hello-env"], check: true, times: [] },
    cli: { argv: ae("exec", "--env", id, "--", "hello-env"), check: true, times: [] },
    scriptOnly: { argv: [scriptOnly], check: false, times: [] },
    trueOnly: { argv: ["/bin/true"], check: false, times: [] },
  };
  const names = Object.keys(sides);
  const run = (name: string) => (sides[name]!.check ? hello(sides[name]!.argv) : time(sides[name]!.argv));
  for (let i = 0; i < warmup; i++) for (const name of names) run(name);
  for (let i = 0; i < rounds; i++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(i + k) % names.length]!;
      sides[name]!.times.push(run(name));
    }
  }
  const t = (name: string) => sides[name]!.times;
  lines.push(
    `- warm container, from inside the root, ${rounds} interleaved rounds (order rotating) after ${warmup} warmup rounds:`,
    `  - wrapper \`hello-env\` (fast path: \`${engine} exec -i -w "$PWD" -e AGENTENV_NIX_DEVELOP=never ${container.replace(id, "E")} agentenv-exec hello-env\`): median ${ms(median(t("wrapper")))} (${quartiles(t("wrapper"))})`,
    `  - raw \`podman exec -i -w DIR ${container.replace(id, "E")} ${inside}\`: median ${ms(median(t("raw")))} (${quartiles(t("raw"))}) — **ratio wrapper/raw ${ratio(t("wrapper"), t("raw"))}** (goal ≤ 1.15)`,
    `  - raw \`podman exec -i -w DIR -e AGENTENV_NIX_DEVELOP=never ${container.replace(id, "E")} agentenv-exec hello-env\` (the wrapper's own exec line): median ${ms(median(t("rawExec")))} (${quartiles(t("rawExec"))}) — wrapper/this ${ratio(t("wrapper"), t("rawExec"))} (the wrapper script), this/raw ${ratio(t("rawExec"), t("raw"))} (agentenv-exec in the container)`,
    `  - the wrapper script alone (engine replaced by \`/bin/true\`): median ${median(t("scriptOnly")).toFixed(1)} ms; \`/bin/true\` alone ${median(t("trueOnly")).toFixed(1)} ms`,
    `  - \`agentenv exec --env E -- hello-env\` (${agentenv.label}), container running: median ${ms(median(t("cli")))} — ratio to raw ${ratio(t("cli"), t("raw"))}, to the wrapper ${ratio(t("cli"), t("wrapper"))}`,
  );

  // 2: cold — agentenv exec starting the environment container vs podman start + exec
  time(["podman", "create", "--name", plain, "--init", image, "sleep", "infinity"]);
  const cold: number[] = [];
  const peer: number[] = [];
  const peerFresh: number[] = [];
  const coldAgentenv = () => {
    time(ae("down", "--env", id, "--quiet"));
    return hello(ae("exec", "--env", id, "--quiet", "--", "hello-env"));
  };
  const coldPeer = () => {
    Bun.spawnSync(["podman", "stop", "-t0", plain], { stdout: "ignore", stderr: "ignore" });
    return time(["podman", "start", plain]) + time(["podman", "exec", plain, "true"]);
  };
  // agentenv makes a new container at each start (down removes it): this peer does too
  const fresh = `${plain}-fresh`;
  const freshPeer = () => {
    const took = time(["podman", "run", "-d", "--init", "--pull=never", "--name", fresh, image, "sleep", "infinity"]) + time(["podman", "exec", fresh, "true"]);
    Bun.spawnSync(["podman", "stop", "-t0", fresh], { stdout: "ignore", stderr: "ignore" });
    Bun.spawnSync(["podman", "rm", "--force", fresh], { stdout: "ignore", stderr: "ignore" });
    return took;
  };
  const coldSides = [() => cold.push(coldAgentenv()), () => peer.push(coldPeer()), () => peerFresh.push(freshPeer())];
  coldAgentenv();
  coldPeer();
  freshPeer();
  for (let i = 0; i < coldRounds; i++) for (let k = 0; k < coldSides.length; k++) coldSides[(i + k) % coldSides.length]!();
  lines.push(
    `- cold, ${coldRounds} interleaved rounds (order rotating) after one warmup each: \`agentenv exec --env E -- hello-env\` with the container down (\`agentenv down\` before each, not timed): median ${ms(median(cold))}; peer \`podman start X\` + \`podman exec X true\` of a plain stopped container of the same image (\`podman create --init ${image} sleep infinity\`, \`podman stop -t0\` before each, not timed): median ${ms(median(peer))} — **ratio ${ratio(cold, peer)}**; a second peer that makes a new container each time, as agentenv does (\`podman run -d --init --pull=never IMAGE sleep infinity\` + \`podman exec X true\`, removed untimed): median ${ms(median(peerFresh))} — ratio ${ratio(cold, peerFresh)}`,
  );
} finally {
  Bun.spawnSync(ae("down", "--env", id, "--quiet"), { env, stdout: "ignore" });
  Bun.spawnSync(ae("env", "rm", id, "--force", "--quiet"), { env, stdout: "ignore" });
  Bun.spawnSync(["podman", "stop", "-t0", plain], { stdout: "ignore", stderr: "ignore" });
  // one name per call: Podman 4.3's `rm --force A B` with B absent removes nothing (and exits 0)
  for (const name of [plain, `${plain}-fresh`]) Bun.spawnSync(["podman", "rm", "--force", name], { stdout: "ignore", stderr: "ignore" });
  process.chdir(root);
  for (const path of [binDir, dir, env.HOME!]) rmSync(path, { recursive: true, force: true });
  await removeStoreVolume(`agentenv-${id}-nix`);
}
console.log(lines.join("\n"));
