import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "pathe";
import type { ResolvedConfig, RuntimeName } from "../../core/config.ts";
import { UserError, messageOf } from "../../core/errors.ts";
import { handoffPath, handoffTarget } from "../../core/handoff.ts";
import { isLocked, lockFile } from "../../core/linux.ts";
import { agentenvDir } from "../../core/paths.ts";
import { basePlan, shellQuote, type Plan } from "../../core/plan.ts";
import { remoteHandoffDir, type RemoteRuntime } from "../../core/runtime/remote.ts";
import { remoteScript } from "../../core/runtime/ssh.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { readRecord, recordFile } from "../../core/record.ts";
import { endDetached, loadContext, prepareSession, startDetached, type SessionOptions } from "../../core/session.ts";
import { crashPoint } from "../../core/volumes.ts";
import { isUnder } from "../../core/trust.ts";

/**
 * One long-running container per environment (`agentenv up`): the environment's home,
 * a clone of the golden store, and the roots at their own paths. Processes join it with
 * the engine's `exec`. What the host keeps about it:
 *   - its session's record (core/record.ts): the plan and config it started with and each
 *     plugin's saved part, so `down` ends it as it began, in another process;
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

/** What `up`, `exec`, `ps` and `down` read of an environment container's record. */
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
  /** the config it started with, resolved: `down` ends it with these settings, whatever the config files say by then */
  config?: Omit<ResolvedConfig, "layers">;
  /** each plugin's saved part (`ctx.saved`) */
  plugins?: Record<string, unknown>;
}

/** The environment container's name: `agentenv-up-ENV`, `agentenv-up` with no environment. */
function upContainerName(env: string | undefined): string {
  return env ? `agentenv-up-${env}` : "agentenv-up";
}

/** ENV "" or undefined: the container with no environment. */
export function envContainer(ctx: BaseContext, env: string | undefined): EnvContainer {
  const name = upContainerName(env || undefined);
  const stateFile = recordFile(ctx.runtime.name, name, ctx.runtime.endpoint);
  // where it started is where it is: the handoff path depends on XDG_RUNTIME_DIR, which may differ now
  const started = readState(stateFile, ctx.runtime.name, name)?.plan.mounts.find((m) => m.target === handoffTarget)?.source;
  return { name, env: env || undefined, runtime: ctx.runtime.name, hostLocks: ctx.runtime.sharesHostKernel, handoff: started ?? handoffPath(name), stateFile };
}

/** The up container's state from its session record (or from an older agentenv's `up/` state file). */
function readState(file: string, runtime: string, name: string): UpState | undefined {
  const record = readRecord(file);
  if (!record) return legacyState(runtime, name);
  const plan = record?.plan;
  if (record?.mode !== "up" || !plan) return undefined;
  return {
    name: record.container,
    runtime: record.runtime as RuntimeName,
    env: plan.labels["agentenv.env"],
    roots: rootsLabel(plan.labels),
    store: plan.labels["agentenv.store"] ?? record.config?.store ?? "none",
    started: plan.labels["agentenv.started"] ?? record.started ?? "",
    project: record.project ?? "/",
    plan,
    config: record.config,
    plugins: record.plugins,
  };
}

/** A container started by agentenv before sessions were records kept its state in `up/`. */
function legacyState(runtime: string, name: string): UpState | undefined {
  try {
    return JSON.parse(readFileSync(join(agentenvDir("state"), "up", `${runtime}-${name}.json`), "utf8")) as UpState;
  } catch {
    return undefined;
  }
}

export function readUpState(c: EnvContainer): UpState | undefined {
  return readState(c.stateFile, c.runtime, c.name);
}

/** The marker file of ROOT in a handoff directory. */
export function rootMarker(handoff: string, root: string): string {
  return join(handoff, "roots", root.replaceAll("/", ":"));
}

/** agentenv-keepalive writes the ready file once the home is set up, and removes it when stopped. */
function isReady(c: EnvContainer): boolean {
  return existsSync(join(c.handoff, "up"));
}

/** On a remote host: whether the ready file is in the container's handoff directory there (one call over the shared connection). */
function readyThere(runtime: RemoteRuntime, name: string): () => Promise<boolean> {
  const file = shellQuote(`${remoteHandoffDir(name)}/up`);
  return async () => (await remoteScript(runtime.host, `test -e ${file}`)).code === 0;
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
  /** the session's settings: config flags, and on a host (`remote`) the roots live-shared from here (`shared`) */
  flags: Pick<SessionOptions, "runtime" | "host" | "image" | "store" | "strict" | "env" | "remote" | "shared">;
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
  };
  plan.labels["agentenv.started"] = state.started;
  ctx.log.start(`starting ${c.name} (environment ${c.env ?? "none"}; roots ${options.roots.join(", ")})…`);
  // the session's record (core/record.ts) is what `down` ends it by
  await startDetached(prepared, () => waitReady(ctx, c, options.quiet));
  return state;
}

/**
 * Until agentenv-keepalive says the home is set up; meanwhile the container's output
 * (dotfiles, tools install) is shown. Ctrl-C or the container ending first is a failure.
 */
async function waitReady(ctx: BaseContext, c: EnvContainer, quiet?: boolean): Promise<void> {
  // a remote host's `logs -f` outlives its ssh client in the shared connection, which keeps what the
  // client was given: never agentenv's own stderr (whoever reads it would wait for the container's end)
  const relayed = Boolean(ctx.config.host) && !quiet;
  const output = quiet ? "ignore" : relayed ? "pipe" : 2;
  const logs = Bun.spawn(ctx.runtime.logsArgv(c.name), { stdin: "ignore", stdout: output, stderr: output });
  const readers = relayed ? [logs.stdout, logs.stderr].map((stream) => (stream as ReadableStream<Uint8Array>).getReader()) : [];
  for (const reader of readers) {
    void (async () => {
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) process.stderr.write(chunk.value);
    })().catch(() => {});
  }
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
    // (on a remote host it is there, in the handoff directory on its tmpfs: asked over the shared connection)
    const there = ctx.config.host ? readyThere(ctx.runtime as RemoteRuntime, c.name) : undefined;
    const ready = async () => (there ? there() : c.hostLocks ? isAlive(c) : isReady(c));
    for (let round = 0; !(await ready()); round++) {
      if (interrupted) throw new UserError(`interrupted while ${c.name} was starting: it was removed`, undefined, 130);
      // the log stream ends with the container, or at once with a log driver that keeps none;
      // Apple container's `logs --follow` may outlive it, so there it is asked every second
      if ((ended || !c.hostLocks) && round % (there ? 5 : 40) === 0 && (await ctx.runtime.containerStatus(c.name)) !== "running" && !(await ready())) {
        const exitCode = (await ctx.runtime.inspectContainer(c.name).catch(() => undefined))?.exitCode;
        throw new UserError(`${c.name} stopped while setting up the environment (exit ${exitCode ?? "?"})`, "see its output above; fix the setup, or run without --strict");
      }
      await Bun.sleep(there ? 200 : 25);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    logs.kill();
    for (const reader of readers) void reader.cancel().catch(() => {});
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
    // on a remote host (its roots there: no config of this machine's is theirs), with that host's engine
    const host = state.config?.host;
    const current = await loadContext({ project: host ? undefined : state.project, flags: { runtime: state.runtime, store: state.store, env: state.env ?? "", host }, log: ctx.log, remote: Boolean(host) }).catch((error) => {
      ctx.log.warn(`the config of ${state.project} does not load any more (${messageOf(error)}): ending ${c.name} with the current one`);
      return ctx;
    });
    // today's plugins end it as its record says (older state files lack the config and the plugins' parts)
    await endDetached(current, state);
    crashPoint("down:ended");
  }
  rmSync(c.handoff, { recursive: true, force: true });
  rmSync(c.stateFile, { force: true });
  rmSync(join(agentenvDir("state"), "up", `${c.runtime}-${c.name}.json`), { force: true });
}

export function writeRootMarkers(handoff: string, roots: readonly string[]): void {
  mkdirSync(join(handoff, "roots"), { recursive: true, mode: 0o700 });
  for (const root of roots) writeFileSync(rootMarker(handoff, root), "");
}
