import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, type Stats } from "node:fs";
import { join } from "pathe";
import { UserError } from "../../core/errors.ts";

/**
 * Three-way reconciliation of two copies of one home (`env sync NAME --host H`, and the
 * registry's `env pull --merge`): each side's manifest now, against the manifest both had
 * at their last sync (the base). What changed on one side only goes to the other; what
 * changed on both sides, differently, is a conflict that keeps both versions — `local`'s at
 * PATH, `other`'s beside it as `PATH.agentenv-conflict-OTHER-DATE`, on both sides — so
 * nothing is ever lost or silently overwritten. A file deleted on one side and changed on
 * the other is kept (changed), and listed.
 *
 * `mergeManifests` is pure: manifests in, a plan out (what to do to each side, and the
 * manifest both sides have once it is applied: the next base). `applyChanges` carries out
 * one side's part on a directory; where the sides' files really are (a volume on another
 * machine, a registry layer) is the caller's business: it extracts the files a side needs
 * (`plan.fetch…`) into a directory and applies there, or ships the plan to a helper.
 */

/** One file, or a symbolic link (`hash` is then the sha256 of its target), of a home. */
export interface ManifestEntry {
  /** sha256 of the content, hex */
  hash: string;
  /** permission bits (0o7777), e.g. 0o644 */
  mode: number;
  /** default "file" */
  type?: "file" | "symlink";
}

/** Every file and link of a home, by path relative to the home ("a/b.txt", no leading "/"). */
export type Manifest = Record<string, ManifestEntry>;

export type Side = "local" | "other";

/**
 * One step on one side. `write`: PATH gets the other side's PATH (or `from`, when the file
 * comes from another path there), with ENTRY's mode. `rename`: this side's PATH moves to
 * `to` (its own version, kept as the conflict copy). `delete`: PATH goes.
 */
export type Change =
  | { op: "write"; path: string; from: string; entry: ManifestEntry }
  | { op: "rename"; path: string; to: string }
  | { op: "delete"; path: string };

export interface Conflict {
  path: string;
  /** "both": changed on both sides, differently (the other's kept as `copy`); "deleted-local" / "deleted-other": deleted on that side, changed on the other (the changed file kept) */
  kind: "both" | "deleted-local" | "deleted-other";
  /** where the other side's version is kept, for kind "both" */
  copy?: string;
}

export interface MergePlan {
  /** what to do on each side, in order (renames before the writes that replace them) */
  local: Change[];
  other: Change[];
  conflicts: Conflict[];
  /** what both sides hold once both change lists are applied: record it as the next base */
  result: Manifest;
}

export interface MergeOptions {
  /** names the other side in conflict copies: a host or registry name (made path-safe here) */
  otherName: string;
  /** when, in conflict copies; default now (UTC, to the second) */
  date?: Date;
}

const sameEntry = (a: ManifestEntry | undefined, b: ManifestEntry | undefined): boolean =>
  a === undefined || b === undefined ? a === b : a.hash === b.hash && a.mode === b.mode && (a.type ?? "file") === (b.type ?? "file");

/** `2026-12-05T131500Z`: sortable, no ":" (paths on every system, engine -v syntax). */
export function conflictStamp(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "").replaceAll("-", "").replace("T", "-");
}

/** The path the other side's version of PATH is kept under; never one either side already has. */
export function conflictPath(path: string, otherName: string, date: Date, taken: (p: string) => boolean): string {
  const safe = otherName.replace(/[^A-Za-z0-9._-]+/g, "_") || "other";
  const base = `${path}.agentenv-conflict-${safe}-${conflictStamp(date)}`;
  let candidate = base;
  for (let n = 2; taken(candidate); n++) candidate = `${base}-${n}`;
  return candidate;
}

/**
 * The merge: BASE (both sides at the last sync; {} for the first one), LOCAL and OTHER
 * now. Pure: reads nothing, writes nothing. Paths are checked (relative, no "." or ".."
 * part, no NUL): a manifest may come from a home a container wrote.
 */
export function mergeManifests(base: Manifest, local: Manifest, other: Manifest, options: MergeOptions): MergePlan {
  for (const manifest of [base, local, other]) for (const path of Object.keys(manifest)) checkManifestPath(path);
  const date = options.date ?? new Date();
  const plan: MergePlan = { local: [], other: [], conflicts: [], result: {} };
  const renames: MergePlan = { local: [], other: [], conflicts: [], result: {} };
  const paths = [...new Set([...Object.keys(base), ...Object.keys(local), ...Object.keys(other)])].sort();
  const taken = (p: string) => p in local || p in other || p in base || p in plan.result;
  for (const path of paths) {
    const was = base[path];
    const mine = local[path];
    const theirs = other[path];
    if (sameEntry(mine, theirs)) {
      if (mine) plan.result[path] = mine;
      continue;
    }
    const localChanged = !sameEntry(was, mine);
    const otherChanged = !sameEntry(was, theirs);
    if (!otherChanged) {
      // only local changed: the other side follows
      if (mine) {
        plan.other.push({ op: "write", path, from: path, entry: mine });
        plan.result[path] = mine;
      } else plan.other.push({ op: "delete", path });
      continue;
    }
    if (!localChanged) {
      if (theirs) {
        plan.local.push({ op: "write", path, from: path, entry: theirs });
        plan.result[path] = theirs;
      } else plan.local.push({ op: "delete", path });
      continue;
    }
    // changed on both sides, differently
    if (!mine) {
      plan.local.push({ op: "write", path, from: path, entry: theirs! });
      plan.result[path] = theirs!;
      plan.conflicts.push({ path, kind: "deleted-local" });
      continue;
    }
    if (!theirs) {
      plan.other.push({ op: "write", path, from: path, entry: mine });
      plan.result[path] = mine;
      plan.conflicts.push({ path, kind: "deleted-other" });
      continue;
    }
    const copy = conflictPath(path, options.otherName, date, taken);
    // local: the other's version beside its own; other: its own moves aside, local's takes PATH
    plan.local.push({ op: "write", path: copy, from: path, entry: theirs });
    renames.other.push({ op: "rename", path, to: copy });
    plan.other.push({ op: "write", path, from: path, entry: mine });
    plan.result[path] = mine;
    plan.result[copy] = theirs;
    plan.conflicts.push({ path, kind: "both", copy });
  }
  return { ...plan, other: [...renames.other, ...plan.other] };
}

/** A manifest path: relative, "/"-separated, no empty, "." or ".." part, no NUL. */
export function checkManifestPath(path: string): void {
  const parts = path.split("/");
  if (!path || path.includes("\0") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new UserError(`refusing a home manifest entry "${path.replaceAll("\0", "\\0")}": not a plain relative path`);
  }
}

/** The paths SIDE must receive from its counterpart (the `from` of its writes), for the caller to fetch. */
export function neededFrom(changes: readonly Change[]): string[] {
  return [...new Set(changes.flatMap((c) => (c.op === "write" ? [c.from] : [])))];
}

function sha256(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * The manifest of a directory: its files and links (not followed), each with its hash and
 * mode; directories are implied by their contents. Anything else (a FIFO, a device) and
 * whatever `skip` names is left out.
 */
export function manifestOf(root: string, skip: (path: string) => boolean = () => false): Manifest {
  const manifest: Manifest = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(rel ? join(root, rel) : root).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      if (skip(path)) continue;
      const full = join(root, path);
      const stat = lstatSync(full);
      if (stat.isDirectory()) walk(path);
      else if (stat.isSymbolicLink()) manifest[path] = { hash: sha256(readlinkSync(full)), mode: 0o777, type: "symlink" };
      else if (stat.isFile()) manifest[path] = { hash: sha256(readFileSync(full)), mode: stat.mode & 0o7777 };
    }
  };
  walk("");
  return manifest;
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** Every parent directory of PATH under ROOT must be a real directory (made when missing), never a link: nothing is written through one. */
function safeParent(root: string, path: string): string {
  const parts = path.split("/");
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    dir = join(dir, part);
    const stat = lstatOrUndefined(dir);
    if (!stat) mkdirSync(dir, { mode: 0o755 });
    else if (!stat.isDirectory()) throw new UserError(`cannot write ${path}: ${dir} is not a directory (a link or a file)`);
  }
  return join(root, path);
}

/**
 * Carries out one side's changes on ROOT, the files a write needs taken from INCOMING (the
 * counterpart's files at their paths, e.g. extracted from its archive). Links are never
 * followed: a parent that is a link is refused, a link is replaced, not written through.
 * Each write lands atomically (a temporary file beside it, then a rename).
 */
export function applyChanges(root: string, changes: readonly Change[], incoming: string): void {
  for (const change of changes) {
    checkManifestPath(change.path);
    const target = safeParent(root, change.path);
    if (change.op === "delete") {
      if (lstatOrUndefined(target)) rmSync(target, { force: true, recursive: false });
      continue;
    }
    if (change.op === "rename") {
      checkManifestPath(change.to);
      if (lstatOrUndefined(target)) renameSync(target, safeParent(root, change.to));
      continue;
    }
    checkManifestPath(change.from);
    const source = join(incoming, change.from);
    const stat = lstatOrUndefined(source);
    const tmp = `${target}.agentenv-tmp-${crypto.randomUUID().slice(0, 8)}`;
    if (change.entry.type === "symlink") {
      if (!stat?.isSymbolicLink()) throw new UserError(`the incoming ${change.from} is not the link the manifest says`);
      symlinkSync(readlinkSync(source), tmp);
    } else {
      if (!stat?.isFile()) throw new UserError(`the incoming ${change.from} is not the file the manifest says`);
      copyFileSync(source, tmp);
      chmodSync(tmp, change.entry.mode & 0o7777);
      if (sha256(readFileSync(tmp)) !== change.entry.hash) {
        rmSync(tmp, { force: true });
        throw new UserError(`${change.from} changed while it was being synced`, "run the sync again");
      }
    }
    const existing = lstatOrUndefined(target);
    if (existing?.isDirectory()) {
      rmSync(tmp, { force: true });
      throw new UserError(`cannot write ${change.path}: it is a directory on this side`);
    }
    renameSync(tmp, target);
  }
}

/** Whether the files under ROOT now match MANIFEST for the paths it names (a check after applying). */
export function matches(root: string, manifest: Manifest): boolean {
  const now = manifestOf(root);
  return Object.entries(manifest).every(([path, entry]) => sameEntry(now[path], entry));
}

