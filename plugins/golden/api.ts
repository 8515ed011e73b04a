import { existsSync } from "node:fs";
import { join } from "pathe";
import { usesGoldenStore } from "../../core/config.ts";
import type { Plan } from "../../core/plan.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";
import { GoldenStore } from "./layout.ts";
import { endStore, locateStore, mountStore, startStore } from "./session.ts";

/**
 * What another plugin may ask of the golden store. They import this file; the golden
 * store imports none of them (one direction only, see docs/architecture.md).
 */

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
  const step: SessionContext = { ...ctx, config: { ...ctx.config, store: "golden" }, plan, mode: "run", state: {} };
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
