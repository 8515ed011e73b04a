import { existsSync, readFileSync } from "node:fs";
import { join } from "pathe";
import { usesGoldenStore } from "../../core/config.ts";
import { helperPlan, shellQuote, type Plan } from "../../core/plan.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";
import { GoldenStore } from "./layout.ts";
import { endStore, locateStore, mountStore, startStore } from "./session.ts";
import { GoldenVolume, engineKey, seedVolumeStore } from "./volume.ts";

/**
 * What another plugin may ask of the golden store. They import this file; the golden
 * store imports none of them (one direction only, see docs/architecture.md).
 */

export { isStorePath } from "./nixdb.ts";

/** Whether the store path PATH (/nix/store/…) is in the golden store; undefined when that cannot be told from here (no store, or one kept as an engine volume). */
export async function storeHasPath(ctx: BaseContext, path: string): Promise<boolean | undefined> {
  if (!usesGoldenStore(ctx.config.store)) return undefined;
  const base = /^\/nix\/store\/([^/]+)$/.exec(path)?.[1];
  if (!base || base === "." || base === "..") return false;
  const { root } = await locateStore(ctx);
  if (!root) return undefined;
  const store = new GoldenStore(root);
  return store.stack().some((id) => existsSync(join(store.layerDir(id), "store", base)));
}

/**
 * Runs PLAN (a container the host chose all of: no project code) as a session of its own
 * whose /nix is a clone of the golden store, promoted into it when the container ends —
 * whatever the caller's session may keep. Resolves to the container's exit code.
 */
export async function runPromoted(ctx: SessionContext, plan: Plan): Promise<number> {
  const step: SessionContext = { ...ctx, config: { ...ctx.config, store: "golden" }, plan, mode: "run", state: {}, saved: {} };
  const result = { exitCode: 1 };
  await mountStore(step);
  try {
    await startStore(step);
    result.exitCode = await ctx.runtime.run(plan);
  } finally {
    await endStore(step, result);
  }
  return result.exitCode;
}

/** A helper container (PLAN) run as a step of its own with a golden-store clone at /nix (see runPromoted), from a command that is no session. */
function asStep(ctx: BaseContext, plan: Plan): SessionContext {
  return { ...ctx, plan, project: "/", mode: "run", state: {}, saved: {} };
}

/**
 * Writes the closure of the store paths PATHS (which the golden store has) into DIR/FILE
 * as one gzip-compressed `nix-store --export` stream — the same bytes for the same closure —
 * in a helper container whose /nix is a golden-store clone. Resolves to the number of paths,
 * or undefined when the golden store is not in use or the paths are not all in it.
 */
export async function exportClosure(ctx: BaseContext, paths: readonly string[], dir: string, file: string): Promise<number | undefined> {
  if (!usesGoldenStore(ctx.config.store) || !paths.length) return undefined;
  for (const path of paths) if ((await storeHasPath(ctx, path)) === false) return undefined;
  const script = [
    "set -e",
    "exec 1>&2",
    'export NIX_CONFIG="extra-experimental-features = nix-command"',
    `closure=$(nix-store -qR ${paths.map(shellQuote).join(" ")})`,
    `nix-store --export $closure | gzip -n -6 > ${shellQuote(`/out/${file}`)}`,
    `echo "$closure" | wc -l > /out/${shellQuote(`${file}.count`)}`,
  ].join("\n");
  const plan = helperPlan({ image: ctx.config.image, purpose: "store-export", mounts: [{ type: "bind", source: dir, target: "/out" }], script });
  const code = await runPromoted(asStep(ctx, plan), plan);
  if (code !== 0) return undefined;
  return Number(readFileSync(join(dir, `${file}.count`), "utf8").trim()) || undefined;
}

/**
 * Imports DIR/FILE, a gzip-compressed `nix-store --export` stream (an `env pull`'s tools),
 * into the golden store: `nix-store --import` in a golden-store clone, promoted like a
 * trusted session's new paths (each one's content checked against its registration).
 * Resolves to whether it worked.
 */
export async function importClosure(ctx: BaseContext, dir: string, file: string): Promise<boolean> {
  if (!usesGoldenStore(ctx.config.store)) return false;
  const script = ["set -e", "exec 1>&2", `gunzip -c ${shellQuote(`/in/${file}`)} | nix-store --import >/dev/null`].join("\n");
  const plan = helperPlan({ image: ctx.config.image, purpose: "store-import", mounts: [{ type: "bind", source: dir, target: "/in", readonly: true }], script });
  return (await runPromoted(asStep(ctx, plan), plan)) === 0;
}

/**
 * FN with the golden store kept as an engine volume (a remote host's: the volume strategy,
 * ./volume.ts) seeded, under that volume's exclusive lock — what seeding and promotion hold,
 * so no session clones it meanwhile. FN gets the volume's name. `env`'s tools shipped to a
 * remote host are imported this way.
 */
export async function withVolumeStore<T>(ctx: BaseContext, reason: string, fn: (volume: string) => Promise<T>): Promise<T> {
  const volume = ctx.config.storeVolume;
  await seedVolumeStore(ctx, volume, reason);
  return new GoldenVolume(engineKey(ctx.runtime), volume).withLock("exclusive", () => fn(volume));
}
