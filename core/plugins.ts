import type { CommandDef } from "citty";
import { isAbsolute, resolve, dirname } from "pathe";
import type { ResolvedConfig } from "./config.ts";
import { PluginError, UserError, messageOf } from "./errors.ts";
import type { Log } from "./log.ts";
import type { Plan, SessionMode } from "./plan.ts";
import type { Check, Runtime } from "./runtime/types.ts";

/** What every hook receives: the resolved config, the engine, the log, the loaded plugins. */
export interface BaseContext {
  config: ResolvedConfig;
  runtime: Runtime;
  log: Log;
  plugins: readonly LoadedPlugin[];
}

/** The one context every hook of a session receives; hooks edit `plan`, never spawn while it is built. */
export interface SessionContext extends BaseContext {
  plan: Plan;
  /** absolute host path of the project directory */
  project: string;
  mode: SessionMode;
  /**
   * Each plugin's state in this session, under its own name (`ctx.state.golden`): what its
   * hooks hand each other — its clone, its locks — with no map of its own. A session made
   * inside another (a step of its own) starts with an empty one.
   */
  state: Record<string, unknown>;
  /**
   * Each plugin's part of the session's record, under its name (`ctx.saved.golden`): plain
   * JSON, written to agentenv's state dir once `session:start` is done — so nothing secret,
   * no handles. A session ended by a later agentenv (`down` of an `up` container) gets it
   * back here, with an empty `state`: what its `session:exit` needs goes here.
   */
  saved: Record<string, unknown>;
}

export interface VolumeSpec {
  name: string;
  labels: Record<string, string>;
}

/**
 * The lifecycle, in call order. One name → one signature. Every hook is awaited
 * in series, plugin by plugin, in load order (built-ins, user config, project config).
 */
export interface Hooks {
  /** a volume agentenv manages is about to be created (`ensureVolume`); edit its labels */
  "volume:create": (ctx: BaseContext, volume: VolumeSpec) => void | Promise<void>;
  /** the volume was just created and is empty: fill it (runs once per volume) */
  "volume:seed": (ctx: BaseContext, volume: VolumeSpec) => void | Promise<void>;
  /** add or change mounts: the project, stores, homes */
  "session:mount": (ctx: SessionContext) => void | Promise<void>;
  /** last edit before the engine runs: env, command, labels, engine args */
  "session:boot": (ctx: SessionContext) => void | Promise<void>;
  /**
   * the plan is final and about to run: create what it refers to (directories, mounts,
   * seeded volumes). Not called for --dry-run / --json. Once a plugin's `session:start`
   * was called (even when it threw), its `session:exit` runs.
   */
  "session:start": (ctx: SessionContext) => void | Promise<void>;
  /**
   * the container ended (also on failure), for each plugin whose `session:start` was
   * called, **whatever another plugin's hook threw**: every failure is reported (plugin and
   * hook named) and the others still run. `exitCode` is what agentenv will exit with; a
   * plugin may set it on purpose, a failing hook does not change it.
   */
  "session:exit": (ctx: SessionContext, result: { exitCode: number }) => void | Promise<void>;
  /**
   * environment NAME is being removed (`env rm`; its volume and host record are gone):
   * remove what this plugin keeps for it alone, and add a phrase to REMOVED for the user
   * ("its secrets (A, B)"). Runs again when a crash cut an rm short: it must be idempotent.
   */
  "env:remove": (ctx: BaseContext, name: string, removed: string[]) => void | Promise<void>;
  /**
   * `agentenv store gc` is about to collect garbage: add the store paths (or symlinks
   * into the store) that must survive, e.g. an environment's profile
   */
  "store:roots": (ctx: BaseContext, roots: Set<string>) => void | Promise<void>;
  /**
   * `agentenv doctor`, once the engine and the image check out: add checks of what this
   * plugin owns (the Nix store…), each problem with the one command that fixes it
   */
  doctor: (ctx: BaseContext, checks: Check[]) => void | Promise<void>;
}

export type HookName = keyof Hooks;
export const hookNames: readonly HookName[] = [
  "volume:create",
  "volume:seed",
  "session:mount",
  "session:boot",
  "session:start",
  "session:exit",
  "env:remove",
  "store:roots",
  "doctor",
];

export interface Plugin {
  name: string;
  hooks?: Partial<Hooks>;
  /** extra `agentenv <name>` commands; lazy functions keep startup fast */
  commands?: Record<string, CommandDef<any> | (() => Promise<CommandDef<any>>)>;
}

export interface LoadedPlugin extends Plugin {
  /** where it came from: "built-in", or the config file / path that added it */
  source: string;
}

export function definePlugin(plugin: Plugin): Plugin {
  return plugin;
}

/** Calls one hook on every plugin that has it, in order; a throw names plugin and hook. */
export async function callHook<N extends HookName>(
  plugins: readonly LoadedPlugin[],
  name: N,
  ...args: Parameters<Hooks[N]>
): Promise<void> {
  for (const plugin of plugins) {
    const hook = plugin.hooks?.[name] as ((...a: Parameters<Hooks[N]>) => unknown) | undefined;
    if (!hook) continue;
    try {
      await hook(...args);
    } catch (error) {
      if (error instanceof UserError) throw error;
      throw new PluginError(plugin.name, name, error);
    }
  }
}

/**
 * Calls one hook on every plugin that has it, in order, each whatever the ones before
 * threw: for clean-up hooks (`session:exit`). Resolves to the failures, each a
 * PluginError (or the plugin's own UserError) naming plugin and hook.
 */
export async function callHookEach<N extends HookName>(
  plugins: readonly LoadedPlugin[],
  name: N,
  ...args: Parameters<Hooks[N]>
): Promise<UserError[]> {
  const failures: UserError[] = [];
  for (const plugin of plugins) {
    try {
      await callHook([plugin], name, ...args);
    } catch (error) {
      failures.push(error instanceof UserError ? error : new PluginError(plugin.name, name, error));
    }
  }
  return failures;
}

function isPlugin(value: unknown): value is Plugin {
  return typeof value === "object" && value !== null && typeof (value as Plugin).name === "string";
}

async function importPlugin(spec: string, fromFile: string): Promise<Plugin> {
  const base = dirname(fromFile);
  let value: unknown;
  try {
    // a path is relative to the config file; a package name resolves from there too
    const target = spec.startsWith(".") || isAbsolute(spec) ? resolve(base, spec) : Bun.resolveSync(spec, base);
    const mod: { default?: unknown } = await import(target);
    value = typeof mod.default === "function" ? await (mod.default as () => unknown)() : mod.default;
  } catch (error) {
    throw new UserError(`plugin ${spec} (from ${fromFile}) failed to load: ${messageOf(error)}`);
  }
  if (!isPlugin(value)) {
    throw new UserError(`plugin ${spec} (from ${fromFile}) must export default definePlugin({ name, ... })`);
  }
  return value;
}

/** A misspelt hook would silently never run: refuse it. */
function checkHookNames(plugin: LoadedPlugin): LoadedPlugin {
  for (const name of Object.keys(plugin.hooks ?? {})) {
    if (!(hookNames as readonly string[]).includes(name)) {
      throw new UserError(`plugin ${plugin.name} (${plugin.source}): unknown hook "${name}"`, `hooks are: ${hookNames.join(", ")}`);
    }
  }
  return plugin;
}

/**
 * Built-ins first, then each config layer's plugins and its inline hooks
 * (a config file with `hooks` is a plugin named after the file). Falsy entries are
 * skipped so `cond && plugin()` works.
 */
export async function loadPlugins(config: ResolvedConfig, builtins: readonly Plugin[]): Promise<LoadedPlugin[]> {
  const loaded: LoadedPlugin[] = builtins.map((p) => ({ ...p, source: "built-in" }));
  for (const layer of config.layers) {
    if (!layer.file) continue;
    for (const entry of layer.config.plugins ?? []) {
      if (!entry) continue;
      const plugin = typeof entry === "string" ? await importPlugin(entry, layer.file) : entry;
      if (!isPlugin(plugin)) throw new UserError(`config ${layer.file}: a plugin must be an object with a name`);
      loaded.push(checkHookNames({ ...plugin, source: layer.file }));
    }
    if (layer.config.hooks) {
      loaded.push(checkHookNames({ name: `${layer.name} config`, hooks: layer.config.hooks, source: layer.file }));
    }
  }
  return loaded;
}
