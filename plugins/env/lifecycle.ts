import { existsSync, openSync, readSync, closeSync, renameSync, rmSync, statSync } from "node:fs";
import { resolve } from "pathe";
import { UserError } from "../../core/errors.ts";
import { undoOnInterrupt, withTempDir } from "../../core/interrupt.ts";
import { containerHome, helperPlan, shellQuote, type Mount } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { ensureVolume } from "../../core/volumes.ts";
import { formatBytes } from "../../core/log.ts";
import { describeSource, envLabel, findHome, readRecord, recordPath, stateDir, volumeName, type EnvRecord, type EnvSource, type Home } from "./home.ts";
import { profileTarget } from "../profile/index.ts";
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
  const lines = [`mkdir -p ${home}/${stateDir}`];
  if (record.shell) lines.push(`printf '%s\\n' ${shellQuote(record.shell)} > ${home}/${stateDir}/shell`);
  lines.push(`printf '%s\\n' ${shellQuote(JSON.stringify(record, null, 2))} > ${home}/${recordPath}.tmp`, `mv ${home}/${recordPath}.tmp ${home}/${recordPath}`);
  return lines;
}

async function runHelper(ctx: BaseContext, what: string, volume: string, script: string[], content?: Content, readonly = false) {
  const mounts: Mount[] = [{ type: "volume", source: volume, target: home, readonly }];
  if (content && "template" in content) mounts.push({ type: "bind", source: content.template.dir, target: "/template", readonly: true });
  const plan = helperPlan({ image: ctx.config.image, purpose: "env", mounts, script: ["set -e", ...script].join("\n") });
  plan.env.HOME = home;
  const io = content && "archive" in content ? { stdin: content.archive } : {};
  const result = await ctx.runtime.capture(plan, io);
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
  | { builtin: true };

/** Resolves where a home comes from, runs FN with its content and source (temp dirs cleaned up). */
async function withSource<T>(ctx: BaseContext, from: CreateFrom, fn: (content: Content, source: EnvSource, shell?: string) => Promise<T>): Promise<T> {
  if ("profile" in from) {
    const scan = scanTemplate(from.profile);
    const at = profileTarget(scan.dir);
    return fn({ template: scan, at, activate: true }, { kind: "profile", path: scan.dir, target: at, hash: scan.hash }, scan.shell);
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
  const what = describeSource(source);
  return "template" in content ? `${what} (${content.template.files} files, ${formatBytes(content.template.bytes)})` : what;
}

function alreadyExists(name: string): UserError {
  return new UserError(`environment ${name} already exists`, `use it (agentenv --env ${name}), or remove it first (agentenv env rm ${name})`);
}

/** Creates environment NAME, all or nothing: a failure or Ctrl-C leaves no volume. */
export async function createEnv(ctx: BaseContext, name: string, from: CreateFrom, options: { shell?: string } = {}): Promise<EnvRecord> {
  const volume = volumeName(name);
  // checked before the template is even read: the cheap, common mistake first
  if (await ctx.runtime.volumeExists(volume)) throw alreadyExists(name);
  return withSource(ctx, from, async (content, source, shell) => {
    ctx.log.start(`creating environment ${name} from ${describeContent(content, source)}…`);
    const record: EnvRecord = { version: 1, source, created: new Date().toISOString(), shell: options.shell ?? shell };
    const script = [...contentScript(content, home), ...activateScript(content), ...recordScript(record)];
    const created = await ensureVolume(ctx, { name: volume, labels: { [envLabel]: name } }, async () => {
      await runHelper(ctx, `creating environment ${name}`, volume, script, content);
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

/** env.json, read on the host when the volume is reachable, else through a helper container. */
export async function recordOf(ctx: BaseContext, found: Home): Promise<EnvRecord | undefined> {
  if (found.readable && found.dir) return readRecord(found.dir);
  const result = await runHelper(ctx, `reading environment ${found.name}`, found.volume, [`cat ${home}/${recordPath} 2>/dev/null || true`], undefined, true);
  try {
    return JSON.parse(result.stdout) as EnvRecord;
  } catch {
    return undefined;
  }
}

/** Sessions (containers) using the environment now; `env rm` and `env reset` refuse while there are any. */
export async function runningUsers(ctx: BaseContext, found: Home): Promise<string[]> {
  return (await ctx.runtime.volumeUsers(found.volume)).filter((u) => u.running).map((u) => u.name);
}

function refuseInUse(name: string, users: string[], action: string): void {
  if (users.length) throw new UserError(`environment ${name} is in use by ${users.join(", ")}`, `end ${users.length === 1 ? "that session" : "those sessions"} first, or ${action} --force`);
}

export async function removeEnv(ctx: BaseContext, name: string, force: boolean): Promise<void> {
  const found = await requireHome(ctx, name);
  if (!force) refuseInUse(name, await runningUsers(ctx, found), `agentenv env rm ${name}`);
  await ctx.runtime.volumeRemove(found.volume);
}

/** A path under HOME to keep across a reset: relative, inside HOME, not agentenv's own state. */
export function checkKeepPath(path: string): string {
  const rel = path.replace(/^~\//, "").replace(/\/+$/, "");
  if (!rel || rel === "~" || rel.startsWith("/") || rel.split("/").some((part) => part === ".." || part === "." || part === "")) {
    throw new UserError(`--keep ${path}: give a path inside HOME, e.g. --keep .zsh_history`);
  }
  if (rel === stateDir || rel.startsWith(`${stateDir}/`) || stateDir.startsWith(`${rel}/`)) {
    throw new UserError(`--keep ${path}: ${stateDir} is agentenv's own record of the environment and is rebuilt by a reset`);
  }
  return rel;
}

/**
 * Recreates NAME's home from the source it was made from, keeping KEEP paths. The new
 * home is staged inside the volume first (the slow, failure-prone copy), so a failure
 * there changes nothing; then the old top level is deleted and the staged one renamed in.
 */
export async function resetEnv(ctx: BaseContext, name: string, keep: string[], force: boolean): Promise<EnvRecord> {
  const keeps = keep.map(checkKeepPath);
  const found = await requireHome(ctx, name);
  if (!force) refuseInUse(name, await runningUsers(ctx, found), `agentenv env reset ${name}`);
  const old = await recordOf(ctx, found);
  if (!old) throw new UserError(`environment ${name} has no record of its source (${recordPath})`, "remove it and create it again");
  const stage = `${home}/.agentenv-reset`;
  const reset = async (content: Content, source: EnvSource, shell?: string) => {
    ctx.log.start(`resetting environment ${name} from ${describeContent(content, source)}${keeps.length ? `, keeping ${keeps.join(", ")}` : ""}…`);
    const record: EnvRecord = { ...old, source, reset: new Date().toISOString(), shell: old.shell ?? shell };
    const q = shellQuote;
    const script = [
      `rm -rf ${stage}`,
      ...contentScript(content, stage),
      ...keeps.flatMap((k) => [
        `if [ -e ${q(`${home}/${k}`)} ] || [ -L ${q(`${home}/${k}`)} ]; then mkdir -p "$(dirname ${q(`${stage}/${k}`)})" && rm -rf ${q(`${stage}/${k}`)} && mv ${q(`${home}/${k}`)} ${q(`${stage}/${k}`)}; fi`,
      ]),
      `find ${home} -mindepth 1 -maxdepth 1 ! -name .agentenv-reset -exec rm -rf {} +`,
      `find ${stage} -mindepth 1 -maxdepth 1 -exec mv -t ${home} {} +`,
      `rmdir ${stage}`,
      ...activateScript(content),
      ...recordScript(record),
    ];
    await runHelper(ctx, `resetting environment ${name}`, found.volume, script, content);
    return record;
  };
  const source = old.source;
  switch (source.kind) {
    case "builtin":
      return withSource(ctx, { builtin: true }, reset);
    case "template":
    case "profile": {
      if (!existsSync(source.path)) throw new UserError(`environment ${name} was made from ${source.path}, which no longer exists`);
      return withSource(ctx, source.kind === "template" ? { template: source.path } : { profile: source.path }, reset);
    }
    case "archive": {
      if (!existsSync(source.path)) throw new UserError(`environment ${name} was imported from ${source.path}, which no longer exists`);
      return reset({ archive: source.path, gzip: isGzip(source.path) }, source);
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
  const found = await requireHome(ctx, name);
  const script = [`tar -C ${home} --numeric-owner -czf - .`];
  if (out === "-") {
    if (process.stdout.isTTY) throw new UserError("refusing to write an archive to a terminal", "pass -o FILE, or pipe the output");
    await runExport(ctx, found, script, "-");
    return { file: "-" };
  }
  const file = resolve(out);
  ctx.log.start(`exporting environment ${name} to ${file}…`);
  const partial = `${file}.partial-${process.pid}`;
  const removePartial = () => rmSync(partial, { force: true });
  await undoOnInterrupt(removePartial, async () => {
    try {
      await runExport(ctx, found, script, partial);
      renameSync(partial, file);
    } finally {
      removePartial();
    }
  });
  return { file, bytes: statSync(file).size };
}

async function runExport(ctx: BaseContext, found: Home, script: string[], stdout: string): Promise<void> {
  const plan = helperPlan({ image: ctx.config.image, purpose: "env", mounts: [{ type: "volume", source: found.volume, target: home, readonly: true }], script: ["set -e", ...script].join("\n") });
  const result = await ctx.runtime.capture(plan, { stdout });
  if (result.code !== 0) throw new UserError(`exporting environment ${found.name} failed: ${result.stderr.trim() || `exit ${result.code}`}`);
}

/** Creates NAME from an archive made by `env export` (or any tar of a home), all or nothing. */
export async function importEnv(ctx: BaseContext, name: string, file: string): Promise<EnvRecord> {
  const fromStdin = file === "-";
  const path = fromStdin ? "-" : resolve(file);
  if (!fromStdin && !existsSync(path)) throw new UserError(`${file}: no such file`);
  if (!fromStdin && !statSync(path).isFile()) throw new UserError(`${file}: not a file`);
  const volume = volumeName(name);
  if (await ctx.runtime.volumeExists(volume)) throw alreadyExists(name);
  const source: EnvSource = fromStdin ? { kind: "archive", path: "(stdin)" } : { kind: "archive", path, hash: await fileHash(path) };
  const record: EnvRecord = { version: 1, source, created: new Date().toISOString() };
  const content: Content = { archive: path, gzip: fromStdin || isGzip(path) };
  ctx.log.start(`importing ${file} as environment ${name}…`);
  const created = await ensureVolume(ctx, { name: volume, labels: { [envLabel]: name } }, async () => {
    await runHelper(ctx, `importing ${file} into environment ${name}`, volume, [...contentScript(content, home), ...recordScript(record)], content);
  });
  if (!created) throw alreadyExists(name);
  return record;
}

async function fileHash(file: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(file).stream()) hasher.update(chunk);
  return hasher.digest("hex").slice(0, 16);
}
