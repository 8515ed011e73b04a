import { defineCommand } from "citty";
import { existsSync, lstatSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "pathe";
import { globalArgs, hostArgs, logFor, runtimeArgs } from "../../core/commands/_shared.ts";
import { UserError } from "../../core/errors.ts";
import { callHook, type BaseContext } from "../../core/plugins.ts";
import { commandContext } from "../../core/session.ts";
import { crashPoint, ensureVolume } from "../../core/volumes.ts";
import { GoldenStore, markerName, type PromotionRecord, type StoreMarker } from "./layout.ts";
import { liveClosure, rebuild, storeStats } from "./promote.ts";
import { formatBytes } from "../../core/log.ts";
import { isVolumeChoice, layeredStrategy, type VolumeChoice } from "./clone.ts";
import { deadSessions, locateStore } from "./session.ts";
import { gcVolumeStore, resetVolumeStore, volumeStatus as readVolumeStatus } from "./volume.ts";

const storeArgs = {
  ...runtimeArgs,
  ...globalArgs,
} as const;


/** The store, ready for host-side work, or a one-line reason why not. */
async function requireStore(ctx: BaseContext): Promise<GoldenStore> {
  const located = await locateStore(ctx);
  if (!located.root) throw new UserError(`the golden store (volume ${located.volume}) does not exist yet`, "the first session creates it: agentenv run . -- true");
  if (!located.choice?.strategy) throw new UserError(`the golden store is not reachable from here: ${located.choice?.reason}`);
  return new GoldenStore(located.root);
}

function liveSessions(store: GoldenStore): string[] {
  return store.sessionNames().filter((name) => !store.isAbandoned(name));
}

interface Status {
  engine: string;
  volume: string;
  exists: boolean;
  root?: string;
  strategy?: string;
  strategyNote?: string;
  /** why this strategy: root, inside rootless Podman's namespace, forced… */
  strategyReason?: string;
  seeded?: StoreMarker;
  layers?: number;
  paths?: number;
  bytes?: number;
  sessions?: string[];
  lastPromotion?: PromotionRecord;
}

const status = defineCommand({
  meta: { name: "status", description: "Show the golden store: engine, volume, clone strategy, size, paths, last promotion" },
  args: { json: { type: "boolean", description: "Print as JSON" }, ...storeArgs, ...hostArgs },
  async run({ args }) {
    const ctx = await commandContext(args);
    const located = await locateStore(ctx);
    if (isVolumeChoice(located.choice)) return volumeStatus(ctx, located.choice, Boolean(args.json));
    const result: Status = { engine: ctx.runtime.name, volume: located.volume, exists: Boolean(located.root) };
    if (located.root && !located.choice?.strategy) {
      // the volume exists but its files are out of reach (a VM or remote engine)
      Object.assign(result, { root: located.root, strategy: "unavailable", strategyNote: located.choice?.reason });
    } else if (located.root) {
      const store = new GoldenStore(located.root);
      Object.assign(result, {
        root: located.root,
        strategy: located.choice?.strategy?.name ?? "unavailable",
        strategyNote: located.choice?.strategy?.cost ?? located.choice?.reason,
        strategyReason: located.choice?.reason,
        seeded: store.marker(),
        layers: store.stack().length,
        ...storeStats(store),
        sessions: liveSessions(store),
        lastPromotion: store.lastPromotion(),
      });
    }
    if (args.json) {
      console.log(JSON.stringify(result, null, 2));
      return 0;
    }
    const rows: Array<[string, string]> = [
      ["engine", result.engine],
      ["volume", result.root ? `${result.volume} (${result.root})` : `${result.volume} — not created yet (the first session seeds it)`],
    ];
    if (result.strategy === "unavailable") rows.push(["strategy", `unavailable — ${result.strategyNote}`]);
    else if (result.root) {
      rows.push(
        ["strategy", `${result.strategy} — ${result.strategyNote}`],
        ["seeded", result.seeded ? `${result.seeded.created} from ${result.seeded.image}` : "unknown"],
        ["layers", String(result.layers)],
        ["paths", `${result.paths} (${formatBytes(result.bytes ?? 0)})`],
        ["sessions", result.sessions?.length ? result.sessions.join(", ") : "none running"],
      );
      const last = result.lastPromotion;
      rows.push(["promoted", last ? `${last.time}: ${last.paths} paths (${formatBytes(last.bytes)}) from ${last.session}` : "never"]);
    }
    for (const [key, value] of rows) console.log(`${key.padEnd(9)} ${value}`);
    return 0;
  },
});

/** `store status` for a golden store kept as an engine volume (./volume.ts): the host's records. */
async function volumeStatus(ctx: BaseContext, choice: VolumeChoice, json: boolean): Promise<number> {
  const result = await readVolumeStatus(ctx, choice);
  if (json) {
    console.log(JSON.stringify(result, null, 2));
    return 0;
  }
  const { seeded, lastPromotion: last } = result;
  const rows: Array<[string, string]> = [
    ["engine", result.engine],
    ["volume", `${result.volume} (${result.exists ? "an engine volume, not a directory here" : "not created yet: the first session seeds it"})`],
    ["strategy", `volume — ${result.strategyNote}`],
    ["why", result.reason],
    ["seeded", seeded ? `${seeded.seeded} from ${seeded.image}` : "not yet (the first session seeds it)"],
  ];
  if (seeded?.cloneFallback) rows.push(["clone", `copied through a helper container: ${seeded.cloneFallback}`]);
  rows.push(
    ["sessions", result.sessions.length ? result.sessions.join(", ") : "none running"],
    ["promoted", last ? `${last.time}: ${last.paths} paths (${formatBytes(last.bytes)}) from ${last.session}` : "never"],
  );
  for (const [key, value] of rows) console.log(`${key.padEnd(9)} ${value}`);
  return 0;
}

/** `/nix/store/<hash-name>` of a path inside the store, or undefined. */
function storePathOf(target: string): string | undefined {
  const match = /^\/nix\/store\/([^/]+)/.exec(target);
  return match ? `/nix/store/${match[1]}` : undefined;
}

/**
 * The store's own roots: symlinks into the store under /nix/var/nix/gcroots and
 * /nix/var/nix/profiles in any layer (profiles link through generation links).
 */
function ownRoots(store: GoldenStore): Set<string> {
  const roots = new Set<string>();
  const layers = store.stack().map((id) => store.layerDir(id));
  const inLayers = (nixPath: string) => layers.map((l) => join(l, nixPath.replace(/^\/nix\//, ""))).find((p) => existsSync(p) || isLink(p));
  const follow = (nixPath: string, hops = 0) => {
    const file = inLayers(nixPath);
    if (!file || hops > 20) return;
    if (!isLink(file)) return;
    const target = resolve(dirname(nixPath), readlinkSync(file));
    const storePath = storePathOf(target);
    if (storePath) roots.add(storePath);
    else if (target.startsWith("/nix/")) follow(target, hops + 1);
  };
  const walk = (nixDir: string) => {
    const names = new Set<string>();
    for (const layer of layers) {
      try {
        for (const name of readdirSync(join(layer, nixDir.replace(/^\/nix\//, "")))) names.add(name);
      } catch {}
    }
    for (const name of names) {
      const nixPath = `${nixDir}/${name}`;
      const file = inLayers(nixPath);
      if (!file) continue;
      if (isLink(file)) follow(nixPath);
      else if (lstatSync(file).isDirectory()) walk(nixPath);
    }
  };
  walk("/nix/var/nix/gcroots");
  walk("/nix/var/nix/profiles");
  return roots;
}

function isLink(file: string): boolean {
  try {
    return lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

const gc = defineCommand({
  meta: {
    name: "gc",
    description: "Delete store paths nothing needs: keeps the closure of the store's own roots and of what plugins name (environments' profiles)",
  },
  args: {
    "dry-run": { type: "boolean", description: "Only list what would be deleted" },
    json: { type: "boolean", description: "Print the result as JSON" },
    ...storeArgs,
    host: { type: "string", valueHint: "name", description: "Collect the golden store of this remote host (agentenv host list) instead: an engine volume there, collected in a helper container there" },
  },
  async run({ args }) {
    const ctx = await commandContext(args);
    const located = await locateStore(ctx);
    if (isVolumeChoice(located.choice)) {
      // an engine volume (a remote host's, a VM's): Nix collects it in a helper container there, with the roots plugins name
      const named = async () => {
        const roots = new Set<string>();
        await callHook(ctx.plugins, "store:roots", ctx, roots);
        return new Set([...roots].map((r) => storePathOf(r)).filter((r): r is string => r !== undefined));
      };
      const report = await gcVolumeStore(ctx, named, Boolean(args["dry-run"]));
      if (args.json) console.log(JSON.stringify(report, null, 2));
      else if (report.wouldDelete !== undefined) console.log(report.wouldDelete === 0 ? `nothing to collect (${report.live} live paths)` : `would delete ${report.wouldDelete} of ${report.live + report.wouldDelete} paths (${report.live} live)`);
      else console.log(`deleted ${report.deleted} store paths, ${formatBytes(report.freedBytes)} freed; ${report.live} live paths kept`);
      return 0;
    }
    const store = await requireStore(ctx);
    const roots = ownRoots(store);
    await callHook(ctx.plugins, "store:roots", ctx, roots);
    const normalised = new Set([...roots].map((r) => storePathOf(r)).filter((r): r is string => r !== undefined));
    return store.withLock("exclusive", async () => {
      const before = storeStats(store);
      const live = liveClosure(store, normalised);
      const dead = before.paths - live.size;
      if (args["dry-run"] || dead === 0) {
        const report = { roots: normalised.size, live: live.size, deleted: 0, wouldDelete: dead, freedBytes: 0 };
        if (args.json) console.log(JSON.stringify(report, null, 2));
        else console.log(dead === 0 ? `nothing to collect (${live.size} live paths)` : `would delete ${dead} of ${before.paths} paths (${live.size} live)`);
        return 0;
      }
      ctx.log.start(`collecting ${dead} store paths…`);
      const { removed } = await rebuild(store, live);
      store.reclaimLayers();
      const after = storeStats(store);
      const report = { roots: normalised.size, live: live.size, deleted: removed.length, freedBytes: before.bytes - after.bytes };
      if (args.json) console.log(JSON.stringify(report, null, 2));
      else console.log(`deleted ${removed.length} store paths, ${formatBytes(report.freedBytes)} freed; ${live.size} live paths kept`);
      return 0;
    });
  },
});

/** Asks QUESTION on the terminal; off a terminal, `--yes` is required. */
function confirmReset(question: string): boolean {
  if (!process.stdin.isTTY) throw new UserError("store reset deletes every path in the golden store: pass --yes to confirm");
  return /^y(es)?$/i.test(prompt(`${question} [y/N]`)?.trim() ?? "");
}

const reset = defineCommand({
  meta: { name: "reset", description: "Throw the golden store away and seed it again from the image" },
  args: {
    yes: { type: "boolean", alias: "y", description: "Do not ask for confirmation" },
    ...storeArgs,
    host: { type: "string", valueHint: "name", description: "Reset the golden store of this remote host (agentenv host list) instead, seeded there from the image there" },
  },
  async run({ args }) {
    const ctx = await commandContext(args);
    const located = await locateStore(ctx);
    if (isVolumeChoice(located.choice)) {
      const where = args.host ? ` on ${args.host}` : "";
      if (!args.yes && !confirmReset(`Delete the golden store ${located.volume}${where} and seed it again from ${ctx.config.image}?`)) {
        console.log("cancelled");
        return 1;
      }
      await resetVolumeStore(ctx, located.choice);
      ctx.log.success(`golden store ${located.volume}${where} seeded from ${ctx.config.image}`);
      return 0;
    }
    // a store without its marker (a reset killed midway, a seed that died) is still checked
    // for sessions: dead ones may have left their clones mounted inside it
    const root = located.root ?? (layeredStrategy(located.choice) ? await ctx.runtime.volumeMountpoint(located.volume) : undefined);
    if (root && layeredStrategy(located.choice)) {
      const store = new GoldenStore(root);
      if (!args.yes) {
        if (!process.stdin.isTTY) throw new UserError("store reset deletes every path in the golden store: pass --yes to confirm");
        const size = store.marker() ? storeStats(store) : undefined;
        const answer = prompt(`Delete the golden store ${located.volume}${size ? ` (${size.paths} paths, ${formatBytes(size.bytes)})` : ""} and seed it again from ${ctx.config.image}? [y/N]`);
        if (!/^y(es)?$/i.test(answer?.trim() ?? "")) {
          console.log("cancelled");
          return 1;
        }
      }
      await store.withLock("exclusive", async () => {
        // running = agentenv alive, or killed while its container runs on
        const { dead, running } = await deadSessions(ctx, store);
        if (running.length) throw new UserError(`the golden store is in use by ${running.length} session(s): ${running.join(", ")}`, "end them first");
        // from here on a starting session sees no marker and stops; dead ones' clones are unmounted
        rmSync(join(store.root, markerName), { force: true });
        crashPoint("store-reset:unmarked");
        for (const name of dead) await store.removeSession(name);
      });
    }
    if (await ctx.runtime.volumeExists(located.volume)) await ctx.runtime.volumeRemove(located.volume);
    crashPoint("store-reset:removed");
    await ensureVolume(ctx, { name: located.volume, labels: { "agentenv.store": "golden" } });
    ctx.log.success(`golden store ${located.volume} seeded from ${ctx.config.image}`);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "store", description: "The golden Nix store every session's /nix is cloned from" },
  subCommands: { status, gc, reset },
});
