import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { globalArgs, hostArgs, logFor, repeatedFlag, runtimeArgs } from "../../core/commands/_shared.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { commandContext } from "../../core/session.ts";
import { formatBytes } from "../../core/log.ts";
import { UserError, messageOf } from "../../core/errors.ts";
import { hasOverlay } from "./dotfiles/index.ts";
import { readOverlay } from "./dotfiles/overlay.ts";
import { checkManager, checkRef, checkSetup, dotfilesManagers, resolveDotfilesUrl, type DotfilesConfig } from "./dotfiles/repo.ts";
import { describeResult, readResult } from "./dotfiles/result.ts";
import { checkName, describeRecord, diskUsage, envLabel, envNameOf, hasFlake, inHome, lastUsed, recordPath, stateValue, toolsStorePath, volumeName, type EnvRecord } from "./home.ts";
import { hostRecord, ifEnvUnlocked, pendingOps, readHostRecord } from "./record.ts";
import { createEnv, exportEnv, importEnv, recordOf, recoverEnv, removeEnv, requireHome, resetEnv, runningUsers } from "./lifecycle.ts";

const commonArgs = { ...runtimeArgs, ...globalArgs } as const;
const nameArg = { name: { type: "positional", required: true, valueHint: "name", description: "Environment name ([a-z0-9][a-z0-9._-]*)" } } as const;
const jsonArg = { json: { type: "boolean", description: "Print as JSON" } } as const;


const create = defineCommand({
  meta: { name: "create", description: "Create a persistent home from a template directory (default: config env.template, else the built-in test-env)" },
  args: {
    ...nameArg,
    template: { type: "positional", required: false, valueHint: "template-dir", description: "Directory copied into the new home (dotfiles, .config, flake.nix…)" },
    "from-profile": { type: "string", valueHint: "dir", description: "Turn a legacy profile into an environment: DIR is copied under HOME and its activate.sh run once" },
    shell: { type: "string", valueHint: "shell", description: "Shell sessions start (default: zsh if the template configures zsh, bash if only bash)" },
    dotfiles: { type: "string", valueHint: "url", description: "A dotfiles repo (git URL, local path, or owner/repo on GitHub), cloned to ~/.dotfiles and set up at the next session; without a template the home starts empty" },
    ref: { type: "string", valueHint: "ref", description: "With --dotfiles: the branch, tag or commit (default: the repo's HEAD)" },
    setup: {
      type: "string",
      valueHint: "command",
      description:
        "With --dotfiles: the setup command, a script of the repo (or a command on PATH) and its arguments, quoted as a shell would: 'bootstrap.sh --force' (default: the first of install.sh, install, bootstrap.sh, bootstrap, script/bootstrap, setup.sh, setup, script/setup; none, or no script: agentenv places the files itself, see --manager)",
    },
    manager: {
      type: "string",
      valueHint: dotfilesManagers.join("|"),
      description: "With --dotfiles: how agentenv places the repo's files into ~ itself, instead of looking for a setup script (default: recognised from the repo's layout when it has no setup script; see docs/dotfiles.md)",
    },
    ...commonArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    if (args.template && args["from-profile"]) throw new UserError("give a template directory or --from-profile, not both");
    const stray = (["ref", "setup", "manager"] as const).find((flag) => args[flag] !== undefined);
    if (!args.dotfiles && stray) throw new UserError(`--${stray} goes with --dotfiles URL`);
    const dotfiles: DotfilesConfig | undefined = args.dotfiles
      ? { url: resolveDotfilesUrl(args.dotfiles), ref: checkRef(args.ref), setup: checkSetup(args.setup), manager: checkManager(args.manager) }
      : undefined;
    // undefined fields stay out of the record
    for (const key of ["ref", "setup", "manager"] as const) if (dotfiles && dotfiles[key] === undefined) delete dotfiles[key];
    const ctx = await commandContext(args);
    const from = args["from-profile"] ? { profile: args["from-profile"] } : args.template || !dotfiles ? { template: args.template } : { empty: true as const };
    const record = await createEnv(ctx, name, from, { shell: args.shell, dotfiles });
    const next = dotfiles ? "; its first session clones and sets up the dotfiles" : "";
    ctx.log.success(`environment ${name} created from ${describeRecord(record)}${next} — use it: agentenv --env ${name} [DIR]`);
    return 0;
  },
});

/**
 * What a volume is to `env list`: a usable environment; one a command running now is
 * creating (or importing) or removing; or incomplete — neither its home nor this host
 * has its record, so no command finished making it (another host's command sharing the
 * engine, still at work or dead, or a version of agentenv before journals).
 */
type EnvState = "ready" | "creating" | "removing" | "incomplete";

interface EnvInfo {
  name: string;
  volume: string;
  state?: EnvState;
  source?: EnvRecord["source"];
  created?: string;
  lastUsed?: string;
  /** bytes on disk; undefined when the engine's files are out of reach from here */
  size?: number;
  shell?: string;
  dotfiles?: DotfilesConfig;
}

/** NAME's info from this host's RECORD, and from its home at DIR when its files are readable from here. */
async function infoOf(name: string, dir: string | undefined, record: EnvRecord | undefined): Promise<EnvInfo> {
  const readable = dir !== undefined;
  return {
    name,
    volume: volumeName(name),
    source: record?.source,
    created: record?.created,
    lastUsed: readable ? lastUsed(dir) : undefined,
    size: readable ? await diskUsage(dir) : undefined,
    // the state file: the dotfiles setup may have chosen one since
    shell: (readable ? stateValue(dir, "shell") : undefined) ?? record?.shell,
    dotfiles: record?.dotfiles,
  };
}

/** "3 min ago"-style age, short enough for a table. */
function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  const steps: Array<[number, string]> = [[60, "s"], [60, "min"], [24, "h"], [Infinity, "d"]];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (value < size) return `${Math.floor(value)} ${unit} ago`;
    value /= size;
  }
  return iso;
}

/**
 * NAME's state for `env list`. What a crashed command left of it is finished or undone
 * first, as the next command on it would (undefined: nothing was left of it); a command
 * at work on it now is not waited for.
 */
async function listState(ctx: BaseContext, name: string, volume: string, mountpoint: string | undefined): Promise<EnvState | undefined> {
  if (pendingOps(ctx, name).length) {
    const recovered = await ifEnvUnlocked(ctx, name, () => recoverEnv(ctx, name));
    if (recovered && !(await ctx.runtime.volumeExists(volume))) return undefined;
    const running = recovered ? [] : pendingOps(ctx, name);
    if (running.some((op) => op.op === "create")) return "creating";
    if (running.some((op) => op.op === "rm")) return "removing";
    // a reset at work: the home is the old one or the new one, usable either way (sessions wait for it)
    if (running.length) return "ready";
  }
  // its files are here with no record in them, and no command here finished making it
  // (one that did keeps this host's record: a session may have deleted the home's copy)
  if (mountpoint && existsSync(mountpoint) && !inHome(mountpoint, recordPath) && !readHostRecord(ctx, name)) return "incomplete";
  return "ready";
}

const stateNotes: Record<Exclude<EnvState, "ready">, string> = {
  creating: "(being created by another agentenv command)",
  removing: "(being removed by another agentenv command)",
  incomplete: "(incomplete: being made elsewhere, or left by a crash — agentenv env rm NAME removes it)",
};

const list = defineCommand({
  meta: { name: "list", description: "List environments: name, source, created, last used, size (--host H: the copies on that host)" },
  args: { ...jsonArg, ...commonArgs, ...hostArgs },
  async run({ args }) {
    if (args.host) return (await import("./sync.ts")).listCopies(args.host, Boolean(args.json), logFor(args));
    const ctx = await commandContext(args);
    const volumes = await ctx.runtime.volumeList(envLabel);
    const infos: EnvInfo[] = [];
    for (const { name: volume, mountpoint } of volumes.sort((a, b) => a.name.localeCompare(b.name))) {
      // one engine call for all: their files are read here (a VM or remote engine shows "?")
      const name = envNameOf(volume);
      const state = await listState(ctx, name, volume, mountpoint);
      if (!state) continue;
      const dir = state === "ready" && mountpoint && inHome(mountpoint, recordPath) ? mountpoint : undefined;
      const info = await infoOf(name, dir, state === "ready" ? hostRecord(ctx, { name, volume, dir, readable: dir !== undefined }) : undefined);
      infos.push({ ...info, state });
    }
    if (args.json) {
      console.log(JSON.stringify(infos, null, 2));
      return 0;
    }
    if (!infos.length) {
      console.log("no environments yet — create one: agentenv env create NAME [TEMPLATE_DIR]");
      return 0;
    }
    const source = (i: EnvInfo) => (i.state && i.state !== "ready" ? stateNotes[i.state].replace("NAME", i.name) : describeRecord(i));
    const rows = [["NAME", "SOURCE", "CREATED", "LAST USED", "SIZE"], ...infos.map((i) => [i.name, source(i), age(i.created), age(i.lastUsed), i.size === undefined ? "?" : formatBytes(i.size)])];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    for (const row of rows) console.log(row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]!))).join("  "));
    return 0;
  },
});

/** Files in the environment's overlay (0: none); undefined when it cannot be read (the warning says why). */
function overlayCount(ctx: BaseContext, name: string): number | undefined {
  if (!hasOverlay(name)) return 0;
  try {
    return Object.keys(readOverlay(name).files).length;
  } catch (error) {
    ctx.log.warn(messageOf(error));
    return undefined;
  }
}

const show = defineCommand({
  meta: { name: "show", description: "Show one environment: source, dates, size, shell, tools, sessions using it (--host H: its copy on that host and their last sync)" },
  args: {
    ...nameArg,
    ...jsonArg,
    ...commonArgs,
    host: { type: "string", valueHint: "name", description: "Show its copy on this remote host (agentenv host list) instead: when it was made there, its last sync with this machine's, sessions there" },
  },
  async run({ args }) {
    const name = checkName(args.name);
    if (args.host) {
      // this machine's engine too: whether its home was used since the last sync
      const here = await commandContext({ runtime: args.runtime, verbose: args.verbose, quiet: args.quiet });
      return (await import("./sync.ts")).showCopy(name, args.host, Boolean(args.json), here.runtime, here.log);
    }
    const ctx = await commandContext(args);
    const home = await requireHome(ctx, name);
    const record = await recordOf(ctx, home);
    const dir = home.readable ? home.dir : undefined;
    const info = {
      ...(await infoOf(name, dir, record)),
      mountpoint: home.dir,
      reset: record?.reset,
      tools: dir ? { flake: hasFlake(dir), installedHash: stateValue(dir, "tools.hash"), profile: toolsStorePath(dir) } : undefined,
      dotfiles: record?.dotfiles ? { ...record.dotfiles, commit: dir ? stateValue(dir, "dotfiles.commit") : undefined, lastSetup: dir ? readResult(dir) : undefined } : undefined,
      overlay: overlayCount(ctx, name),
      // the registry artifact it last pulled or pushed (env push / pull)
      synced: record?.synced ? { ref: record.synced.ref, digest: record.synced.digest, at: record.synced.at } : undefined,
      sessions: await runningUsers(ctx, home),
    };
    if (args.json) {
      console.log(JSON.stringify(info, null, 2));
      return 0;
    }
    const tools = info.tools
      ? info.tools.flake
        ? info.tools.profile
          ? `~/flake.nix installed (${info.tools.profile})`
          : "~/flake.nix not installed yet (the next session installs it)"
        : "no ~/flake.nix"
      : "?";
    const rows: Array<[string, string]> = [
      ["name", name],
      ["volume", `${home.volume}${home.dir ? ` (${home.dir})` : ""}`],
      ["source", describeRecord(info)],
      ...(info.dotfiles ? [["dotfiles", info.dotfiles.commit ? `~/.dotfiles at ${info.dotfiles.commit.slice(0, 12)}` : "not set up yet (the next session does)"] as [string, string]] : []),
      ...(info.dotfiles?.lastSetup ? [["setup", describeResult(info.dotfiles.lastSetup, age)] as [string, string]] : []),
      ...(info.overlay !== 0 ? [["overlay", info.overlay === undefined ? "?" : `${info.overlay} file(s)`] as [string, string]] : []),
      ...(info.synced ? [["synced", `${info.synced.ref}@${info.synced.digest.slice(0, 19)} (${age(info.synced.at)})`] as [string, string]] : []),
      ["created", info.created ?? "?"],
      ...(info.reset ? [["reset", info.reset] as [string, string]] : []),
      ["last used", info.lastUsed ?? "never"],
      ["size", info.size === undefined ? "?" : formatBytes(info.size)],
      ["shell", info.shell ?? "image default (zsh)"],
      ["tools", tools],
      ["sessions", info.sessions.length ? info.sessions.join(", ") : "none running"],
    ];
    for (const [key, value] of rows) console.log(`${key.padEnd(9)} ${value}`);
    return 0;
  },
});

const rm = defineCommand({
  meta: { name: "rm", description: "Remove an environment and everything in its home (export it first to keep a copy); --host H: only its copy on that host" },
  args: { ...nameArg, force: { type: "boolean", alias: "f", description: "Remove it even while sessions use it (they are stopped)" }, ...commonArgs, ...hostArgs },
  async run({ args }) {
    const name = checkName(args.name);
    if (args.host) return (await import("./sync.ts")).removeCopy(name, args.host, Boolean(args.force), logFor(args));
    const ctx = await commandContext(args);
    const also = await removeEnv(ctx, name, Boolean(args.force));
    ctx.log.success(`environment ${name} removed${also.length ? `, with ${also.join(" and ")}` : ""}`);
    return 0;
  },
});

const reset = defineCommand({
  meta: { name: "reset", description: "Recreate a home from the source it was made from; --keep PATH (repeatable) keeps chosen paths" },
  args: {
    ...nameArg,
    keep: { type: "string", valueHint: "path", description: "A path under HOME to keep, e.g. .zsh_history or .claude (repeat for more)" },
    force: { type: "boolean", alias: "f", description: "Reset even while sessions use it" },
    ...commonArgs,
  },
  async run({ args, rawArgs }) {
    const name = checkName(args.name);
    const keep = repeatedFlag(rawArgs, "--keep");
    const ctx = await commandContext(args);
    const record = await resetEnv(ctx, name, keep, Boolean(args.force));
    ctx.log.success(`environment ${name} reset from ${describeRecord(record)}`);
    return 0;
  },
});

const exportCommand = defineCommand({
  meta: { name: "export", description: "Write the whole home as one gzip-compressed tar archive (portable between machines and engines)" },
  args: {
    ...nameArg,
    output: { type: "string", alias: "o", valueHint: "file", description: "Archive to write (default: NAME.tar.gz here; a directory: NAME.tar.gz in it; - for stdout)" },
    ...commonArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    const ctx = await commandContext(args);
    const out = args.output ?? ".";
    const { file, bytes } = await exportEnv(ctx, name, out);
    if (file !== "-") ctx.log.success(`environment ${name} exported to ${file} (${formatBytes(bytes ?? 0)})`);
    return 0;
  },
});

const importCommand = defineCommand({
  meta: { name: "import", description: "Create an environment from an archive made by `env export` (- reads stdin)" },
  args: {
    ...nameArg,
    file: { type: "positional", required: true, valueHint: "file", description: "The archive (.tar.gz or .tar)" },
    ...commonArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    const ctx = await commandContext(args);
    await importEnv(ctx, name, args.file);
    ctx.log.success(`environment ${name} imported — use it: agentenv --env ${name} [DIR]`);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "env", description: "Environments: named, persistent homes (dotfiles, tools from ~/flake.nix, history, agent memory)" },
  subCommands: {
    create,
    list,
    show,
    set: () => import("./dotfiles/command.ts").then((m) => m.set),
    update: () => import("./dotfiles/command.ts").then((m) => m.update),
    overlay: () => import("./dotfiles/command.ts").then((m) => m.overlay),
    rm,
    reset,
    export: exportCommand,
    import: importCommand,
    push: () => import("./registry-command.ts").then((m) => m.push),
    pull: () => import("./registry-command.ts").then((m) => m.pull),
    sync: () => import("./sync.ts").then((m) => m.syncCommand),
  },
});
