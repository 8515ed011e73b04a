import { Database, constants } from "bun:sqlite";

/**
 * The Nix store database (`/nix/var/nix/db/db.sqlite`, schema 10 as of Nix 2.x): which
 * store paths are valid, their hashes and sizes, and the references between them. A path
 * exists for Nix only through its row in ValidPaths; Nix writes that row after the path's
 * contents are complete, so a valid row in a session's database vouches for its files.
 */

/** Opens a database a mounted store layer holds without writing anything next to it. */
export function openReadOnly(file: string): Database {
  return new Database(`file:${file}?immutable=1`, constants.SQLITE_OPEN_READONLY | constants.SQLITE_OPEN_URI);
}

/** Opens a database agentenv owns (a new layer's copy, a finished session's). */
export function openWritable(file: string): Database {
  const db = new Database(file);
  // a layer must hold one self-contained file: no -wal beside it once closed
  db.run("PRAGMA journal_mode = DELETE");
  // a session's database attached to it is hostile: nothing its schema defines may run
  db.run("PRAGMA trusted_schema = OFF");
  db.run("PRAGMA synchronous = FULL");
  return db;
}

export interface StoreStats {
  paths: number;
  /** sum of the paths' NAR sizes: what the store holds, in bytes */
  bytes: number;
}

export function stats(db: Database): StoreStats {
  const row = db.query("SELECT count(*) AS paths, coalesce(sum(narSize), 0) AS bytes FROM ValidPaths").get() as StoreStats;
  return { paths: row.paths, bytes: row.bytes };
}

/** The highest ValidPaths id: every path registered later gets a higher one. */
export function lastId(db: Database): number {
  return (db.query("SELECT coalesce(max(id), 0) AS id FROM ValidPaths").get() as { id: number }).id;
}

/** Nix's base-32 alphabet: digits and lower-case letters but e, o, u and t. */
const nix32 = "0123456789abcdfghijklmnpqrsvwxyz";

/**
 * Whether PATH is a store path Nix itself would accept: `/nix/store/`, 32 characters of
 * its base-32 alphabet, `-`, then a name of at most 211 of `A-Za-z0-9+-._?=` that does not
 * start with `.` — so never `.`, `..`, a hidden file or anything holding a `/`.
 */
export function isStorePath(path: unknown): path is string {
  return typeof path === "string" && /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-(?!\.)[A-Za-z0-9+\-._?=]{1,211}$/.test(path);
}

/**
 * One store path as a session's database registers it. The session wrote that database:
 * every field is hostile input until `screen` has passed it.
 */
export interface Registration {
  path: string;
  /** the NAR hash, as Nix records it: `sha256:` and base 16 (base 32 in old databases) */
  hash: string;
  narSize: number | null;
  deriver: string | null;
  ca: string | null;
  /** the paths it references; undefined for a reference to no registered path at all */
  references: Array<string | undefined>;
}

const sessionTables = ["ValidPaths", "Refs", "DerivationOutputs"];

/**
 * Opens agentenv's private copy of a session's database. Only its tables are read (a view
 * or trigger the session defined never runs here) and it becomes one self-contained file,
 * which `copyRegistrations` can attach.
 */
export function openSessionCopy(file: string): Database {
  const db = new Database(file);
  try {
    db.run("PRAGMA trusted_schema = OFF");
    db.run("PRAGMA journal_mode = DELETE");
    const kinds = new Map((db.query("SELECT name, type FROM sqlite_master").all() as Array<{ name: string; type: string }>).map((r) => [r.name, r.type]));
    for (const table of sessionTables) {
      if (kinds.get(table) !== "table") throw new Error(`the session's Nix database has no ${table} table: not promoted`);
    }
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

const text = (value: unknown): string => (typeof value === "string" ? value : String(value));
const optionalText = (value: unknown): string | null => (value === null || value === undefined ? null : text(value));

/**
 * What a session would add to the golden store: the paths it registered (id above
 * SINCE_ID; 0 for all) and everything they reference, minus what `inGolden` has.
 */
export function readRegistrations(session: Database, sinceId: number, inGolden: (path: string) => boolean): Registration[] {
  const rows = session
    .query(`WITH RECURSIVE wanted(id) AS (
        SELECT id FROM ValidPaths WHERE id > ?
        UNION SELECT r.reference FROM Refs r JOIN wanted w ON r.referrer = w.id)
      SELECT v.id, v.path, v.hash, v.narSize, v.deriver, v.ca FROM ValidPaths v JOIN wanted w ON w.id = v.id ORDER BY v.id`)
    .all(sinceId) as Array<{ id: number; path: unknown; hash: unknown; narSize: unknown; deriver: unknown; ca: unknown }>;
  const references = session.query("SELECT t.path AS path FROM Refs r LEFT JOIN ValidPaths t ON t.id = r.reference WHERE r.referrer = ?");
  const registrations: Registration[] = [];
  for (const row of rows) {
    const path = text(row.path);
    if (inGolden(path)) continue;
    registrations.push({
      path,
      hash: text(row.hash),
      narSize: typeof row.narSize === "number" ? row.narSize : null,
      deriver: optionalText(row.deriver),
      ca: optionalText(row.ca),
      references: (references.all(row.id) as Array<{ path: unknown }>).map((r) => (r.path === null ? undefined : text(r.path))),
    });
  }
  return registrations;
}

/** Whether the session's database registers PATH at all (whatever its name). */
export function registeredIn(session: Database): (path: string) => boolean {
  const query = session.query("SELECT 1 AS found FROM ValidPaths WHERE path = ? LIMIT 1");
  return (path) => query.get(path) !== null;
}

/** Why a path of a session's is not promoted. */
export type DropReason = "name" | "registration" | "missing" | "content" | "reference";

const dropMessages: Record<DropReason, string> = {
  name: "not a valid store path",
  registration: "its registration in the session's Nix database is malformed",
  missing: "contents missing",
  content: "content does not match the hash the session registered",
  reference: "references a path neither promoted nor in the golden store",
};

/** A well-formed registration: what Nix itself writes, so what Nix can read back. */
function wellFormed(r: Registration): boolean {
  return (
    /^sha256:([0-9a-f]{64}|[0-9a-df-np-sv-z]{52})$/.test(r.hash) &&
    Number.isSafeInteger(r.narSize) &&
    r.narSize! > 0 &&
    (!r.deriver || isStorePath(r.deriver)) &&
    (!r.ca || /^(text:|fixed:(r:)?)(md5|sha1|sha256|sha512):[0-9A-Za-z+/=]+$/.test(r.ca))
  );
}

const isDerivation = (path: string) => path.endsWith(".drv");

/**
 * The rules every promotion applies, whichever way it copies: of a session's
 * REGISTRATIONS, the ones it may publish. Dropped: a name that is no valid store path; a
 * malformed registration (a path registered twice, a bad hash or size, deriver or
 * content address, references forming a cycle); what FAILED already names (contents
 * missing, or not matching the registered hash and size); and then, repeatedly, a path
 * referencing anything neither kept nor in the golden store. Kept paths come in an order
 * Nix can register them in: references first (and outputs before derivations where that
 * order allows, so copies batch).
 */
export function screen(
  registrations: readonly Registration[],
  inGolden: (path: string) => boolean,
  failed: ReadonlyMap<string, DropReason> = new Map(),
): { kept: Registration[]; dropped: Map<string, DropReason> } {
  const dropped = new Map(failed);
  const seen = new Map<string, number>();
  for (const r of registrations) seen.set(r.path, (seen.get(r.path) ?? 0) + 1);
  for (const r of registrations) {
    if (dropped.has(r.path)) continue;
    if (!isStorePath(r.path)) dropped.set(r.path, "name");
    else if (seen.get(r.path)! > 1 || !wellFormed(r)) dropped.set(r.path, "registration");
  }
  const byPath = new Map(registrations.map((r) => [r.path, r]));
  const referrers = new Map<string, string[]>();
  for (const r of registrations) {
    for (const ref of r.references) {
      if (ref === r.path) continue;
      if (ref === undefined || (!byPath.has(ref) && !inGolden(ref))) {
        if (!dropped.has(r.path)) dropped.set(r.path, "reference");
      } else if (byPath.has(ref)) referrers.set(ref, [...(referrers.get(ref) ?? []), r.path]);
    }
  }
  const drop = (path: string, reason: DropReason) => {
    const queue = [path];
    if (!dropped.has(path)) dropped.set(path, reason);
    while (queue.length) {
      for (const referrer of referrers.get(queue.pop()!) ?? []) {
        if (dropped.has(referrer)) continue;
        dropped.set(referrer, "reference");
        queue.push(referrer);
      }
    }
  };
  for (const path of [...dropped.keys()]) drop(path, dropped.get(path)!);

  // references first; what is still waiting at the end waits on a cycle
  const waiting = new Map<string, number>();
  const ready: Record<"output" | "derivation", string[]> = { output: [], derivation: [] };
  for (const r of registrations) {
    if (dropped.has(r.path) || waiting.has(r.path)) continue;
    const count = new Set(r.references.filter((ref) => ref !== r.path && byPath.has(ref!))).size;
    waiting.set(r.path, count);
    if (count === 0) ready[isDerivation(r.path) ? "derivation" : "output"].push(r.path);
  }
  const kept: Registration[] = [];
  let kind: "output" | "derivation" = "output";
  while (ready.output.length || ready.derivation.length) {
    if (!ready[kind].length) kind = kind === "output" ? "derivation" : "output";
    const path = ready[kind].shift()!;
    kept.push(byPath.get(path)!);
    for (const referrer of new Set(referrers.get(path))) {
      const left = waiting.get(referrer)! - 1;
      waiting.set(referrer, left);
      if (left === 0) ready[isDerivation(referrer) ? "derivation" : "output"].push(referrer);
    }
  }
  if (kept.length < waiting.size) {
    const placed = new Set(kept.map((r) => r.path));
    for (const path of waiting.keys()) if (!placed.has(path)) drop(path, "registration");
  }
  return { kept, dropped };
}

/** What measuring a kept path's NAR must give: its sha256 in base 16 and its size, as "HEX SIZE". */
export function expectedNar(r: Registration): string {
  const digest = r.hash.slice("sha256:".length);
  return `${digest.length === 64 ? digest : nix32ToHex(digest)} ${r.narSize}`;
}

/** Nix's base-32 (least significant digit last) → base 16. */
function nix32ToHex(digits: string): string {
  const bytes = new Uint8Array(Math.floor((digits.length * 5) / 8));
  for (let n = 0; n < digits.length; n++) {
    const digit = nix32.indexOf(digits[digits.length - n - 1]!);
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    bytes[i]! |= (digit << j) & 0xff;
    if (j > 3 && i + 1 < bytes.length) bytes[i + 1]! |= digit >> (8 - j);
  }
  return Buffer.from(bytes).toString("hex");
}

/** A name from a session, safe to print on one line of a terminal. */
function printable(name: string): string {
  const shown = name.length > 300 ? `${name.slice(0, 300)}…` : name;
  return shown.replace(/[^\x20-\x7e]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

function listed(paths: readonly string[], max = 20): string {
  const shown = paths.slice(0, max).map(printable).join(" ");
  return paths.length > max ? `${shown} … and ${paths.length - max} more` : shown;
}

/**
 * The warnings for what a promotion left out, one line per reason: DROPPED registrations,
 * and STRAYS, the entries of the session's store that no registration names.
 */
export function droppedWarnings(dropped: ReadonlyMap<string, DropReason>, strays: readonly string[] = []): string[] {
  const lines: string[] = [];
  for (const reason of Object.keys(dropMessages) as DropReason[]) {
    const paths = [...dropped].filter(([, why]) => why === reason).map(([path]) => path);
    if (paths.length) lines.push(`not promoted (${dropMessages[reason]}): ${listed(paths)}`);
  }
  if (strays.length) lines.push(`not promoted (in the session's store but not registered in its Nix database): ${listed(strays)}`);
  return lines;
}

/**
 * Copies the rows of PATHS (registered in `otherFile`, kept by `screen`) into `db`:
 * ValidPaths, their references and derivation outputs, ids renumbered. `screen` saw that
 * every reference is valid in `db` or among PATHS, so the result is a closed, consistent
 * store. Returns the NAR size they add up to.
 */
export function copyRegistrations(db: Database, otherFile: string, paths: readonly string[]): { bytes: number } {
  db.run("ATTACH DATABASE ? AS other", [otherFile]);
  try {
    return db.transaction(() => {
      db.run("CREATE TEMP TABLE promoted (path TEXT PRIMARY KEY)");
      const add = db.prepare("INSERT INTO promoted (path) VALUES (?)");
      for (const path of paths) add.run(path);
      db.run(`INSERT INTO main.ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca)
        SELECT v.path, v.hash, v.registrationTime, v.deriver, v.narSize, v.ultimate, v.sigs, v.ca
        FROM other.ValidPaths v JOIN promoted p ON p.path = v.path ORDER BY v.id`);
      db.run(`INSERT OR IGNORE INTO main.Refs (referrer, reference)
        SELECT mf.id, mt.id
        FROM other.Refs r
        JOIN other.ValidPaths f ON f.id = r.referrer
        JOIN promoted p ON p.path = f.path
        JOIN other.ValidPaths t ON t.id = r.reference
        JOIN main.ValidPaths mf ON mf.path = f.path
        JOIN main.ValidPaths mt ON mt.path = t.path`);
      // an output the session names for a derivation must at least be a store path
      const outputs = db
        .query(`SELECT md.id AS drv, o.id AS name, o.path AS path
          FROM other.DerivationOutputs o
          JOIN other.ValidPaths d ON d.id = o.drv
          JOIN promoted p ON p.path = d.path
          JOIN main.ValidPaths md ON md.path = d.path`)
        .all() as Array<{ drv: number; name: unknown; path: unknown }>;
      const addOutput = db.prepare("INSERT OR IGNORE INTO main.DerivationOutputs (drv, id, path) VALUES (?, ?, ?)");
      for (const o of outputs) {
        if (typeof o.name === "string" && /^[A-Za-z0-9+\-._?=]{1,211}$/.test(o.name) && isStorePath(o.path)) addOutput.run(o.drv, o.name, o.path);
      }
      const { bytes } = db
        .query("SELECT coalesce(sum(v.narSize), 0) AS bytes FROM main.ValidPaths v JOIN temp.promoted p ON p.path = v.path")
        .get() as { bytes: number };
      db.run("DROP TABLE temp.promoted");
      return { bytes };
    })();
  } finally {
    db.run("DETACH DATABASE other");
  }
}

/** Every path reachable from ROOTS through references (ROOTS themselves included when valid). */
export function closure(db: Database, roots: Iterable<string>): Set<string> {
  db.run("CREATE TEMP TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY)");
  db.run("DELETE FROM temp.roots");
  const add = db.prepare("INSERT OR IGNORE INTO temp.roots (path) VALUES (?)");
  db.transaction(() => {
    for (const root of roots) add.run(root);
  })();
  const rows = db
    .query(`WITH RECURSIVE live(id) AS (
        SELECT v.id FROM ValidPaths v JOIN temp.roots r ON r.path = v.path
        UNION SELECT r.reference FROM Refs r JOIN live l ON r.referrer = l.id)
      SELECT v.path FROM ValidPaths v JOIN live l ON l.id = v.id`)
    .all() as Array<{ path: string }>;
  db.run("DROP TABLE temp.roots");
  return new Set(rows.map((r) => r.path));
}

/** Removes every path not in KEEP, with its references and outputs; compacts the file. */
export function keepOnly(db: Database, keep: ReadonlySet<string>): string[] {
  const all = (db.query("SELECT path FROM ValidPaths").all() as Array<{ path: string }>).map((r) => r.path);
  const dead = all.filter((p) => !keep.has(p));
  db.transaction(() => {
    db.run("CREATE TEMP TABLE dead (id INTEGER PRIMARY KEY)");
    const add = db.prepare("INSERT INTO temp.dead (id) SELECT id FROM ValidPaths WHERE path = ?");
    for (const path of dead) add.run(path);
    db.run("DELETE FROM Refs WHERE referrer IN (SELECT id FROM temp.dead) OR reference IN (SELECT id FROM temp.dead)");
    db.run("DELETE FROM DerivationOutputs WHERE drv IN (SELECT id FROM temp.dead)");
    db.run("DELETE FROM ValidPaths WHERE id IN (SELECT id FROM temp.dead)");
    db.run("DROP TABLE temp.dead");
  })();
  db.run("VACUUM");
  return dead;
}
