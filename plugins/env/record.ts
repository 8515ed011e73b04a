import { mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { dirname, isAbsolute, join, normalize } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { lockFile, type FileLock } from "../../core/linux.ts";
import { agentenvDir } from "../../core/paths.ts";
import { shellJoin } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { writeAtomic } from "../../core/volumes.ts";
import { checkDotfiles, isLocalRepo } from "./dotfiles/repo.ts";
import { checkShell, isInsideHome, readHomeFile, recordPath, type EnvRecord, type EnvSource, type Home } from "./home.ts";

/**
 * This host's record of an environment: what it acts on (the source `env reset` copies,
 * the dotfiles repo sessions mount, the shell), kept under agentenv's state dir, one file
 * per engine and environment. `env create`, `import`, `set` and `reset` write it, `env rm`
 * removes it. The home keeps a copy (env.json, dotfiles.conf, shell) for the in-container
 * scripts and for export; a session can rewrite that copy, so the host never acts on it.
 */
export function hostRecordFile(ctx: BaseContext, name: string): string {
  return `${hostBase(ctx, name)}.json`;
}

/**
 * The tools flake (flake.nix, flake.lock) of environment NAME as the user last had it —
 * the copy an untrusted project's session builds and keeps, never the home's own (./tools.ts).
 */
export function hostToolsDir(ctx: BaseContext, name: string): string {
  return `${hostBase(ctx, name)}.tools`;
}

/** envs/RUNTIME-NAME: the host record is BASE.json, the lock BASE.lock, unfinished commands' journals in BASE.pending/ */
function hostBase(ctx: BaseContext, name: string): string {
  return join(agentenvDir("state"), "envs", `${ctx.runtime.name}-${name}`);
}

/** Locks this process holds, by file: a command that calls another (session start → create) takes its lock once. */
const held = new Map<string, { lock: FileLock; depth: number }>();

/**
 * Runs FN holding the host lock of environment NAME: create, import, reset, rm, `env set`
 * and a session's start each hold it, so none of them acts on a home another is changing,
 * and every read-modify-write of the host record is whole. The lock is an flock, let go by
 * the kernel when its holder dies however it dies; a command that finds it taken says so
 * and waits (polling, so Ctrl-C still works).
 */
export async function withEnvLock<T>(ctx: BaseContext, name: string, fn: () => Promise<T>): Promise<T> {
  const file = `${hostBase(ctx, name)}.lock`;
  const mine = held.get(file);
  if (mine) {
    mine.depth++;
    try {
      return await fn();
    } finally {
      mine.depth--;
    }
  }
  try {
    mkdirSync(dirname(file), { recursive: true });
  } catch (error) {
    throw new UserError(`cannot lock environment ${name} in ${dirname(file)}: ${messageOf(error)}`, "agentenv's state dir must be writable (XDG_STATE_HOME)");
  }
  let lock = lockFile(file, "exclusive", false);
  for (let waited = 0; !lock; waited += 50) {
    if (waited === 500) ctx.log.info(`waiting for another agentenv command on environment ${name}…`);
    await Bun.sleep(50);
    lock = lockFile(file, "exclusive", false);
  }
  held.set(file, { lock, depth: 1 });
  try {
    return await fn();
  } finally {
    held.delete(file);
    lock.release();
  }
}

/**
 * Runs FN holding the host lock of environment NAME when no other command holds it (a
 * reader that must not wait: `env list`); undefined, FN not run, when one does.
 */
export async function ifEnvUnlocked<T>(ctx: BaseContext, name: string, fn: () => Promise<T>): Promise<{ value: T } | undefined> {
  const file = `${hostBase(ctx, name)}.lock`;
  if (held.has(file)) return { value: await withEnvLock(ctx, name, fn) };
  let lock: FileLock | undefined;
  try {
    mkdirSync(dirname(file), { recursive: true });
    lock = lockFile(file, "exclusive", false);
  } catch {
    return undefined; // a read-only state dir: nothing can be recovered from here
  }
  if (!lock) return undefined;
  held.set(file, { lock, depth: 1 });
  try {
    return { value: await fn() };
  } finally {
    held.delete(file);
    lock.release();
  }
}

/** A state-changing command on an environment that has not finished yet (its journal). */
export type PendingOp =
  /** create or import: rolled back unless its host record was written */
  | { op: "create"; nonce: string; record: EnvRecord }
  /** reset: its swap is finished or abandoned, the host record follows the home */
  | { op: "reset"; nonce: string; record: EnvRecord }
  /** rm: finished; VOLUMENONCE is the label of the volume it removes (null: a volume made before labels) */
  | { op: "rm"; nonce: string; volumeNonce: string | null };

function pendingDir(ctx: BaseContext, name: string): string {
  return `${hostBase(ctx, name)}.pending`;
}

/** Records OP as begun (before it changes anything), written whole and synced. */
export function beginPending(ctx: BaseContext, name: string, op: PendingOp): void {
  const dir = pendingDir(ctx, name);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeAtomic(join(dir, `${op.nonce}.json`), `${JSON.stringify(op, null, 2)}\n`, 0o600);
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw new UserError(`cannot keep a journal for environment ${name} in ${dir}: ${messageOf(error)}`, "agentenv's state dir must be writable (XDG_STATE_HOME)");
  }
}

/** The commands on NAME that began and never finished (their agentenv died), oldest first; read under its lock. */
export function pendingOps(ctx: BaseContext, name: string): PendingOp[] {
  const dir = pendingDir(ctx, name);
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return [];
  }
  const ops: PendingOp[] = [];
  for (const file of files) {
    if (!/^[0-9a-f]{16}\.json$/.test(file)) continue;
    try {
      ops.push(JSON.parse(readFileSync(join(dir, file), "utf8")) as PendingOp);
    } catch {
      rmSync(join(dir, file), { force: true }); // a journal cut by a crash before its rename never began
    }
  }
  return ops;
}

/**
 * A private directory of the command NONCE (a built-in template, an archive read from
 * stdin): under the state dir, so that what a crash leaves there is found and removed.
 */
export function workDir(ctx: BaseContext, name: string, nonce: string): string {
  const dir = join(pendingDir(ctx, name), `${nonce}.work`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Forgets the command NONCE, done or undone, and its work directory. */
export function endPending(ctx: BaseContext, name: string, nonce: string): void {
  const dir = pendingDir(ctx, name);
  rmSync(join(dir, `${nonce}.work`), { recursive: true, force: true });
  rmSync(join(dir, `${nonce}.json`), { force: true });
}

/** Work directories no journal names (a crash before the journal was written), and the pending dir once empty; under the lock. */
export function removeStrayWork(ctx: BaseContext, name: string): void {
  const dir = pendingDir(ctx, name);
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return;
  }
  for (const file of files) {
    const nonce = /^([0-9a-f]{16})\.work$/.exec(file)?.[1];
    if (nonce && !files.includes(`${nonce}.json`)) rmSync(join(dir, file), { recursive: true, force: true });
  }
  try {
    if (!readdirSync(dir).length) rmSync(dir, { recursive: true, force: true });
  } catch {
    // another command made it again: it is theirs
  }
}

export function readHostRecord(ctx: BaseContext, name: string): EnvRecord | undefined {
  try {
    return JSON.parse(readFileSync(hostRecordFile(ctx, name), "utf8")) as EnvRecord;
  } catch {
    return undefined;
  }
}

export function writeHostRecord(ctx: BaseContext, name: string, record: EnvRecord): void {
  const file = hostRecordFile(ctx, name);
  try {
    mkdirSync(dirname(file), { recursive: true });
    writeAtomic(file, `${JSON.stringify(record, null, 2)}\n`, 0o600);
  } catch (error) {
    throw new UserError(`cannot keep the record of environment ${name} in ${dirname(file)}: ${messageOf(error)}`, "agentenv's state dir must be writable (XDG_STATE_HOME)");
  }
}

/**
 * This host's record of the environment at HOME; for one older than host records, the
 * record its home holds, adopted (see adoptRecord) when its files are readable from here.
 */
export function hostRecord(ctx: BaseContext, home: Home): EnvRecord | undefined {
  const kept = readHostRecord(ctx, home.name);
  if (kept || !home.readable || !home.dir) return kept;
  // a home a create or import has not finished has no record yet: nothing to adopt
  if (pendingOps(ctx, home.name).length) return undefined;
  return adoptRecord(ctx, home.name, readHomeFile(home.dir, recordPath));
}

export function removeHostRecord(ctx: BaseContext, name: string): void {
  rmSync(hostRecordFile(ctx, name), { force: true });
  rmSync(hostToolsDir(ctx, name), { recursive: true, force: true });
}

const hash = /^[0-9a-f]{16}$/;

function checkPath(path: unknown): string {
  if (typeof path !== "string" || !isAbsolute(path) || /[\n\0]/.test(path) || normalize(path) !== path) throw new UserError(`source path ${JSON.stringify(path)}: not a clean absolute path`);
  return path;
}

/** A source as written somewhere a session could write: its form only (where it points is checked where it is used). */
function checkSource(value: unknown): EnvSource {
  const source = (value && typeof value === "object" ? value : {}) as Record<string, unknown>;
  const hashOf = (field: unknown) => {
    if (field !== undefined && (typeof field !== "string" || !hash.test(field))) throw new UserError(`source hash ${JSON.stringify(field)}: not a content hash`);
    return field as string | undefined;
  };
  switch (source.kind) {
    case "builtin":
      return { kind: "builtin", hash: hashOf(source.hash) ?? "" };
    case "empty":
      return { kind: "empty" };
    case "template":
      return { kind: "template", path: checkPath(source.path), hash: hashOf(source.hash) ?? "" };
    case "profile": {
      const target = source.target;
      if (typeof target !== "string" || !isInsideHome(target)) throw new UserError(`profile target ${JSON.stringify(target)}: not a path inside HOME`);
      return { kind: "profile", path: checkPath(source.path), target, hash: hashOf(source.hash) ?? "" };
    }
    case "archive":
      return { kind: "archive", path: source.path === "(stdin)" ? "(stdin)" : checkPath(source.path), hash: hashOf(source.hash) };
    case "registry": {
      const { ref, digest } = source;
      if (typeof ref !== "string" || !/^[A-Za-z0-9._:/@-]{1,512}$/.test(ref)) throw new UserError(`source ref ${JSON.stringify(ref)}: not a registry reference`);
      if (typeof digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new UserError(`source digest ${JSON.stringify(digest)}: not a manifest digest`);
      return { kind: "registry", ref, digest };
    }
    default:
      throw new UserError(`source kind ${JSON.stringify(source.kind)}: not one agentenv writes`);
  }
}

/** An env.json's text, parsed (undefined when it is not JSON). */
export function parseRecord(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * An env.json read from a home or an archive, checked field by field as hostile input:
 * the form of its source, its shell, its dotfiles repo as `env create` checks one (a
 * repository on this host as one sessions would mount). Throws UserError naming the field.
 */
export function checkRecord(value: unknown): EnvRecord {
  const fields = (value && typeof value === "object" ? value : {}) as Record<string, unknown>;
  if (fields.version !== 1) throw new UserError("its env.json is not a record agentenv wrote (version 1)");
  const date = (field: unknown) => (typeof field === "string" && !Number.isNaN(Date.parse(field)) ? new Date(field).toISOString() : undefined);
  const record: EnvRecord = { version: 1, source: checkSource(fields.source), created: date(fields.created) ?? new Date().toISOString() };
  if (date(fields.reset)) record.reset = date(fields.reset);
  if (fields.shell !== undefined) record.shell = checkShell(String(fields.shell));
  if (fields.dotfiles !== undefined) record.dotfiles = checkDotfiles(fields.dotfiles);
  return record;
}

/**
 * Adopts the env.json of a home made before this host kept records (TEXT; undefined:
 * none), as hostile input: each field checked, a bad one left out with a warning; a
 * dotfiles repo on this host is never taken from the home (the user confirms it with
 * `env set`), and a template or archive is used by `env reset` only while its content
 * still has the hash recorded with it (`adopted`). Kept as this host's record, so it
 * happens once; undefined when the home holds no record.
 */
export function adoptRecord(ctx: BaseContext, name: string, text: string | undefined): EnvRecord | undefined {
  const raw = text === undefined ? undefined : parseRecord(text);
  if (!raw || typeof raw !== "object") return undefined;
  const { shell, dotfiles } = raw as Record<string, unknown>;
  const keep = <T>(what: string, check: () => T): T | undefined => {
    try {
      return check();
    } catch (error) {
      ctx.log.warn(`environment ${name}: agentenv left out the ${what} its home names: ${messageOf(error)}`);
      return undefined;
    }
  };
  const record = keep("record", () => checkRecord({ ...raw, shell: undefined, dotfiles: undefined }));
  if (!record) return undefined;
  record.adopted = new Date().toISOString();
  if (shell !== undefined) record.shell = keep("shell", () => checkShell(String(shell)));
  const repo = dotfiles === undefined ? undefined : keep("dotfiles repo", () => checkDotfiles(dotfiles));
  if (repo && isLocalRepo(repo.url)) {
    const settings = Object.entries(repo).map(([key, value]) => `dotfiles.${key}=${value}`);
    ctx.log.warn(`environment ${name}: its home names the dotfiles repo ${repo.url}, which sessions mount only once you confirm it: ${shellJoin(["agentenv", "env", "set", name, ...settings])}`);
  } else {
    record.dotfiles = repo;
  }
  try {
    // kept only while no other command changes the environment (a create writes its own record)
    const kept = ifUnlocked(ctx, name, () => {
      if (readHostRecord(ctx, name) || pendingOps(ctx, name).length) return false;
      writeHostRecord(ctx, name, record);
      return true;
    });
    if (!kept) ctx.log.debug(`environment ${name}: another command holds it; its record is adopted again next time`);
  } catch (error) {
    // adopted again next time: nothing it holds can steer the host
    ctx.log.debug(`could not keep the record of environment ${name}: ${messageOf(error)}`);
  }
  return record;
}

/** FN under NAME's lock when this process holds it or can take it without waiting; undefined when another holds it. */
function ifUnlocked<T>(ctx: BaseContext, name: string, fn: () => T): T | undefined {
  const file = `${hostBase(ctx, name)}.lock`;
  if (held.has(file)) return fn();
  mkdirSync(dirname(file), { recursive: true });
  const lock = lockFile(file, "exclusive", false);
  if (!lock) return undefined;
  try {
    return fn();
  } finally {
    lock.release();
  }
}
