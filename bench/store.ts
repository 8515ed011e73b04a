/**
 * `bun bench/store.ts`: what the golden store costs, measured side by side.
 *
 * 1. Clone size independence: `agentenv run DIR -- true` on a golden store holding
 *    100,000 files vs one holding 1,000 (two store volumes, alternating rounds):
 *    median ratio (goal ≤ 1.1 — the clone is O(1)).
 * 2. Clone + promote overhead: `agentenv run DIR -- true` with the store vs `--no-store`
 *    (goal ≤ 1.2).
 * 3. Second boot after a session built a package: the rebuild does not happen, and the
 *    package's files in the golden store are the very inodes the session wrote (moved,
 *    not copied), for a 256 MiB output.
 *
 * Uses the compiled binary and its own store volumes (removed at the end). Prints a
 * Markdown block for bench/RESULTS.md.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { median, timed } from "./measure.ts";
import { derivationExpr, removeStoreVolume } from "../test/helpers/engine.ts";

const root = join(import.meta.dir, "..");
const binary = join(root, "dist", "agentenv");
const rounds = Number(process.env.ROUNDS ?? 20);
const project = mkdtempSync(join(tmpdir(), "agentenv-bench-"));
const home = mkdtempSync(join(tmpdir(), "agentenv-bench-home-"));
const volumes = { small: `agentenv-bench-1k-${process.pid}`, big: `agentenv-bench-100k-${process.pid}`, pkg: `agentenv-bench-pkg-${process.pid}` };

// no user config may add work; Nix must not wait for an unreachable binary cache
const baseEnv = { ...process.env, HOME: home, XDG_CONFIG_HOME: "/nonexistent" };

const spawn = (argv: string[], env: Record<string, string> = {}) => timed(argv, { ...baseEnv, ...env });

const session = (volume: string, command: string[], flags: string[] = []) =>
  spawn([binary, "run", ...flags, project, "--", "env", "NIX_CONFIG=substituters =", ...command], { AGENTENV_STORE_VOLUME: volume });


/** Fills a store with one package of N small files (built by Nix in a session, promoted). */
function fill(volume: string, files: number): void {
  const script = `mkdir $out; i=0; while [ $i -lt ${files} ]; do echo $i > $out/f$i; i=$((i+1)); done`;
  session(volume, ["nix-build", "--no-out-link", "-E", derivationExpr(`files-${files}`, script)]);
}

if (!(await Bun.file(binary).exists())) throw new Error("dist/agentenv is missing: run `bun run build` first");
const lines: string[] = [];
try {
  fill(volumes.small, 1_000);
  fill(volumes.big, 100_000);
  const count = (volume: string) => session(volume, ["sh", "-c", "find /nix/store -type f | wc -l"]).stdout.trim();
  const [smallFiles, bigFiles] = [count(volumes.small), count(volumes.big)];

  // 1 and 2, alternating
  const small: number[] = [];
  const big: number[] = [];
  const none: number[] = [];
  session(volumes.small, ["true"]);
  session(volumes.big, ["true"]);
  for (let i = 0; i < rounds; i++) {
    small.push(session(volumes.small, ["true"]).ms);
    big.push(session(volumes.big, ["true"]).ms);
    none.push(session(volumes.small, ["true"], ["--no-store"]).ms);
  }
  lines.push(
    `- store of ${bigFiles} files: median ${median(big).toFixed(0)} ms; store of ${smallFiles} files: median ${median(small).toFixed(0)} ms — **ratio ${(median(big) / median(small)).toFixed(3)}** (goal ≤ 1.1)`,
    `- \`agentenv run DIR -- true\` with the golden store (clone + promote check): median ${median(small).toFixed(0)} ms; with \`--no-store\`: median ${median(none).toFixed(0)} ms — **ratio ${(median(small) / median(none)).toFixed(3)}** (goal ≤ 1.2)`,
  );

  // 3: a 256 MiB package, built once
  const expr = derivationExpr("big-package", "mkdir $out; head -c 268435456 /dev/zero > $out/blob");
  const build = session(volumes.pkg, ["sh", "-c", `p=$(nix-build --no-out-link -E '${expr}') && echo $p && stat -c %i $p/blob`]);
  const [path, builtInode] = build.stdout.trim().split("\n").slice(-2);
  const tiny = session(volumes.pkg, ["nix-build", "--no-out-link", "-E", derivationExpr("tiny-package")]);
  const again = session(volumes.pkg, ["sh", "-c", `nix-build --no-out-link -E '${expr}' 2>&1 && stat -c %i ${path}/blob`]);
  const [rebuiltPath, goldenInode] = again.stdout.trim().split("\n").slice(-2);
  const rebuilt = again.stdout.includes("building");
  lines.push(
    `- 256 MiB package: first session (build + promote) ${build.ms.toFixed(0)} ms, a tiny package's session ${tiny.ms.toFixed(0)} ms; ` +
      `second boot \`nix-build\` of the same expression ${again.ms.toFixed(0)} ms, ${rebuilt ? "**rebuilt (unexpected)**" : "nothing built"}, ` +
      `same path ${rebuiltPath === path ? "yes" : "NO"}, blob inode in the session ${builtInode} / in the golden store ${goldenInode} ` +
      `(${builtInode === goldenInode ? "moved, not copied" : "**copied**"})`,
  );
} finally {
  for (const volume of Object.values(volumes)) await removeStoreVolume(volume);
}
console.log(lines.join("\n"));
