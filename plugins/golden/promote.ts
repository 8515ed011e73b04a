import { copyFileSync, constants, existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { basename, join } from "pathe";
import { syncFilesystem } from "../../core/linux.ts";
import { cp, type GoldenStore } from "./layout.ts";
import { closure, copyRegistrations, keepOnly, missingFrom, openReadOnly, openWritable, referencesOf, stats } from "./nixdb.ts";

/**
 * Both ways the golden store changes — promoting a session's new paths, and rebuilding
 * the stack into one layer (compaction, gc) — build a new layer under `layers/.new-<id>`
 * and then publish it by replacing `stack`. Nothing listed in `stack` is ever written,
 * so a session's mounted layers never change under it, and a crash before the publish
 * leaves the golden store as it was. Callers hold the store's exclusive lock.
 */

const dbPath = "var/nix/db/db.sqlite";

/** A store path's directory entry in SOURCE (a /nix tree); overlay whiteouts do not count. */
function entryIn(source: string, path: string): string | undefined {
  const entry = join(source, "store", basename(path));
  try {
    const stat = lstatSync(entry);
    return stat.isCharacterDevice() ? undefined : entry;
  } catch {
    return undefined;
  }
}

/** Hard-links ENTRIES into DIR, a few hundred per `cp` call. */
async function linkInto(dir: string, entries: readonly string[]): Promise<void> {
  for (let i = 0; i < entries.length; i += 500) {
    await cp(["-al", "-t", dir, ...entries.slice(i, i + 500)], "linking store paths");
  }
}

function newLayer(store: GoldenStore): { id: string; dir: string } {
  const id = store.nextLayerId();
  const dir = join(store.layersDir, `.new-${id}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "store"), { recursive: true });
  mkdirSync(join(dir, "var/nix/db"), { recursive: true });
  return { id, dir };
}

/** Flushes the new layer, moves it into place and makes it visible. */
function publish(store: GoldenStore, layer: { id: string; dir: string }, stack: string[]): void {
  syncFilesystem(layer.dir);
  renameSync(layer.dir, store.layerDir(layer.id));
  store.publishStack(stack);
}

export interface Promotion {
  layer: string;
  paths: string[];
  bytes: number;
  /** valid in the session but not promotable (contents not found); listed for the log */
  skipped: string[];
}

/**
 * Promotes the store paths a finished session added. SOURCE is the directory holding
 * the session's writes (overlay upper, or its full copy); the record says which layers
 * its /nix was made of and where its own registrations begin. New paths are the ones it
 * registered plus their closure, minus what the golden store has — which also brings
 * back what `store gc` removed meanwhile and the new paths still reference, from the
 * session's own (still present) layers. Paths are moved (rename: no copy), their rows
 * copied into a copy of the top database.
 */
export async function promote(store: GoldenStore, source: string, session: { stack: readonly string[]; baseId: number }): Promise<Promotion | undefined> {
  const sessionDb = join(source, dbPath);
  if (!existsSync(sessionDb)) return undefined; // the session never registered anything
  const stack = store.stack();
  const layer = newLayer(store);
  try {
    copyFileSync(store.topDatabase(stack), join(layer.dir, dbPath), constants.COPYFILE_FICLONE);
    const db = openWritable(join(layer.dir, dbPath));
    let open = true;
    try {
      const candidates = missingFrom(db, sessionDb, session.baseId);
      if (candidates.length === 0) return undefined;
      const moves = new Map<string, string>();
      const links = new Map<string, string>();
      for (const path of candidates) {
        // a path the session's layers have is complete there; its upper may hold only
        // the files the session touched
        const layerEntry = session.stack.map((id) => entryIn(store.layerDir(id), path)).find(Boolean);
        if (layerEntry) links.set(path, layerEntry);
        else {
          const own = entryIn(source, path);
          if (own) moves.set(path, own);
        }
      }
      // a path whose contents are nowhere cannot be valid, nor can anything referencing it
      const skipped = new Set(candidates.filter((p) => !moves.has(p) && !links.has(p)));
      if (skipped.size) {
        const refs = referencesOf(db, sessionDb, candidates);
        for (let changed = true; changed; ) {
          changed = false;
          for (const path of candidates) {
            if (!skipped.has(path) && refs.get(path)!.some((r) => skipped.has(r))) {
              skipped.add(path);
              changed = true;
            }
          }
        }
      }
      const promoted = candidates.filter((p) => !skipped.has(p));
      if (promoted.length === 0) return { layer: "", paths: [], bytes: 0, skipped: [...skipped] };
      for (const path of promoted) if (moves.has(path)) renameSync(moves.get(path)!, join(layer.dir, "store", basename(path)));
      await linkInto(join(layer.dir, "store"), promoted.filter((p) => links.has(p)).map((p) => links.get(p)!));
      const { bytes } = copyRegistrations(db, sessionDb, promoted);
      db.close();
      open = false;
      publish(store, layer, [layer.id, ...stack]);
      return { layer: layer.id, paths: promoted, bytes, skipped: [...skipped] };
    } finally {
      if (open) db.close();
    }
  } finally {
    rmSync(layer.dir, { recursive: true, force: true });
  }
}

/**
 * Rebuilds the whole stack as one layer holding only KEEP's paths (all valid paths when
 * KEEP is undefined), hard-linked from the old layers — no file data is copied. Old
 * layers are deleted once no session directory refers to them.
 */
export async function rebuild(store: GoldenStore, keep?: ReadonlySet<string>): Promise<{ layer: string; removed: string[] }> {
  const stack = store.stack();
  const layer = newLayer(store);
  try {
    // everything but the store (the database, profiles, gcroots), bottom layer first
    for (const id of [...stack].reverse()) {
      for (const name of readdirSync(store.layerDir(id))) {
        if (name === "store") continue;
        await cp(["-a", join(store.layerDir(id), name), `${layer.dir}/`], `copying layer ${id}`);
      }
    }
    const db = openWritable(join(layer.dir, dbPath));
    let removed: string[];
    let live: Set<string>;
    try {
      live = new Set((db.query("SELECT path FROM ValidPaths").all() as Array<{ path: string }>).map((r) => r.path));
      removed = keep ? keepOnly(db, keep) : [];
      for (const path of removed) live.delete(path);
    } finally {
      db.close();
    }
    const placed = new Set<string>();
    for (const id of stack) {
      const entries: string[] = [];
      for (const name of readdirSync(join(store.layerDir(id), "store"))) {
        const path = `/nix/store/${name}`;
        if (live.has(path) && !placed.has(path)) {
          placed.add(path);
          entries.push(join(store.layerDir(id), "store", name));
        }
      }
      await linkInto(join(layer.dir, "store"), entries);
    }
    publish(store, layer, [layer.id]);
    return { layer: layer.id, removed };
  } finally {
    rmSync(layer.dir, { recursive: true, force: true });
  }
}

/** Paths kept by `store gc`: the closure of ROOTS in the current database. */
export function liveClosure(store: GoldenStore, roots: Iterable<string>): Set<string> {
  const db = openReadOnly(store.topDatabase());
  try {
    return closure(db, roots);
  } finally {
    db.close();
  }
}

export function storeStats(store: GoldenStore): ReturnType<typeof stats> {
  const db = openReadOnly(store.topDatabase());
  try {
    return stats(db);
  } finally {
    db.close();
  }
}
