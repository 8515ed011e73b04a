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

/**
 * What a session adds: the paths it registered (id above SINCE_ID in its database,
 * attached as `other`) and everything they reference, minus what `main` already has.
 */
export function missingFrom(db: Database, otherFile: string, sinceId: number): string[] {
  db.run("ATTACH DATABASE ? AS other", [otherFile]);
  try {
    const rows = db
      .query(`WITH RECURSIVE wanted(id) AS (
          SELECT id FROM other.ValidPaths WHERE id > ?
          UNION SELECT r.reference FROM other.Refs r JOIN wanted w ON r.referrer = w.id)
        SELECT v.path FROM other.ValidPaths v JOIN wanted w ON w.id = v.id
        WHERE v.path NOT IN (SELECT path FROM main.ValidPaths) ORDER BY v.id`)
      .all(sinceId) as Array<{ path: string }>;
    return rows.map((r) => r.path);
  } finally {
    db.run("DETACH DATABASE other");
  }
}

/**
 * Copies the rows of PATHS (valid in `otherFile`) into `db`: ValidPaths, their
 * references and derivation outputs, ids renumbered. Every reference must be valid in
 * `db` or among PATHS — the caller checks — so the result is a closed, consistent store.
 * Returns the NAR size they add up to.
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
      db.run(`INSERT OR IGNORE INTO main.DerivationOutputs (drv, id, path)
        SELECT md.id, o.id, o.path
        FROM other.DerivationOutputs o
        JOIN other.ValidPaths d ON d.id = o.drv
        JOIN promoted p ON p.path = d.path
        JOIN main.ValidPaths md ON md.path = d.path`);
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

/** path → the paths it references, for PATHS, as `otherFile` records them. */
export function referencesOf(db: Database, otherFile: string, paths: readonly string[]): Map<string, string[]> {
  db.run("ATTACH DATABASE ? AS other", [otherFile]);
  try {
    const query = db.query(`SELECT t.path AS ref FROM other.Refs r
      JOIN other.ValidPaths f ON f.id = r.referrer JOIN other.ValidPaths t ON t.id = r.reference
      WHERE f.path = ?`);
    return new Map(paths.map((p) => [p, (query.all(p) as Array<{ ref: string }>).map((r) => r.ref)]));
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
