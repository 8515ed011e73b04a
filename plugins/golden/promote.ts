import type { Database } from "bun:sqlite";
import {
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  fchmodSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
  type Stats,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "pathe";
import { syncFilesystem } from "../../core/linux.ts";
import { crashPoint } from "../../core/volumes.ts";
import { cp, type GoldenStore } from "./layout.ts";
import {
  closure,
  copyRegistrations,
  expectedNar,
  keepOnly,
  openReadOnly,
  openSessionCopy,
  openWritable,
  readRegistrations,
  registeredIn,
  screen,
  stats,
  type DropReason,
} from "./nixdb.ts";

/**
 * Both ways the golden store changes — promoting a session's new paths, and rebuilding
 * the stack into one layer (compaction, gc) — build a new layer under `layers/.new-<id>`
 * and then publish it by replacing `stack`. Nothing listed in `stack` is ever written,
 * so a session's mounted layers never change under it, and a crash before the publish
 * leaves the golden store as it was. Callers hold the store's exclusive lock.
 */

const dbPath = "var/nix/db/db.sqlite";

function lstatOrUndefined(path: string | Buffer): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** A store path's directory entry in SOURCE (a /nix tree); overlay whiteouts do not count. */
function entryIn(source: string, path: string): string | undefined {
  const entry = join(source, "store", basename(path));
  const stat = lstatOrUndefined(entry);
  return stat && !stat.isCharacterDevice() ? entry : undefined;
}

/**
 * REL inside ROOT, a session's tree, with its lstat; undefined when it is not there (or is
 * an overlay whiteout). A directory on the way that is not one stops it: a symlink the
 * session made there may point anywhere on this host.
 */
function inTree(root: string, rel: string): { path: string; stat: Stats } | undefined {
  let path = root;
  const parts = rel.split("/");
  for (const [i, part] of parts.entries()) {
    path = join(path, part);
    const stat = lstatOrUndefined(path);
    if (!stat || stat.isCharacterDevice()) return undefined;
    if (i === parts.length - 1) return { path, stat };
    if (!stat.isDirectory()) throw new Error(`the session's /nix/${parts.slice(0, i + 1).join("/")} is not a directory: nothing promoted`);
  }
  return undefined;
}

/** REL in the session's tree, when there; it must be a regular file. */
function regularFileInTree(root: string, rel: string): string | undefined {
  const found = inTree(root, rel);
  if (found && !found.stat.isFile()) throw new Error(`the session's /nix/${rel} is not a regular file: nothing promoted`);
  return found?.path;
}

/** Copies the regular file FILE to DEST, refusing a symlink even if one appeared meanwhile. */
function copyRegularFile(file: string, dest: string): void {
  const from = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  const to = openSync(dest, "wx", 0o600);
  try {
    if (!fstatSync(from).isFile()) throw new Error(`${file} is not a regular file`);
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = readSync(from, buffer, 0, buffer.length, null)) > 0; ) writeSync(to, buffer, 0, n);
  } finally {
    closeSync(from);
    closeSync(to);
  }
}

/**
 * Copies the session's Nix database (and its write-ahead log) out of SOURCE into DIR,
 * agentenv's own: the session may have made them symlinks to files of this host, and
 * SQLite writes beside a database it opens. Undefined when the session has none.
 */
function copySessionDatabase(source: string, dir: string): string | undefined {
  const db = regularFileInTree(source, dbPath);
  if (!db) return undefined;
  const copy = join(dir, "db.sqlite");
  copyRegularFile(db, copy);
  const wal = regularFileInTree(source, `${dbPath}-wal`);
  if (wal) copyRegularFile(wal, `${copy}-wal`);
  return copy;
}

/** Nix's NAR serialisation, fed to sha256 as it is written; only its digest and size are kept. */
class NarHash {
  private readonly hasher = new Bun.CryptoHasher("sha256");
  private readonly word = Buffer.alloc(8);
  size = 0;

  bytes(data: Uint8Array): void {
    this.hasher.update(data);
    this.size += data.length;
  }
  number(n: number): void {
    this.word.writeBigUInt64LE(BigInt(n));
    this.bytes(this.word);
  }
  padding(length: number): void {
    if (length % 8) this.bytes(new Uint8Array(8 - (length % 8)));
  }
  string(value: string | Uint8Array): void {
    const data = typeof value === "string" ? Buffer.from(value) : value;
    this.number(data.length);
    this.bytes(data);
    this.padding(data.length);
  }
  digest(): string {
    return this.hasher.digest("hex");
  }
}

const slash = Buffer.from("/");

function dumpNode(nar: NarHash, path: Buffer, canonicalise: boolean, buffer: Buffer): void {
  const stat = lstatSync(path);
  nar.string("(");
  nar.string("type");
  if (stat.isSymbolicLink()) {
    nar.string("symlink");
    nar.string("target");
    nar.string(readlinkSync(path, { encoding: "buffer" }));
  } else if (stat.isFile()) {
    nar.string("regular");
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const file = fstatSync(fd);
      const executable = (file.mode & 0o100) !== 0;
      if (executable) {
        nar.string("executable");
        nar.string("");
      }
      nar.string("contents");
      nar.number(file.size);
      for (let left = file.size; left > 0; ) {
        const n = readSync(fd, buffer, 0, Math.min(buffer.length, left), null);
        if (n === 0) throw new Error(`${path} changed while it was read`);
        nar.bytes(buffer.subarray(0, n));
        left -= n;
      }
      nar.padding(file.size);
      const mode = executable ? 0o555 : 0o444;
      if (canonicalise && (file.mode & 0o7777) !== mode) fchmodSync(fd, mode);
    } finally {
      closeSync(fd);
    }
  } else if (stat.isDirectory()) {
    nar.string("directory");
    // Nix orders entries by their bytes
    for (const name of readdirSync(path, { encoding: "buffer" }).sort(Buffer.compare)) {
      nar.string("entry");
      nar.string("(");
      nar.string("name");
      nar.string(name);
      nar.string("node");
      dumpNode(nar, Buffer.concat([path, slash, name]), canonicalise, buffer);
      nar.string(")");
    }
    if (canonicalise && (stat.mode & 0o7777) !== 0o555) chmodSync(path, 0o555);
  } else {
    throw new Error(`${path} is neither a file, a directory nor a symlink`);
  }
  nar.string(")");
}

/**
 * The NAR of the tree at ENTRY — what `nix-store --dump` writes — as "SHA256HEX SIZE",
 * the form `expectedNar` gives. Symlinks are read, never followed. With CANONICALISE,
 * modes become the ones Nix leaves in its store (0444 or 0555: no setuid bit, nothing
 * writable) on the way; the NAR does not record them.
 */
export function narOf(entry: string, canonicalise = false): string {
  const nar = new NarHash();
  nar.string("nix-archive-1");
  dumpNode(nar, Buffer.from(entry), canonicalise, Buffer.allocUnsafe(1 << 20));
  return `${nar.digest()} ${nar.size}`;
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
  crashPoint("layer:renamed");
  store.publishStack(stack);
  crashPoint("layer:published");
}

export interface Promotion {
  /** the new layer; "" when nothing was promoted */
  layer: string;
  paths: string[];
  bytes: number;
  /** registered in the session but not promoted, and why (`droppedWarnings` words it) */
  dropped: Map<string, DropReason>;
  /** entries of the session's store that it never registered: never promoted */
  strays: string[];
}

/** Entries of the session's store directory that its database does not register (whiteouts aside). */
function straysIn(store: string | undefined, registered: (path: string) => boolean): string[] {
  if (!store) return [];
  return readdirSync(store)
    .filter((name) => !registered(`/nix/store/${name}`) && !lstatOrUndefined(join(store, name))?.isCharacterDevice())
    .map((name) => `/nix/store/${name}`)
    .sort();
}

/**
 * Promotes the store paths a finished session added. SOURCE is the directory holding
 * the session's writes (overlay upper, or its full copy): hostile input, read without
 * following a symlink out of it. The record says which layers its /nix was made of and
 * where its own registrations begin. New paths are the ones it registered plus their
 * closure, minus what the golden store has — which also brings back what `store gc`
 * removed meanwhile and the new paths still reference, from the session's own (still
 * present) layers. Each passes `screen` and its contents are measured against the hash
 * the session registered before anything moves; then paths are hard-linked (no data copied)
 * and their rows copied into a copy of the top database.
 */
export async function promote(store: GoldenStore, source: string, session: { stack: readonly string[]; baseId: number }): Promise<Promotion | undefined> {
  const scratch = mkdtempSync(join(tmpdir(), "agentenv-promote-"));
  let sessionDb: Database | undefined;
  try {
    const sessionFile = copySessionDatabase(source, scratch);
    if (!sessionFile) return undefined; // the session never registered anything
    const ownStore = inTree(source, "store");
    if (ownStore && !ownStore.stat.isDirectory()) throw new Error("the session's /nix/store is not a directory: nothing promoted");
    sessionDb = openSessionCopy(sessionFile);
    const strays = straysIn(ownStore?.path, registeredIn(sessionDb));
    const stack = store.stack();
    const layer = newLayer(store);
    try {
      copyFileSync(store.topDatabase(stack), join(layer.dir, dbPath), constants.COPYFILE_FICLONE);
      const db = openWritable(join(layer.dir, dbPath));
      let open = true;
      try {
        const golden = db.query("SELECT 1 AS found FROM ValidPaths WHERE path = ? LIMIT 1");
        const inGolden = (path: string) => golden.get(path) !== null;
        const registrations = readRegistrations(sessionDb, session.baseId, inGolden);
        if (registrations.length === 0) return strays.length ? { layer: "", paths: [], bytes: 0, dropped: new Map(), strays } : undefined;
        const failed = new Map<string, DropReason>();
        // the session's own paths are hard-linked, never moved: a promotion killed midway
        // leaves its tree whole, so an `up` container's next `down` promotes it again
        const own = new Map<string, string>();
        const links = new Map<string, string>();
        for (const r of screen(registrations, inGolden).kept) {
          // a path the session's layers have is complete there; its upper may hold only
          // the files the session touched
          const layerEntry = session.stack.map((id) => entryIn(store.layerDir(id), r.path)).find(Boolean);
          const entry = layerEntry ?? (ownStore && entryIn(source, r.path));
          if (!entry) {
            failed.set(r.path, "missing");
            continue;
          }
          let measured: string;
          try {
            // the layers are golden: never written, so never canonicalised
            measured = narOf(entry, !layerEntry);
          } catch {
            measured = "";
          }
          if (measured !== expectedNar(r)) failed.set(r.path, "content");
          else if (layerEntry) links.set(r.path, layerEntry);
          else own.set(r.path, entry);
        }
        const { kept, dropped } = screen(registrations, inGolden, failed);
        const promoted = kept.map((r) => r.path);
        if (promoted.length === 0) return { layer: "", paths: [], bytes: 0, dropped, strays };
        await linkInto(join(layer.dir, "store"), promoted.map((p) => own.get(p) ?? links.get(p)!));
        const { bytes } = copyRegistrations(db, sessionFile, promoted);
        db.close();
        open = false;
        crashPoint("promote:built");
        publish(store, layer, [layer.id, ...stack]);
        return { layer: layer.id, paths: promoted, bytes, dropped, strays };
      } finally {
        if (open) db.close();
      }
    } finally {
      rmSync(layer.dir, { recursive: true, force: true });
    }
  } finally {
    sessionDb?.close();
    rmSync(scratch, { recursive: true, force: true });
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
    crashPoint("rebuild:built");
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
