import { builtinPlugins } from "./builtins.ts";
import { logFor } from "./commands/_shared.ts";
import { loadConfig, type ConfigFlags, type ResolvedConfig } from "./config.ts";
import { readRemoteTrust, remoteTrust, trustNotice } from "./trust.ts";
import { UserError, formatUserError } from "./errors.ts";
import type { Log } from "./log.ts";
import { basePlan, resolveProjectDir, shellJoin, type BasePlanOptions, type Plan, type SessionMode } from "./plan.ts";
import { callHook, callHookEach, loadPlugins, type BaseContext, type LoadedPlugin, type SessionContext } from "./plugins.ts";
import { createRuntime } from "./runtime/index.ts";
import { findHost, parseRemoteDir, sshUrl } from "./hosts.ts";
import { recordSession, sweepSessions, type HeldRecord, type RecordedSession } from "./record.ts";

export interface SessionOptions extends ConfigFlags {
  dir: string;
  mode: SessionMode;
  command: string[];
  log: Log;
  stdinIsTTY?: boolean;
  /** mode "up": the container's name and roots (see basePlan) */
  up?: BasePlanOptions["up"];
  /** the container's name, when not one made from the project's (see basePlan) */
  name?: string;
  /** the session may run on a remote host (`agentenv [DIR]`, `run`); other sessions (up, attach) run here whatever config's host says */
  remote?: boolean;
  /** false: no line about the project's trust (attach: its "project" is none, and untrusted on purpose) */
  trustNotice?: false;
  /** mode "up" on a host: the roots that are this machine's directories, live-shared there (plugins/remote); the others are the host's */
  shared?: string[];
}

export interface PreparedSession {
  ctx: SessionContext;
  plugins: readonly LoadedPlugin[];
}

/** Config (for PROJECT, when the command is a project's) → plugins → engine: what a command outside a session works with. */
export async function loadContext(options: {
  project?: string;
  roots?: readonly string[];
  flags?: ConfigFlags;
  log: Log;
  /** the command runs on a remote host when config (host, AGENTENV_HOST, --host) names one; else config's host is not this command's */
  remote?: boolean;
}): Promise<BaseContext> {
  const config = await loadConfig({ project: options.project, roots: options.roots, flags: options.flags });
  if (!options.remote && config.host) {
    options.log.debug(`host ${config.host} is for sessions (agentenv [DIR], run): this command works on this machine`);
    config.host = undefined;
  }
  const plugins = await loadPlugins(config, builtinPlugins());
  const runtime = createRuntime(config.runtime, config.host);
  // a remote runtime says what it ships there (the image) through the command's log
  if (config.host) (runtime as { log?: Log }).log = options.log;
  return { config, plugins, runtime, log: options.log };
}

/**
 * The context of a command that is no project's (`env …`, `store …`, `secret …`): the
 * user's config only — no project config is looked for, trusted or not.
 */
export function commandContext(args: { runtime?: string; host?: string; verbose?: boolean; quiet?: boolean }): Promise<BaseContext> {
  return loadContext({ flags: { runtime: args.runtime, host: args.host }, log: logFor(args), remote: Boolean(args.host) });
}

/** Config → plugins → plan → `session:mount` → `session:boot`. Spawns nothing. */
export async function prepareSession(options: SessionOptions): Promise<PreparedSession> {
  // `HOST:PATH`: a directory on that host, which is then the session's (no config is looked for there);
  // so are the roots of an `up` container on a host (`up --host`: plugins/wrap)
  const upThere = options.mode === "up" && options.remote && options.host ? { host: options.host, path: options.dir } : undefined;
  const remote = upThere ?? parseRemoteDir(options.dir, (name) => findHost(name) !== undefined);
  if (remote && options.host && options.host !== remote.host) throw new UserError(`${options.dir} is on host ${remote.host}, but --host says ${options.host}`, "pass one of them");
  const project = remote ? remote.path : resolveProjectDir(options.dir);
  // roots of this machine's in an up container there keep their own trust (and the first one's config), as locally
  const shared = upThere ? (options.shared ?? []) : [];
  const { config, plugins, runtime } = await loadContext({
    project: remote ? shared[0] : project,
    roots: remote ? (shared.length ? shared : undefined) : options.up?.roots,
    flags: { runtime: options.runtime, host: remote?.host ?? options.host, image: options.image, store: options.store, userns: options.userns, env: options.env, profile: options.profile, strict: options.strict },
    log: options.log,
    remote: options.remote || Boolean(remote),
  });
  const remoteEnv = config.host ? remoteLimits(config, options.log) : undefined;
  const there = upThere ? (options.up?.roots ?? []).filter((root) => !shared.includes(root)) : [];
  const localNotice = remote ? remoteSessionTrust(config, remote, upThere && { shared, there }, options.log) : true;
  const plan = basePlan({
    project,
    mode: options.mode,
    command: options.command,
    config,
    stdinIsTTY: options.stdinIsTTY ?? Boolean(process.stdin.isTTY),
    up: options.up,
    name: options.name,
  });
  if (remote) plan.labels["agentenv.project"] = `${remote.host}:${remote.path}`;
  if (shared.length) plan.labels["agentenv.shared"] = JSON.stringify(shared);
  // the environment's copy on that host: the remote plugin mounts it (plugins/remote)
  if (remoteEnv) plan.labels["agentenv.env"] = remoteEnv;
  const ctx: SessionContext = { config, plan, runtime, log: options.log, plugins, project, mode: options.mode, state: {}, saved: {} };
  const notice = localNotice && config.trust && trustNotice(config.trust);
  if (notice && options.trustNotice !== false) options.log.warn(notice);
  await callHook(plugins, "session:mount", ctx);
  await callHook(plugins, "session:boot", ctx);
  return { ctx, plugins };
}

/**
 * A session on a remote host: its environment is that host's copy of the home (the remote
 * plugin mounts it, making it from this machine's on first use), not this machine's
 * environment machinery, whose records are this machine's. /nix is the image's own unless a
 * store is asked for (config, AGENTENV_STORE, --store): then it is a clone of that host's
 * own golden store (engine volumes there: each session copies it, so it is not the default).
 * Returns the environment's name.
 */
function remoteLimits(config: ResolvedConfig, log: Log): string | undefined {
  const env = config.env.name;
  config.env.name = undefined;
  const asked = config.layers.some((layer) => layer.name !== "defaults" && layer.config.store !== undefined);
  if (config.store === "host") throw new UserError(`--store host is this machine's nix-daemon: a session on ${config.host} cannot use it`, "use --store golden (that host's own golden store) or --store none");
  if (!asked && config.store !== "none") {
    log.debug(`the session on ${config.host} gets the image's /nix (--store golden: that host's own golden store)`);
    config.store = "none";
  }
  return env;
}

/**
 * The trust of a session whose project is on a host: a `HOST:PATH` project, or an `up
 * --host` container (UP) whose roots are there and, live-shared, here (`shared`). The roots
 * here were judged by config as local projects are; one of them untrusted makes the
 * container untrusted, said by config's own line. Otherwise the roots there decide, each
 * trusted only by `agentenv trust HOST:PATH` (`remoteProjectTrust`, which says so itself).
 * Returns whether config's line (a root here) is the one to show.
 */
function remoteSessionTrust(config: ResolvedConfig, remote: { host: string; path: string }, up: { shared: string[]; there: string[] } | undefined, log: Log): boolean {
  if (up?.shared.length && (!config.trust?.trusted || !up.there.length)) return !config.trust?.trusted;
  const project = up ? (untrustedRootThere(remote.host, up.there) ?? { host: remote.host, path: up.there[0] ?? remote.path }) : remote;
  remoteProjectTrust(config, project, log);
  return false;
}

/**
 * A project on a remote host (`HOST:PATH`): none of its files is read here, so its config
 * is never loaded, trusted or not. It is trusted only when `agentenv trust HOST:PATH`
 * recorded that path (or a parent) on that host reached at the address it has now
 * (core/trust.ts): its sessions then get secrets and keep their store changes, in that
 * host's own golden store. Otherwise they get no secrets and keep nothing, as an untrusted
 * project here. A project on this machine, shared with `--host`, keeps its own trust.
 */
function remoteProjectTrust(config: ResolvedConfig, remote: { host: string; path: string }, log: Log): void {
  const url = sshUrl(findHost(remote.host)!);
  const { trust, was } = remoteTrust(remote.host, url, remote.path, readRemoteTrust());
  config.trust = trust;
  if (trust.trusted) return log.debug(`${remote.host}:${remote.path} is trusted (agentenv trust ${trust.project}); its config there is not loaded`);
  if (config.store === "golden") {
    config.store = "ephemeral";
    trust.storeWithheld = true;
  }
  const project = `${remote.host}:${remote.path}`;
  if (was) log.warn(`${trust.project} was trusted when host ${remote.host} was ${was}; it is now ${url}: not trusted — no secrets, and its store changes are not kept (agentenv trust ${project} if that is right)`);
  else log.warn(`${project} is a project on another machine: no secrets, and its store changes are not kept — agentenv trust ${project} trusts it (its config there is never loaded)`);
}

/** An `up` container on HOST is trusted only when every one of its roots there is: the first one that is not. */
function untrustedRootThere(host: string, roots: readonly string[]): { host: string; path: string } | undefined {
  const url = sshUrl(findHost(host)!);
  const records = readRemoteTrust();
  const path = roots.find((root) => !remoteTrust(host, url, root, records).trust.trusted);
  return path === undefined ? undefined : { host, path };
}

/** The engine's own failure codes (podman/docker `run`), as opposed to the command's. */
const engineFailureCodes = new Set([125]);

/**
 * `session:start`, plugin by plugin, each added to STARTED before it is called (so its
 * `session:exit` runs even if it throws); then the session's record gets what they saved.
 */
async function startPlugins(plugins: readonly LoadedPlugin[], ctx: SessionContext, started: LoadedPlugin[], record: HeldRecord | undefined): Promise<void> {
  for (const plugin of plugins) {
    started.push(plugin);
    await callHook([plugin], "session:start", ctx);
  }
  record?.update(ctx);
}

/** `session:exit` for the plugins that started, every one of them; failures are reported, not thrown. */
async function exitPlugins(started: readonly LoadedPlugin[], ctx: SessionContext, result: { exitCode: number }): Promise<void> {
  for (const failure of await callHookEach(started, "session:exit", ctx, result)) ctx.log.error(formatUserError(failure));
}

/** Runs a prepared session to its end; resolves to the exit code agentenv should exit with. */
export async function runPrepared({ ctx, plugins }: PreparedSession): Promise<number> {
  const result = { exitCode: 1 };
  const started: LoadedPlugin[] = [];
  let engineFailure: string | undefined;
  // what sessions whose agentenv was killed left (a stopped container, a handoff directory) goes first
  await sweepSessions(ctx);
  const record = recordSession(ctx);
  try {
    await startPlugins(plugins, ctx, started, record);
    ctx.log.debug(`$ ${ctx.runtime.argv(ctx.plan).map(shellJoin).join("\n$ ")}`);
    result.exitCode = await ctx.runtime.run(ctx.plan);
    if (engineFailureCodes.has(result.exitCode)) engineFailure = await ctx.runtime.diagnose(ctx.plan);
  } finally {
    await exitPlugins(started, ctx, result);
    record?.release();
  }
  if (engineFailure) throw new UserError(engineFailure, undefined, result.exitCode);
  return result.exitCode;
}

/**
 * Starts a prepared `detach` session (`agentenv up`) and returns once `ready` resolves;
 * its record stays, and its `session:exit` runs later, in whichever agentenv ends it
 * (`endDetached`). When it does not start or `ready` throws, the container goes and
 * `session:exit` runs now.
 */
export async function startDetached({ ctx, plugins }: PreparedSession, ready: () => Promise<void>): Promise<void> {
  let started = false;
  let created = false;
  const startedPlugins: LoadedPlugin[] = [];
  // without it no later agentenv could end the session: required
  const record = recordSession(ctx, true)!;
  try {
    await startPlugins(plugins, ctx, startedPlugins, record);
    ctx.log.debug(`$ ${ctx.runtime.argv(ctx.plan).map(shellJoin).join("\n$ ")}`);
    const code = await ctx.runtime.run(ctx.plan);
    // a failed run made nothing to remove, or the name is someone else's container
    created = code === 0;
    if (code !== 0) {
      // a detached run's code is always the engine's own
      const why = await ctx.runtime.diagnose(ctx.plan);
      throw new UserError(why ?? `${ctx.runtime.name} could not start container ${ctx.plan.name} (exit ${code})`);
    }
    await ready();
    started = true;
  } finally {
    if (!started) {
      if (created) await ctx.runtime.removeContainer(ctx.plan.name).catch(() => {});
      await exitPlugins(startedPlugins, ctx, { exitCode: 1 });
      record.release();
    } else {
      record.keep();
    }
  }
}

/**
 * Ends a detached session whose container is already gone: `session:exit` with what its
 * record says — the plan and config it started with, each plugin's saved part — run by
 * BASE's plugins (code is not data: today's) in a new process, whose `ctx.state` is empty.
 */
export async function endDetached(base: BaseContext, session: Pick<RecordedSession, "plan" | "project" | "config" | "plugins">): Promise<void> {
  if (!session.plan) return;
  const config = session.config ? { ...session.config, layers: base.config.layers } : base.config;
  const ctx: SessionContext = { ...base, config, plan: session.plan, project: session.project ?? "/", mode: "up", state: {}, saved: session.plugins ?? {} };
  await exitPlugins(base.plugins, ctx, { exitCode: 0 });
}
