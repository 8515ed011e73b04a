import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "pathe";
import { UserError } from "../../core/errors.ts";
import { isLocked, lockFile, type FileLock } from "../../core/linux.ts";
import { agentenvDir } from "../../core/paths.ts";
import { containerHome } from "../../core/plan.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";
import { envLabel, envNameOf, findHome, recordPath, toolsStorePath, type EnvRecord, type Home } from "./home.ts";
import { hostRecord } from "./record.ts";

interface SessionState {
  home: Home;
  /** this host's record of it (undefined: none yet, or the environment does not exist) */
  record?: EnvRecord;
  /** env.autoCreate and the environment does not exist yet: `session:start` creates it */
  create: boolean;
  lock?: { file: string; held: FileLock };
}

const states = new WeakMap<SessionContext, SessionState>();

/** `session:mount`: the environment's volume is HOME. */
export async function mountEnv(ctx: SessionContext): Promise<void> {
  const name = ctx.config.env.name;
  if (!name) return;
  const home = await findHome(ctx, name);
  if (!home.dir && !ctx.config.env.autoCreate) {
    throw new UserError(`no environment named ${name}`, `create it (agentenv env create ${name}), or set env.autoCreate in config`);
  }
  ctx.plan.mounts.push({ type: "volume", source: home.volume, target: containerHome });
  ctx.plan.env.AGENTENV_ENV = name;
  // the entrypoint then fails the session instead of warning when the home's setup fails
  if (ctx.config.env.strict) ctx.plan.env.AGENTENV_STRICT = "1";
  ctx.plan.labels[envLabel] = name;
  states.set(ctx, { home, record: home.dir ? hostRecord(ctx, home) : undefined, create: !home.dir });
}

/** This host's record of the session's environment, found by `session:mount` (other plugins read it: no second lookup). */
export function sessionRecord(ctx: SessionContext): EnvRecord | undefined {
  return states.get(ctx)?.record;
}

/** Host-side record of which sessions have which environment open (flocks: a dead holder lets go). */
function sessionsDir(ctx: BaseContext, volume: string): string {
  return join(agentenvDir("state"), "sessions", `${ctx.runtime.name}-${volume}`);
}

/** Other live sessions of this environment on this host; stale entries are removed. */
function otherSessions(dir: string, self: string): string[] {
  const others: string[] = [];
  for (const name of readdirSync(dir)) {
    // .create and .new-* are locks of a different kind
    if (name === self || name.startsWith(".")) continue;
    let held = false;
    try {
      held = isLocked(join(dir, name));
    } catch {
      continue; // removed meanwhile
    }
    if (held) others.push(name);
    else rmSync(join(dir, name), { force: true });
  }
  return others;
}

/**
 * `session:start`: create the environment if config asks for it, and say when another
 * session has it open. Two sessions on one environment share one home, as two terminals
 * on one machine do (see README, "One environment, several sessions").
 */
export async function startEnv(ctx: SessionContext): Promise<void> {
  const state = states.get(ctx);
  if (!state) return;
  const { name, volume } = state.home;
  let dir: string | undefined = sessionsDir(ctx, volume);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    // a read-only HOME: no shared-session notice, no lock around auto-create
    ctx.log.debug(`could not record the session of environment ${name}: ${(error as Error).message}`);
    dir = undefined;
  }
  if (state.create) {
    // two sessions auto-creating one environment: the second waits for the first, then uses it
    const creating = dir ? lockFile(join(dir, ".create"), "exclusive") : undefined;
    try {
      if (!(await ctx.runtime.volumeExists(volume))) {
        ctx.log.start(`creating environment ${name} (env.autoCreate)…`);
        const { createEnv } = await import("./lifecycle.ts");
        await createEnv(ctx, name, {});
      }
    } finally {
      creating?.release();
    }
  }
  if (!dir) return;
  try {
    const others = otherSessions(dir, ctx.plan.name);
    // locked before it has its name: a file another session sees is never mistaken for stale
    const file = join(dir, ctx.plan.name);
    const held = lockFile(join(dir, `.new-${ctx.plan.name}`), "exclusive")!;
    renameSync(join(dir, `.new-${ctx.plan.name}`), file);
    state.lock = { file, held };
    if (others.length) ctx.log.warn(`environment ${name} is also open in ${others.join(", ")}: the sessions share one home`);
  } catch (error) {
    // only a notice is lost: the session itself is fine
    ctx.log.debug(`could not record the session of environment ${name}: ${(error as Error).message}`);
  }
}

export function endEnv(ctx: SessionContext): void {
  const lock = states.get(ctx)?.lock;
  if (!lock) return;
  rmSync(lock.file, { force: true });
  lock.held.release();
}

/** `store:roots`: every environment's installed tools survive `agentenv store gc`, mounted or not. */
export async function envRoots(ctx: BaseContext, roots: Set<string>): Promise<void> {
  for (const { name: volume, mountpoint } of await ctx.runtime.volumeList(envLabel)) {
    const name = envNameOf(volume);
    if (!mountpoint || !existsSync(join(mountpoint, recordPath))) {
      ctx.log.warn(`environment ${name}: its files are not readable from here; its tools may be collected (its next session reinstalls them)`);
      continue;
    }
    const target = toolsStorePath(mountpoint);
    if (target) roots.add(target);
  }
}
