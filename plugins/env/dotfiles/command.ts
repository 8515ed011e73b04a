import { defineCommand } from "citty";
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { globalArgs, logFor, runtimeArgs } from "../../../core/commands/_shared.ts";
import { UserError } from "../../../core/errors.ts";
import { withTempDir } from "../../../core/interrupt.ts";
import { formatBytes } from "../../../core/log.ts";
import { commandContext, prepareSession, runPrepared } from "../../../core/session.ts";
import { checkName, checkShell, describeRecord, type EnvRecord } from "../home.ts";
import { recordOf, requireHome, updateRecord } from "../lifecycle.ts";
import { hasOverlay } from "./index.ts";
import { checkOverlayPath, readOverlay, updateOverlay } from "./overlay.ts";
import { logPath } from "./result.ts";
import { checkManager, checkRef, checkSetup, checkTimeout, resolveDotfilesUrl } from "./repo.ts";

const commonArgs = { ...runtimeArgs, ...globalArgs } as const;
const nameArg = { name: { type: "positional", required: true, valueHint: "name", description: "Environment name" } } as const;

/** `env set` keys → how each changes the record ("" unsets). */
const settings: Record<string, (record: EnvRecord, value: string, name: string) => void> = {
  // a new repo starts from its defaults: its ref and setup are given after it (see run)
  "dotfiles.url"(record, value) {
    if (!value) delete record.dotfiles;
    else record.dotfiles = { url: resolveDotfilesUrl(value) };
  },
  "dotfiles.ref"(record, value, name) {
    if (!record.dotfiles) throw noDotfiles(name);
    record.dotfiles.ref = checkRef(value);
  },
  "dotfiles.setup"(record, value, name) {
    if (!record.dotfiles) throw noDotfiles(name);
    record.dotfiles.setup = checkSetup(value);
  },
  "dotfiles.manager"(record, value, name) {
    if (!record.dotfiles) throw noDotfiles(name);
    record.dotfiles.manager = checkManager(value);
  },
  "dotfiles.timeout"(record, value, name) {
    if (!record.dotfiles) throw noDotfiles(name);
    record.dotfiles.timeout = checkTimeout(value);
  },
  shell(record, value) {
    record.shell = checkShell(value);
  },
};

function noDotfiles(name: string): UserError {
  return new UserError(`environment ${name} has no dotfiles repo`, `set one first: agentenv env set ${name} dotfiles.url=URL`);
}

export const set = defineCommand({
  meta: { name: "set", description: `Change an environment's settings, applied by its next session: ${Object.keys(settings).join(", ")} (KEY= unsets)` },
  args: {
    ...nameArg,
    settings: { type: "positional", required: true, variadic: true, valueHint: "key=value…", description: "e.g. dotfiles.url=owner/repo dotfiles.ref=main" },
    ...commonArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    const words = (args as { _: string[] })._.slice(1);
    const changes = words.map((word) => {
      const eq = word.indexOf("=");
      const key = eq < 0 ? word : word.slice(0, eq);
      const apply = Object.hasOwn(settings, key) ? settings[key] : undefined;
      if (eq < 0 || !apply) throw new UserError(`${word}: give KEY=VALUE, KEY one of ${Object.keys(settings).join(", ")}`);
      return { key, value: word.slice(eq + 1), apply };
    });
    // the URL first: it resets ref and setup, which may come with it in any order
    changes.sort((a, b) => Number(b.key === "dotfiles.url") - Number(a.key === "dotfiles.url"));
    if (!changes.length) throw new UserError("nothing to set", `e.g. agentenv env set ${name} dotfiles.url=owner/repo`);
    const ctx = await commandContext(args);
    // applied in order, so `dotfiles.url=… dotfiles.ref=…` works on a home without a repo yet
    const record = await updateRecord(ctx, name, (record) => {
      for (const { apply, value } of changes) apply(record, value, name);
    });
    ctx.log.success(`environment ${name}: ${changes.map((c) => `${c.key}${c.value ? "" : " unset"}`).join(", ")} — now ${describeRecord(record)}; its next session applies it`);
    return 0;
  },
});

export const update = defineCommand({
  meta: {
    name: "update",
    description: "Pull the environment's dotfiles repo and run its setup again now (and write its overlay); from a terminal the setup runs on it, so its questions can be answered",
  },
  args: { ...nameArg, ...commonArgs },
  async run({ args }) {
    const name = checkName(args.name);
    const ctx = await commandContext(args);
    const record = await recordOf(ctx, await requireHome(ctx, name));
    if (!record?.dotfiles && !hasOverlay(name)) throw noDotfiles(name);
    // a session of its own: the setup runs with the home's tools and the golden store, as at a boot
    const code = await withTempDir("agentenv-update-", async (dir) => {
      const prepared = await prepareSession({ dir, mode: "run", command: ["true"], runtime: args.runtime, env: name, log: ctx.log, stdinIsTTY: true });
      prepared.ctx.plan.env.AGENTENV_DOTFILES = "update";
      // a person at a terminal answers the setup's questions there
      const terminal = Boolean(process.stdin.isTTY && process.stdout.isTTY);
      prepared.ctx.plan.interactive = terminal;
      prepared.ctx.plan.tty = terminal;
      return runPrepared(prepared);
    });
    if (code === 130 || code === 143) throw new UserError(`updating the dotfiles of environment ${name} was interrupted; nothing of it is recorded as applied`, undefined, code);
    if (code !== 0) throw new UserError(`updating the dotfiles of environment ${name} failed (exit ${code}); its output is above and in the home's ${logPath}`, undefined, code);
    ctx.log.success(`environment ${name}: dotfiles updated`);
    return 0;
  },
});

function parseMode(mode: string | undefined): number | undefined {
  if (mode === undefined) return undefined;
  if (!/^0?[0-7]{3}$/.test(mode)) throw new UserError(`--mode ${mode}: give an octal file mode, e.g. 600 or 0644`);
  return Number.parseInt(mode, 8);
}

/** What `overlay add` stores: --from FILE (with its mode), else stdin (0600: it may well be a key). */
async function overlayContent(from: string | undefined): Promise<{ data: Buffer; mode: number }> {
  if (from) {
    if (!existsSync(from)) throw new UserError(`--from ${from}: no such file`);
    const stat = statSync(from);
    if (!stat.isFile()) throw new UserError(`--from ${from}: not a file`);
    try {
      accessSync(from, constants.R_OK);
    } catch {
      throw new UserError(`--from ${from}: cannot read it (permission denied)`);
    }
    return { data: readFileSync(from), mode: stat.mode & 0o777 };
  }
  if (process.stdin.isTTY) throw new UserError("overlay add reads the file from stdin", "pipe it in, or pass --from FILE");
  return { data: Buffer.from(await Bun.stdin.arrayBuffer()), mode: 0o600 };
}

const overlayActions = ["add", "ls", "cat", "rm"] as const;

export const overlay = defineCommand({
  meta: {
    name: "overlay",
    description: "Files written into the home after the dotfiles setup (they win), stored encrypted on this host: overlay NAME add PATH [--from FILE] | ls | cat PATH | rm PATH",
  },
  args: {
    ...nameArg,
    action: { type: "positional", required: true, valueHint: overlayActions.join("|"), description: "What to do" },
    path: { type: "positional", required: false, valueHint: "path", description: "A file path relative to HOME, e.g. .gitconfig or .config/nvim/init.lua" },
    from: { type: "string", valueHint: "file", description: "add: the file to store (default: stdin)" },
    mode: { type: "string", valueHint: "octal", description: "add: the file's mode in the home (default: the --from file's, 0600 from stdin)" },
    json: { type: "boolean", description: "ls: print as JSON" },
    ...commonArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    const action = args.action as (typeof overlayActions)[number];
    if (!overlayActions.includes(action)) throw new UserError(`overlay ${args.action}: use one of ${overlayActions.join(", ")}`);
    if (action === "ls") {
      const files = Object.entries(readOverlay(name).files)
        .map(([path, file]) => ({ path, mode: `0${file.mode.toString(8)}`, size: Buffer.from(file.data, "base64").length }))
        .sort((a, b) => a.path.localeCompare(b.path));
      if (args.json) console.log(JSON.stringify(files, null, 2));
      else if (!files.length) console.log(`environment ${name} has no overlay — add a file: agentenv env overlay ${name} add PATH --from FILE`);
      else for (const file of files) console.log(`${file.mode}  ${formatBytes(file.size).padStart(9)}  ${file.path}`);
      return 0;
    }
    const path = checkOverlayPath(args.path);
    if (action === "cat") {
      const stored = readOverlay(name);
      const file = Object.hasOwn(stored.files, path) ? stored.files[path] : undefined;
      if (!file) throw new UserError(`the overlay of environment ${name} has no ${path}`);
      process.stdout.write(Buffer.from(file.data, "base64"));
      return 0;
    }
    const log = logFor(args);
    if (action === "rm") {
      updateOverlay(name, (stored) => {
        if (!Object.hasOwn(stored.files, path)) throw new UserError(`the overlay of environment ${name} has no ${path}`);
        delete stored.files[path];
      });
      log.success(`${path} removed from the overlay of environment ${name} (a copy already written to the home stays there)`);
      return 0;
    }
    const modeFlag = parseMode(args.mode);
    // add: the environment must exist, so a misspelt name is caught
    await requireHome(await commandContext(args), name);
    const { data, mode } = await overlayContent(args.from);
    updateOverlay(name, (stored) => {
      // a file where another is a directory (or the reverse) could never be written
      const clash = Object.keys(stored.files).find((other) => other !== path && (other.startsWith(`${path}/`) || path.startsWith(`${other}/`)));
      if (clash) throw new UserError(`${path} and ${clash} cannot both be in the overlay: one is a directory of the other`, `remove one first: agentenv env overlay ${name} rm ${clash}`);
      stored.files[path] = { mode: modeFlag ?? mode, data: data.toString("base64") };
    });
    log.success(`${path} (${formatBytes(data.length)}) added to the overlay of environment ${name}; its next session writes it to ~/${path}`);
    return 0;
  },
});
