/**
 * `bun bench/attach.ts` (after `bun run build`): what `agentenv attach` costs against the
 * raw engine command it runs, side by side.
 *
 * A Debian target running `sleep infinity`. Interleaved (the order alternates each
 * round), N rounds after a warmup:
 *   1. `agentenv attach --no-store T -- true` vs the exact `podman run …` line that
 *      `agentenv attach --no-store T --dry-run -- true` prints (the sidecar, its helper
 *      building the view, CMD): median ratio, goal ≤ 1.15;
 *   2. the default, `agentenv attach T -- true` (a throwaway clone of the golden store is
 *      our /nix) vs the same raw line with that /nix mount's source replaced by the golden
 *      store's top layer (what the engine then mounts is the same kind of directory; the
 *      clone itself is agentenv's work and counted in its time).
 *
 * agentenv is dist/agentenv (AGENTENV="cmd …" overrides). Uses its own user and golden
 * store, removed afterwards. Prints Markdown for bench/RESULTS.md.
 */
import { readFileSync } from "node:fs";
import { join } from "pathe";
import { benchUser, median, removeStoreVolume, timed } from "./measure.ts";

const root = join(import.meta.dir, "..");
const rounds = Number(process.env.ROUNDS ?? 20);
const id = `bench-${process.pid}`;
const env = benchUser(id);
const image = process.env.AGENTENV_IMAGE || "localhost/agentenv:latest";
env.AGENTENV_IMAGE = image;
const target = `agentenv-bench-attach-${process.pid}`;
const agentenv = process.env.AGENTENV ? process.env.AGENTENV.split(" ") : [join(root, "dist", "agentenv")];
if (!process.env.AGENTENV && !(await Bun.file(agentenv[0]!).exists())) throw new Error("dist/agentenv is missing: run `bun run build` first");

const time = (argv: string[]) => timed(argv, env).ms;
const sh = (script: string) => ["sh", "-c", script];

/** The line --dry-run prints (one line: Podman removes the sidecar itself with --rm). */
function dryRun(extra: string[]): string {
  const out = timed([...agentenv, "attach", ...extra, target, "--dry-run", "--", "true"], env).stdout.trim();
  if (out.split("\n").length !== 1 || !out.startsWith("podman run ")) throw new Error(`unexpected --dry-run output: ${out}`);
  return out;
}

function base(): string {
  for (const ref of ["localhost/agentenv-base:bookworm", "docker.io/library/debian:bookworm-slim"]) {
    if (Bun.spawnSync(["podman", "image", "exists", ref]).exitCode === 0) return ref;
  }
  return image;
}

function compare(a: string[], b: string[]): { a: number; b: number } {
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < 2; i++) (time(a), time(b)); // warmup
  for (let i = 0; i < rounds; i++) {
    if (i % 2) {
      as.push(time(a));
      bs.push(time(b));
    } else {
      bs.push(time(b));
      as.push(time(a));
    }
  }
  return { a: median(as), b: median(bs) };
}

const lines: string[] = [];
const storeVolume = `agentenv-${id}-nix`;
try {
  timed(["podman", "run", "-d", "--name", target, base(), "sleep", "infinity"]);

  // 1. no store: the raw line is runnable as printed
  const rawNone = dryRun(["--no-store"]);
  const none = compare([...agentenv, "attach", "--no-store", target, "--", "true"], sh(rawNone));
  lines.push(`- \`agentenv attach --no-store T -- true\`: median ${none.a.toFixed(0)} ms, the raw \`podman run\` it prints ${none.b.toFixed(0)} ms — **ratio ${(none.a / none.b).toFixed(3)}** (goal ≤ 1.15)`);

  // 2. the default: a golden store clone at /nix (the first attach seeds the store)
  time([...agentenv, "attach", target, "--", "true"]);
  const golden = timed(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", storeVolume]).stdout.trim();
  const top = readFileSync(join(golden, "stack"), "utf8").split("\n").filter(Boolean)[0];
  const rawStore = dryRun([]).replace(/-v \S+\/sessions\/[^/\s]+\/merged:\/nix/, `-v ${join(golden, "layers", top!)}:/nix`);
  if (!rawStore.includes(`/layers/${top}:/nix`)) throw new Error(`no /nix mount to replace in: ${rawStore}`);
  const store = compare([...agentenv, "attach", target, "--", "true"], sh(rawStore));
  lines.push(`- \`agentenv attach T -- true\` (our /nix a throwaway golden store clone): median ${store.a.toFixed(0)} ms, the raw line with the store's top layer as /nix ${store.b.toFixed(0)} ms — **ratio ${(store.a / store.b).toFixed(3)}**`);

} finally {
  Bun.spawnSync(["podman", "rm", "--force", "--time", "0", target]);
  await removeStoreVolume(storeVolume);
}
console.log(`## attach — ${new Date().toISOString().slice(0, 10)}, issue 22\n`);
console.log(`Command: \`bun run build && ROUNDS=${rounds} bun bench/attach.ts\`\n`);
console.log(lines.join("\n"));
