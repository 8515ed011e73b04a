import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "pathe";
import { isLocked, lockFile, mountsUnder, unmount, withFileLock, type FileLock } from "../../core/linux.ts";
import { crashPoint, writeAtomic } from "../../core/volumes.ts";

/**
 * The golden store on disk: the directory of the engine volume that holds it.
 *
 *   agentenv-store.json   marker: which volume, seeded from which image, when
 *   stack                 the current layer ids, top first; replaced only by rename
 *   lock                  shared: starting a session — exclusive: promote, gc, reap, reclaim
 *   layers/<id>/          a partial /nix (store/…, var/nix/db/db.sqlite); never changed once listed
 *   layers/.new-<id>/     a layer being built; removed if its builder died
 *   sessions/<name>/      one per session: session.json, lock (held while it runs), upper/, work/, merged/
 *   promotions.jsonl      one line per promotion
 *
 * See docs/store.md for why this is safe with concurrent sessions and crashes.
 */

export interface StoreMarker {
  volume: string;
  created: string;
  image: string;
  imageHash?: string;
}

export interface SessionRecord {
  /** the container the session runs in: reaping asks the engine about it */
  container: string;
  /** the layers its /nix is made of, top first: they stay on disk while it exists */
  stack: string[];
  /** the highest ValidPaths id of its starting database: rows above it are the session's own */
  baseId: number;
  mode: "golden" | "ephemeral";
  started: string;
  /**
   * a long-running container (`agentenv up`): no agentenv holds its lock while it runs,
   * and a stopped one is kept for `agentenv down` (or the next `up`) to promote
   */
  detached?: boolean;
}

export interface PromotionRecord {
  time: string;
  session: string;
  layer: string;
  paths: number;
  bytes: number;
}

export const markerName = "agentenv-store.json";

/** `cp ARGS…`; WHAT names the step in the error when it fails. */
export async function cp(args: string[], what: string): Promise<void> {
  const child = Bun.spawn(["cp", ...args], { stderr: "pipe" });
  if ((await child.exited) !== 0) throw new Error(`${what} failed: ${(await new Response(child.stderr).text()).trim()}`);
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Whether PID is a live process (signal 0 checks without sending anything). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class GoldenStore {
  constructor(readonly root: string) {}

  get layersDir() {
    return join(this.root, "layers");
  }
  get sessionsDir() {
    return join(this.root, "sessions");
  }
  /** where a session's directory goes to be deleted: outside sessions/, so a removal killed midway is never taken for a session */
  get trashDir() {
    return join(this.root, "trash");
  }
  layerDir(id: string) {
    return join(this.layersDir, id);
  }
  sessionDir(name: string) {
    return join(this.sessionsDir, name);
  }

  marker(): StoreMarker | undefined {
    try {
      return JSON.parse(readFileSync(join(this.root, markerName), "utf8")) as StoreMarker;
    } catch {
      return undefined;
    }
  }

  /** Called once the seed layer "0" holds the image's /nix. */
  finishSeed(marker: StoreMarker): void {
    mkdirSync(this.sessionsDir, { recursive: true });
    writeAtomic(join(this.root, "stack"), "0\n");
    writeAtomic(join(this.root, markerName), `${JSON.stringify(marker, null, 2)}\n`);
  }

  stack(): string[] {
    return readFileSync(join(this.root, "stack"), "utf8").split("\n").filter(Boolean);
  }

  publishStack(stack: readonly string[]): void {
    writeAtomic(join(this.root, "stack"), `${stack.join("\n")}\n`);
  }

  lock(mode: "shared" | "exclusive"): FileLock {
    return lockFile(join(this.root, "lock"), mode)!;
  }

  /** Runs FN holding the store's lock in MODE. */
  withLock<T>(mode: "shared" | "exclusive", fn: () => T | Promise<T>): Promise<T> {
    return withFileLock(join(this.root, "lock"), mode, fn);
  }

  /** The store database a session starting now sees: the topmost layer's. */
  topDatabase(stack = this.stack()): string {
    for (const id of stack) {
      const file = join(this.layerDir(id), "var/nix/db/db.sqlite");
      if (existsSync(file)) return file;
    }
    throw new Error(`golden store ${this.root} has no Nix database (stack: ${stack.join(" ")})`);
  }

  /** A fresh layer id: one more than any layer on disk (callers hold the exclusive lock). */
  nextLayerId(): string {
    let max = -1;
    for (const name of readdirSync(this.layersDir)) {
      const n = Number(name.replace(/^\.new-/, ""));
      if (Number.isInteger(n) && n > max) max = n;
    }
    return String(max + 1);
  }

  sessionNames(): string[] {
    try {
      // ".gone-…": a removal that older versions made inside sessions/ and that was killed midway
      return readdirSync(this.sessionsDir).filter((name) => !name.startsWith(".gone-"));
    } catch {
      return [];
    }
  }

  session(name: string): SessionRecord | undefined {
    try {
      return JSON.parse(readFileSync(join(this.sessionDir(name), "session.json"), "utf8")) as SessionRecord;
    } catch {
      return undefined;
    }
  }

  /** A session whose agentenv no longer holds its lock: ended badly, or still starting/ending. */
  isAbandoned(name: string): boolean {
    try {
      return !isLocked(join(this.sessionDir(name), "lock"));
    } catch (error) {
      // no lock file: the session is ending (its directory is going away), or died
      // before taking it — then it never mounted anything
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      return existsSync(this.sessionDir(name)) && !existsSync(join(this.sessionDir(name), "session.json"));
    }
  }

  /** Layer directories on disk that the current stack does not list (cheap: one readdir). */
  hasUnlistedLayers(): boolean {
    const listed = new Set(this.stack());
    return readdirSync(this.layersDir).some((name) => !listed.has(name));
  }

  /**
   * Removes a session's directory: unmounts whatever is still mounted in it first, so
   * the removal never reaches through a mount into the layers.
   */
  async removeSession(name: string): Promise<void> {
    const dir = this.sessionDir(name);
    // detach when busy (a host shell inside it): the clone is discarded either way
    for (const point of await mountsUnder(dir)) unmount(point, { detachWhenBusy: true });
    this.emptyTrash();
    // out of sessions/ in one step, so no one sees it half-deleted, nor takes what a kill
    // leaves of it for a session (a detached one would block `store reset` for ever)
    mkdirSync(this.trashDir, { recursive: true });
    const gone = join(this.trashDir, `${name}-${process.pid}`);
    try {
      renameSync(dir, gone);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      throw error;
    }
    crashPoint("store:trashed");
    rmSync(gone, { recursive: true, force: true });
  }

  /**
   * Finishes removals that were killed midway: entries in trash/ (and `.gone-` ones older
   * versions left in sessions/) whose agentenv process is gone. Nothing is mounted in them:
   * a removal unmounts before it moves the directory.
   */
  emptyTrash(): void {
    const leftovers = [
      ...readdirOrEmpty(this.trashDir).map((name) => join(this.trashDir, name)),
      ...readdirOrEmpty(this.sessionsDir).filter((name) => name.startsWith(".gone-")).map((name) => join(this.sessionsDir, name)),
    ];
    for (const path of leftovers) {
      const pid = Number(path.slice(path.lastIndexOf("-") + 1));
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) continue;
      rmSync(path, { recursive: true, force: true });
    }
  }

  /**
   * Deletes layers no one can see any more: not in the current stack and not in the
   * stack of any session directory that still exists. Caller holds the exclusive lock.
   */
  reclaimLayers(): string[] {
    const keep = new Set(this.stack());
    for (const name of this.sessionNames()) for (const id of this.session(name)?.stack ?? []) keep.add(id);
    const removed: string[] = [];
    // a session directory without session.json died while being created, before it
    // mounted anything (creation writes the record first, under the shared lock)
    for (const name of readdirSync(this.layersDir)) {
      if (keep.has(name)) continue;
      rmSync(this.layerDir(name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  lastPromotion(): PromotionRecord | undefined {
    try {
      const lines = readFileSync(join(this.root, "promotions.jsonl"), "utf8").trim().split("\n");
      return lines.length && lines[0] ? (JSON.parse(lines[lines.length - 1]!) as PromotionRecord) : undefined;
    } catch {
      return undefined;
    }
  }

  recordPromotion(record: PromotionRecord): void {
    const fd = openSync(join(this.root, "promotions.jsonl"), "a");
    try {
      writeSync(fd, `${JSON.stringify(record)}\n`);
    } finally {
      closeSync(fd);
    }
  }
}
