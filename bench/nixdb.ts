/**
 * `bun bench/nixdb.ts`: registering promoted paths in a golden layer's database — agentenv's
 * hand-written SQLite (`copyRegistrations` in plugins/golden/nixdb.ts, in process on the
 * host) against Nix's own commands doing the same job (`nix-store --dump-db PATHS |
 * nix-store --load-db`), measured side by side on a session's database of a few hundred paths.
 *
 * Nix's commands run where Nix is: in a helper container (the host need not have Nix — on
 * macOS it never does), so that is the baseline a promotion would pay; the same commands on
 * this host's own Nix (when installed) are reported too, for the cost of Nix itself.
 *
 * Prints Markdown for bench/RESULTS.md.
 */
import { copyFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { copyRegistrations, openReadOnly, openWritable } from "../plugins/golden/nixdb.ts";
import { median, timed } from "./measure.ts";

const image = process.env.AGENTENV_IMAGE || "localhost/agentenv:latest";
const rounds = Number(process.env.ROUNDS ?? 10);
const dir = mkdtempSync(join(tmpdir(), "agentenv-bench-nixdb-"));
const source = join(dir, "source.sqlite");

// a session's database: it built a chain of N derivations (each output referencing the one
// before), offline, so its database registers 2N paths (the .drv files and their outputs)
const count = Number(process.env.PATHS ?? 250);
const chain = `let mk = i: prev: derivation { name = "p\${toString i}"; system = "x86_64-linux"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" "echo \${toString i} \${prev} > $out" ]; }; go = i: if i == 0 then "" else mk i (go (i - 1)); in go ${count}`;
const built = Bun.spawnSync([
  "podman", "run", "--rm", "--pull=never", "-v", `${dir}:/out`, "--entrypoint", "sh", image, "-c",
  `set -e; [ -e /nix/var/nix/db/db.sqlite ] || nix-store --init; NIX_CONFIG="substituters =" nix-build --no-out-link -E '${chain}' >/dev/null; cp /nix/var/nix/db/db.sqlite /out/source.sqlite; nix-store --dump-db > /out/dump; mkdir -p /out/root/nix; cp -a /nix/store /out/root/nix/`,
]);
if (built.exitCode !== 0) throw new Error(`building the session's paths failed: ${built.stderr}`);
const src = openReadOnly(source);
const paths = (src.query("SELECT path FROM ValidPaths ORDER BY id").all() as Array<{ path: string }>).map((r) => r.path);
src.close();

// an empty database of the same schema: what a new layer starts from
const empty = join(dir, "empty.sqlite");
copyFileSync(source, empty);
const e = openWritable(empty);
e.run("DELETE FROM DerivationOutputs");
e.run("DELETE FROM Refs");
e.run("DELETE FROM ValidPaths");
e.close();

// 1. in process: what a promotion does today
const inProcess: number[] = [];
for (let i = 0; i < rounds; i++) {
  const target = join(dir, `target-${i}.sqlite`);
  copyFileSync(empty, target);
  const started = performance.now();
  const t = openWritable(target);
  copyRegistrations(t, source, paths);
  t.close();
  inProcess.push(performance.now() - started);
}

// 2. Nix's commands in a helper container: load the session's dump into an empty database
// (the dump is made once, above: `--dump-db` of the session's database costs extra)
const script = "rm -rf /nix/var/nix/db && nix-store --init && nix-store --load-db < /out/dump";
const helper: number[] = [];
// the store's files are there, as in a promotion (--load-db reads each derivation)
const helperArgv = ["podman", "run", "--rm", "--pull=never", "-v", `${dir}:/out:ro`, "-v", `${dir}/root/nix/store:/nix/store`, "--entrypoint", "sh", image, "-c"];
for (let i = 0; i < rounds; i++) helper.push(timed([...helperArgv, script]).ms);
const check = Bun.spawnSync([...helperArgv, `${script} && nix-store -q --hash ${paths[paths.length - 1]}`]);
if (check.exitCode !== 0) throw new Error(`the Nix baseline failed: ${check.stderr}`);

// 3. the same commands on this host's Nix, against a store of its own (when there is one)
const hostNix: number[] = [];
if (Bun.spawnSync(["sh", "-c", "command -v nix-store"]).exitCode === 0) {
  const dump = join(dir, "dump");
  const root = join(dir, "root");
  for (let i = 0; i < rounds; i++) {
    hostNix.push(timed(["sh", "-c", `rm -rf ${root}/nix/var && nix-store --store ${root} --init && nix-store --store ${root} --load-db < ${dump}`]).ms);
  }
}

const lines = [
  `- registering a session's ${paths.length} store paths (a chain of ${count} derivations and their outputs) in an empty layer database, median of ${rounds}:`,
  `  - agentenv's \`copyRegistrations\` (bun:sqlite, in process): **${median(inProcess).toFixed(1)} ms**`,
  `  - \`nix-store --dump-db | nix-store --load-db\` in a helper container: ${median(helper).toFixed(0)} ms — **ratio ${(median(helper) / median(inProcess)).toFixed(1)}×**`,
];
if (hostNix.length) lines.push(`  - the same two commands on this host's Nix (\`--store DIR\`, no container): ${median(hostNix).toFixed(0)} ms`);
console.log(lines.join("\n"));
