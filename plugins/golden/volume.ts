import type { Database } from "bun:sqlite";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { undoOnInterrupt } from "../../core/interrupt.ts";
import { isLocked, lockFile, withFileLock, type FileLock } from "../../core/linux.ts";
import { formatBytes } from "../../core/log.ts";
import { agentenvDir } from "../../core/paths.ts";
import { helperPlan, shellQuote, type Mount } from "../../core/plan.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";
import { crashPoint, ensureVolume, writeAtomic } from "../../core/volumes.ts";
import { volumeClone, type VolumeChoice } from "./clone.ts";
import { droppedWarnings, expectedNar, isStorePath, openSessionCopy, readRegistrations, registeredIn, screen, type DropReason } from "./nixdb.ts";

/**
 * The golden store as an engine volume holding a plain /nix tree (store/, var/nix/db/…),
 * for engines whose volumes this host cannot reach as directories: Apple `container`
 * (ext4 disk images inside a VM), Docker in a VM, a remote engine. Everything happens
 * through engine calls:
 *
 *   seed     a helper container copies the image's /nix into the golden volume
 *   start    the session gets its own volume `<golden>-<container>`, cloned from the
 *            golden one (the engine's `cloneVolume`, else `cp -a` in a helper container)
 *   end      a helper container with the session's volume at /nix and the golden one at
 *            /golden/nix lets Nix copy what the session added (`nix copy`, closures in
 *            order, only complete paths), then the session's volume is removed
 *
 * The host cannot look inside, so it keeps records under ~/.local/state/agentenv/store/:
 *
 *   <runtime>-<volume>.json            the golden volume is seeded (image, when, why this strategy);
 *                                      a remote host's engine is `<runtime>@ssh_<host>` (engineKey)
 *   <runtime>-<volume>.lock            flock: shared = cloning it; exclusive = seeding, promoting, reset
 *   sessions/<runtime>-<name>.json     one per session: its container and volume, mode, detached
 *   sessions/<runtime>-<name>.lock     held by the session's agentenv for the session's life
 *
 * A session whose agentenv died (its lock free) and whose container is not running is
 * reaped by the next session: its volume is removed, never promoted. A detached session
 * (`agentenv up`) is kept for `agentenv down` to end.
 */

/** Label of a golden volume in this layout (a plain /nix tree), so the layered seed leaves it alone. */
export const layoutLabel = "agentenv.store-layout";
/** Written into the golden volume's /nix tree when the seed is complete. */
const seedMarker = "var/nix/agentenv-store.json";

/** Helper script exit codes: the golden volume is empty (the engine just made it) / holds no seeded store / holds the layered layout. */
const EMPTY = 5;
const UNSEEDED = 3;
const LAYERED = 4;

export interface VolumeStoreRecord {
  volume: string;
  image: string;
  /** when the seed finished */
  seeded: string;
  /** why the volume strategy was chosen when it was seeded */
  reason?: string;
  /** the engine instance it lives on (DOCKER_HOST / CONTAINER_HOST) */
  endpoint: string;
  /** why the engine cannot clone volume images (warned once, when first seen) */
  cloneFallback?: string;
  lastPromotion?: { time: string; session: string; paths: number; bytes: number };
}

export interface VolumeSessionRecord {
  /** the session's container: reaping asks the engine about it */
  container: string;
  /** the session's own volume, mounted at /nix */
  volume: string;
  /** the golden volume it was cloned from and promotes into */
  store: string;
  runtime: string;
  endpoint: string;
  mode: "golden" | "ephemeral";
  started: string;
  /** a long-running container (`agentenv up`): kept until `agentenv down` ends it */
  detached?: boolean;
}

function stateDir(): string {
  return join(agentenvDir("state"), "store");
}

function sessionsDir(): string {
  return join(stateDir(), "sessions");
}

/**
 * How the records name the engine: its name, and for a remote one (a host over SSH) its
 * endpoint too (`podman@ssh_box`), so this machine's records and each host's never meet.
 */
export function engineKey(runtime: { name: string; endpoint?: string }): string {
  return runtime.endpoint ? `${runtime.name}@${runtime.endpoint.replace(/[^A-Za-z0-9._-]/g, "_")}` : runtime.name;
}

/** Which engine instance: the same volume name on another socket is another volume. */
function endpointOf(runtime: string): string {
  return (runtime === "docker" ? process.env.DOCKER_HOST : process.env.CONTAINER_HOST) ?? "";
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** The host's record of one golden volume, and its lock. */
export class GoldenVolume {
  private readonly base: string;

  constructor(
    readonly runtime: string,
    readonly volume: string,
  ) {
    this.base = join(stateDir(), `${runtime}-${volume}`);
  }

  /** The record, when the volume was seeded on this engine instance. */
  record(): VolumeStoreRecord | undefined {
    const record = readJson<VolumeStoreRecord>(`${this.base}.json`);
    return record && record.endpoint === endpointOf(this.runtime) ? record : undefined;
  }

  write(record: VolumeStoreRecord): void {
    mkdirSync(stateDir(), { recursive: true });
    writeAtomic(`${this.base}.json`, `${JSON.stringify(record, null, 2)}\n`);
  }

  update(changes: Partial<VolumeStoreRecord>): void {
    const record = this.record();
    if (record) this.write({ ...record, ...changes });
  }

  forget(): void {
    rmSync(`${this.base}.json`, { force: true });
  }

  lock(mode: "shared" | "exclusive"): FileLock {
    mkdirSync(stateDir(), { recursive: true });
    return lockFile(`${this.base}.lock`, mode)!;
  }

  withLock<T>(mode: "shared" | "exclusive", fn: () => T | Promise<T>): Promise<T> {
    mkdirSync(stateDir(), { recursive: true });
    return withFileLock(`${this.base}.lock`, mode, fn);
  }
}

/** One session's record files. */
class SessionFiles {
  readonly json: string;
  readonly lock: string;
  /** promotion's work directory (the session's database, read out): removed with the record, so a killed promotion leaves none */
  readonly scratch: string;

  /** BASE: the files' path without extension */
  constructor(base: string) {
    this.json = `${base}.json`;
    this.lock = `${base}.lock`;
    this.scratch = `${base}.promote`;
  }

  static of(runtime: string, name: string): SessionFiles {
    return new SessionFiles(join(sessionsDir(), `${runtime}-${name}`));
  }

  record(): VolumeSessionRecord | undefined {
    return readJson<VolumeSessionRecord>(this.json);
  }

  /** The record first (no one considers the session after that), then its lock file; the caller holds the lock. */
  remove(): void {
    rmSync(this.json, { force: true });
    rmSync(this.scratch, { recursive: true, force: true });
    rmSync(this.lock, { force: true });
  }
}

/** The golden volume recorded as seeded for this engine: sessions keep using this strategy for it. */
export function recordedChoice(ctx: BaseContext): VolumeChoice | undefined {
  const record = new GoldenVolume(engineKey(ctx.runtime), ctx.config.storeVolume).record();
  if (!record) return undefined;
  return { strategy: volumeClone, reason: record.reason ?? `volume ${record.volume} holds a plain /nix tree (agentenv store reset starts over)` };
}

export function sessionVolumeName(ctx: SessionContext): string {
  return `${ctx.config.storeVolume}-${ctx.plan.name}`;
}

/** `session:mount`: the session's own volume at /nix; names are pure, so no engine call. */
export function mountVolumeStore(ctx: SessionContext): void {
  ctx.plan.mounts.push({ type: "volume", source: sessionVolumeName(ctx), target: "/nix" });
  ctx.plan.labels["agentenv.store"] = ctx.config.store;
}

/** The golden volume holds the layered layout (made where its directory was reachable). */
class LayeredVolumeError extends UserError {
  constructor(volume: string) {
    super(
      `volume ${volume} holds a golden store in the layered format, which needs the volume's directory on this host`,
      "agentenv store reset --yes starts it over in the volume format (or set storeVolume to another name)",
    );
  }
}

function lastLines(text: string, n = 3): string {
  return text.trim().split("\n").slice(-n).join(" / ");
}

/**
 * Copies the image's /nix into the golden volume, in a helper container. Idempotent: a
 * complete seed is left alone, a half one is emptied and done again.
 */
async function runSeed(ctx: BaseContext, volume: string): Promise<void> {
  const image = ctx.config.image;
  const marker = JSON.stringify({ volume, image, seeded: new Date().toISOString() });
  const script = [
    "set -e",
    `[ -e /golden/${seedMarker} ] && exit 0`,
    `if [ -e /golden/agentenv-store.json ] || [ -d /golden/layers ]; then exit ${LAYERED}; fi`,
    'command -v nix-store >/dev/null || { echo "the image has no Nix (nix-store not found)" >&2; exit 2; }',
    // an image that never ran Nix has no database yet: create it, so the golden store has one
    "[ -e /nix/var/nix/db/db.sqlite ] || nix-store --init",
    "find /golden -mindepth 1 -maxdepth 1 -exec rm -rf {} +",
    "cp -a /nix/. /golden/",
    "mkdir -p /golden/var/nix",
    `printf '%s\\n' ${shellQuote(marker)} > /golden/${seedMarker}.tmp`,
    `mv /golden/${seedMarker}.tmp /golden/${seedMarker}`,
  ].join("\n");
  ctx.log.start(`seeding the golden Nix store (volume ${volume}) from ${image}…`);
  const plan = helperPlan({ image, purpose: "seed-store", mounts: [{ type: "volume", source: volume, target: "/golden" }], script });
  const result = await ctx.runtime.capture(plan);
  if (result.code === LAYERED) throw new LayeredVolumeError(volume);
  if (result.code !== 0) {
    throw new UserError(`seeding the golden store from ${image} failed: ${lastLines(result.stderr) || `exit ${result.code}`}`, "use --store none to run without it");
  }
}

/** Creates (when missing) and seeds the golden volume, then records it. Caller holds the exclusive lock. */
async function seedLocked(ctx: BaseContext, golden: GoldenVolume, reason: string): Promise<void> {
  if (golden.record()) return;
  const labels = { "agentenv.store": "golden", [layoutLabel]: "nix" };
  const created = await ensureVolume(ctx, { name: golden.volume, labels }, () => runSeed(ctx, golden.volume));
  if (!created) await runSeed(ctx, golden.volume);
  golden.write({ volume: golden.volume, image: ctx.config.image, seeded: new Date().toISOString(), reason, endpoint: endpointOf(ctx.runtime.name) });
}

/** The golden volume exists and is seeded (per the host's record; engine calls only when it is not). */
async function ensureSeeded(ctx: BaseContext, golden: GoldenVolume, reason: string): Promise<void> {
  if (golden.record()) return;
  await golden.withLock("exclusive", () => seedLocked(ctx, golden, reason));
}

/**
 * `volume:seed` of a golden volume made elsewhere (the layered path created it, then
 * found its directory out of reach): seed it in this layout.
 */
export async function seedVolumeStore(ctx: BaseContext, volume: string, reason: string): Promise<void> {
  await ensureSeeded(ctx, new GoldenVolume(engineKey(ctx.runtime), volume), reason);
}

async function createSessionVolume(ctx: BaseContext, golden: string, volume: string): Promise<void> {
  const labels = { "agentenv.volume": "1", "agentenv.store": "session", "agentenv.store-of": golden };
  try {
    await ctx.runtime.volumeCreate(volume, labels);
  } catch (error) {
    if (!(await ctx.runtime.volumeExists(volume))) throw error;
    // left by an earlier session of the same name (an `up` container that died starting)
    await ctx.runtime.volumeRemove(volume);
    await ctx.runtime.volumeCreate(volume, labels);
  }
}

type Fill = "ok" | "unseeded" | "empty";

/** Fills the session's (new, empty) volume with the golden one's content. Caller holds the shared lock. */
async function fillSessionVolume(ctx: BaseContext, golden: GoldenVolume, volume: string): Promise<Fill> {
  if (ctx.runtime.cloneVolume) {
    let result: Awaited<ReturnType<NonNullable<typeof ctx.runtime.cloneVolume>>>;
    try {
      result = await ctx.runtime.cloneVolume(golden.volume, volume);
    } catch (error) {
      if (!(await ctx.runtime.volumeExists(golden.volume))) return "unseeded";
      throw error;
    }
    if (result.cloned) return "ok";
    // the engine may say so when the golden volume is gone: then it is seeded again, no fallback
    if (!(await ctx.runtime.volumeExists(golden.volume))) return "unseeded";
    const message = `golden store: cannot clone volume images here (${result.why}): copying through a helper container`;
    // once per golden store (and reason): every later session would say the same
    if (golden.record()?.cloneFallback !== result.why) {
      ctx.log.warn(message);
      golden.update({ cloneFallback: result.why });
    } else ctx.log.debug(message);
  } else {
    ctx.log.debug(`golden store: ${ctx.runtime.name} has no volume clone: copying the store through a helper container`);
  }
  const script = [
    "set -e",
    `if [ ! -e /s/${seedMarker} ]; then [ -z "$(ls -A /s)" ] && exit ${EMPTY}; exit ${UNSEEDED}; fi`,
    "cp -a /s/. /d/",
  ].join("\n");
  const mounts: Mount[] = [
    { type: "volume", source: golden.volume, target: "/s", readonly: true },
    { type: "volume", source: volume, target: "/d" },
  ];
  const result = await ctx.runtime.capture(helperPlan({ image: ctx.config.image, purpose: "clone-store", mounts, script }));
  if (result.code === EMPTY) return "empty";
  if (result.code === UNSEEDED) return "unseeded";
  if (result.code !== 0) throw new Error(`copying the golden store failed: ${lastLines(result.stderr) || `exit ${result.code}`}`);
  return "ok";
}

/** The host's record says seeded, the engine says otherwise: forget it (and drop an empty volume the engine made on its own). */
async function forgetSeed(ctx: BaseContext, golden: GoldenVolume, seen: string | undefined, fill: Fill): Promise<void> {
  await golden.withLock("exclusive", async () => {
    if (golden.record()?.seeded !== seen) return; // someone else seeded it again meanwhile
    golden.forget();
    if (fill === "empty") await ctx.runtime.volumeRemove(golden.volume);
  });
}

/** Seeds the golden volume when needed, then creates the session's volume and fills it. */
async function cloneInto(ctx: BaseContext, golden: GoldenVolume, volume: string, reason: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    await ensureSeeded(ctx, golden, reason);
    let fill: Fill = "unseeded";
    let created = false;
    const shared = golden.lock("shared");
    const seen = golden.record()?.seeded;
    try {
      // a reset may have come between the seed and this lock
      if (seen) {
        await createSessionVolume(ctx, golden.volume, volume);
        created = true;
        fill = await fillSessionVolume(ctx, golden, volume);
      }
    } finally {
      shared.release();
    }
    if (fill === "ok") return;
    if (created) await ctx.runtime.volumeRemove(volume);
    if (attempt > 0) throw new Error(`the golden store volume ${golden.volume} is still not seeded after seeding it`);
    if (seen) {
      ctx.log.info(`golden store: volume ${golden.volume} is gone or was emptied: seeding it again`);
      await forgetSeed(ctx, golden, seen, fill);
    }
  }
}

interface ActiveSession {
  golden: GoldenVolume;
  files: SessionFiles;
  record: VolumeSessionRecord;
  lock: FileLock;
}

/** A volume-store session's state, kept with the golden plugin's (`ctx.state["golden.volume"]`). */
const stateKey = "golden.volume";

/** Drops the /nix mount `mountVolumeStore` added: the session runs on the image's /nix. */
function unmountFromPlan(ctx: SessionContext, volume: string): void {
  ctx.plan.mounts = ctx.plan.mounts.filter((m) => !(m.type === "volume" && m.source === volume && m.target === "/nix"));
}

/**
 * `session:start`: reap what dead sessions left, record this session (its lock held until
 * it ends), then make its volume. A failure leaves nothing behind.
 */
export async function startVolumeStore(ctx: SessionContext, choice: VolumeChoice): Promise<void> {
  const golden = new GoldenVolume(engineKey(ctx.runtime), ctx.config.storeVolume);
  await reapDeadSessions(ctx);
  const volume = sessionVolumeName(ctx);
  const files = SessionFiles.of(engineKey(ctx.runtime), ctx.plan.name);
  mkdirSync(sessionsDir(), { recursive: true });
  const lock = lockFile(files.lock, "exclusive")!;
  const record: VolumeSessionRecord = {
    container: ctx.plan.name,
    volume,
    store: golden.volume,
    runtime: ctx.runtime.name,
    endpoint: endpointOf(ctx.runtime.name),
    mode: ctx.config.store === "ephemeral" ? "ephemeral" : "golden",
    started: new Date().toISOString(),
  };
  if (ctx.mode === "up") record.detached = true;
  writeAtomic(files.json, `${JSON.stringify(record, null, 2)}\n`);
  const discard = async () => {
    await ctx.runtime.volumeRemove(volume).catch(() => {});
    files.remove();
    lock.release();
  };
  try {
    await undoOnInterrupt(discard, () => cloneInto(ctx, golden, volume, choice.reason));
  } catch (error) {
    await discard();
    if (error instanceof LayeredVolumeError) {
      unmountFromPlan(ctx, volume);
      ctx.log.warn(`golden store unavailable: ${error.message} — ${error.hint}; using the image's /nix (--store none silences this)`);
      return;
    }
    // a stopped engine or a missing image: say that, not what it broke first
    const why = await ctx.runtime.diagnose(ctx.plan).catch(() => undefined);
    if (why) throw new UserError(why);
    if (error instanceof UserError) throw error;
    throw new UserError(`could not clone the golden store for this session: ${messageOf(error)}`, "use --store none to run without it");
  }
  ctx.state[stateKey] = { golden, files, record, lock } satisfies ActiveSession;
  crashPoint("volume:cloned");
}

/** Helper script exit code: a path's contents did not measure as registered (the script lists them). */
const MISMATCH = 6;

/** The start of both promotion helpers: the golden volume must still hold a seeded store. */
const goldenSeededCheck = `if [ ! -e /golden/nix/${seedMarker} ]; then [ -z "$(ls -A /golden/nix)" ] && exit ${EMPTY}; exit ${UNSEEDED}; fi`;

/**
 * Reads what promotion needs out of the session's volume, in a helper container: the
 * golden store's valid paths, the session's store entries the golden one lacks, and the
 * session's Nix database (with its write-ahead log), each base64 on a line of its own.
 * Nothing of the session's runs: the image's Nix reads the golden store (it writes its
 * lock files there), the session's files are only read.
 */
const inspectScript = [
  "set -e",
  goldenSeededCheck,
  'export NIX_CONFIG="extra-experimental-features = nix-command" LC_ALL=C',
  "nix path-info --all --store 'local?root=/golden' > /tmp/golden-paths",
  "printf 'golden '; base64 -w0 /tmp/golden-paths; echo",
  "find /nix/store -mindepth 1 -maxdepth 1 -printf '%f\\0' | sort -z > /tmp/session-entries",
  "find /golden/nix/store -mindepth 1 -maxdepth 1 -printf '%f\\0' | sort -z > /tmp/golden-entries",
  "printf 'entries '; comm -z -23 /tmp/session-entries /tmp/golden-entries | base64 -w0; echo",
  "db=/nix/var/nix/db/db.sqlite",
  `printf 'db '; if [ -f "$db" ] && [ ! -L "$db" ]; then base64 -w0 "$db"; fi; echo`,
  `printf 'wal '; if [ -f "$db-wal" ] && [ ! -L "$db-wal" ]; then base64 -w0 "$db-wal"; fi; echo`,
].join("\n");

/**
 * Copies what `screen` kept into the golden store, in a helper container, reading its plan
 * on stdin: `verify PATH HEX SIZE` lines, then `copy FLAG PATH` lines in the order to copy.
 * Each path's NAR (as `nix-store --dump` writes it) must measure as the session registered
 * it, or nothing is copied: the failures are listed (`missing PATH`, `mismatch PATH`) and
 * the script exits MISMATCH. Then Nix copies exactly the listed paths (no closures: the
 * session's database is what `screen` judged), outputs and derivations in batches, each
 * path only once its contents are complete.
 */
const copyScript = [
  "set -e",
  goldenSeededCheck,
  'export NIX_CONFIG="extra-experimental-features = nix-command"',
  "golden='local?root=/golden'",
  "cat > /tmp/plan",
  ": > /tmp/bad",
  "while read -r kind path hash size; do",
  '  [ "$kind" = verify ] || continue',
  '  if [ ! -e "$path" ] && [ ! -L "$path" ]; then echo "missing $path" >> /tmp/bad; continue; fi',
  '  sum=$(nix-store --dump "$path" 2>/dev/null | dd bs=1M 2>/tmp/dd | sha256sum)',
  "  got=\"${sum%% *} $(sed -n 's/^\\([0-9]*\\) bytes.*/\\1/p' /tmp/dd)\"",
  '  [ "$got" = "$hash $size" ] || echo "mismatch $path" >> /tmp/bad',
  "done < /tmp/plan",
  `if [ -s /tmp/bad ]; then cat /tmp/bad; exit ${MISMATCH}; fi`,
  "flush() {",
  '  if [ -s /tmp/batch ]; then',
  '    if [ "$1" = --derivation ]; then set -- --derivation; else set --; fi',
  '    xargs nix copy "$@" --no-recursive --no-check-sigs --to "$golden" < /tmp/batch || exit 1',
  "  fi",
  "  : > /tmp/batch",
  "}",
  ": > /tmp/batch",
  "current=",
  "while read -r kind flag path; do",
  '  [ "$kind" = copy ] || continue',
  '  if [ "$flag" != "$current" ]; then flush "$current"; current=$flag; fi',
  '  echo "$path" >> /tmp/batch',
  "done < /tmp/plan",
  'flush "$current"',
  "echo promoted",
].join("\n");

interface VolumePromotion {
  paths: number;
  bytes: number;
  dropped: Map<string, DropReason>;
  strays: string[];
}

/**
 * Promotes what the session added. A helper container reads the session's database out
 * of its volume; the host judges it with the same rules as the layered store (`screen`);
 * a second helper measures the kept paths against their registered hashes and lets Nix
 * copy them (a third only when some did not measure as registered: without them and what
 * references them). Caller holds the exclusive lock.
 */
async function promoteSession(ctx: BaseContext, golden: GoldenVolume, record: VolumeSessionRecord, files: SessionFiles): Promise<VolumePromotion | undefined> {
  // read-write: Nix takes lock files in a store it opens (the session's, to copy from it)
  const helper = (script: string) =>
    helperPlan({
      image: ctx.config.image,
      purpose: "promote-store",
      script,
      mounts: [
        { type: "volume", source: record.volume, target: "/nix" },
        { type: "volume", source: golden.volume, target: "/golden/nix" },
      ],
    });
  const goldenGone = async (code: number) => {
    if (code !== EMPTY && code !== UNSEEDED) return false;
    golden.forget();
    if (code === EMPTY) await ctx.runtime.volumeRemove(golden.volume).catch(() => {});
    ctx.log.warn(`golden store: not promoted: volume ${golden.volume} is gone or was emptied (the next session seeds it again)`);
    return true;
  };

  const inspect = await ctx.runtime.capture(helper(inspectScript));
  crashPoint("volume:inspected");
  if (await goldenGone(inspect.code)) return undefined;
  if (inspect.code !== 0) throw new Error(lastLines(inspect.stderr) || `exit ${inspect.code}`);
  const sections = new Map(inspect.stdout.split("\n").map((line) => [line.slice(0, line.indexOf(" ")), Buffer.from(line.slice(line.indexOf(" ") + 1), "base64")]));
  const database = sections.get("db");
  if (!database?.length) return undefined; // no database: nothing registered

  const scratch = files.scratch;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { mode: 0o700 });
  let session: Database | undefined;
  try {
    const file = join(scratch, "db.sqlite");
    writeFileSync(file, database, { mode: 0o600 });
    const wal = sections.get("wal");
    if (wal?.length) writeFileSync(`${file}-wal`, wal, { mode: 0o600 });
    session = openSessionCopy(file);
    const goldenPaths = new Set((sections.get("golden")?.toString() ?? "").split("\n").filter(Boolean));
    const inGolden = (path: string) => goldenPaths.has(path);
    const registered = registeredIn(session);
    const strays = (sections.get("entries")?.toString() ?? "")
      .split("\0")
      .filter((name) => name && !registered(`/nix/store/${name}`))
      .map((name) => `/nix/store/${name}`);
    const registrations = readRegistrations(session, 0, inGolden);
    const failed = new Map<string, DropReason>();
    // a second round only drops what the first measured wrong: a third would mean the volume changed
    for (let round = 0; round < 2; round++) {
      const { kept, dropped } = screen(registrations, inGolden, failed);
      if (kept.length === 0) return { paths: 0, bytes: 0, dropped, strays };
      const plan = join(scratch, "plan");
      const lines = [
        ...kept.map((r) => `verify ${r.path} ${expectedNar(r)}`),
        ...kept.map((r) => `copy ${r.path.endsWith(".drv") ? "--derivation" : "-"} ${r.path}`),
      ];
      writeFileSync(plan, `${lines.join("\n")}\n`);
      const copy = await ctx.runtime.capture(helper(copyScript), { stdin: plan });
      if (await goldenGone(copy.code)) return undefined;
      if (copy.code === MISMATCH) {
        for (const line of copy.stdout.split("\n")) {
          const [what, path] = line.split(" ");
          if (path && (what === "missing" || what === "mismatch")) failed.set(path, what === "missing" ? "missing" : "content");
        }
        continue;
      }
      if (copy.code !== 0 || !/^promoted$/m.test(copy.stdout)) throw new Error(lastLines(copy.stderr) || `exit ${copy.code}`);
      crashPoint("volume:copied");
      return { paths: kept.length, bytes: kept.reduce((sum, r) => sum + r.narSize!, 0), dropped, strays };
    }
    throw new Error("the session's store changed while it was being promoted");
  } finally {
    session?.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * A long-running container's session, ended by a later agentenv (`down`, or an `up` that
 * finds it stopped): found by the container's name. Undefined when there is none, or
 * another agentenv is ending it right now.
 */
function resumeDetached(ctx: SessionContext): ActiveSession | undefined {
  const files = SessionFiles.of(engineKey(ctx.runtime), ctx.plan.name);
  const record = files.record();
  if (!record?.detached) return undefined;
  let lock: FileLock | undefined;
  try {
    lock = lockFile(files.lock, "exclusive", false, false);
  } catch {
    return undefined; // ended meanwhile
  }
  if (!lock) return undefined;
  return { golden: new GoldenVolume(record.runtime, record.store), files, record, lock };
}

/** Whether a detached session of this name is recorded (so `down` ends it here, not in the layered store). */
export function hasDetachedSession(ctx: SessionContext): boolean {
  return SessionFiles.of(engineKey(ctx.runtime), ctx.plan.name).record()?.detached === true;
}

/**
 * `session:exit`: promote what the session added (golden mode) under the exclusive lock,
 * then remove its volume. Never fails the session: problems are warnings.
 */
export async function endVolumeStore(ctx: SessionContext): Promise<void> {
  const session = (ctx.state[stateKey] as ActiveSession | undefined) ?? (ctx.mode === "up" ? resumeDetached(ctx) : undefined);
  if (!session) return;
  delete ctx.state[stateKey];
  const { golden, files, record, lock } = session;
  try {
    if (record.mode === "golden") {
      await golden.withLock("exclusive", async () => {
        const promotion = await promoteSession(ctx, golden, record, files);
        for (const line of promotion ? droppedWarnings(promotion.dropped, promotion.strays) : []) ctx.log.warn(`golden store: ${line}`);
        if (promotion?.paths) {
          golden.update({ lastPromotion: { time: new Date().toISOString(), session: record.container, ...promotion } });
          ctx.log.info(`golden store: promoted ${promotion.paths} new store path${promotion.paths === 1 ? "" : "s"} (${formatBytes(promotion.bytes)})`);
        }
      });
    }
  } catch (error) {
    ctx.log.warn(`golden store: promoting this session's new paths failed (the golden store is unchanged): ${messageOf(error)}`);
  } finally {
    try {
      await ctx.runtime.volumeRemove(record.volume);
      crashPoint("volume:removed");
      files.remove();
    } catch (error) {
      // the record stays: the next session reaps the volume
      ctx.log.warn(`golden store: could not remove this session's volume ${record.volume} (the next session retries): ${messageOf(error)}`);
    }
    lock.release();
  }
}

interface SessionEntry {
  files: SessionFiles;
  record: VolumeSessionRecord;
}

/** Session records on this engine instance (all golden volumes unless STORE). */
function sessionEntries(ctx: BaseContext, store?: string): SessionEntry[] {
  let names: string[];
  try {
    names = readdirSync(sessionsDir());
  } catch {
    return [];
  }
  const prefix = `${engineKey(ctx.runtime)}-`;
  const entries: SessionEntry[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith(".json")) continue;
    const files = new SessionFiles(join(sessionsDir(), name.slice(0, -".json".length)));
    const record = files.record();
    if (!record || record.runtime !== ctx.runtime.name || record.endpoint !== endpointOf(ctx.runtime.name)) continue;
    if (store === undefined || record.store === store) entries.push({ files, record });
  }
  return entries;
}

/** Its agentenv's lock, when that agentenv is gone; undefined while it runs (or the record is going away). */
function takeAbandoned(files: SessionFiles): FileLock | undefined {
  try {
    return lockFile(files.lock, "exclusive", false, false);
  } catch {
    return undefined;
  }
}

/**
 * Sessions whose agentenv died: with their container gone or stopped they are dead (their
 * lock is returned held, for the caller to remove them); otherwise running. A detached
 * session counts as running. An engine that cannot answer keeps the session.
 */
async function classify(ctx: BaseContext, entries: SessionEntry[]): Promise<{ dead: Array<SessionEntry & { lock: FileLock }>; running: SessionEntry[] }> {
  const dead: Array<SessionEntry & { lock: FileLock }> = [];
  const running: SessionEntry[] = [];
  for (const entry of entries) {
    if (entry.record.detached) {
      running.push(entry);
      continue;
    }
    const lock = takeAbandoned(entry.files);
    if (!lock) {
      running.push(entry);
      continue;
    }
    try {
      if ((await ctx.runtime.containerStatus(entry.record.container)) === "running") {
        lock.release();
        running.push(entry);
      } else dead.push({ ...entry, lock });
    } catch (error) {
      ctx.log.debug(`golden store: keeping session ${entry.record.container} for now: ${messageOf(error)}`);
      lock.release();
      running.push(entry);
    }
  }
  return { dead, running };
}

async function removeDead(ctx: BaseContext, dead: Array<SessionEntry & { lock: FileLock }>): Promise<void> {
  for (const { files, record, lock } of dead) {
    try {
      await ctx.runtime.volumeRemove(record.volume);
      files.remove();
      ctx.log.debug(`golden store: removed the volume ${record.volume} of session ${record.container}, whose agentenv died`);
    } catch (error) {
      ctx.log.warn(`golden store: could not remove the volume ${record.volume} of a session whose agentenv died: ${messageOf(error)}`);
    } finally {
      lock.release();
    }
  }
}

/** Removes the volumes of sessions whose agentenv died (cheap when there are none: one readdir). */
async function reapDeadSessions(ctx: BaseContext): Promise<void> {
  const candidates = sessionEntries(ctx).filter((e) => !e.record.detached);
  if (candidates.length) await removeDead(ctx, (await classify(ctx, candidates)).dead);
}

function isLockedQuiet(file: string): boolean {
  try {
    return isLocked(file);
  } catch {
    return true; // no lock file: the record is going away
  }
}

/** One line for `agentenv doctor`: where the store is and what a session's clone costs on this engine. */
export function describeVolumeStore(ctx: BaseContext, choice: VolumeChoice): string {
  const record = new GoldenVolume(engineKey(ctx.runtime), ctx.config.storeVolume).record();
  const how = !ctx.runtime.cloneVolume
    ? `${ctx.runtime.name} cannot clone volumes, so each session copies the store through a helper container (time grows with the store)`
    : record?.cloneFallback
      ? `${ctx.runtime.name} cannot clone volume images here (${record.cloneFallback}), so each session copies the store through a helper container`
      : "each session gets a clone of the volume (constant time)";
  return `${ctx.config.storeVolume}, an engine volume (${choice.reason}): ${how}${record ? "" : "; not seeded yet (the first session seeds it)"}`;
}

export interface VolumeStatus {
  engine: string;
  volume: string;
  exists: boolean;
  strategy: "volume";
  strategyNote: string;
  reason: string;
  seeded?: Pick<VolumeStoreRecord, "volume" | "image" | "seeded" | "reason" | "cloneFallback">;
  sessions: string[];
  lastPromotion?: VolumeStoreRecord["lastPromotion"];
}

/** `store status` for this layout: the host's records, and whether the engine has the volume. */
export async function volumeStatus(ctx: BaseContext, choice: VolumeChoice): Promise<VolumeStatus> {
  const golden = new GoldenVolume(engineKey(ctx.runtime), ctx.config.storeVolume);
  const record = golden.record();
  const sessions = sessionEntries(ctx, golden.volume)
    .filter((e) => e.record.detached || isLockedQuiet(e.files.lock))
    .map((e) => e.record.container);
  return {
    engine: ctx.runtime.name,
    volume: golden.volume,
    exists: await ctx.runtime.volumeExists(golden.volume),
    strategy: "volume",
    strategyNote: choice.strategy.cost,
    reason: choice.reason,
    seeded: record && { volume: record.volume, image: record.image, seeded: record.seeded, reason: record.reason, cloneFallback: record.cloneFallback },
    sessions,
    lastPromotion: record?.lastPromotion,
  };
}

export interface VolumeGcReport {
  /** distinct store paths Nix counted as roots (the store's own, and those passed in) */
  roots: number;
  live: number;
  deleted: number;
  /** with dryRun: what would go */
  wouldDelete?: number;
  freedBytes: number;
}

/**
 * `store gc` for this layout, in a helper container with the golden volume at /nix: the
 * roots NAMED_ROOTS resolves to once the store is known to be there (what plugins name, e.g.
 * environments' profiles; only `/nix/store/<name>` paths) become symlinks in a gcroots
 * directory of the helper's own, removed when it ends, beside the store's own roots
 * (/nix/var/nix/gcroots, profiles); then `nix-store --gc` (`--print-dead` with DRY_RUN). Under the exclusive lock: no session clones or promotes meanwhile; running
 * sessions have volumes of their own and are unaffected. The helper's answer is checked
 * (numbers only), whoever's engine it ran on.
 */
export async function gcVolumeStore(ctx: BaseContext, namedRoots: () => Promise<ReadonlySet<string>>, dryRun: boolean): Promise<VolumeGcReport> {
  const golden = new GoldenVolume(engineKey(ctx.runtime), ctx.config.storeVolume);
  const where = ctx.config.host ? ` on ${ctx.config.host}` : "";
  const notSeeded = () =>
    new UserError(
      `the golden store (volume ${golden.volume})${where} does not exist yet`,
      `the first session with --store golden seeds it: agentenv run${ctx.config.host ? ` --host ${ctx.config.host}` : ""} --store golden . -- true`,
    );
  if (!golden.record()) throw notSeeded();
  const roots = await namedRoots();
  if (!dryRun) ctx.log.start(`collecting the golden store ${golden.volume}${where}…`);
  const script = [
    "set -e",
    `if [ ! -e /nix/${seedMarker} ]; then [ -z "$(ls -A /nix)" ] && exit ${EMPTY}; exit ${UNSEEDED}; fi`,
    'export NIX_CONFIG="extra-experimental-features = nix-command" LC_ALL=C',
    "extra=/nix/var/nix/gcroots/agentenv-gc-$(hostname)-$$",
    'rm -rf "$extra"; mkdir -p "$extra"',
    "trap 'rm -rf \"$extra\"' EXIT",
    "n=0",
    'while read -r path; do case $path in /nix/store/?*) ln -s "$path" "$extra/$n"; n=$((n + 1)) ;; esac; done',
    "before=$(nix path-info --all | wc -l)",
    "bytes=$(du -sb /nix/store | cut -f1)",
    "roots=$(nix-store --gc --print-roots | sed 's/^.* -> //' | grep '^/nix/store/' | sort -u | wc -l)",
    "dead=$(nix-store --gc --print-dead | grep -c '^/nix/store/' || true)",
    `if [ ${dryRun ? 1 : 0} = 1 ] || [ "$dead" = 0 ]; then echo "gc $roots $before $dead - -"; exit 0; fi`,
    "nix-store --gc >/dev/null",
    'echo "gc $roots $before $(nix path-info --all | wc -l) $bytes $(du -sb /nix/store | cut -f1)"',
  ].join("\n");
  const list = mkdtempSync(join(tmpdir(), "agentenv-gc-"));
  try {
    const rootsFile = join(list, "roots");
    writeFileSync(rootsFile, [...roots].filter((r) => isStorePath(r)).map((r) => `${r}\n`).join(""));
    return await golden.withLock("exclusive", async () => {
      const plan = helperPlan({ image: ctx.config.image, purpose: "gc-store", mounts: [{ type: "volume", source: golden.volume, target: "/nix" }], script });
      const result = await ctx.runtime.capture(plan, { stdin: rootsFile });
      if (result.code === EMPTY || result.code === UNSEEDED) {
        golden.forget();
        throw notSeeded();
      }
      if (result.code !== 0) throw new UserError(`store gc${where} failed: ${lastLines(result.stderr) || `exit ${result.code}`}`);
      const answer = /^gc (\d+) (\d+) (\d+) (\d+|-) (\d+|-)$/m.exec(result.stdout);
      if (!answer) throw new UserError(`store gc${where}: the helper container gave no result it could read`);
      const [rootCount, before, third, bytesBefore, bytesAfter] = answer.slice(1).map((n) => (n === "-" ? undefined : Number(n)));
      if (bytesBefore === undefined || bytesAfter === undefined) {
        // a dry run, or nothing to collect: THIRD is the number of dead paths
        const dead = Math.min(third!, before!);
        return { roots: rootCount!, live: before! - dead, deleted: 0, wouldDelete: dead, freedBytes: 0 };
      }
      return { roots: rootCount!, live: third!, deleted: Math.max(0, before! - third!), freedBytes: Math.max(0, bytesBefore - bytesAfter) };
    });
  } finally {
    rmSync(list, { recursive: true, force: true });
  }
}

/**
 * `store reset` for this layout: refuses while sessions use the store; otherwise removes
 * dead sessions' volumes, the golden volume and the records, and seeds it again.
 */
export async function resetVolumeStore(ctx: BaseContext, choice: VolumeChoice): Promise<void> {
  const golden = new GoldenVolume(engineKey(ctx.runtime), ctx.config.storeVolume);
  await golden.withLock("exclusive", async () => {
    const { dead, running } = await classify(ctx, sessionEntries(ctx, golden.volume));
    if (running.length) {
      for (const { lock } of dead) lock.release();
      throw new UserError(`the golden store is in use by ${running.length} session(s): ${running.map((e) => e.record.container).join(", ")}`, "end them first");
    }
    // a container the engine runs with it now (another machine's agentenv cloning it, say) would be killed by its removal
    const users = (await ctx.runtime.volumeUsers(golden.volume).catch(() => [])).filter((u) => u.running);
    if (users.length) {
      for (const { lock } of dead) lock.release();
      const where = ctx.config.host ? ` on ${ctx.config.host}` : "";
      throw new UserError(`the golden store${where} is in use by ${users.length} container(s): ${users.map((u) => u.name.replace(/[^\w.-]/g, "?")).join(", ")}`, "end them first");
    }
    await removeDead(ctx, dead);
    golden.forget();
    if (await ctx.runtime.volumeExists(golden.volume)) await ctx.runtime.volumeRemove(golden.volume);
    await seedLocked(ctx, golden, choice.reason);
  });
}
