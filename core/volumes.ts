import { appendFileSync, closeSync, constants, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "pathe";
import { UserError } from "./errors.ts";
import { undoOnInterrupt } from "./interrupt.ts";
import { agentenvDir, hostUid } from "./paths.ts";
import { callHook, type BaseContext, type VolumeSpec } from "./plugins.ts";

/**
 * Writes FILE so that readers see the old or the new content, never a part: a new file
 * under an unpredictable name next to it, created exclusively and never through a link
 * (O_EXCL | O_NOFOLLOW) with MODE from the start, written in full, fsynced, renamed over
 * FILE. A full disk is one clear line and leaves FILE as it was.
 */
export function writeAtomic(file: string, text: string | Uint8Array, mode = 0o644): void {
  const tmp = `${file}.tmp-${Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex")}`;
  const bytes = typeof text === "string" ? Buffer.from(text) : text;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") throw new UserError(`cannot write ${file}: no space left on its disk`, "free some space and try again (the old file is unchanged)");
    throw error;
  }
}

function cacheFile(): string {
  return join(agentenvDir("cache"), "volumes.json");
}

/** Which engine instance: the same volume name on another socket, or for another user, is another volume. */
function cacheKey(ctx: BaseContext, volume: string): string {
  const endpoint = ctx.runtime.name === "docker" ? process.env.DOCKER_HOST : process.env.CONTAINER_HOST;
  return `${ctx.runtime.name}|${endpoint ?? ""}|${hostUid() ?? ""}|${volume}`;
}

function readCache(): Record<string, string> {
  try {
    return JSON.parse(readFileSync(cacheFile(), "utf8")) as Record<string, string>;
  } catch {
    return {};
  }
}

export interface VolumeDir {
  /** the volume's directory on the engine's host; undefined when the volume does not exist */
  dir?: string;
  /** MARKER exists in it, as seen from here (so the volume is filled, and readable from this host) */
  marked: boolean;
}

/**
 * Where a volume agentenv made lives on the engine's host. The answer is cached on this
 * host and checked by a marker file the volume holds once it is filled, so the hot path
 * makes no engine call; a missing marker (volume removed, recreated, unfilled, or out of
 * this host's reach) asks the engine again.
 */
export async function volumeDir(ctx: BaseContext, volume: string, marker: string): Promise<VolumeDir> {
  const key = cacheKey(ctx, volume);
  const cached = readCache()[key];
  if (cached && existsSync(join(cached, marker))) return { dir: cached, marked: true };
  const dir = await ctx.runtime.volumeMountpoint(volume);
  if (!dir) return { marked: false };
  if (cached !== dir) {
    try {
      mkdirSync(join(cacheFile(), ".."), { recursive: true });
      writeAtomic(cacheFile(), JSON.stringify({ ...readCache(), [key]: dir }, null, 2));
    } catch {
      // a read-only HOME only costs the engine call next time
    }
  }
  return { dir, marked: existsSync(join(dir, marker)) };
}

/**
 * The label that proves a volume is the one this agentenv command created: engines may
 * answer "created" for a volume that already exists (Docker does: moby#16068), so a
 * volume is filled or removed only once it is seen carrying the command's own nonce.
 */
export const nonceLabel = "agentenv.nonce";

/** An unpredictable id for one state-changing command: its volume's nonce, its helpers' label, its journal's name. */
export function newNonce(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString("hex");
}

/** The volume's labels; undefined when it does not exist. Throws when the engine cannot say (never mistaken for "gone"). */
export async function volumeLabels(ctx: BaseContext, name: string): Promise<Record<string, string> | undefined> {
  const apple = ctx.runtime.name === "container";
  const result = await ctx.runtime.call(apple ? ["volume", "inspect", name] : ["volume", "inspect", "--format", "{{json .Labels}}", name]);
  if (result.code !== 0) {
    if (/no such volume|no volume with name|not ?found/i.test(result.stderr)) return undefined;
    throw new UserError(`${ctx.runtime.name} could not inspect volume ${name}: ${result.stderr.trim() || `exit ${result.code}`}`);
  }
  if (apple) {
    const { parseVolumes } = await import("./runtime/apple.ts");
    return parseVolumes(result.stdout).find((v) => v.name === name)?.labels;
  }
  try {
    return (JSON.parse(result.stdout.trim() || "null") as Record<string, string> | null) ?? {};
  } catch {
    return {};
  }
}

/** Volume NAME exists and carries NONCE: the command holding NONCE made it. */
export async function ownsVolume(ctx: BaseContext, name: string, nonce: string): Promise<boolean> {
  return (await volumeLabels(ctx, name))?.[nonceLabel] === nonce;
}

/** Removes volume NAME (and the containers using it) only when it carries NONCE; whether it did. */
export async function removeOwnVolume(ctx: BaseContext, name: string, nonce: string): Promise<boolean> {
  if (!(await ownsVolume(ctx, name, nonce))) return false;
  await ctx.runtime.volumeRemove(name);
  return true;
}

/**
 * Test hook of the fault-injection suite (test/faults), not a setting for users:
 * `AGENTENV_TEST_CRASH_AT=STEP` makes agentenv kill itself with SIGKILL when it reaches
 * STEP (`STEP+MS`: MS milliseconds later, while it goes on), as a crash or `kill -9`
 * would; `AGENTENV_TEST_STEPS=FILE` appends the name of each step reached to FILE.
 */
export function crashPoint(step: string): void {
  const log = process.env.AGENTENV_TEST_STEPS;
  const at = process.env.AGENTENV_TEST_CRASH_AT;
  if (!log && !at) return;
  if (log) appendFileSync(log, `${step}\n`);
  if (!at) return;
  const [target, delay] = at.split("+");
  if (target !== step) return;
  if (!delay) process.kill(process.pid, "SIGKILL");
  setTimeout(() => process.kill(process.pid, "SIGKILL"), Number(delay));
}

/**
 * Creates a volume agentenv manages if it does not exist yet: `volume:create` hooks,
 * the engine call, `fill` (the creator's content), then `volume:seed` hooks. A fill or
 * seed that fails, or Ctrl-C at any point, removes the volume again: nothing half-made.
 * The volume is labelled with NONCE (the command's own, else a new one) and used only once
 * it is seen carrying it: a volume another command made meanwhile (here, or on another
 * host sharing the engine; Docker's create says yes to an existing name) is neither
 * filled nor removed. Returns whether it was created.
 */
export async function ensureVolume(ctx: BaseContext, volume: VolumeSpec, fill?: () => Promise<void>, nonce = newNonce()): Promise<boolean> {
  const { plugins } = ctx;
  if (await ctx.runtime.volumeExists(volume.name)) return false;
  volume.labels = { "agentenv.volume": "1", ...volume.labels };
  await callHook(plugins, "volume:create", ctx, volume);
  volume.labels[nonceLabel] = nonce;
  let asked = false;
  let created = false;
  // only a volume carrying the nonce is removed: never one another command made
  const remove = async () => {
    if (asked) await removeOwnVolume(ctx, volume.name, nonce).catch(() => {});
  };
  await undoOnInterrupt(remove, async () => {
    asked = true;
    try {
      await ctx.runtime.volumeCreate(volume.name, volume.labels);
    } catch (error) {
      // Podman refuses an existing name: another command won the race
      if (await ctx.runtime.volumeExists(volume.name).catch(() => false)) return;
      throw error;
    }
    // Docker says yes to an existing name: it is ours only if it carries our nonce
    if (!(await ownsVolume(ctx, volume.name, nonce))) return;
    created = true;
    try {
      await fill?.();
      await callHook(plugins, "volume:seed", ctx, volume);
    } catch (error) {
      await remove();
      throw error;
    }
  });
  return created;
}
