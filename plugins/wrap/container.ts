import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "pathe";
import type { ResolvedConfig, RuntimeName } from "../../core/config.ts";
import { UserError, messageOf } from "../../core/errors.ts";
import { handoffPath, handoffTarget } from "../../core/handoff.ts";
import { isLocked, lockFile } from "../../core/linux.ts";
import { agentenvDir } from "../../core/paths.ts";
import { basePlan, type Plan } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { endDetached, loadContext, prepareSession, startDetached } from "../../core/session.ts";
import { crashPoint, writeAtomic } from "../../core/volumes.ts";
import { isUnder } from "../../core/trust.ts";

/**
 * One long-running container per environment (`agentenv up`): the environment's home,
 * a clone of the golden store, and the roots at their own paths. Processes join it with
 * the engine's `exec`. What the host keeps about it:
 *   - a state file (agentenv's state dir, `up/RUNTIME-NAME.json`): its roots and the plan
 *     it started from, so `down` ends it as it began, in another process;
 *   - its handoff directory (tmpfs): secrets.env for agentenv-exec, `up` (written by
 *     agentenv-keepalive once the home is set up, removed when it stops) and `roots/`,
 *     one empty file per root, named by the path with "/" as ":". Wrappers test these
 *     two with shell builtins and exec straight in: no engine call to ask.
 */
export interface EnvContainer {
  name: string;
  env?: string;
  runtime: RuntimeName;
  /**
   * the host sees agentenv-keepalive's lock (a shared kernel). In a VM (Apple
   * \`container\`) it does not: the ready file alone says it is set up, and whether it
   * still runs costs an engine call
   */
  hostLocks: boolean;
  handoff: string;
  stateFile: string;
}

export interface UpState {
  name: string;
  runtime: RuntimeName;
  env?: string;
  roots: string[];
  /** the store mode it started with: `down` promotes (or not) accordingly */
  store: string;
  started: string;
  /** the directory whose config it started with */
  project: string;
  plan: Plan;
  /**
   * the config it started with, resolved (its layers left out: code is not data): `down`
   * ends it with these settings — the golden store volume, the environment… — whatever
   * the config files say by then
   */
  config?: Omit<ResolvedConfig, "layers">;
}

/** The environment container's name: `agentenv-up-ENV`, `agentenv-up` with no environment. */
function upContainerName(env: string | undefined): string {
  return env ? `agentenv-up-${env}` : "agentenv-up";
}

/** ENV "" or undefined: the container with no environment. */
export function envContainer(ctx: BaseContext, env: string | undefined): EnvContainer {
  const name = upContainerName(env || undefined);
  const stateFile = join(agentenvDir("state"), "up", `${ctx.runtime.name}-${name}.json`);
  // where it started is where it is: the handoff path depends on XDG_RUNTIME_DIR, which may differ now
  const started = readState(stateFile)?.plan.mounts.find((m) => m.target === handoffTarget)?.source;
  return { name, env: env || undefined, runtime: ctx.runtime.name, hostLocks: ctx.runtime.sharesHostKernel, handoff: started ?? handoffPath(name), stateFile };
}

function readState(file: string): UpState | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as UpState;
  } catch {
    return undefined;
  }
}

export function readUpState(c: EnvContainer): UpState | undefined {
  return readState(c.stateFile);
}

/** The marker file of ROOT in a handoff directory. */
export function rootMarker(handoff: string, root: string): string {
  return join(handoff, "roots", root.replaceAll("/", ":"));
}

/** agentenv-keepalive writes the ready file once the home is set up, and removes it when stopped. */
function isReady(c: EnvContainer): boolean {
  return existsSync(join(c.handoff, "up"));
}

/** It also holds a lock on the ready file for as long as the container lives (seen only with host locks). */
function isAlive(c: EnvContainer): boolean {
  try {
    return isLocked(join(c.handoff, "up"));
  } catch {
    return false; // no ready file
  }
}

/**
 * Alive, and serving DIR (one of its roots holds it): exec without asking the engine.
 * Never without host locks: a ready file a killed VM left behind proves nothing.
 */
export function isServing(c: EnvContainer, dir: string): boolean {
  if (!c.hostLocks || !isAlive(c)) return false;
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(rootMarker(c.handoff, d))) return true;
    if (d === "/" || d === ".") return false;
  }
}

/** Roots of ROOTS that the running container does not have. */
export function missingRoots(running: readonly string[], roots: readonly string[]): string[] {
  return roots.filter((root) => !running.some((r) => isUnder(root, r)));
}

/** What a running container's labels say, when its state file is gone (another host user, a wiped state dir). */
async function stateFromEngine(ctx: BaseContext, c: EnvContainer): Promise<UpState | undefined> {
  const info = await ctx.runtime.inspectContainer(c.name).catch(() => undefined);
  if (!info) return undefined;
  const { labels } = info;
  const roots = rootsLabel(labels);
  const plan = basePlan({
    project: "/",
    mode: "up",
    command: [],
    config: ctx.config,
    stdinIsTTY: false,
    up: { name: c.name, hostname: c.name, roots: roots.length ? roots : ["/"] },
  });
  return { name: c.name, runtime: c.runtime, env: labels["agentenv.env"], roots, store: labels["agentenv.store"] ?? "none", started: "", project: "/", plan };
}

/** The roots an environment container's labels name ([] when unreadable). */
export function rootsLabel(labels: Record<string, string>): string[] {
  try {
    const roots = JSON.parse(labels["agentenv.roots"] ?? "[]") as unknown;
    return Array.isArray(roots) ? roots.filter((r): r is string => typeof r === "string") : [];
  } catch {
    return [];
  }
}

/** One agentenv at a time starts or stops a given environment container. */
export function withContainerLock<T>(c: EnvContainer, work: () => Promise<T>): Promise<T> {
  mkdirSync(dirname(c.stateFile), { recursive: true });
  const lock = lockFile(c.stateFile.replace(/\.json$/, ".lock"), "exclusive")!;
  return work().finally(() => lock.release());
}

export interface UpOptions {
  roots: string[];
  flags: { runtime?: string; image?: string; store?: string; strict?: boolean };
  quiet?: boolean;
}

/**
 * The environment container, running with ROOTS (or more): found, or started. A
 * stopped one is ended first (its new store paths promoted) and a new one started:
 * its clone and handoff may not have survived what stopped it.
 */
export async function ensureUp(ctx: BaseContext, c: EnvContainer, options: UpOptions): Promise<{ state: UpState; started: boolean }> {
  return withContainerLock(c, async () => {
    const status = await ctx.runtime.containerStatus(c.name);
    if (status === "running") {
      const state = readUpState(c) ?? (await stateFromEngine(ctx, c));
      const missing = missingRoots(state?.roots ?? [], options.roots);
      if (!state || missing.length) {
        throw new UserError(
          `${c.name} is running with roots ${state?.roots.join(", ") || "(unknown)"}, not ${missing.join(", ")}`,
          `a running container cannot gain mounts: agentenv down${c.env ? ` --env ${c.env}` : ""}, then up with all the roots you need`,
        );
      }
      return { state, started: false };
    }
    if (status === "stopped" || readUpState(c)) {
      ctx.log.info(`${c.name} ${status === "stopped" ? "was stopped" : "is gone"}: ending it (its new store paths are promoted) and starting it again`);
      await endContainer(ctx, c);
    }
    const state = await startContainer(ctx, c, options);
    return { state, started: true };
  });
}

async function startContainer(ctx: BaseContext, c: EnvContainer, options: UpOptions): Promise<UpState> {
  const project = options.roots[0]!;
  const prepared = await prepareSession({
    dir: project,
    mode: "up",
    command: [],
    ...options.flags,
    env: c.env ?? "",
    log: ctx.log,
    stdinIsTTY: false,
    up: { name: c.name, hostname: c.env ?? "agentenv", roots: options.roots },
  });
  const { plan } = prepared.ctx;
  const state: UpState = {
    name: c.name,
    runtime: c.runtime,
    env: c.env,
    roots: options.roots,
    store: prepared.ctx.config.store,
    started: new Date().toISOString(),
    project,
    plan,
    config: withoutLayers(prepared.ctx.config),
  };
  plan.labels["agentenv.started"] = state.started;
  ctx.log.start(`starting ${c.name} (environment ${c.env ?? "none"}; roots ${options.roots.join(", ")})…`);
  await startDetached(prepared, () => waitReady(ctx, c, options.quiet));
  writeAtomic(c.stateFile, `${JSON.stringify(state, null, 2)}\n`);
  return state;
}

/**
 * Until agentenv-keepalive says the home is set up; meanwhile the container's output
 * (dotfiles, tools install) is shown. Ctrl-C or the container ending first is a failure.
 */
async function waitReady(ctx: BaseContext, c: EnvContainer, quiet?: boolean): Promise<void> {
  const logs = Bun.spawn(ctx.runtime.logsArgv(c.name), { stdin: "ignore", stdout: quiet ? "ignore" : 2, stderr: quiet ? "ignore" : 2 });
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    let ended = false;
    void logs.exited.then(() => (ended = true));
    // the ready file is written fresh by this container: the start removed any old one
    const ready = () => (c.hostLocks ? isAlive(c) : isReady(c));
    for (let round = 0; !ready(); round++) {
      if (interrupted) throw new UserError(`interrupted while ${c.name} was starting: it was removed`, undefined, 130);
      // the log stream ends with the container, or at once with a log driver that keeps none;
      // Apple container's `logs --follow` may outlive it, so there it is asked every second
      if ((ended || !c.hostLocks) && round % 40 === 0 && (await ctx.runtime.containerStatus(c.name)) !== "running" && !ready()) {
        const exitCode = (await ctx.runtime.inspectContainer(c.name).catch(() => undefined))?.exitCode;
        throw new UserError(`${c.name} stopped while setting up the environment (exit ${exitCode ?? "?"})`, "see its output above; fix the setup, or run without --strict");
      }
      await Bun.sleep(25);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    logs.kill();
  }
}

/**
 * Stops and removes the container, then ends its session as the plan it started with
 * says: its store clone promoted, its handoff directory and state file removed.
 */
export async function endContainer(ctx: BaseContext, c: EnvContainer): Promise<void> {
  // callers hold the container lock: an `exec` starting a new one waits for this to finish
  const state = readUpState(c) ?? (await stateFromEngine(ctx, c));
  // SIGTERM first: agentenv-keepalive removes the ready file, so no wrapper execs into a dying container
  await ctx.runtime.removeContainer(c.name, { stopSeconds: 10 });
  crashPoint("down:removed");
  if (state) {
    // the config it started with decides what its end does (a golden store promotes)
    const current = await loadContext({ project: state.project, flags: { runtime: state.runtime, store: state.store, env: state.env ?? "" }, log: ctx.log }).catch((error) => {
      ctx.log.warn(`the config of ${state.project} does not load any more (${messageOf(error)}): ending ${c.name} with the current one`);
      return ctx;
    });
    // today's plugins run its end, with the settings it started with (older state files lack them)
    const base = state.config ? { ...current, config: { ...state.config, layers: current.config.layers } } : current;
    await endDetached(base, state.plan, state.project);
    crashPoint("down:ended");
  }
  rmSync(c.handoff, { recursive: true, force: true });
  rmSync(c.stateFile, { force: true });
}

function withoutLayers(config: ResolvedConfig): Omit<ResolvedConfig, "layers"> {
  const { layers: _layers, ...rest } = config;
  return rest;
}

export function writeRootMarkers(handoff: string, roots: readonly string[]): void {
  mkdirSync(join(handoff, "roots"), { recursive: true, mode: 0o700 });
  for (const root of roots) writeFileSync(rootMarker(handoff, root), "");
}
