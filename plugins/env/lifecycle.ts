import { accessSync, closeSync, constants, createReadStream, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readSync, readdirSync, readFileSync, renameSync, rmSync, statSync, statfsSync, writeFileSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { basename, dirname, join, resolve } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { undoOnInterrupt } from "../../core/interrupt.ts";
import { containerHome, helperPlan, shellQuote, type Mount } from "../../core/plan.ts";
import { callHookEach, type BaseContext } from "../../core/plugins.ts";
import { crashPoint, ensureVolume, newNonce, nonceLabel, ownsVolume, removeOwnVolume, volumeLabels } from "../../core/volumes.ts";
import { formatBytes } from "../../core/log.ts";
import { describeSource, envLabel, findHome, isInsideHome, touchesState, recordPath, stateDir, volumeName, type EnvRecord, type EnvSource, type Home } from "./home.ts";
import { profileTarget } from "../profile/index.ts";
import { confScript, type DotfilesConfig } from "./dotfiles/repo.ts";
import { checkArchive, checkArchives } from "./archive.ts";
import { adoptRecord, beginPending, checkRecord, endPending, hostRecord, parseRecord, pendingOps, readHostRecord, removeHostRecord, removeStrayWork, withEnvLock, workDir, writeHostRecord, type PendingOp } from "./record.ts";
import { hostUsers, registerUser } from "./session.ts";
import { scanTemplate, writeBuiltinTemplate, type TemplateScan } from "./template.ts";
import { keepToolsFlake } from "./tools.ts";
import { hasOverlay, overlayFile } from "./dotfiles/index.ts";

/**
 * Everything that writes a home (create, reset, import) or reads all of it (export)
 * runs in a helper container with the volume at /root: the same on every engine, with
 * the ownership the container sees (root), and nothing to clean up on the host.
 *
 * Nothing is lost when agentenv dies at any step (kill -9, a crash, a full disk): each
 * command that changes an environment holds its host lock (record.ts `withEnvLock`) and
 * first writes a journal of what it is about to do (`beginPending`); the next command on
 * that environment finds the journal of one that never finished and completes it or
 * rolls it back (`recoverEnv`): a create or import is undone unless its host record was
 * written, a reset's swap is finished or abandoned, an rm is finished. Everything such a
 * command starts carries its nonce (the volume's label, its helper containers' label, and
 * so their engine command lines), which is how what it left running is found.
 */

/** What a home is filled with: a template directory (at ~/AT), a tar archive, or gzip-compressed tar layers in DIR extracted in turn (`env pull`). */
type Content =
  | { template: TemplateScan; at?: string; activate?: boolean }
  | { archive: string; gzip: boolean }
  | { layers: string[]; dir: string };

const home = containerHome;
/** Helper containers of one command carry its nonce in this label. */
const opLabel = "agentenv.op";

function contentScript(content: Content, dest: string): string[] {
  if ("archive" in content) return [`mkdir -p ${dest}`, `tar -C ${dest} -x${content.gzip ? "z" : ""}f -`];
  if ("layers" in content) return [`mkdir -p ${dest}`, ...content.layers.map((layer) => `tar -C ${dest} --numeric-owner -xzf ${shellQuote(`/layers/${layer}`)}`)];
  const at = content.at ? `${dest}/${content.at}` : dest;
  // the copier is root: files belong to root inside, whoever owns the template outside
  return [`mkdir -p ${shellQuote(at)}`, `cp -a --no-preserve=ownership /template/. ${shellQuote(at)}/`];
}

/** A legacy profile's activate.sh, run once with HOME=/root (its symlinks point at ~/AT/…). */
function activateScript(content: Content): string[] {
  if (!("template" in content) || !content.activate || !content.at) return [];
  const script = shellQuote(`${home}/${content.at}/activate.sh`);
  return [`cd ${home}`, `if [ -x ${script} ]; then ${script}; elif [ -e ${script} ]; then sh ${script}; fi`];
}

/** The home's copy of RECORD, into the home at DEST; env.json is written last, by rename: a home that has it is complete. */
function recordScript(record: EnvRecord, dest = home): string[] {
  const lines = [`mkdir -p ${dest}/${stateDir}`, ...confScript(dest, record.dotfiles)];
  if (record.shell) lines.push(`printf '%s\\n' ${shellQuote(record.shell)} > ${dest}/${stateDir}/shell`);
  lines.push(`printf '%s\\n' ${shellQuote(JSON.stringify(record, null, 2))} > ${dest}/${recordPath}.tmp`, `mv ${dest}/${recordPath}.tmp ${dest}/${recordPath}`);
  return lines;
}

interface HelperOptions {
  /** what the helper fills the home from: a template bind-mounted at /template, or an archive on stdin */
  content?: Content;
  /** only reads the home */
  readonly?: boolean;
  /** the helper's stdout goes to this file ("-": agentenv's stdout) */
  stdout?: string;
  /** the nonce of the command it works for: its label, so that one left running by a crash is found */
  nonce?: string;
  /** the test hook's name for "while this helper runs" (see crashPoint) */
  step?: string;
  /** a host directory the helper writes into, at /out */
  out?: string;
}

async function runHelper(ctx: BaseContext, what: string, volume: string, script: string[], options: HelperOptions = {}) {
  const { content } = options;
  const mounts: Mount[] = [{ type: "volume", source: volume, target: home, readonly: options.readonly }];
  if (content && "template" in content) mounts.push({ type: "bind", source: content.template.dir, target: "/template", readonly: true });
  if (content && "layers" in content) mounts.push({ type: "bind", source: content.dir, target: "/layers", readonly: true });
  if (options.out) mounts.push({ type: "bind", source: options.out, target: "/out" });
  const plan = helperPlan({ image: ctx.config.image, purpose: "env", mounts, script: ["set -e", ...script].join("\n") });
  plan.env.HOME = home;
  if (options.nonce) plan.labels[opLabel] = options.nonce;
  if (options.step) crashPoint(options.step);
  const io = { stdin: content && "archive" in content ? content.archive : undefined, stdout: options.stdout };
  // Ctrl-C: the helper is stopped first, so that it cannot recreate a volume the undo removes
  const { nonce } = options;
  const result = nonce ? await undoOnInterrupt(() => stopLeftovers(ctx, nonce, 0), () => ctx.runtime.capture(plan, io)) : await ctx.runtime.capture(plan, io);
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

/**
 * Resolves where a home comes from, runs FN with its content and source. The built-in
 * template is written into WORK (the command's work directory, removed with its journal).
 */
async function withSource<T>(ctx: BaseContext, from: CreateFrom, work: () => string, fn: (content: Content, source: EnvSource, shell?: string) => Promise<T>): Promise<T> {
  if ("profile" in from) {
    const scan = scanTemplate(from.profile);
    const at = profileTarget(scan.dir);
    return fn({ template: scan, at, activate: true }, { kind: "profile", path: scan.dir, target: at, hash: scan.hash }, scan.shell);
  }
  if ("empty" in from) {
    const dir = join(work(), "empty");
    mkdirSync(dir, { recursive: true });
    return fn({ template: scanTemplate(dir) }, { kind: "empty" });
  }
  const path = "builtin" in from ? undefined : from.template ?? ctx.config.env.template;
  if (path) {
    const scan = scanTemplate(path);
    return fn({ template: scan }, { kind: "template", path: scan.dir, hash: scan.hash }, scan.shell);
  }
  const dir = join(work(), "template");
  mkdirSync(dir, { recursive: true });
  await writeBuiltinTemplate(dir);
  const scan = scanTemplate(dir);
  return fn({ template: scan }, { kind: "builtin", hash: scan.hash }, scan.shell);
}

function describeContent(content: Content, source: EnvSource): string {
  if (source.kind === "empty") return "an empty home";
  const what = describeSource(source);
  return "template" in content ? `${what} (${content.template.files} files, ${formatBytes(content.template.bytes)})` : what;
}

function alreadyExists(name: string): UserError {
  return new UserError(`environment ${name} already exists`, `use it (agentenv --env ${name}), or remove it first (agentenv env rm ${name})`);
}

/**
 * Makes the volume of NAME, fills it with CONTENT and keeps RECORD as this host's record,
 * all or nothing, under NAME's lock with its journal: a failure, Ctrl-C or a crash at any
 * step leaves no volume and no record (the next command removes what a crash left). The
 * host record is the commit point. STEP names the crash points ("create", "import").
 */
async function makeHome(ctx: BaseContext, name: string, nonce: string, record: EnvRecord, content: Content, what: string, step: string): Promise<void> {
  const volume = volumeName(name);
  beginPending(ctx, name, { op: "create", nonce, record });
  crashPoint(`${step}:journal`);
  try {
    const created = await undoOnInterrupt(
      () => undoCreate(ctx, name, { op: "create", nonce, record }),
      () =>
        ensureVolume(
          ctx,
          { name: volume, labels: { [envLabel]: name } },
          async () => {
            crashPoint(`${step}:volume`);
            await runHelper(ctx, what, volume, [...contentScript(content, home), ...activateScript(content), ...recordScript(record)], { content, nonce, step: `${step}:fill` });
            crashPoint(`${step}:filled`);
            writeHostRecord(ctx, name, record);
            crashPoint(`${step}:record`);
          },
          nonce,
        ),
    );
    if (!created) throw alreadyExists(name);
  } catch (error) {
    // undone now as the next command would undo it after a crash; the journal stays if that fails
    await undoCreate(ctx, name, { op: "create", nonce, record }).catch(() => {});
    throw error;
  }
  endPending(ctx, name, nonce);
  await keepToolsFlake(ctx, await findHome(ctx, name));
}

/** Undoes the create OP: its volume (only one carrying its nonce) and its host record go, unless both are there (it finished). */
async function undoCreate(ctx: BaseContext, name: string, op: PendingOp & { op: "create" }, keepComplete = false): Promise<void> {
  const volume = volumeName(name);
  const ours = await ownsVolume(ctx, volume, op.nonce);
  const recorded = readHostRecord(ctx, name)?.created === op.record.created;
  if (!(keepComplete && ours && recorded)) {
    if (ours) await removeOwnVolume(ctx, volume, op.nonce);
    if (recorded) removeHostRecord(ctx, name);
  }
  endPending(ctx, name, op.nonce);
}

/**
 * Makes environment NAME with MAKE (given the command's nonce), under NAME's lock, once
 * what a crashed command left is cleaned and NAME is known to be free — checked before
 * any source is read: the cheap, common mistake first. The command's work files go
 * whatever MAKE does.
 */
async function newEnv(ctx: BaseContext, name: string, make: (nonce: string) => Promise<EnvRecord>): Promise<EnvRecord> {
  return withEnvLock(ctx, name, async () => {
    await recoverEnv(ctx, name);
    if (await ctx.runtime.volumeExists(volumeName(name))) throw alreadyExists(name);
    try {
      return await make(newNonce());
    } finally {
      removeStrayWork(ctx, name);
    }
  });
}

/** Creates environment NAME, all or nothing: a failure, Ctrl-C or a crash leaves no volume (see makeHome). */
export async function createEnv(ctx: BaseContext, name: string, from: CreateFrom, options: { shell?: string; dotfiles?: DotfilesConfig } = {}): Promise<EnvRecord> {
  return newEnv(ctx, name, (nonce) =>
    withSource(ctx, from, () => workDir(ctx, name, nonce), async (content, source, shell) => {
      ctx.log.start(`creating environment ${name} from ${describeContent(content, source)}…`);
      const record: EnvRecord = { version: 1, source, created: new Date().toISOString(), shell: options.shell ?? shell, dotfiles: options.dotfiles };
      await makeHome(ctx, name, nonce, record, content, `creating environment ${name}`, "create");
      return record;
    }),
  );
}

/**
 * The environment, which must exist. What a crashed command left of it is cleaned first
 * (waiting for a command that is changing it now).
 */
export async function requireHome(ctx: BaseContext, name: string): Promise<Home> {
  if (pendingOps(ctx, name).length) await withEnvLock(ctx, name, () => recoverEnv(ctx, name));
  const found = await findHome(ctx, name);
  if (!found.dir) throw new UserError(`no environment named ${name}`, `create it: agentenv env create ${name}`);
  return found;
}

/** NAME's home when it exists (what a crashed command left of it finished or undone first), else undefined. */
export async function existingHome(ctx: BaseContext, name: string): Promise<Home | undefined> {
  if (pendingOps(ctx, name).length) await withEnvLock(ctx, name, () => recoverEnv(ctx, name));
  const found = await findHome(ctx, name);
  return found.dir ? found : undefined;
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

/**
 * Who uses the environment now: sessions and exports of this host that registered
 * (a session between its start and its container's, included), and running containers.
 */
async function allUsers(ctx: BaseContext, found: Home): Promise<string[]> {
  const users = await liveHostUsers(ctx, found);
  return [...new Set([...users, ...(await runningUsers(ctx, found))])];
}

/** The users registered on this host; what a dead export left running (its helper container) is stopped. */
async function liveHostUsers(ctx: BaseContext, found: Home): Promise<string[]> {
  const dead: string[] = [];
  const users = hostUsers(ctx, found.volume, undefined, (nonce) => dead.push(nonce));
  for (const nonce of dead) if (/^[0-9a-f]{16}$/.test(nonce)) await stopLeftovers(ctx, nonce);
  return users;
}

function refuseInUse(name: string, users: string[], action: string): void {
  if (!users.length) return;
  const shown = users.map((user) => (user.startsWith("export-") ? "an env export" : user));
  throw new UserError(`environment ${name} is in use by ${shown.join(", ")}`, `end ${users.length === 1 ? "that session" : "those sessions"} first, or ${action} --force`);
}

/**
 * Removes the home, and what this host keeps for it alone: its overlay, and what plugins
 * keep for it (`env:remove`: its own secrets…). Resolves to phrases naming those ("its
 * overlay"). A crash midway is finished by the next command.
 */
export async function removeEnv(ctx: BaseContext, name: string, force: boolean): Promise<string[]> {
  return withEnvLock(ctx, name, async () => {
    await recoverEnv(ctx, name);
    const found = await requireHome(ctx, name);
    if (!force) refuseInUse(name, await allUsers(ctx, found), `agentenv env rm ${name}`);
    const overlay = hasOverlay(name);
    // the volume it removes, by its nonce: never one made since by another host on a shared engine
    const op: PendingOp = { op: "rm", nonce: newNonce(), volumeNonce: (await volumeLabels(ctx, found.volume))?.[nonceLabel] ?? null };
    beginPending(ctx, name, op);
    crashPoint("rm:journal");
    const removed = await finishRemove(ctx, name, op);
    endPending(ctx, name, op.nonce);
    return overlay ? ["its overlay", ...removed] : removed;
  });
}

/** The rm OP, from wherever it stopped: the volume (if still the one it meant), the host record, the overlay, what plugins keep for it. */
async function finishRemove(ctx: BaseContext, name: string, op: PendingOp & { op: "rm" }): Promise<string[]> {
  const volume = volumeName(name);
  const labels = await volumeLabels(ctx, volume);
  if (labels && (labels[nonceLabel] ?? null) === op.volumeNonce) await ctx.runtime.volumeRemove(volume);
  crashPoint("rm:volume");
  removeHostRecord(ctx, name);
  crashPoint("rm:record");
  rmSync(overlayFile(name), { force: true });
  crashPoint("rm:overlay");
  const removed: string[] = [];
  for (const failure of await callHookEach(ctx.plugins, "env:remove", ctx, name, removed)) ctx.log.warn(`environment ${name}: ${failure.message}`);
  crashPoint("rm:plugins");
  return removed;
}

function noRecord(name: string): UserError {
  return new UserError(`environment ${name} has no record of its source (${recordPath})`, "remove it and create it again");
}

/** Rewrites NAME's record with CHANGE applied, here and in the home (env.json, dotfiles.conf, shell); the next session acts on it. */
export async function updateRecord(ctx: BaseContext, name: string, change: (record: EnvRecord) => void): Promise<EnvRecord> {
  return withEnvLock(ctx, name, async () => {
    const found = await requireHome(ctx, name);
    const record = await recordOf(ctx, found);
    if (!record) throw noRecord(name);
    change(record);
    await runHelper(ctx, `changing environment ${name}`, found.volume, recordScript(record));
    writeHostRecord(ctx, name, record);
    return record;
  });
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

const stage = `${home}/.agentenv-reset`;

/**
 * The reset's swap, resumable: a reset interrupted during it (Ctrl-C, a crash) is
 * finished by the next command, so a kept path is never lost. `.keep` exists once the new
 * home (its record included) is fully staged and lists the paths to keep; `.moving` once
 * the old home is gone.
 */
const swapScript = `
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
}`;

/** Finishes a swap that was staged, abandons one that was not: what every reset runs first, and the recovery of one that crashed. */
const settleSwap = [swapScript, "swap", `rm -rf ${stage} ${stage}.keep.tmp`];

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
 * paths. The new home, its record included, is staged inside the volume first (the slow,
 * failure-prone copy; a failure there changes nothing), then the kept paths are moved into
 * it, the old top level deleted and the staged one moved in — resumably (see swapScript):
 * a crash at any point is finished or abandoned by the next command.
 */
export async function resetEnv(ctx: BaseContext, name: string, keep: string[], force: boolean): Promise<EnvRecord> {
  const keeps = keepPaths(keep);
  return withEnvLock(ctx, name, async () => {
    await recoverEnv(ctx, name);
    const found = await requireHome(ctx, name);
    if (!force) refuseInUse(name, await allUsers(ctx, found), `agentenv env reset ${name}`);
    const old = await recordOf(ctx, found);
    if (!old) throw noRecord(name);
    const nonce = newNonce();
    const reset = async (content: Content, source: EnvSource, shell?: string) => {
      checkAdopted(name, old, source);
      ctx.log.start(`resetting environment ${name} from ${describeContent(content, source)}${keeps.length ? `, keeping ${keeps.join(", ")}` : ""}…`);
      const { adopted: _verified, ...kept } = old;
      const record: EnvRecord = { ...kept, source, reset: new Date().toISOString(), shell: old.shell ?? shell };
      await swapHome(ctx, found, nonce, content, record, keeps, `resetting environment ${name}`);
      return record;
    };
    const work = () => workDir(ctx, name, nonce);
    try {
      const source = old.source;
      switch (source.kind) {
        case "builtin":
          return await withSource(ctx, { builtin: true }, work, reset);
        case "empty":
          return await withSource(ctx, { empty: true }, work, reset);
        case "template":
        case "profile": {
          if (!existsSync(source.path)) throw new UserError(`environment ${name} was made from ${source.path}, which no longer exists`);
          return await withSource(ctx, source.kind === "template" ? { template: source.path } : { profile: source.path }, work, reset);
        }
        case "registry":
          throw new UserError(`environment ${name} was pulled from ${source.ref}: there is no source on this host to reset it from`, `pull it again under a new name: agentenv env pull ${source.ref.replace(/@.*$/, "").replace(/:[^:/]+$/, "")}@${source.digest} NEW`);
        case "archive": {
          if (source.path === "(stdin)") throw new UserError(`environment ${name} was imported from stdin: there is nothing to reset it from`, "import the archive again under a new name");
          if (!existsSync(source.path)) throw new UserError(`environment ${name} was imported from ${source.path}, which no longer exists`);
          if (!statSync(source.path).isFile()) throw new UserError(`environment ${name} was imported from ${source.path}, which is no longer a file`);
          const gzip = isGzip(source.path);
          await checkArchive(source.path, gzip, source.path);
          return await reset({ archive: source.path, gzip }, { ...source, hash: await fileHash(source.path) });
        }
      }
    } finally {
      removeStrayWork(ctx, name);
    }
  });
}

/**
 * Replaces the home at FOUND by CONTENT with RECORD (whose `reset` time is new: what
 * recovery tells the new home by), keeping KEEPS: the new home is staged inside the
 * volume, then swapped in resumably (see swapScript) under a reset journal — a crash at any
 * point is finished or abandoned by the next command. Callers hold the lock.
 */
async function swapHome(ctx: BaseContext, found: Home, nonce: string, content: Content, record: EnvRecord, keeps: readonly string[], what: string): Promise<void> {
  const name = found.name;
  const script = [
    // an earlier reset interrupted mid-swap is finished first
    ...settleSwap,
    ...contentScript(content, stage),
    ...recordScript(record, stage),
    // a kept path's parent must be a directory in the new home: checked while nothing has changed
    ...keeps.map((k) => `mkdir -p "$(dirname ${shellQuote(`${stage}/${k}`)})" || { echo ${shellQuote(`cannot keep ${k}: the new home has a file where its parent directory would be`)} >&2; exit 1; }`),
    keeps.length ? `printf '%s\\n' ${keeps.map(shellQuote).join(" ")} >${stage}.keep.tmp` : `: >${stage}.keep.tmp`,
    `mv ${stage}.keep.tmp ${stage}.keep`,
    "swap",
    ...activateScript(content),
  ];
  const op: PendingOp = { op: "reset", nonce, record };
  beginPending(ctx, name, op);
  crashPoint("reset:journal");
  try {
    await runHelper(ctx, what, found.volume, script, { content, nonce, step: "reset:swap" });
  } catch (error) {
    // a staged home is abandoned (or a swap under way finished) now; the next command does it if this fails
    await finishReset(ctx, name, op).catch(() => {});
    throw error;
  }
  crashPoint("reset:swapped");
  writeHostRecord(ctx, name, record);
  crashPoint("reset:record");
  endPending(ctx, name, nonce);
  await keepToolsFlake(ctx, found);
}

/**
 * The reset OP, from wherever it stopped: its swap finished when the new home was fully
 * staged, else abandoned (the old home untouched); then this host's record follows the
 * home — the new one when the new home is in place.
 */
async function finishReset(ctx: BaseContext, name: string, op: PendingOp & { op: "reset" }): Promise<void> {
  const volume = volumeName(name);
  if (await ctx.runtime.volumeExists(volume)) {
    const file = `${home}/${recordPath}`;
    const script = [...settleSwap, `if [ -f ${file} ] && [ ! -L ${file} ]; then head -c 1048576 ${file}; fi`];
    const result = await runHelper(ctx, `finishing the interrupted reset of environment ${name}`, volume, script, { nonce: op.nonce });
    const inHome = parseRecord(result.stdout) as EnvRecord | undefined;
    if (inHome?.reset === op.record.reset) writeHostRecord(ctx, name, op.record);
  }
  endPending(ctx, name, op.nonce);
}

/**
 * Completes or rolls back what commands on NAME that never finished (their agentenv
 * died) left, oldest first, after stopping what they left running: called under NAME's
 * lock by every command that changes it, and by a session's start.
 */
export async function recoverEnv(ctx: BaseContext, name: string): Promise<void> {
  const ops = pendingOps(ctx, name);
  for (const op of ops) {
    ctx.log.debug(`environment ${name}: finishing what an interrupted ${op.op} (${op.nonce}) left`);
    await stopLeftovers(ctx, op.nonce);
    if (op.op === "create") await undoCreate(ctx, name, op, true);
    else if (op.op === "reset") await finishReset(ctx, name, op);
    else {
      await finishRemove(ctx, name, op);
      endPending(ctx, name, op.nonce);
    }
  }
  if (ops.length) ctx.log.info(`environment ${name}: cleaned up after an interrupted agentenv command`);
  removeStrayWork(ctx, name);
}

/**
 * What a dead (or interrupted) command NONCE left running: its engine commands (`volume
 * create`, a helper's `run`: their command lines carry the nonce) are given PATIENCE ms to
 * end, then killed; then its helper containers are removed.
 */
async function stopLeftovers(ctx: BaseContext, nonce: string, patience = 1000): Promise<void> {
  for (let waited = 0; ; waited += 100) {
    const pids = processesNaming(nonce);
    if (!pids.length) break;
    for (const pid of pids) {
      try {
        process.kill(pid, waited >= patience + 1000 ? "SIGKILL" : waited >= patience ? "SIGTERM" : 0);
      } catch {
        // gone meanwhile
      }
    }
    await Bun.sleep(100);
  }
  for (const container of await ctx.runtime.listContainers(`${opLabel}=${nonce}`)) await ctx.runtime.removeContainer(container.name, { stopSeconds: 0 });
}

/** Processes of this host whose command line holds WORD (the engine CLI's, which run here even for a remote engine). */
function processesNaming(word: string): number[] {
  if (existsSync("/proc/self/cmdline")) {
    const pids: number[] = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
      try {
        if (readFileSync(`/proc/${entry}/cmdline`, "latin1").includes(word)) pids.push(Number(entry));
      } catch {
        // ended meanwhile
      }
    }
    return pids;
  }
  const ps = Bun.spawnSync(["ps", "-A", "-ww", "-o", "pid=,command="]);
  return ps.stdout
    .toString()
    .split("\n")
    .filter((line) => line.includes(word))
    .map((line) => Number(line.trim().split(/\s+/)[0]))
    .filter((pid) => pid && pid !== process.pid && pid !== ps.pid);
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

/** What the export helper prints last on stderr: the archive's size and its number of entries, as written inside. */
const exportMark = "agentenv-archive";

/**
 * The whole home as one gzip-compressed tar: to FILE or "-" for stdout. FILE appears
 * only complete: the archive is written to a new file beside it (unpredictable name,
 * created exclusively with mode 0600 — it holds the home's credentials in the clear —
 * never through a link), checked (the size and entries tar wrote, a whole gzip stream, a
 * tar that ends), synced and renamed over FILE; a failure or a full disk leaves an old
 * FILE as it was. The export registers as a user of the environment while it runs: rm
 * and reset refuse meanwhile, and what a crash leaves is removed by the next command.
 */
export async function exportEnv(ctx: BaseContext, name: string, out: string): Promise<{ file: string; bytes?: number }> {
  if (out === "-" && process.stdout.isTTY) throw new UserError("refusing to write an archive to a terminal", "pass -o FILE, or pipe the output");
  const file = out === "-" ? "-" : outputFile(out, `${name}.tar.gz`);
  const nonce = newNonce();
  const partial = file === "-" ? undefined : join(dirname(file), `.${basename(file)}.partial-${nonce}`);
  const { found, registration } = await withEnvLock(ctx, name, async () => {
    const found = await requireHome(ctx, name);
    await liveHostUsers(ctx, found); // what a crashed export left is removed on the way
    return { found, registration: registerUser(ctx, found.volume, `export-${nonce}`, partial) };
  });
  crashPoint("export:registered");
  let fd: number | undefined;
  const cleanUp = () => {
    if (fd !== undefined) closeSync(fd);
    fd = undefined;
    if (partial) rmSync(partial, { force: true });
    registration?.release();
  };
  return undoOnInterrupt(cleanUp, async () => {
    try {
      const users = await runningUsers(ctx, found);
      if (users.length) ctx.log.warn(`environment ${name} is in use by ${users.join(", ")}: files written during the export may be caught mid-change`);
      // a file that changes while tar reads it (shell history, an agent's memory) is tar's exit 1: not a failure
      const tar = `tar -C ${home} --numeric-owner --warning=no-file-changed -czvf - .`;
      const script = [
        `{ { if ${tar} 2>/tmp/list; then s=0; else s=$?; fi; echo $s >/tmp/status; } | tee /dev/fd/3 | wc -c >/tmp/bytes; } 3>&1`,
        "grep '^tar: ' /tmp/list >&2 || true",
        `printf '${exportMark} %s %s\\n' "$(cat /tmp/bytes)" "$(grep -c '^\\./' /tmp/list || true)" >&2`,
        '[ "$(cat /tmp/status)" -le 1 ]',
      ];
      if (!partial) {
        await runHelper(ctx, `exporting environment ${name}`, found.volume, script, { readonly: true, stdout: "-", nonce });
        return { file };
      }
      ctx.log.start(`exporting environment ${name} to ${file}…`);
      fd = openSync(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      crashPoint("export:partial");
      let written: { bytes: number; entries: number } | undefined;
      try {
        const result = await runHelper(ctx, `exporting environment ${name}`, found.volume, script, { readonly: true, stdout: `/dev/fd/${fd}`, nonce, step: "export:write" });
        const mark = new RegExp(`^${exportMark} (\\d+) (\\d+)$`, "m").exec(result.stderr);
        if (mark) written = { bytes: Number(mark[1]), entries: Number(mark[2]) };
        crashPoint("export:written");
        fsyncSync(fd);
      } catch (error) {
        throw noSpaceFor(file, error) ?? error;
      }
      await verifyArchive(partial, fstatSync(fd).size, written, file);
      closeSync(fd);
      fd = undefined;
      crashPoint("export:verified");
      renameSync(partial, file);
      syncDir(dirname(file));
      crashPoint("export:renamed");
      return { file, bytes: statSync(file).size };
    } finally {
      cleanUp();
    }
  });
}

/** The one-line error for FILE when ERROR (or a short archive) is its disk being full. */
function noSpaceFor(file: string, error?: unknown): UserError | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  let full = code === "ENOSPC" || code === "EDQUOT" || /no space left/i.test(messageOf(error ?? ""));
  if (!full) {
    try {
      const fs = statfsSync(dirname(file));
      full = fs.bavail * fs.bsize < 1 << 20;
    } catch {
      // cannot tell: the error says what it is
    }
  }
  if (!full) return undefined;
  return new UserError(`cannot write ${file}: no space left on its disk`, `free some space and try again (${existsSync(file) ? "the old file is unchanged" : "nothing was written"})`);
}

/**
 * The archive at PATH is whole before it is published: SIZE bytes as tar wrote them
 * inside (WRITTEN), one complete gzip stream (its trailer checks length and CRC), tar
 * headers with valid checksums up to tar's end-of-archive block, as many entries as tar
 * listed.
 */
async function verifyArchive(path: string, size: number, written: { bytes: number; entries: number } | undefined, file: string): Promise<void> {
  const broken = (why: string) => noSpaceFor(file) ?? new UserError(`exporting to ${file} failed: the archive came out incomplete (${why})`, "try again; the old file, if any, is unchanged");
  if (!written) throw broken("the helper did not say what it wrote");
  if (size !== written.bytes) throw broken(`${size} of ${written.bytes} bytes written`);
  let entries = 0;
  let ended = false;
  let pending: Buffer = Buffer.alloc(0);
  /** bytes of the current entry's content still to skip */
  let skip = 0;
  /** a pax or GNU header's data, read whole to learn the next entry's size */
  let meta: { type: string; left: number; data: Buffer[] } | undefined;
  let paxSize: number | undefined;
  const octal = (block: Buffer, start: number, length: number) => {
    const field = block.subarray(start, start + length);
    if (field[0]! & 0x80) return field.subarray(1).reduce((value, byte) => value * 256 + byte, field[0]! & 0x7f);
    const text = field.toString("latin1").replace(/\0.*$/s, "").trim();
    return text ? Number.parseInt(text, 8) : 0;
  };
  try {
    for await (const chunk of createReadStream(path).pipe(createGunzip())) {
      pending = pending.length ? Buffer.concat([pending, chunk as Buffer]) : (chunk as Buffer);
      while (!ended && pending.length >= 512) {
        const block = pending.subarray(0, 512);
        pending = pending.subarray(512);
        if (meta) {
          meta.data.push(block.subarray(0, Math.min(512, meta.left)));
          meta.left -= Math.min(512, meta.left);
          if (meta.left <= 0) {
            const size = meta.type === "x" ? /(?:^|\n)\d+ size=(\d+)\n/.exec(Buffer.concat(meta.data).toString("latin1"))?.[1] : undefined;
            if (size !== undefined) paxSize = Number(size);
            meta = undefined;
          }
          continue;
        }
        if (skip > 0) {
          skip -= 512;
          continue;
        }
        if (block.every((byte) => byte === 0)) {
          ended = true;
          break;
        }
        let sum = 0;
        for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
        if (octal(block, 148, 8) !== sum) throw new Error("a tar header with a bad checksum");
        const type = String.fromCharCode(block[156]!);
        const size = paxSize ?? octal(block, 124, 12);
        if (["x", "g", "L", "K"].includes(type)) {
          if (size > 1 << 20) throw new Error("a tar extended header too big");
          if (size > 0) meta = { type, left: size, data: [] };
          continue;
        }
        paxSize = undefined;
        entries++;
        skip = ["1", "2", "3", "4", "5", "6"].includes(type) ? 0 : Math.ceil(size / 512) * 512;
      }
    }
  } catch (error) {
    throw broken(messageOf(error));
  }
  if (!ended) throw broken("it ends before tar's end-of-archive block");
  if (entries !== written.entries) throw broken(`${entries} of ${written.entries} entries`);
}

/** Makes a rename in DIR survive a power cut (where the system allows syncing a directory). */
function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // not supported here: the rename itself is atomic either way
  }
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
 * nothing (see makeHome). The archive is hostile input: its entries are checked (see
 * checkArchive) and the settings its env.json carries (shell, dotfiles repo, source) are
 * checked as at `env create` before anything is made. An archive on stdin is kept in the
 * command's private work directory for that.
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
  const shown = fromStdin ? "the archive on stdin" : file;
  return withEnvLock(ctx, name, async () => {
    await recoverEnv(ctx, name);
    if (await ctx.runtime.volumeExists(volume)) throw alreadyExists(name);
    const nonce = newNonce();
    try {
      let archive = path;
      if (fromStdin) {
        archive = join(workDir(ctx, name, nonce), "archive");
        await Bun.write(archive, Bun.stdin);
        crashPoint("import:spooled");
      }
      const source: EnvSource = fromStdin ? { kind: "archive", path: "(stdin)" } : { kind: "archive", path, hash: await fileHash(path) };
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
      ctx.log.start(`importing ${file} as environment ${name}…`);
      await makeHome(ctx, name, nonce, record, { archive, gzip }, `importing ${file} into environment ${name}`, "import");
      return record;
    } finally {
      removeStrayWork(ctx, name);
    }
  });
}

async function fileHash(file: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(file).stream()) hasher.update(chunk);
  return hasher.digest("hex").slice(0, 16);
}

/** One part of a home packed as a layer of its own (`env push`): PATHS under HOME less SKIP, or (no PATHS) everything the other parts do not hold. */
export interface HomePart {
  name: string;
  paths?: string[];
  skip?: string[];
}

/** A path of the home (as tar names it: ./…) and its size, as the rest part's listing gives them. */
export interface HomeEntry {
  path: string;
  size: number;
}

/**
 * Packs NAME's home into DIR as one gzip-compressed tar per part (DIR/PART.tar.gz),
 * reproducibly — entries sorted, numeric owners, no gzip name or time — so an unchanged
 * part is the same bytes and a registry that has it is not sent it again; DIR/PART.sum is
 * the sha256 of the uncompressed tar (what "has it changed" compares: with COMPRESS false,
 * only that is made, no archive). EXCLUDE (paths under HOME: the overlay's files) is in no
 * part. SPLIT cuts the part that holds the rest into several (PART, PART.1, PART.2…) from
 * its sorted listing, so that a change re-packs one piece of it: the home is listed in a
 * first helper, packed in a second. Resolves to the parts made, in order. Registers as a
 * reader of the home as `env export` does: rm and reset refuse meanwhile.
 */
export async function packHome(
  ctx: BaseContext,
  name: string,
  parts: readonly HomePart[],
  dir: string,
  options: { exclude?: readonly string[]; compress?: boolean; split?: (entries: HomeEntry[]) => HomeEntry[][] } = {},
): Promise<{ found: Home; parts: string[] }> {
  const { exclude = [], compress = true, split } = options;
  const nonce = newNonce();
  const { found, registration } = await withEnvLock(ctx, name, async () => {
    const found = await requireHome(ctx, name);
    await liveHostUsers(ctx, found);
    return { found, registration: registerUser(ctx, found.volume, `export-${nonce}`) };
  });
  try {
    const excludes = (paths: readonly string[]) => paths.map((path) => `--exclude=${shellQuote(`./${path}`)}`).join(" ");
    const held = parts.flatMap((part) => part.paths ?? []);
    const rest = parts.find((part) => !part.paths);
    /** the rest part's pieces: their names, and the listing each packs (undefined: not split) */
    let pieces: Array<{ name: string; list?: string }> | undefined;
    if (rest && split) {
      // glob characters in a path are matched literally by find -path
      const pruned = [...held, ...exclude, ...(rest.skip ?? [])].map((path) => `-path ${shellQuote(`./${path}`.replace(/[[\]*?\\]/g, "\\$&"))}`);
      const prune = pruned.length ? `\\( ${pruned.join(" -o ")} \\) -prune -o` : "";
      const list = [`cd ${home}`, `find . -mindepth 1 ${prune} -printf '%s %p\\0' >/out/${rest.name}.entries`];
      await runHelper(ctx, `listing environment ${name}`, found.volume, list, { readonly: true, out: dir, nonce });
      const entries = readFileSync(join(dir, `${rest.name}.entries`), "utf8")
        .split("\0")
        .filter(Boolean)
        .map((line) => ({ size: Number(line.slice(0, line.indexOf(" "))), path: line.slice(line.indexOf(" ") + 1) }))
        // byte order, as C's sort: the same listing always cuts the same way
        .sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
      // the home directory itself, first: its mode travels with the first piece
      const groups = split(entries);
      if (!groups.length) groups.push([]);
      groups[0]!.unshift({ path: ".", size: 0 });
      pieces = groups.map((group, i) => {
        const piece = i ? `${rest.name}.${i}` : rest.name;
        writeFileSync(join(dir, `${piece}.list`), group.map((entry) => `${entry.path}\0`).join(""));
        return { name: piece, list: `/out/${piece}.list` };
      });
    }
    const script = [
      `cd ${home}`,
      // a file that changes while tar reads it is tar's exit 1: not a failure (as in export)
      // the tar goes to sha256sum and (COMPRESS) through gzip into the archive, read once
      compress
        ? `out() { ( tee /dev/fd/4 | gzip -n -6 >/out/$1.tar.gz ) 4>&1 | sha256sum | cut -d' ' -f1 >/out/$1.sum; }`
        : `out() { sha256sum | cut -d' ' -f1 >/out/$1.sum; }`,
      `pack() { n=$1; shift; { if tar --sort=name --format=gnu --numeric-owner --warning=no-file-changed --anchored --no-wildcards "$@"; then s=0; else s=$?; fi; echo $s >/tmp/$n.status; } | out $n; [ "$(cat /tmp/$n.status)" -le 1 ]; }`,
      ...parts.flatMap((part) => {
        const skip = excludes([...exclude, ...(part.skip ?? [])]);
        // a listed piece: exactly its entries (a path gone since the listing is skipped)
        if (!part.paths && pieces) return pieces.map((piece) => `pack ${piece.name} --no-recursion --ignore-failed-read --warning=no-failed-read --null -T ${piece.list} -cf -`);
        if (!part.paths) return [`pack ${part.name} ${excludes(held)} ${skip} -cf - .`];
        return [
          "set --",
          `for p in ${part.paths.map((path) => shellQuote(`./${path}`)).join(" ")}; do if [ -e "$p" ] || [ -L "$p" ]; then set -- "$@" "$p"; fi; done`,
          `pack ${part.name} ${skip} -cf - --files-from=/dev/null "$@"`,
        ];
      }),
    ];
    await runHelper(ctx, `packing environment ${name}`, found.volume, script, { readonly: true, out: dir, nonce });
    return { found, parts: parts.flatMap((part) => (!part.paths && pieces ? pieces.map((piece) => piece.name) : [part.name])) };
  } finally {
    registration.release();
  }
}

/**
 * Creates NAME from layers that FETCH downloads into the command's private work
 * directory (`env pull`), all or nothing as `env import` (see makeHome): under NAME's
 * lock, the layers are checked as one hostile archive (checkArchives) before anything
 * is made (then CHECKED runs, if FETCH gave one). SHOWN names the source in messages.
 */
export async function importLayers(
  ctx: BaseContext,
  name: string,
  shown: string,
  fetch: (dir: string) => Promise<{ layers: string[]; record: EnvRecord; checked?: () => Promise<void> }>,
): Promise<EnvRecord> {
  return newEnv(ctx, name, async (nonce) => {
    const dir = workDir(ctx, name, nonce);
    const { layers, record, checked } = await fetch(dir);
    await checkArchives(layers.map((layer) => ({ file: join(dir, layer), gzip: true, shown: `${shown}, layer ${layer}` })));
    await checked?.();
    ctx.log.start(`making environment ${name} from ${shown}…`);
    await makeHome(ctx, name, nonce, record, { layers, dir }, `pulling ${shown} into environment ${name}`, "pull");
    return record;
  });
}

/**
 * Replaces NAME's home by layers FETCH downloads into the command's work directory (`env
 * pull` into an environment that has not changed since its last sync): refused while a
 * session uses it (FORCE: anyway), FETCH run under NAME's lock (its own checks first), the
 * layers checked as importLayers checks them, then swapped in as a reset swaps its new
 * home in (resumably, under a journal) — or, when FETCH gives APPLY (a merge), that runs
 * instead, after the checks (its BASE layers checked as a home of their own).
 */
export async function replaceFromLayers(
  ctx: BaseContext,
  name: string,
  shown: string,
  force: boolean,
  fetch: (dir: string, found: Home) => Promise<{ layers: string[]; record: EnvRecord; checked?: () => Promise<void>; base?: string[]; apply?: () => Promise<void> }>,
): Promise<EnvRecord> {
  return withEnvLock(ctx, name, async () => {
    await recoverEnv(ctx, name);
    const found = await requireHome(ctx, name);
    if (!force) refuseInUse(name, await allUsers(ctx, found), `agentenv env pull ${shown} ${name}`);
    const nonce = newNonce();
    try {
      const dir = workDir(ctx, name, nonce);
      const { layers, record, checked, base, apply } = await fetch(dir, found);
      await checkArchives(layers.map((layer) => ({ file: join(dir, layer), gzip: true, shown: `${shown}, layer ${layer}` })));
      // a merge's base (the artifact last synced with) is a home of its own, checked as one
      if (base) await checkArchives(base.map((layer) => ({ file: join(dir, layer), gzip: true, shown: `${shown}'s base, layer ${layer}` })));
      await checked?.();
      if (apply) {
        // a merge (`--merge`): FETCH's APPLY changes the home in place, file by file
        await apply();
        writeHostRecord(ctx, name, record);
        return record;
      }
      ctx.log.start(`replacing the home of environment ${name} with ${shown}…`);
      await swapHome(ctx, found, nonce, { layers, dir }, record, [], `pulling ${shown} into environment ${name}`);
      return record;
    } finally {
      removeStrayWork(ctx, name);
    }
  });
}
