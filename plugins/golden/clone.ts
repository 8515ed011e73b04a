import { accessSync, constants, mkdirSync } from "node:fs";
import { join } from "pathe";
import { mountOverlay, unmount } from "../../core/linux.ts";
import type { GoldenStore } from "./layout.ts";

/**
 * How a session gets its private, writable /nix from the golden layers. Every strategy
 * fills `sessions/<name>/merged` (bind-mounted at /nix) and, when the session ends,
 * says which directory holds what the session wrote, so promotion can take its new
 * store paths from there.
 */
export interface CloneStrategy {
  name: "overlay";
  /** one line for `store status`: what a clone costs */
  cost: string;
  prepare(store: GoldenStore, session: string, stack: readonly string[]): Promise<void>;
  /** the session's container is gone: stop using `merged`; returns where its writes are */
  release(store: GoldenStore, session: string): Promise<string>;
}

/**
 * An overlay mount: the layers read-only below, a per-session upper directory on top.
 * Mounting costs the same for 1,000 or 1,000,000 files, and the layers are never
 * written while mounted (Linux leaves that undefined).
 */
export const overlayClone: CloneStrategy = {
  name: "overlay",
  cost: "copy-on-write overlay: constant time, whatever the store's size",
  async prepare(store, session, stack) {
    const dir = store.sessionDir(session);
    for (const sub of ["upper", "work", "merged"]) mkdirSync(join(dir, sub), { recursive: true });
    mountOverlay(join(dir, "merged"), {
      lower: stack.map((id) => store.layerDir(id)),
      upper: join(dir, "upper"),
      work: join(dir, "work"),
    });
  },
  async release(store, session) {
    const dir = store.sessionDir(session);
    unmount(join(dir, "merged"));
    return join(dir, "upper");
  },
};

/**
 * The golden store kept as an engine volume holding a plain /nix tree, for engines whose
 * volumes this host cannot reach as directories (Apple `container` on macOS, a VM or a
 * remote engine). Every step is an engine call: each session gets its own volume, cloned
 * from the golden one, and Nix itself copies the new paths back (./volume.ts).
 */
export interface VolumeStrategy {
  name: "volume";
  cost: string;
}

export const volumeClone: VolumeStrategy = {
  name: "volume",
  cost: "each session clones the store volume: constant time where the engine can clone disk images (Apple container), else a copy through a helper container",
};

export type StrategyChoice =
  | { strategy: CloneStrategy; reason: string }
  | { strategy: VolumeStrategy; reason: string }
  | { strategy: undefined; reason: string };

export type VolumeChoice = { strategy: VolumeStrategy; reason: string };

export function isVolumeChoice(choice: StrategyChoice | undefined): choice is VolumeChoice {
  return choice?.strategy?.name === "volume";
}

/** The layered strategy of CHOICE (overlay), if that is what it is. */
export function layeredStrategy(choice: StrategyChoice | undefined): CloneStrategy | undefined {
  return choice?.strategy && choice.strategy.name !== "volume" ? choice.strategy : undefined;
}

/**
 * The volume strategy when it is known without asking the engine: forced with
 * `AGENTENV_STORE_CLONE=volume`, an engine that runs containers in a VM of its own
 * (Apple `container`: its volumes are disk images), or a host that is not Linux.
 */
export function volumeChoiceWithoutEngine(
  runtime?: { name: string; sharesHostKernel: boolean },
  forced = process.env.AGENTENV_STORE_CLONE,
  platform: string = process.platform,
): VolumeChoice | undefined {
  if (forced === "volume") return { strategy: volumeClone, reason: "AGENTENV_STORE_CLONE=volume" };
  if (runtime && !runtime.sharesHostKernel) return { strategy: volumeClone, reason: `${runtime.name} runs containers in a VM: its volumes are disk images, not directories here` };
  if (platform !== "linux") return { strategy: volumeClone, reason: `the engine's volumes are not reachable as directories from ${platform}` };
  return undefined;
}

/**
 * The fastest strategy this process can use on ROOT (the golden volume's directory).
 * `AGENTENV_STORE_CLONE=volume` forces the engine-only strategy (any engine; also what
 * serves a kernel without overlayfs).
 */
export function chooseStrategy(root: string, forced = process.env.AGENTENV_STORE_CLONE): StrategyChoice {
  const early = volumeChoiceWithoutEngine(undefined, forced);
  if (early) return early;
  try {
    accessSync(root, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch {
    return { strategy: volumeClone, reason: `the volume's directory ${root || "(none reported)"} is not reachable from here (a remote or VM engine, or not your files)` };
  }
  // root here is root, or the user inside rootless Podman's namespace (core/runtime/userns.ts)
  if (process.getuid?.() === 0) return { strategy: overlayClone, reason: process.env._CONTAINERS_USERNS_CONFIGURED ? "overlay mounts inside rootless Podman's namespace" : "overlay mounts available (root)" };
  // a host-side copy cannot promote as a normal user outside that namespace: Nix's store
  // directories are read-only (0555) and only root may move or delete them
  return { strategy: volumeClone, reason: "not root and outside rootless Podman's namespace: no overlay mounts, and Nix's read-only store directories can only be moved inside the engine" };
}
