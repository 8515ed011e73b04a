import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "pathe";
import { UserError, messageOf } from "./errors.ts";
import { agentenvDir } from "./paths.ts";
import type { Hooks, Plugin } from "./plugins.ts";
import { findProjectConfig, projectTrust, readTrust, type ProjectTrust } from "./trust.ts";

export { findProjectConfig, projectConfigName } from "./trust.ts";

export type RuntimeName = "podman" | "docker" | "container";
export const runtimeNames: readonly RuntimeName[] = ["podman", "docker", "container"];

/**
 * What a session gets at /nix. golden: a copy-on-write clone of the golden store, new
 * paths promoted back; ephemeral: a clone thrown away; none: the image's own /nix;
 * host: this host's /nix/store (read-only) and its nix-daemon's socket, so Nix in the
 * container builds through the host's daemon into the host's store.
 */
export type StoreMode = "golden" | "ephemeral" | "none" | "host";
export const storeModes: readonly StoreMode[] = ["golden", "ephemeral", "none", "host"];

/** The modes that use the golden store volume (the others never touch it). */
export function usesGoldenStore(mode: StoreMode): boolean {
  return mode === "golden" || mode === "ephemeral";
}
export const defaultStoreVolume = "agentenv-nix";

/**
 * Who a session runs as. root: root inside (HOME /root), which rootless Podman maps to
 * you outside, so what it writes into /work is yours. keep-id: your own uid and gid
 * inside (rootless Podman's --userns=keep-id), for tools that look at who they run as;
 * no root inside, so no apt or other system changes (README, "Your own uid inside").
 */
export type UsernsMode = "root" | "keep-id";
export const usernsModes: readonly UsernsMode[] = ["root", "keep-id"];

/** Which environment (persistent home) sessions get. */
export interface EnvConfig {
  /** the environment every session uses unless `--env`/`--no-env` says otherwise */
  default?: string;
  /** create the default environment on first use instead of failing */
  autoCreate?: boolean;
  /** the template directory `autoCreate` (and `env create` without one) copies; default: the shipped test-env */
  template?: string;
  /** a session does not open when its environment's setup fails (dotfiles, ~/flake.nix tools); default: it opens with a warning */
  strict?: boolean;
}

export interface MountConfig {
  /** host path (`~` and paths relative to the project dir allowed) or, with type "volume", a volume name */
  source: string;
  target: string;
  type?: "bind" | "volume";
  readonly?: boolean;
}

/** What an `agentenv.config.ts` (project) or `~/.config/agentenv/config.ts` (user) exports. */
export interface AgentenvConfig {
  runtime?: RuntimeName;
  /** sessions run on this remote machine's Podman, over SSH (a name from `agentenv host add`) */
  host?: string;
  image?: string;
  /** what a session gets at /nix (default "golden"; see StoreMode) */
  store?: StoreMode;
  /** the engine volume holding the golden store (default "agentenv-nix") */
  storeVolume?: string;
  /** who the session runs as inside (default "root"; see UsernsMode) */
  userns?: UsernsMode;
  /** the environment (named persistent HOME) sessions use */
  env?: EnvConfig;
  /** legacy: a profile directory mounted live under HOME, its activate.sh run before the shell */
  profile?: string;
  /** extra mounts for every session */
  mounts?: MountConfig[];
  /** extra environment variables for every session */
  extraEnv?: Record<string, string>;
  /** extra arguments for the engine's `run`, placed before the image */
  extraRunArgs?: string[];
  /**
   * `agentenv up`, `exec` and wrappers: the host directories an environment container
   * mounts, each at its own path (`~` and paths relative to the config file allowed);
   * default: the current project
   */
  roots?: string[];
  /** `agentenv exec` and wrappers start the environment container when it is not running (default true) */
  autoStart?: boolean;
  /** `agentenv exec` runs CMD in the dev shell of the nearest flake.nix above its directory (default false) */
  autoNixDevelop?: boolean;
  /** plugin objects, or paths / package names resolved from the config file's directory */
  plugins?: Array<Plugin | string | false | null | undefined>;
  /** inline hooks: this config file acts as a plugin of its own */
  hooks?: Partial<Hooks>;
  /**
   * user config only: trees of your own work whose projects are trusted (their
   * `agentenv.config.ts` loaded, their sessions given secrets and promoted), e.g. ["~/Code"]
   */
  trust?: string[];
}

/** One config source, in merge order. */
export interface ConfigLayer {
  name: "defaults" | "user" | "project" | "environment" | "flags";
  file?: string;
  config: AgentenvConfig;
}

export interface ResolvedConfig {
  runtime?: RuntimeName;
  /** the remote host sessions run on (core/hosts.ts); undefined: this machine */
  host?: string;
  image: string;
  store: StoreMode;
  storeVolume: string;
  userns: UsernsMode;
  /** `name` undefined: no environment, HOME is the image's own (thrown away) */
  env: { name?: string; autoCreate: boolean; template?: string; strict: boolean };
  profile?: string;
  mounts: MountConfig[];
  extraEnv: Record<string, string>;
  extraRunArgs: string[];
  /** absolute host paths, every layer's */
  roots: string[];
  autoStart: boolean;
  autoNixDevelop: boolean;
  /** the project's trust (core/trust.ts); undefined for commands that are not a project's (env, store…) */
  trust?: ProjectTrust;
  layers: ConfigLayer[];
}

export const defaultImage = "localhost/agentenv:latest";

export function defineConfig(config: AgentenvConfig): AgentenvConfig {
  return config;
}

export function userConfigPath(env = process.env): string {
  return join(agentenvDir("config", env), "config.ts");
}

let virtualModuleRegistered = false;

/**
 * `import { defineConfig } from "agentenv"` must work from a config file that has no
 * node_modules next to it — also inside the compiled binary, where no package
 * resolution exists. A Bun runtime plugin serves the public API as a virtual module.
 */
export async function registerVirtualModule(): Promise<void> {
  if (virtualModuleRegistered) return;
  virtualModuleRegistered = true;
  const api = await import("./index.ts");
  Bun.plugin({
    name: "agentenv-virtual-module",
    setup(build) {
      build.module("agentenv", () => ({ exports: { ...api }, loader: "object" }));
    },
  });
}

/** Imports a config file; syntax errors and throws become one line naming file and line. */
export async function importConfigFile(file: string): Promise<AgentenvConfig> {
  await registerVirtualModule();
  let value: unknown;
  try {
    const mod: { default?: unknown } = await import(file);
    value = typeof mod.default === "function" ? await (mod.default as () => unknown)() : mod.default;
  } catch (error) {
    throw new UserError(`config ${file}${lineOf(error, file)}: ${configErrorMessage(error)}`, "fix the config file");
  }
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UserError(`config ${file}: the default export must be an object (use defineConfig({...}))`);
  }
  return checkShape(value as AgentenvConfig, file);
}

/** The fields that reach the engine's argv: a wrong type would become a wrong command. */
function checkShape(config: AgentenvConfig, file: string): AgentenvConfig {
  const fail = (what: string) => {
    throw new UserError(`config ${file}: ${what}`);
  };
  for (const key of ["runtime", "host", "image", "store", "storeVolume", "userns", "profile"] as const) {
    if (config[key] !== undefined && typeof config[key] !== "string") fail(`${key} must be a string`);
  }
  if (config.env !== undefined) {
    if (typeof config.env !== "object" || config.env === null || Array.isArray(config.env)) fail('env must be an object, e.g. { default: "dev" }');
    for (const key of ["default", "template"] as const) {
      if (config.env[key] !== undefined && typeof config.env[key] !== "string") fail(`env.${key} must be a string`);
    }
    if (config.env.autoCreate !== undefined && typeof config.env.autoCreate !== "boolean") fail("env.autoCreate must be true or false");
  }
  if (config.extraRunArgs !== undefined && !(Array.isArray(config.extraRunArgs) && config.extraRunArgs.every((a) => typeof a === "string"))) {
    fail("extraRunArgs must be a list of strings, e.g. [\"--cap-add\", \"SYS_PTRACE\"]");
  }
  if (config.extraEnv !== undefined) {
    if (typeof config.extraEnv !== "object" || config.extraEnv === null || Array.isArray(config.extraEnv)) fail("extraEnv must be an object of strings");
    for (const [key, value] of Object.entries(config.extraEnv)) {
      if (value === undefined) delete config.extraEnv[key];
      else if (typeof value !== "string") fail(`extraEnv.${key} must be a string`);
    }
  }
  if (config.mounts !== undefined) {
    if (!Array.isArray(config.mounts)) fail("mounts must be a list");
    for (const m of config.mounts) {
      if (typeof m?.source !== "string" || typeof m?.target !== "string") fail("each mount needs a string source and target");
    }
  }
  if (config.roots !== undefined && !(Array.isArray(config.roots) && config.roots.every((r) => typeof r === "string" && r !== ""))) {
    fail('roots must be a list of directories, e.g. ["~/Code"]');
  }
  for (const key of ["autoStart", "autoNixDevelop"] as const) {
    if (config[key] !== undefined && typeof config[key] !== "boolean") fail(`${key} must be true or false`);
  }
  if (config.plugins !== undefined && !Array.isArray(config.plugins)) fail("plugins must be a list");
  if (config.trust !== undefined && !(Array.isArray(config.trust) && config.trust.every((t) => typeof t === "string" && t !== ""))) {
    fail('trust must be a list of directories, e.g. ["~/Code"]');
  }
  return config;
}

function firstError(error: unknown): unknown {
  return error instanceof AggregateError && error.errors.length ? error.errors[0] : error;
}

function configErrorMessage(error: unknown): string {
  return messageOf(firstError(error));
}

/** `:LINE` from a Bun BuildMessage (syntax error) or from the stack of a thrown error. */
function lineOf(error: unknown, file: string): string {
  const first = firstError(error) as { position?: { line?: number }; stack?: string };
  if (first?.position?.line) return `:${first.position.line}`;
  const stack = typeof first?.stack === "string" ? first.stack : "";
  for (const line of stack.split("\n")) {
    const at = line.indexOf(file + ":");
    if (at >= 0) {
      const match = /^:(\d+)/.exec(line.slice(at + file.length));
      if (match) return `:${match[1]}`;
    }
  }
  return "";
}

function isRuntimeName(value: string): value is RuntimeName {
  return (runtimeNames as readonly string[]).includes(value);
}

export function checkStoreMode(value: string | undefined, source: string): StoreMode | undefined {
  if (value === undefined || value === "") return undefined;
  if (!(storeModes as readonly string[]).includes(value)) {
    throw new UserError(`unknown store mode "${value}" (from ${source})`, `use one of: ${storeModes.join(", ")}`);
  }
  return value as StoreMode;
}

export function checkUsernsMode(value: string | undefined, source: string): UsernsMode | undefined {
  if (value === undefined || value === "") return undefined;
  if (!(usernsModes as readonly string[]).includes(value)) {
    throw new UserError(`unknown userns mode "${value}" (from ${source})`, `use one of: ${usernsModes.join(", ")}`);
  }
  return value as UsernsMode;
}

/** An engine volume name: the engines' own rule, checked before any engine sees it. */
export function checkVolumeName(value: string | undefined, source: string): string | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(value)) {
    throw new UserError(`invalid volume name "${value}" (from ${source})`, "use letters, digits, _ . - (starting with a letter or digit)");
  }
  return value;
}

/** A remote host's name (core/hosts.ts): it appears in commands, file names and `HOST:PATH`, so it is kept plain (no dots). */
export const hostNamePattern = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function checkHostName(value: string, source: string): string {
  if (!hostNamePattern.test(value)) {
    throw new UserError(`invalid host name "${value}" (from ${source})`, "use 1–63 of a-z 0-9 _ - starting with a letter or digit");
  }
  return value;
}

/** An environment name: it becomes part of a volume name and a path, so it is kept plain. */
export const envNamePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function checkEnvName(value: string | undefined, source: string): string | undefined {
  if (value === undefined || value === "") return undefined;
  if (!envNamePattern.test(value)) {
    throw new UserError(`invalid environment name "${value}" (from ${source})`, "use 1–63 of a-z 0-9 . _ - starting with a letter or digit");
  }
  return value;
}

export function checkRuntimeName(value: string | undefined, source: string): RuntimeName | undefined {
  if (value === undefined || value === "") return undefined;
  if (!isRuntimeName(value)) {
    throw new UserError(`unknown runtime "${value}" (from ${source})`, `use one of: ${runtimeNames.join(", ")}`);
  }
  return value;
}

/** Scalars: later layers win. Records: merged by key. Lists: concatenated. */
export function mergeLayers(layers: ConfigLayer[], env: Record<string, string | undefined> = process.env): ResolvedConfig {
  const resolved: ResolvedConfig = {
    image: defaultImage,
    store: "golden",
    storeVolume: defaultStoreVolume,
    userns: "root",
    env: { autoCreate: false, strict: false },
    mounts: [],
    extraEnv: {},
    extraRunArgs: [],
    roots: [],
    autoStart: true,
    autoNixDevelop: false,
    layers,
  };
  for (const { config, name, file } of layers) {
    if (config.runtime !== undefined) resolved.runtime = checkRuntimeName(config.runtime, file ?? name);
    if (config.host !== undefined) resolved.host = checkHostName(config.host, file ?? name);
    if (config.image) resolved.image = config.image;
    if (config.store !== undefined) resolved.store = checkStoreMode(config.store, file ?? name) ?? resolved.store;
    if (config.storeVolume) resolved.storeVolume = checkVolumeName(config.storeVolume, file ?? name) ?? resolved.storeVolume;
    if (config.userns !== undefined) resolved.userns = checkUsernsMode(config.userns, file ?? name) ?? resolved.userns;
    if (config.env) {
      const where = file ?? name;
      // `--no-env` arrives as default: "" and clears any default set below it
      if (config.env.default !== undefined) resolved.env.name = checkEnvName(config.env.default, where);
      if (config.env.autoCreate !== undefined) resolved.env.autoCreate = config.env.autoCreate;
      if (config.env.strict !== undefined) resolved.env.strict = config.env.strict;
      if (config.env.template) resolved.env.template = file ? resolve(dirname(file), expandHome(config.env.template, env)) : config.env.template;
    }
    if (config.profile !== undefined) resolved.profile = config.profile && file ? resolve(dirname(file), expandHome(config.profile, env)) : config.profile || undefined;
    if (config.mounts) resolved.mounts.push(...config.mounts);
    if (config.extraEnv) Object.assign(resolved.extraEnv, config.extraEnv);
    if (config.extraRunArgs) resolved.extraRunArgs.push(...config.extraRunArgs);
    for (const root of config.roots ?? []) resolved.roots.push(file ? resolve(dirname(file), expandHome(root, env)) : resolve(expandHome(root, env)));
    if (config.autoStart !== undefined) resolved.autoStart = config.autoStart;
    if (config.autoNixDevelop !== undefined) resolved.autoNixDevelop = config.autoNixDevelop;
  }
  return resolved;
}

export interface ConfigFlags {
  runtime?: string;
  /** `--host NAME` (a remote machine) */
  host?: string;
  image?: string;
  store?: string;
  userns?: string;
  /** an environment name; "" (from `--no-env`) means none */
  env?: string;
  profile?: string;
  /** `--strict`: see EnvConfig.strict */
  strict?: boolean;
}

/** `~` and `~/…` are the user's HOME (config files are written by hand). */
export function expandHome(path: string, env: Record<string, string | undefined> = process.env): string {
  const home = env.HOME || homedir();
  if (path === "~") return home;
  if (path.startsWith("~/")) return join(home, path.slice(2));
  return path;
}

/**
 * defaults < user config < project config < AGENTENV_* variables < flags. PROJECT: the
 * project a session (or `up`, `plugins`, `doctor`) is for; its config is imported only
 * when the user trusted it (core/trust.ts). Without PROJECT (env, store, secret…) no
 * project config is looked for at all.
 */
export async function loadConfig(options: {
  project?: string;
  /** an `up` container's roots: it is trusted only when every one of them is */
  roots?: readonly string[];
  flags?: ConfigFlags;
  env?: Record<string, string | undefined>;
}): Promise<ResolvedConfig> {
  const env = options.env ?? process.env;
  const layers: ConfigLayer[] = [{ name: "defaults", config: {} }];
  const userFile = userConfigPath(env);
  let trees: string[] = [];
  if (existsSync(userFile)) {
    const user = await importConfigFile(userFile);
    layers.push({ name: "user", file: userFile, config: user });
    trees = (user.trust ?? []).map((tree) => resolve(expandHome(tree, env)));
  }
  let trust: ProjectTrust | undefined;
  if (options.project !== undefined) {
    const passedOver: Array<{ file: string; why: string }> = [];
    const found = findProjectConfig(options.project, env.HOME || homedir(), passedOver);
    const projectFile = found && found !== userFile ? found : undefined;
    const records = readTrust(env);
    const home = env.HOME || homedir();
    trust = projectTrust(options.project, projectFile, trees, records, home);
    const untrustedRoot = options.roots?.map((root) => projectTrust(root, undefined, trees, records, home)).find((t) => !t.trusted);
    if (untrustedRoot) trust = { ...trust, project: untrustedRoot.project, trusted: false, via: undefined };
    if (passedOver.length) trust.passedOver = passedOver;
    if (projectFile && trust.config?.status === "trusted") {
      const config = await importConfigFile(projectFile);
      if (config.trust !== undefined) throw new UserError(`config ${projectFile}: trust belongs in your user config (${userFile}), not a project's`);
      layers.push({ name: "project", file: projectFile, config });
    }
  }
  layers.push({
    name: "environment",
    config: {
      runtime: checkRuntimeName(env.AGENTENV_RUNTIME, "AGENTENV_RUNTIME"),
      host: env.AGENTENV_HOST ? checkHostName(env.AGENTENV_HOST, "AGENTENV_HOST") : undefined,
      image: env.AGENTENV_IMAGE || undefined,
      store: checkStoreMode(env.AGENTENV_STORE, "AGENTENV_STORE"),
      storeVolume: checkVolumeName(env.AGENTENV_STORE_VOLUME, "AGENTENV_STORE_VOLUME"),
      userns: checkUsernsMode(env.AGENTENV_USERNS, "AGENTENV_USERNS"),
      env: env.AGENTENV_ENV !== undefined ? { default: checkEnvName(env.AGENTENV_ENV, "AGENTENV_ENV") ?? "" } : undefined,
    },
  });
  layers.push({
    name: "flags",
    config: {
      runtime: checkRuntimeName(options.flags?.runtime, "--runtime"),
      host: options.flags?.host ? checkHostName(options.flags.host, "--host") : undefined,
      image: options.flags?.image || undefined,
      store: checkStoreMode(options.flags?.store, "--store"),
      userns: checkUsernsMode(options.flags?.userns, "--userns"),
      env: {
        ...(options.flags?.env !== undefined ? { default: checkEnvName(options.flags.env, "--env") ?? "" } : {}),
        ...(options.flags?.strict ? { strict: true } : {}),
      },
      profile: options.flags?.profile ? resolve(expandHome(options.flags.profile, env)) : undefined,
    },
  });
  const resolved = mergeLayers(layers, env);
  resolved.trust = trust;
  // an untrusted project reads the golden store and keeps nothing in it
  if (trust && !trust.trusted && resolved.store === "golden") {
    resolved.store = "ephemeral";
    trust.storeWithheld = true;
  }
  return resolved;
}
