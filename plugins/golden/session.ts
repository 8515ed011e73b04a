import { mkdirSync } from "node:fs";
import { join } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { lockFile, type FileLock } from "../../core/linux.ts";
import { formatBytes } from "../../core/log.ts";
import { helperPlan, shellQuote } from "../../core/plan.ts";
import type { BaseContext, SessionContext, VolumeSpec } from "../../core/plugins.ts";
import { crashPoint, ensureVolume, volumeDir, writeAtomic } from "../../core/volumes.ts";
import { chooseStrategy, isVolumeChoice, layeredStrategy, overlayClone, volumeChoiceWithoutEngine, type CloneStrategy, type StrategyChoice, type VolumeChoice } from "./clone.ts";
import { GoldenStore, markerName, type SessionRecord, type StoreMarker } from "./layout.ts";
import { droppedWarnings, lastId, openReadOnly } from "./nixdb.ts";
import { promote, rebuild } from "./promote.ts";
import { endVolumeStore, hasDetachedSession, layoutLabel, mountVolumeStore, recordedChoice, seedVolumeStore, startVolumeStore } from "./volume.ts";

/**
 * Past this many layers, a promotion also compacts the stack into one layer (each layer
 * is one more directory every lookup may visit). `AGENTENV_STORE_MAX_LAYERS` tunes it.
 */
function maxLayers(): number {
  const n = Number(process.env.AGENTENV_STORE_MAX_LAYERS);
  return Number.isInteger(n) && n > 0 ? n : 16;
}

export interface Located {
  volume: string;
  /** the volume's directory on the engine's host; undefined while the volume is missing or unseeded, and for the volume strategy */
  root?: string;
  choice?: StrategyChoice;
}

/**
 * Finds the golden store's directory (cached: no engine call on the hot path), or says
 * the store is kept as an engine volume (./volume.ts): forced, on a host that is not
 * Linux, for a volume seeded that way (the host's record), or when the volume's
 * directory is out of reach.
 */
export async function locateStore(ctx: BaseContext): Promise<Located> {
  const volume = ctx.config.storeVolume;
  const early = volumeChoiceWithoutEngine(ctx.runtime) ?? recordedChoice(ctx);
  if (early) return { volume, choice: early };
  const { dir, marked } = await volumeDir(ctx, volume, markerName);
  if (!dir) return { volume };
  const choice = chooseStrategy(dir);
  if (isVolumeChoice(choice)) return { volume, choice };
  if (choice.strategy && !marked) return { volume, choice };
  return { volume, root: dir, choice };
}

/**
 * `volume:seed` of the golden store volume: the layered layout (./layout.ts) where its
 * directory is reachable, else a plain /nix tree (./volume.ts, which also seeds the
 * volumes it creates itself).
 */
export async function seedGolden(ctx: BaseContext, volume: VolumeSpec): Promise<void> {
  if (volume.labels[layoutLabel]) return;
  const choice = volumeChoiceWithoutEngine(ctx.runtime) ?? chooseStrategy((await ctx.runtime.volumeMountpoint(volume.name)) ?? "");
  if (isVolumeChoice(choice)) return seedVolumeStore(ctx, volume.name, choice.reason);
  await seedStore(ctx, volume.name);
}

/**
 * Fills a new (or half-seeded) store volume with the image's /nix as layer 0, all inside
 * a helper container, so seeding works on any engine. Idempotent: a seed copies into a
 * private directory and only the first to finish becomes layer 0.
 */
export async function seedStore(ctx: BaseContext, volume: string): Promise<void> {
  const image = ctx.config.image;
  const marker: StoreMarker = { volume, created: new Date().toISOString(), image };
  const tmp = `/golden/layers/.seed-${crypto.randomUUID()}`;
  const script = [
    "set -e",
    'command -v nix-store >/dev/null || { echo "the image has no Nix (nix-store not found)" >&2; exit 3; }',
    // an image that never ran Nix has no database yet: create it, so layer 0 has one
    "[ -e /nix/var/nix/db/db.sqlite ] || nix-store --init",
    `mkdir -p /golden/layers /golden/sessions ${tmp} && cp -a /nix/. ${tmp}/`,
    `mv -T ${tmp} /golden/layers/0 2>/dev/null || rm -rf ${tmp}`,
    "[ -e /golden/stack ] || { echo 0 > /golden/stack.tmp && mv /golden/stack.tmp /golden/stack; }",
    `[ -e /golden/${markerName} ] || { printf '%s\\n' ${shellQuote(JSON.stringify(marker))} > /golden/marker.tmp && mv /golden/marker.tmp /golden/${markerName}; }`,
  ].join("\n");
  ctx.log.start(`seeding the golden Nix store (volume ${volume}) from ${image}…`);
  crashPoint("store:seed");
  const plan = helperPlan({ image, purpose: "seed-store", mounts: [{ type: "volume", source: volume, target: "/golden" }], script });
  const result = await ctx.runtime.capture(plan);
  if (result.code !== 0) {
    throw new UserError(`seeding the golden store from ${image} failed: ${result.stderr.trim() || `exit ${result.code}`}`, "use --store none to run without it");
  }
}

interface ActiveSession {
  store: GoldenStore;
  strategy: CloneStrategy;
  record: SessionRecord;
  lock: FileLock;
}

interface SessionState {
  located: Located;
  active?: ActiveSession;
  /** the session uses the volume strategy (./volume.ts keeps its state) */
  volume?: boolean;
}

/**
 * The golden plugin's part of the session's record (`ctx.saved.golden`): which store its
 * clone came from and how it was made, so a later agentenv ends it there (`down`) without
 * locating the store again from config.
 */
interface SavedStore {
  volume: string;
  /** the layered store's directory (overlay clones) */
  root?: string;
  clone: "overlay" | "volume";
}

/** The golden plugin's state in a session (`ctx.state.golden`). */
function stateOf(ctx: SessionContext): SessionState | undefined {
  return ctx.state.golden as SessionState | undefined;
}

function mountInPlan(ctx: SessionContext, root: string): void {
  const merged = join(new GoldenStore(root).sessionDir(ctx.plan.name), "merged");
  ctx.plan.mounts.push({ type: "bind", source: merged, target: "/nix" });
  ctx.plan.labels["agentenv.store"] = ctx.config.store;
}

/** `session:mount`: the plan gets this session's clone at /nix (made in `startStore`). */
export async function mountStore(ctx: SessionContext): Promise<void> {
  const located = await locateStore(ctx);
  ctx.state.golden = { located, volume: isVolumeChoice(located.choice) } satisfies SessionState;
  if (isVolumeChoice(located.choice)) mountVolumeStore(ctx);
  else if (located.root && located.choice?.strategy) mountInPlan(ctx, located.root);
}

async function startVolume(ctx: SessionContext, state: SessionState, choice: VolumeChoice, mount: boolean): Promise<void> {
  if (mount) mountVolumeStore(ctx);
  state.volume = true;
  await startVolumeStore(ctx, choice);
  ctx.saved.golden = { volume: state.located.volume, clone: "volume" } satisfies SavedStore;
}

/**
 * Sessions whose agentenv died and whose container is gone (or stopped): their clones
 * are discarded, never promoted. Caller holds the exclusive lock. Only a container the
 * engine reports absent or stopped counts: an engine that cannot answer keeps it. A
 * detached session (`agentenv up`) is always kept: its clone is promoted when it is
 * taken down.
 */
export async function deadSessions(ctx: BaseContext, store: GoldenStore): Promise<{ dead: string[]; running: string[] }> {
  const dead: string[] = [];
  const running: string[] = [];
  for (const name of store.sessionNames()) {
    if (!store.isAbandoned(name)) {
      running.push(name);
      continue;
    }
    const record = store.session(name);
    try {
      // a long-running container's clone waits for its `down` (or next `up`) to promote it,
      // whatever became of the container: asking the engine would only cost time
      if (record?.detached) running.push(name);
      else if (record && (await ctx.runtime.containerStatus(record.container)) === "running") running.push(name);
      else dead.push(name);
    } catch (error) {
      ctx.log.debug(`golden store: keeping session ${name} for now: ${messageOf(error)}`);
      running.push(name);
    }
  }
  return { dead, running };
}

/** Removes what dead sessions left behind (cheap when there is nothing: one readdir, a few flocks). */
async function reapAbandoned(ctx: BaseContext, store: GoldenStore): Promise<void> {
  if (!store.sessionNames().some((name) => store.isAbandoned(name) && !store.session(name)?.detached)) return;
  await store.withLock("exclusive", async () => {
    for (const name of (await deadSessions(ctx, store)).dead) {
      try {
        await store.removeSession(name);
        ctx.log.debug(`golden store: removed what session ${name} left behind`);
      } catch (error) {
        ctx.log.warn(`golden store: could not remove the leftovers of session ${name}: ${messageOf(error)}`);
      }
    }
    store.reclaimLayers();
  });
}

/** `session:start`: seed the store on first use, then make this session's clone. */
export async function startStore(ctx: SessionContext): Promise<void> {
  const state = stateOf(ctx) ?? { located: await locateStore(ctx) };
  ctx.state.golden = state;
  if (isVolumeChoice(state.located.choice)) return startVolume(ctx, state, state.located.choice, !state.volume);
  if (!state.located.root) {
    const volume = state.located.volume;
    try {
      if (!state.located.choice) {
        // another agentenv may create it at the same moment: then theirs is used
        await ensureVolume(ctx, { name: volume, labels: { "agentenv.store": "golden" } }).catch(async (error) => {
          if (!(await ctx.runtime.volumeExists(volume))) throw error;
        });
        state.located = await locateStore(ctx);
      }
      // there but unseeded (a seed that died, or one still running elsewhere): seeding is idempotent
      if (!state.located.root && layeredStrategy(state.located.choice)) await seedStore(ctx, volume);
    } catch (error) {
      // a stopped engine or a missing image: say that, not what it broke first
      const why = await ctx.runtime.diagnose(ctx.plan);
      throw why ? new UserError(why) : error;
    }
    state.located = await locateStore(ctx);
    // just created, and its directory is out of reach: seeded as a volume store
    if (isVolumeChoice(state.located.choice)) return startVolume(ctx, state, state.located.choice, true);
    if (state.located.root && state.located.choice?.strategy) mountInPlan(ctx, state.located.root);
  }
  const { root, choice } = state.located;
  const strategy = layeredStrategy(choice);
  if (!root || !strategy) {
    ctx.log.warn(`golden store unavailable: ${choice?.reason ?? "volume not found"} — using the image's /nix (--store none silences this)`);
    return;
  }
  const store = new GoldenStore(root);
  await reapAbandoned(ctx, store);
  const name = ctx.plan.name;
  const dir = store.sessionDir(name);
  let lock: FileLock | undefined;
  let record: SessionRecord;
  // under the shared lock, so no gc can delete the layers between reading the stack and
  // recording that this session uses them
  const shared = store.lock("shared");
  try {
    if (!store.marker()) throw new UserError("the golden store was reset while this session started", "run the command again");
    mkdirSync(dir, { recursive: true });
    lock = lockFile(join(dir, "lock"), "exclusive")!;
    const stack = store.stack();
    const db = openReadOnly(store.topDatabase(stack));
    const baseId = lastId(db);
    db.close();
    record = { container: name, stack, baseId, mode: ctx.config.store === "ephemeral" ? "ephemeral" : "golden", started: new Date().toISOString() };
    if (ctx.mode === "up") record.detached = true;
    writeAtomic(join(dir, "session.json"), JSON.stringify(record, null, 2));
  } catch (error) {
    lock?.release();
    await store.removeSession(name);
    throw error;
  } finally {
    shared.release();
  }
  try {
    await strategy.prepare(store, name, record.stack);
  } catch (error) {
    await store.removeSession(name);
    lock.release();
    throw new UserError(`could not clone the golden store for this session: ${messageOf(error)}`, "use --store none to run without it");
  }
  state.active = { store, strategy, record, lock };
  ctx.saved.golden = { volume: state.located.volume, root, clone: "overlay" } satisfies SavedStore;
  crashPoint("store:cloned");
}

/**
 * `session:exit`: promote what the session added (golden mode), then remove its clone.
 * Never fails the session: the command's exit code stands, problems are warnings.
 */
export async function endStore(ctx: SessionContext, _result: { exitCode: number }): Promise<void> {
  const state = stateOf(ctx);
  // a detached session ended by a new agentenv (`down`) has no state here: its record says which kind it is
  const saved = ctx.saved.golden as SavedStore | undefined;
  if (state?.volume || (!state && ctx.mode === "up" && (saved ? saved.clone === "volume" : hasDetachedSession(ctx)))) return endVolumeStore(ctx);
  const active = state?.active ?? (ctx.mode === "up" ? await resumeDetached(ctx) : undefined);
  if (!active) return;
  const { store, strategy, record, lock } = active;
  let step = "releasing this session's clone";
  try {
    const source = await strategy.release(store, record.container);
    crashPoint("store:released");
    if (record.mode === "ephemeral") return;
    await store.withLock("exclusive", async () => {
      step = "promoting this session's new paths (the golden store is unchanged)";
      const promotion = await promote(store, source, record);
      for (const line of promotion ? droppedWarnings(promotion.dropped, promotion.strays) : []) ctx.log.warn(`golden store: ${line}`);
      if (promotion?.paths.length) {
        step = "recording the promotion (the paths are promoted)";
        store.recordPromotion({ time: new Date().toISOString(), session: record.container, layer: promotion.layer, paths: promotion.paths.length, bytes: promotion.bytes });
        ctx.log.info(`golden store: promoted ${promotion.paths.length} new store path${promotion.paths.length === 1 ? "" : "s"} (${formatBytes(promotion.bytes)})`);
        if (store.stack().length > maxLayers()) {
          step = "compacting the golden store's layers (the paths are promoted)";
          ctx.log.start(`golden store: compacting ${store.stack().length} layers into one…`);
          await rebuild(store);
        }
      }
    });
  } catch (error) {
    ctx.log.warn(`golden store: ${step} failed: ${messageOf(error)}`);
  } finally {
    try {
      await store.removeSession(record.container);
    } catch (error) {
      ctx.log.warn(`golden store: could not remove this session's clone (the next session retries): ${messageOf(error)}`);
    }
    lock.release();
  }
  await reclaimIfNeeded(ctx, store);
}

/**
 * A long-running container's clone, ended by a later agentenv (`down`, or an `up` that
 * finds it stopped): found on disk by the container's name. Undefined when there is none,
 * or another agentenv is ending it right now.
 */
async function resumeDetached(ctx: SessionContext): Promise<ActiveSession | undefined> {
  const saved = ctx.saved.golden as SavedStore | undefined;
  // where its record says it cloned from (an older agentenv's record: where config says the store is)
  const { root, strategy } = saved?.root ? { root: saved.root, strategy: overlayClone } : await locateStore(ctx).then((located) => ({ root: located.root, strategy: layeredStrategy(located.choice) }));
  if (!root || !strategy) return undefined;
  const store = new GoldenStore(root);
  const record = store.session(ctx.plan.name);
  if (!record?.detached) return undefined;
  let lock: FileLock | undefined;
  try {
    lock = lockFile(join(store.sessionDir(ctx.plan.name), "lock"), "exclusive", false, false);
  } catch {
    return undefined; // its directory went away meanwhile
  }
  return lock && { store, strategy, record, lock };
}

/** Layers a gc or compaction replaced can go once no session names them; a later run retries. */
async function reclaimIfNeeded(ctx: BaseContext, store: GoldenStore): Promise<void> {
  try {
    if (store.hasUnlistedLayers()) await store.withLock("exclusive", () => store.reclaimLayers());
  } catch (error) {
    ctx.log.warn(`golden store: could not delete unused layers (a later session retries): ${messageOf(error)}`);
  }
}
