import { existsSync, statSync } from "node:fs";
import { renderUsage, runCommand, type ArgsDef, type CommandDef } from "citty";
import pkg from "../package.json" with { type: "json" };
import { UserError, formatUserError } from "./errors.ts";
import { builtinPlugins, useBuiltinPlugins } from "./builtins.ts";
import { repeatedFlag, sessionArgs } from "./commands/_shared.ts";
import type { Plugin } from "./plugins.ts";

/** citty accepts `--dry-run` and `--dryRun` alike. */
const camelCase = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const kebabCase = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

type Lazy = () => Promise<CommandDef<any>>;

/** Core commands, loaded only when used so `agentenv --version` and sessions start fast. */
const coreCommands: Record<string, Lazy> = {
  run: () => import("./commands/session.ts").then((m) => m.run),
  image: () => import("./commands/image.ts").then((m) => m.default),
  doctor: () => import("./commands/doctor.ts").then((m) => m.default),
  plugins: () => import("./commands/plugins.ts").then((m) => m.default),
  trust: () => import("./commands/trust.ts").then((m) => m.trust),
  untrust: () => import("./commands/trust.ts").then((m) => m.untrust),
};

const loadShell: Lazy = () => import("./commands/session.ts").then((m) => m.shell);

/** The root command as help shows it: `agentenv [DIR]` plus the command list. */
async function rootCommand(): Promise<CommandDef<any>> {
  const shell = await loadShell();
  return {
    ...shell,
    meta: { name: "agentenv", version: pkg.version, description: "Portable dev environments for agents and humans" },
    subCommands: { ...coreCommands, ...(await builtinCommands()) },
  };
}

async function resolveArgs(cmd: CommandDef<any>): Promise<ArgsDef> {
  return (typeof cmd.args === "function" ? await cmd.args() : cmd.args) ?? {};
}

function aliasesOf(def: ArgsDef[string]): string[] {
  const alias = (def as { alias?: string | string[] }).alias;
  return Array.isArray(alias) ? alias : alias ? [alias] : [];
}

/** Every spelling of one flag on the command line: `--dry-run`, `--dryRun`, `-v`… */
function flagSpellings(name: string, def: ArgsDef[string]): string[] {
  const names = new Set([name, camelCase(name), kebabCase(name), ...aliasesOf(def)]);
  return [...names].map((n) => (n.length === 1 ? `-${n}` : `--${n}`));
}

function valueFlags(args: ArgsDef): Set<string> {
  const names = new Set<string>();
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "string" || def.type === "enum") for (const flag of flagSpellings(name, def)) names.add(flag);
  }
  return names;
}

/** A mistake in the words of the command line; shown with the command's help. */
export class ArgumentError extends Error {}

/** The value of the value flag at `i`; a flag or `--` there means it was left out. */
function flagValue(argv: readonly string[], i: number): string {
  const next = argv[i + 1];
  if (next === undefined || next === "--" || (next.startsWith("-") && next !== "-")) {
    throw new ArgumentError(`${argv[i]} needs a value`);
  }
  return next;
}

const isFlag = (word: string) => word.startsWith("-") && word !== "-";

/** Index of the first positional word, skipping flags and the values of value flags. */
function firstPositional(argv: readonly string[], values: Set<string>): number {
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return -1;
    if (isFlag(word)) {
      if (!word.includes("=") && values.has(word)) i++;
      continue;
    }
    return i;
  }
  return -1;
}

/**
 * A command whose words from the first non-flag on (or after `--`) are a command to run,
 * flags included, handed over as `data.command`: `run [DIR] CMD…` ("dir"), `exec CMD…` ("plain").
 */
export type TakesCommand = { takesCommand?: "dir" | "plain" };

/** A positional argument that takes the rest of the words: `{ type: "positional", variadic: true }`. */
export type Variadic = { variadic?: boolean };

/**
 * citty accepts any flag and any number of words; agentenv does not. Every flag
 * before `--` must be defined, value flags need their value, and there may be no
 * more positional words than the command takes.
 */
function checkArgs(argv: readonly string[], args: ArgsDef): void {
  const known = new Set<string>();
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    for (const flag of flagSpellings(name, def)) {
      known.add(flag);
      if (def.type === "boolean" && flag.startsWith("--")) known.add(`--no-${flag.slice(2)}`);
    }
  }
  const values = valueFlags(args);
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") break;
    if (!isFlag(word)) {
      positionals.push(word);
      continue;
    }
    const flag = word.split("=")[0]!;
    if (!known.has(flag)) throw new ArgumentError(`unknown option ${flag}`);
    if (!word.includes("=") && values.has(flag)) flagValue(argv, i++);
  }
  const defined = Object.values(args).filter((def) => def.type === "positional");
  // a positional marked `variadic` takes every word after it (citty leaves them in args._)
  if (defined.some((def) => (def as Variadic).variadic)) return;
  if (positionals.length > defined.length) throw new ArgumentError(`unexpected argument ${positionals[defined.length]}`);
}

/**
 * `run [DIR] [--] CMD…`. The first word is DIR when it is written as a path (`.`, `..`,
 * or with a `/`) and is not a file — `./build.sh` is a command — or when it is an
 * existing directory with `--` right after it. Any other word starts CMD, and from CMD
 * on every word is CMD's, `--` and flags included (`run make -- -j4` runs make).
 */
export function splitRunArgs(argv: readonly string[], values: Set<string>, allowDir = true): { flags: string[]; dir?: string; command: string[] } {
  const flags: string[] = [];
  let dir: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return { flags, dir, command: argv.slice(i + 1) };
    if (isFlag(word)) {
      flags.push(word);
      if (!word.includes("=") && values.has(word)) flags.push(flagValue(argv, i++));
      continue;
    }
    if (allowDir && dir === undefined && isDirWord(word, argv[i + 1])) {
      dir = word;
      continue;
    }
    return { flags, dir, command: argv.slice(i) };
  }
  return { flags, dir, command: [] };
}

function isDirWord(word: string, next: string | undefined): boolean {
  const isDirectory = existsSync(word) && statSync(word).isDirectory();
  if (word === "." || word === ".." || word.includes("/")) return isDirectory || !existsSync(word);
  return next === "--" && isDirectory;
}

interface Resolved {
  /** the command's first word: `run`, `store`… (undefined: the root command, a session) */
  word?: string;
  command: CommandDef<any>;
  parent?: CommandDef<any>;
  rawArgs: string[];
  data?: unknown;
}

/** Commands of built-in plugins (`store`…): as reserved as core ones, so a directory of that name does not shadow them. */
async function builtinCommands(): Promise<Record<string, Lazy>> {
  const commands: Record<string, Lazy> = {};
  for (const plugin of builtinPlugins()) {
    for (const [name, command] of Object.entries(plugin.commands ?? {})) {
      commands[name] = async () => (typeof command === "function" ? command() : command);
    }
  }
  return commands;
}

async function pluginCommand(name: string): Promise<Lazy | undefined> {
  const { loadConfig } = await import("./config.ts");
  const { loadPlugins } = await import("./plugins.ts");
  // a project's plugins may add commands, but only a trusted project's config is imported:
  // a typo in a cloned repo runs none of its code
  const config = await loadConfig({ project: process.cwd() });
  for (const plugin of await loadPlugins(config, builtinPlugins())) {
    const command = plugin.commands?.[name];
    if (command) return async () => (typeof command === "function" ? command() : command);
  }
  return undefined;
}

/** The command being resolved, so an argument error can show the right help. */
interface Where {
  command: CommandDef<any>;
  parent?: CommandDef<any>;
}

async function resolve(argv: string[], where: Where): Promise<Resolved> {
  const root = await rootCommand();
  where.command = root;
  const index = firstPositional(argv, valueFlags(sessionArgs));
  const word = index >= 0 ? argv[index]! : undefined;
  const rest = index >= 0 ? [...argv.slice(0, index), ...argv.slice(index + 1)] : argv;
  let lazy = word !== undefined ? coreCommands[word] ?? (await builtinCommands())[word] : undefined;
  if (word !== undefined && !lazy && !existsSync(word)) lazy = await pluginCommand(word);
  if (!lazy) {
    const looksLikePath = word === undefined || word === "." || word === ".." || word.includes("/");
    if (!looksLikePath && !existsSync(word!)) throw new ArgumentError(`unknown command or directory: ${word}`);
    return { command: root, rawArgs: argv };
  }
  const command = await lazy();
  Object.assign(where, { command, parent: root });
  const takes = word === "run" ? "dir" : (command as TakesCommand).takesCommand;
  if (takes) {
    const { flags, dir, command: cmd } = splitRunArgs(rest, valueFlags(await resolveArgs(command)), takes === "dir");
    return { word, command, parent: root, rawArgs: dir === undefined ? flags : [...flags, dir], data: { command: cmd, needsCommand: takes === "dir" } };
  }
  const subs = typeof command.subCommands === "function" ? await command.subCommands() : command.subCommands;
  if (subs && Object.keys(subs).length) {
    const subIndex = firstPositional(rest, valueFlags(await resolveArgs(command)));
    const subName = subIndex >= 0 ? rest[subIndex]! : undefined;
    const sub = subName !== undefined ? (subs as Record<string, CommandDef<any> | Lazy | undefined>)[subName] : undefined;
    if (!sub) {
      const wantsHelp = rest.includes("--help") || rest.includes("-h");
      if (subName === undefined && wantsHelp) return { word, command, parent: root, rawArgs: rest };
      throw new ArgumentError(subName ? `unknown command ${word} ${subName}` : `${word} needs a command`);
    }
    const subCommand = typeof sub === "function" ? await sub() : sub;
    // help says "agentenv image build", not "image build"
    const parent = { ...command, meta: { ...(command.meta as object), name: `agentenv ${word}` } };
    Object.assign(where, { command: subCommand, parent });
    return { word, command: subCommand, parent, rawArgs: [...rest.slice(0, subIndex), ...rest.slice(subIndex + 1)] };
  }
  return { word, command, parent: root, rawArgs: rest };
}

function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  const head = end < 0 ? argv : argv.slice(0, end);
  return head.includes("--help") || head.includes("-h");
}

/** Runs the CLI; resolves to the process exit code. */
/** File-system errors that are the machine's answer, not agentenv's bug: one line, no stack. */
const machineRefusals = new Set(["EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOTDIR"]);

export async function main(argv: string[], builtins: readonly Plugin[]): Promise<number> {
  useBuiltinPlugins(builtins);
  const verbose = argv.includes("-v") || argv.includes("--verbose");
  const where: Where = { command: {} };
  try {
    const resolved = await resolve(argv, where);
    if (resolved.command.run === undefined || wantsHelp(resolved.rawArgs)) {
      console.log((await renderUsage(resolved.command, resolved.parent)) + "\n");
      return 0;
    }
    checkArgs(resolved.rawArgs, await resolveArgs(resolved.command));
    const words = resolved.data as { command?: string[]; needsCommand?: boolean } | undefined;
    if (words?.needsCommand && words.command?.length === 0) throw new ArgumentError("run needs a command: agentenv run [DIR] [--] CMD…");
    // rootless Podman: commands work on volume contents inside its user namespace, so agentenv
    // re-executes itself there now, before the command does anything (core/runtime/userns.ts).
    // Not `image`: building runs as the user (a rootless base bootstrap makes its own namespace).
    // Root never loads the module: the uid test is enough to know there is nothing to join.
    if (resolved.word !== "image" && process.platform === "linux" && process.getuid?.() !== 0) {
      const { joinForCommand } = await import("./runtime/userns.ts");
      await joinForCommand(repeatedFlag(resolved.rawArgs, "--runtime").pop(), (await import("./log.ts")).createLog({ verbose }));
    }
    // sub-commands are resolved above; citty only parses the leaf's own args
    const leaf = { ...resolved.command, subCommands: undefined };
    const { result } = await runCommand(leaf, { rawArgs: resolved.rawArgs, data: resolved.data });
    return typeof result === "number" ? result : 0;
  } catch (error) {
    if (error instanceof ArgumentError) {
      const { command, parent } = where;
      console.error((await renderUsage(command, parent)) + "\n");
      console.error(`agentenv: ${error.message}`);
      return 2;
    }
    if (error instanceof UserError) {
      console.error(`agentenv: ${formatUserError(error)}`);
      if (verbose && error.cause) console.error(error.cause);
      return error.exitCode;
    }
    if ((error as { name?: string })?.name === "CLIError") {
      console.error(`agentenv: ${(error as Error).message}`);
      return 2;
    }
    const code = (error as NodeJS.ErrnoException)?.code;
    if (typeof code === "string" && machineRefusals.has(code)) {
      // not a bug: this machine's files said no (permissions, a full or read-only disk, a file where a directory goes)
      console.error(`agentenv: ${(error as Error).message} — check that path's permissions and free space${verbose ? "" : " (-v: where it happened)"}`);
      if (verbose) console.error((error as Error).stack);
      return 1;
    }
    console.error(`agentenv: internal error: ${(error as Error)?.stack ?? error}`);
    return 1;
  }
}
