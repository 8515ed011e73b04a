import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { isLocked, lockFile, type FileLock } from "../../core/linux.ts";
import { agentenvDir } from "../../core/paths.ts";
import { containerHome } from "../../core/plan.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";
import { crashPoint } from "../../core/volumes.ts";
import { envLabel, envNameOf, findHome, recordPath, toolsStorePath, type EnvRecord, type Home } from "./home.ts";
import { hostRecord, pendingOps, withEnvLock } from "./record.ts";

interface SessionState {
  home: Home;
  /** this host's record of it (undefined: none yet, or the environment does not exist) */
  record?: EnvRecord;
  lock?: Registration;
}

/** The env plugin's part of the session's record (`ctx.saved.env`): which environment's home it mounted. */
interface SavedEnv {
  name: string;
  volume: string;
}

/** The env plugin's state in a session (`ctx.state.env`). */
function stateOf(ctx: SessionContext): SessionState | undefined {
  return ctx.state.env as SessionState | undefined;
}

/** `session:mount`: the environment's volume is HOME. */
export async function mountEnv(ctx: SessionContext): Promise<void> {
  const name = ctx.config.env.name;
  if (!name) return;
  const home = await findHome(ctx, name);
  if (!home.dir && !ctx.config.env.autoCreate) throw noEnvironment(name);
  ctx.plan.mounts.push({ type: "volume", source: home.volume, target: containerHome });
  ctx.plan.env.AGENTENV_ENV = name;
  // the entrypoint then fails the session instead of warning when the home's setup fails
  if (ctx.config.env.strict) ctx.plan.env.AGENTENV_STRICT = "1";
  ctx.plan.labels[envLabel] = name;
  ctx.state.env = { home, record: home.dir ? hostRecord(ctx, home) : undefined } satisfies SessionState;
}

function noEnvironment(name: string): UserError {
  return new UserError(`no environment named ${name}`, `create it (agentenv env create ${name}), or set env.autoCreate in config`);
}

/** This host's record of the session's environment, found by `session:mount` (other plugins read it: no second lookup). */
export function sessionRecord(ctx: SessionContext): EnvRecord | undefined {
  return stateOf(ctx)?.record;
}

/**
 * Host-side record of who uses an environment now — its sessions (by container name) and
 * exports — one file each, locked by its holder (an flock: a dead holder lets go). `env rm`
 * and `env reset` refuse while one is held, so a session is counted from its start, before
 * the engine shows its container.
 */
function usersDir(ctx: BaseContext, volume: string): string {
  return join(agentenvDir("state"), "sessions", `${ctx.runtime.name}-${volume}`);
}

export interface Registration {
  file: string;
  held: FileLock;
  release(): void;
}

/**
 * Registers ID as a user of VOLUME until `release` (or its process's death). PARTIAL is a
 * file it is writing (an export's archive), removed by whoever finds the registration
 * stale. Throws when the state dir cannot be written.
 */
export function registerUser(ctx: BaseContext, volume: string, id: string, partial?: string): Registration {
  const dir = usersDir(ctx, volume);
  mkdirSync(dir, { recursive: true });
  // locked before it has its name: a file another command sees is never mistaken for stale
  const fresh = join(dir, `.new-${id}`);
  const held = lockFile(fresh, "exclusive")!;
  try {
    if (partial) writeFileSync(fresh, `${partial}\n`);
  } catch (error) {
    // a full state dir: registered all the same, only what a crash would leave is not found
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOSPC" && code !== "EDQUOT") {
      held.release();
      rmSync(fresh, { force: true });
      throw error;
    }
  }
  const file = join(dir, id);
  renameSync(fresh, file);
  return {
    file,
    held,
    release() {
      rmSync(file, { force: true });
      held.release();
    },
  };
}

/** An export's archive in the making, as its registration names it: removed only when it is what an export makes. */
function removePartial(registration: string): void {
  let partial: string;
  try {
    partial = readFileSync(registration, "utf8").trim();
  } catch {
    return;
  }
  if (!partial || !/^\..+\.partial-[0-9a-f]{16}$/.test(basename(partial))) return;
  try {
    if (lstatSync(partial).isFile()) rmSync(partial, { force: true });
  } catch {
    // already gone
  }
}

/**
 * The live users of VOLUME registered on this host, but EXCEPT. Stale registrations
 * (their holder died: a crash, kill -9) are removed, with an export's unfinished archive;
 * DEAD hears the nonce of each such export (its helper container may still run).
 */
export function hostUsers(ctx: BaseContext, volume: string, except?: string, dead?: (nonce: string) => void): string[] {
  const dir = usersDir(ctx, volume);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const users: string[] = [];
  for (const name of names) {
    if (name === except) continue;
    const file = join(dir, name);
    let held = false;
    try {
      held = isLocked(file);
    } catch {
      continue; // removed meanwhile
    }
    if (held) {
      if (!name.startsWith(".")) users.push(name);
      continue;
    }
    if (name.startsWith(".new-")) {
      // being registered right now (locked a moment later), unless it has been there a while
      try {
        if (Date.now() - lstatSync(file).mtimeMs < 10_000) continue;
      } catch {
        continue;
      }
    }
    if (name.startsWith("export-") || name.startsWith(".new-export-")) {
      removePartial(file);
      dead?.(name.slice(name.indexOf("export-") + "export-".length));
    }
    rmSync(file, { force: true });
  }
  return users;
}

/**
 * `session:start`, under the environment's lock: finish what a crashed command left of
 * it, create it if config asks for it, and register the session — so an `env rm` or
 * `env reset` either ran before (this session then sees its result) or sees this session
 * and refuses. Says when another session has it open. Two sessions on one environment
 * share one home, as two terminals on one machine do (see README, "One environment,
 * several sessions").
 */
export async function startEnv(ctx: SessionContext): Promise<void> {
  const state = stateOf(ctx);
  if (!state) return;
  const { name, volume } = state.home;
  let writable = true;
  try {
    mkdirSync(usersDir(ctx, volume), { recursive: true });
    mkdirSync(join(agentenvDir("state"), "envs"), { recursive: true });
  } catch (error) {
    // a read-only HOME: no lock, no shared-session notice
    ctx.log.debug(`could not record the session of environment ${name}: ${messageOf(error)}`);
    writable = false;
  }
  const start = async () => {
    // what a crashed command left (rare: the lifecycle code is loaded only then)
    if (writable && pendingOps(ctx, name).length) await (await import("./lifecycle.ts")).recoverEnv(ctx, name);
    // what ran while this session was being prepared (an rm, a create, a reset) is seen now
    const home = await findHome(ctx, name);
    if (!home.dir) {
      if (!ctx.config.env.autoCreate) throw noEnvironment(name);
      ctx.log.start(`creating environment ${name} (env.autoCreate)…`);
      const { createEnv } = await import("./lifecycle.ts");
      state.record = await createEnv(ctx, name, {});
    } else if (!state.record || !state.home.dir) {
      state.record = hostRecord(ctx, home);
    }
    state.home = home.dir ? home : await findHome(ctx, name);
    ctx.saved.env = { name, volume: state.home.volume } satisfies SavedEnv;
    if (!writable) return;
    try {
      const others = hostUsers(ctx, volume, ctx.plan.name).filter((user) => !user.startsWith("export-"));
      state.lock = registerUser(ctx, volume, ctx.plan.name);
      crashPoint("session:registered");
      if (others.length) ctx.log.warn(`environment ${name} is also open in ${others.join(", ")}: the sessions share one home`);
    } catch (error) {
      // only a notice is lost: the session itself is fine
      ctx.log.debug(`could not record the session of environment ${name}: ${messageOf(error)}`);
    }
  };
  if (writable) await withEnvLock(ctx, name, start);
  else await start();
  // registered: an rm or reset now waits for this session, and its tools step with it
  if (ctx.config.trust?.storeWithheld) await (await import("./tools.ts")).prepareTools(ctx, state.home);
}

export async function endEnv(ctx: SessionContext): Promise<void> {
  const state = stateOf(ctx);
  if (!state) return endDetachedEnv(ctx);
  if (!state.lock) return;
  // what a trusted session leaves in ~/flake.nix is the user's: later untrusted sessions build it
  if (ctx.config.trust?.trusted && state.home.dir) await (await import("./tools.ts")).keepToolsFlake(ctx, state.home);
  crashPoint("session:exit");
  state.lock.release();
}

/**
 * The end of a detached session (`down` of an `up` container), whose record names its
 * environment: a trusted one's ~/flake.nix is the user's, as at a session's exit.
 */
async function endDetachedEnv(ctx: SessionContext): Promise<void> {
  const saved = ctx.saved.env as SavedEnv | undefined;
  if (!saved || !ctx.config.trust?.trusted) return;
  const home = await findHome(ctx, saved.name);
  if (home.dir && home.volume === saved.volume) await (await import("./tools.ts")).keepToolsFlake(ctx, home);
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
