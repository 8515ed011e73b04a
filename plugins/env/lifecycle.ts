import { accessSync, closeSync, constants, existsSync, openSync, readSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { undoOnInterrupt, withTempDir } from "../../core/interrupt.ts";
import { containerHome, helperPlan, shellQuote, type Mount } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { ensureVolume } from "../../core/volumes.ts";
import { formatBytes } from "../../core/log.ts";
import { describeSource, envLabel, findHome, isInsideHome, touchesState, recordPath, stateDir, volumeName, type EnvRecord, type EnvSource, type Home } from "./home.ts";
import { profileTarget } from "../profile/index.ts";
import { confScript, type DotfilesConfig } from "../dotfiles/repo.ts";
import { checkArchive } from "./archive.ts";
import { adoptRecord, checkRecord, hostRecord, parseRecord, removeHostRecord, writeHostRecord } from "./record.ts";
import { scanTemplate, writeBuiltinTemplate, type TemplateScan } from "./template.ts";

/**
 * Everything that writes a home (create, reset, import) or reads all of it (export)
 * runs in a helper container with the volume at /root: the same on every engine, with
 * the ownership the container sees (root), and nothing to clean up on the host.
 */

/** What a home is filled with: a template directory (at ~/AT), or a tar archive. */
type Content =
  | { template: TemplateScan; at?: string; activate?: boolean }
  | { archive: string; gzip: boolean };

const home = containerHome;

function contentScript(content: Content, dest: string): string[] {
  if ("archive" in content) return [`mkdir -p ${dest}`, `tar -C ${dest} -x${content.gzip ? "z" : ""}f -`];
  const at = content.at ? `${dest}/${content.at}` : dest;
  // the copier is root: files belong to root inside, whoever owns the template outside
  return [`mkdir -p ${shellQuote(at)}`, `cp -a --no-preserve=ownership /template/. ${shellQuote(at)}/`];
}

/** A legacy profile's activate.sh, run once with HOME=/root (its symlinks point at ~/AT/…). */
function activateScript(content: Content): string[] {
  if ("archive" in content || !content.activate || !content.at) return [];
  const script = shellQuote(`${home}/${content.at}/activate.sh`);
  return [`cd ${home}`, `if [ -x ${script} ]; then ${script}; elif [ -e ${script} ]; then sh ${script}; fi`];
}

/** env.json is written last, by rename: a home that has it is complete. */
function recordScript(record: EnvRecord): string[] {
  const lines = [`mkdir -p ${home}/${stateDir}`, ...confScript(home, record.dotfiles)];
  if (record.shell) lines.push(`printf '%s\\n' ${shellQuote(record.shell)} > ${home}/${stateDir}/shell`);
  lines.push(`printf '%s\\n' ${shellQuote(JSON.stringify(record, null, 2))} > ${home}/${recordPath}.tmp`, `mv ${home}/${recordPath}.tmp ${home}/${recordPath}`);
  return lines;
}

interface HelperOptions {
  /** what the helper fills the home from: a template bind-mounted at /template, or an archive on stdin */
  content?: Content;
  /** only reads the home */
  readonly?: boolean;
  /** the helper's stdout goes to this file ("-": agentenv's stdout) */
  stdout?: string;
}

async function runHelper(ctx: BaseContext, what: string, volume: string, script: string[], options: HelperOptions = {}) {
  const { content } = options;
  const mounts: Mount[] = [{ type: "volume", source: volume, target: home, readonly: options.readonly }];
  if (content && "template" in content) mounts.push({ type: "bind", source: content.template.dir, target: "/template", readonly: true });
  const plan = helperPlan({ image: ctx.config.image, purpose: "env", mounts, script: ["set -e", ...script].join("\n") });
  plan.env.HOME = home;
  const result = await ctx.runtime.capture(plan, { stdin: content && "archive" in content ? content.archive : undefined, stdout: options.stdout });
  if (result.code !== 0) {
    const why = (await ctx.runtime.diagnose(plan)) ?? (result.stderr.trim() || `exit ${result.code}`);
    throw new UserError(`${what} failed: ${why}`);
  }
  return result;
}

export type CreateFrom =
  /** a template directory; undefined: config's env.template, else the built-in one */
  | { template?: string }
  | { profile: string }
  | { builtin: true }
  /** nothing: a dotfiles repo fills the home */
  | { empty: true };

/** Resolves where a home comes from, runs FN with its content and source (temp dirs cleaned up). */
async function withSource<T>(ctx: BaseContext, from: CreateFrom, fn: (content: Content, source: EnvSource, shell?: string) => Promise<T>): Promise<T> {
  if ("profile" in from) {
    const scan = scanTemplate(from.profile);
    const at = profileTarget(scan.dir);
    return fn({ template: scan, at, activate: true }, { kind: "profile", path: scan.dir, target: at, hash: scan.hash }, scan.shell);
  }
  if ("empty" in from) {
    return withTempDir("agentenv-empty-", async (dir) => fn({ template: scanTemplate(dir) }, { kind: "empty" }));
  }
  const path = "builtin" in from ? undefined : from.template ?? ctx.config.env.template;
  if (path) {
    const scan = scanTemplate(path);
    return fn({ template: scan }, { kind: "template", path: scan.dir, hash: scan.hash }, scan.shell);
  }
  return withTempDir("agentenv-template-", async (dir) => {
    await writeBuiltinTemplate(dir);
    const scan = scanTemplate(dir);
    return fn({ template: scan }, { kind: "builtin", hash: scan.hash }, scan.shell);
  });
}

function describeContent(content: Content, source: EnvSource): string {
  if (source.kind === "empty") return "an empty home";
  const what = describeSource(source);
  return "template" in content ? `${what} (${content.template.files} files, ${formatBytes(content.template.bytes)})` : what;
}

function alreadyExists(name: string): UserError {
  return new UserError(`environment ${name} already exists`, `use it (agentenv --env ${name}), or remove it first (agentenv env rm ${name})`);
}

/** Creates environment NAME, all or nothing: a failure or Ctrl-C leaves no volume. */
export async function createEnv(ctx: BaseContext, name: string, from: CreateFrom, options: { shell?: string; dotfiles?: DotfilesConfig } = {}): Promise<EnvRecord> {
  const volume = volumeName(name);
  // checked before the template is even read: the cheap, common mistake first
  if (await ctx.runtime.volumeExists(volume)) throw alreadyExists(name);
  return withSource(ctx, from, async (content, source, shell) => {
    ctx.log.start(`creating environment ${name} from ${describeContent(content, source)}…`);
    const record: EnvRecord = { version: 1, source, created: new Date().toISOString(), shell: options.shell ?? shell, dotfiles: options.dotfiles };
    const script = [...contentScript(content, home), ...activateScript(content), ...recordScript(record)];
    const created = await ensureVolume(ctx, { name: volume, labels: { [envLabel]: name } }, async () => {
      await runHelper(ctx, `creating environment ${name}`, volume, script, { content });
      writeHostRecord(ctx, name, record);
    });
    if (!created) throw alreadyExists(name);
    return record;
  });
}

/** The environment, which must exist. */
export async function requireHome(ctx: BaseContext, name: string): Promise<Home> {
  const found = await findHome(ctx, name);
  if (!found.dir) throw new UserError(`no environment named ${name}`, `create it: agentenv env create ${name}`);
  return found;
}

/**
 * This host's record of the environment. One older than host records adopts the env.json
 * its home holds (see adoptRecord): read on the host when the volume is reachable, else
 * through a helper container.
 */
export async function recordOf(ctx: BaseContext, found: Home): Promise<EnvRecord | undefined> {
  const kept = hostRecord(ctx, found);
  if (kept || found.readable) return kept;
  const file = `${home}/${recordPath}`;
  // a plain file only: a FIFO or a link put in its place is no record
  const script = [`if [ -f ${file} ] && [ ! -L ${file} ]; then head -c 1048576 ${file}; fi`];
  const result = await runHelper(ctx, `reading environment ${found.name}`, found.volume, script, { readonly: true });
  return adoptRecord(ctx, found.name, result.stdout || undefined);
}

/** Sessions (containers) using the environment now; `env rm` and `env reset` refuse while there are any. */
export async function runningUsers(ctx: BaseContext, found: Home): Promise<string[]> {
  return (await ctx.runtime.volumeUsers(found.volume)).filter((u) => u.running).map((u) => u.name);
}

function refuseInUse(name: string, users: string[], action: string): void {
  if (users.length) throw new UserError(`environment ${name} is in use by ${users.join(", ")}`, `end ${users.length === 1 ? "that session" : "those sessions"} first, or ${action} --force`);
}

/** Removes the home, and what this host keeps for it alone: its overlay and its own secrets. */
export async function removeEnv(ctx: BaseContext, name: string, force: boolean): Promise<{ overlay: boolean; secrets: string[] }> {
  const found = await requireHome(ctx, name);
  if (!force) refuseInUse(name, await runningUsers(ctx, found), `agentenv env rm ${name}`);
  await ctx.runtime.volumeRemove(found.volume);
  removeHostRecord(ctx, name);
  const { hasOverlay, overlayFile } = await import("../dotfiles/index.ts");
  const overlay = hasOverlay(name);
  rmSync(overlayFile(name), { force: true });
  const { secretsFile } = await import("../secrets/index.ts");
  let secrets: string[] = [];
  if (existsSync(secretsFile())) {
    try {
      const { updateSecrets } = await import("../secrets/store.ts");
      secrets = updateSecrets((store) => {
        const names = Object.keys(store.scopes[name] ?? {});
        delete store.scopes[name];
        return names;
      });
    } catch (error) {
      // the home is gone either way; say what could not be tidied
      ctx.log.warn(`the secrets of environment ${name} were left in place: ${messageOf(error)}`);
    }
  }
  return { overlay, secrets };
}

function noRecord(name: string): UserError {
  return new UserError(`environment ${name} has no record of its source (${recordPath})`, "remove it and create it again");
}

/** Rewrites NAME's record with CHANGE applied, here and in the home (env.json, dotfiles.conf, shell); the next session acts on it. */
export async function updateRecord(ctx: BaseContext, name: string, change: (record: EnvRecord) => void): Promise<EnvRecord> {
  const found = await requireHome(ctx, name);
  const record = await recordOf(ctx, found);
  if (!record) throw noRecord(name);
  change(record);
  await runHelper(ctx, `changing environment ${name}`, found.volume, recordScript(record));
  writeHostRecord(ctx, name, record);
  return record;
}

/** A path under HOME to keep across a reset: relative, inside HOME, not agentenv's own state. */
export function checkKeepPath(path: string): string {
  const rel = path.replace(/^~\//, "").replace(/\/+$/, "");
  if (!isInsideHome(rel)) throw new UserError(`--keep ${path}: give a path inside HOME, e.g. --keep .zsh_history`);
  if (touchesState(rel)) {
    throw new UserError(`--keep ${path}: ${stateDir} is agentenv's own record of the environment and is rebuilt by a reset`);
  }
  return rel;
}

/** Keeps, each once: a path inside another kept path goes with it. */
export function keepPaths(paths: string[]): string[] {
  const keeps = [...new Set(paths.map(checkKeepPath))].sort();
  return keeps.filter((k) => !keeps.some((other) => k.startsWith(`${other}/`)));
}

/**
 * The reset's swap, resumable: a reset interrupted during it (Ctrl-C, a crash) is
 * finished by the next one, so a kept path is never lost. `.keep` exists once the new home
 * is fully staged and lists the paths to keep; `.moving` once the old home is gone.
 */
const swapScript = (stage: string) => `
ready=${stage}.keep
moving=${stage}.moving
swap() {
	if [ -e "$ready" ]; then
		if [ ! -d "${stage}" ]; then rm -f "$ready"; return; fi
		while IFS= read -r k; do
			[ -n "$k" ] || continue
			if [ -e "${home}/$k" ] || [ -L "${home}/$k" ]; then
				rm -rf "${stage}/$k" && mv "${home}/$k" "${stage}/$k" || exit 1
			fi
		done <"$ready"
		find ${home} -mindepth 1 -maxdepth 1 ! -name .agentenv-reset ! -name .agentenv-reset.keep ! -name .agentenv-reset.moving -exec rm -rf {} +
		mv "$ready" "$moving"
	fi
	if [ -e "$moving" ]; then
		if [ -d "${stage}" ]; then
			find "${stage}" -mindepth 1 -maxdepth 1 -exec mv -t ${home} {} +
			rmdir "${stage}"
		fi
		rm -f "$moving"
	fi
}
swap`;

/**
 * A record adopted from a home names a source a session could have chosen: it is used
 * only while its content has the hash recorded with it, which a session cannot forge for
 * content it has never seen.
 */
function checkAdopted(name: string, old: EnvRecord, source: EnvSource): void {
  if (!old.adopted || !("path" in old.source)) return;
  if ("hash" in source && source.hash && "hash" in old.source && source.hash === old.source.hash) return;
  throw new UserError(
    `environment ${name}: ${old.source.path}, the source its home names, is not what it was made from (it changed since, or the home's record was rewritten)`,
    `agentenv resets only from a source this host recorded: make a new environment from it (agentenv env create NEW ${old.source.path})`,
  );
}

/**
 * Recreates NAME's home from the source this host recorded, checked again, keeping KEEP
 * paths. The new home is staged inside the volume first (the slow, failure-prone copy; a
 * failure there changes nothing), then the kept paths are moved into it, the old top level
 * deleted and the staged one moved in — resumably (see swapScript).
 */
export async function resetEnv(ctx: BaseContext, name: string, keep: string[], force: boolean): Promise<EnvRecord> {
  const keeps = keepPaths(keep);
  const found = await requireHome(ctx, name);
  if (!force) refuseInUse(name, await runningUsers(ctx, found), `agentenv env reset ${name}`);
  const old = await recordOf(ctx, found);
  if (!old) throw noRecord(name);
  const stage = `${home}/.agentenv-reset`;
  const reset = async (content: Content, source: EnvSource, shell?: string) => {
    checkAdopted(name, old, source);
    ctx.log.start(`resetting environment ${name} from ${describeContent(content, source)}${keeps.length ? `, keeping ${keeps.join(", ")}` : ""}…`);
    const { adopted: _verified, ...kept } = old;
    const record: EnvRecord = { ...kept, source, reset: new Date().toISOString(), shell: old.shell ?? shell };
    const script = [
      // an earlier reset interrupted mid-swap is finished first
      swapScript(stage),
      `rm -rf ${stage}`,
      ...contentScript(content, stage),
      // a kept path's parent must be a directory in the new home: checked while nothing has changed
      ...keeps.map((k) => `mkdir -p "$(dirname ${shellQuote(`${stage}/${k}`)})" || { echo ${shellQuote(`cannot keep ${k}: the new home has a file where its parent directory would be`)} >&2; exit 1; }`),
      keeps.length ? `printf '%s\\n' ${keeps.map(shellQuote).join(" ")} >${stage}.keep.tmp` : `: >${stage}.keep.tmp`,
      `mv ${stage}.keep.tmp ${stage}.keep`,
      "swap",
      ...activateScript(content),
      ...recordScript(record),
    ];
    await runHelper(ctx, `resetting environment ${name}`, found.volume, script, { content });
    writeHostRecord(ctx, name, record);
    return record;
  };
  const source = old.source;
  switch (source.kind) {
    case "builtin":
      return withSource(ctx, { builtin: true }, reset);
    case "empty":
      return withSource(ctx, { empty: true }, reset);
    case "template":
    case "profile": {
      if (!existsSync(source.path)) throw new UserError(`environment ${name} was made from ${source.path}, which no longer exists`);
      return withSource(ctx, source.kind === "template" ? { template: source.path } : { profile: source.path }, reset);
    }
    case "archive": {
      if (source.path === "(stdin)") throw new UserError(`environment ${name} was imported from stdin: there is nothing to reset it from`, "import the archive again under a new name");
      if (!existsSync(source.path)) throw new UserError(`environment ${name} was imported from ${source.path}, which no longer exists`);
      if (!statSync(source.path).isFile()) throw new UserError(`environment ${name} was imported from ${source.path}, which is no longer a file`);
      const gzip = isGzip(source.path);
      await checkArchive(source.path, gzip, source.path);
      return reset({ archive: source.path, gzip }, { ...source, hash: await fileHash(source.path) });
    }
  }
}

function isGzip(file: string): boolean {
  const fd = openSync(file, "r");
  try {
    const magic = Buffer.alloc(2);
    return readSync(fd, magic, 0, 2, 0) === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
  } finally {
    closeSync(fd);
  }
}

/** The whole home as one gzip-compressed tar: to FILE (written whole, or not at all) or "-" for stdout. */
export async function exportEnv(ctx: BaseContext, name: string, out: string): Promise<{ file: string; bytes?: number }> {
  if (out === "-" && process.stdout.isTTY) throw new UserError("refusing to write an archive to a terminal", "pass -o FILE, or pipe the output");
  const file = out === "-" ? "-" : outputFile(out, `${name}.tar.gz`);
  const found = await requireHome(ctx, name);
  const users = await runningUsers(ctx, found);
  if (users.length) ctx.log.warn(`environment ${name} is in use by ${users.join(", ")}: files written during the export may be caught mid-change`);
  // a file that changes while tar reads it (shell history, an agent's memory) is tar's exit 1: not a failure
  const script = [`tar -C ${home} --numeric-owner --warning=no-file-changed -czf - . || [ $? -eq 1 ]`];
  if (file === "-") {
    await runHelper(ctx, `exporting environment ${name}`, found.volume, script, { readonly: true, stdout: "-" });
    return { file };
  }
  ctx.log.start(`exporting environment ${name} to ${file}…`);
  const partial = `${file}.partial-${process.pid}`;
  const removePartial = () => rmSync(partial, { force: true });
  await undoOnInterrupt(removePartial, async () => {
    try {
      await runHelper(ctx, `exporting environment ${name}`, found.volume, script, { readonly: true, stdout: partial });
      renameSync(partial, file);
    } finally {
      removePartial();
    }
  });
  return { file, bytes: statSync(file).size };
}

/** Where an export goes: FILE, or DIR/DEFAULT_NAME for a directory; its directory must exist. */
function outputFile(out: string, defaultName: string): string {
  let file = resolve(out);
  if (existsSync(file) && statSync(file).isDirectory()) file = join(file, defaultName);
  const dir = dirname(file);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`-o ${out}: the directory ${dir} does not exist`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new UserError(`-o ${out}: cannot write in ${dir}`);
  }
  return file;
}

/**
 * Creates NAME from an archive made by `env export` (or any tar of a home), all or
 * nothing. The archive is hostile input: its entries are checked (see checkArchive) and
 * the settings its env.json carries (shell, dotfiles repo, source) are checked as at
 * `env create` before anything is made. An archive on stdin is kept in a private
 * temporary file for that.
 */
export async function importEnv(ctx: BaseContext, name: string, file: string): Promise<EnvRecord> {
  const fromStdin = file === "-";
  const path = fromStdin ? "-" : resolve(file);
  if (!fromStdin && !existsSync(path)) throw new UserError(`${file}: no such file`);
  if (!fromStdin && !statSync(path).isFile()) throw new UserError(`${file}: not a file`);
  if (!fromStdin) {
    try {
      accessSync(path, constants.R_OK);
    } catch {
      throw new UserError(`${file}: cannot read it (permission denied)`);
    }
  }
  const volume = volumeName(name);
  if (await ctx.runtime.volumeExists(volume)) throw alreadyExists(name);
  const shown = fromStdin ? "the archive on stdin" : file;
  const importFrom = async (archive: string, source: EnvSource): Promise<EnvRecord> => {
    const gzip = isGzip(archive);
    const text = await checkArchive(archive, gzip, shown);
    let settings: EnvRecord | undefined;
    try {
      settings = text === undefined ? undefined : checkRecord(parseRecord(text));
    } catch (error) {
      if (error instanceof UserError) throw new UserError(`${shown}: its ${recordPath}: ${error.message}`, error.hint);
      throw error;
    }
    const record: EnvRecord = { version: 1, source, created: new Date().toISOString(), shell: settings?.shell, dotfiles: settings?.dotfiles };
    const content: Content = { archive, gzip };
    ctx.log.start(`importing ${file} as environment ${name}…`);
    const created = await ensureVolume(ctx, { name: volume, labels: { [envLabel]: name } }, async () => {
      await runHelper(ctx, `importing ${file} into environment ${name}`, volume, [...contentScript(content, home), ...recordScript(record)], { content });
      writeHostRecord(ctx, name, record);
    });
    if (!created) throw alreadyExists(name);
    return record;
  };
  if (!fromStdin) return importFrom(path, { kind: "archive", path, hash: await fileHash(path) });
  return withTempDir("agentenv-import-", async (dir) => {
    const spooled = join(dir, "archive");
    await Bun.write(spooled, Bun.stdin);
    return importFrom(spooled, { kind: "archive", path: "(stdin)" });
  });
}

async function fileHash(file: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(file).stream()) hasher.update(chunk);
  return hasher.digest("hex").slice(0, 16);
}
