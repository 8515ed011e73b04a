import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, isAbsolute, join, normalize } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { agentenvDir } from "../../core/paths.ts";
import { shellJoin } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { writeAtomic } from "../../core/volumes.ts";
import { checkDotfiles, isLocalRepo } from "../dotfiles/repo.ts";
import { checkShell, isInsideHome, readHomeFile, recordPath, type EnvRecord, type EnvSource, type Home } from "./home.ts";

/**
 * This host's record of an environment: what it acts on (the source `env reset` copies,
 * the dotfiles repo sessions mount, the shell), kept under agentenv's state dir, one file
 * per engine and environment. `env create`, `import`, `set` and `reset` write it, `env rm`
 * removes it. The home keeps a copy (env.json, dotfiles.conf, shell) for the in-container
 * scripts and for export; a session can rewrite that copy, so the host never acts on it.
 */
export function hostRecordFile(ctx: BaseContext, name: string): string {
  return join(agentenvDir("state"), "envs", `${ctx.runtime.name}-${name}.json`);
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
  return readHostRecord(ctx, home.name) ?? (home.readable && home.dir ? adoptRecord(ctx, home.name, readHomeFile(home.dir, recordPath)) : undefined);
}

export function removeHostRecord(ctx: BaseContext, name: string): void {
  rmSync(hostRecordFile(ctx, name), { force: true });
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
    writeHostRecord(ctx, name, record);
  } catch (error) {
    // adopted again next time: nothing it holds can steer the host
    ctx.log.debug(`could not keep the record of environment ${name}: ${messageOf(error)}`);
  }
  return record;
}
