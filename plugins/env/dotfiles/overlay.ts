import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "pathe";
import { UserError } from "../../../core/errors.ts";
import { lockFile } from "../../../core/linux.ts";
import { readVault, removeVault, writeVault } from "../../../core/vault.ts";
import { overlayFile } from "./index.ts";
import { isInsideHome, stateDir, touchesState } from "../home.ts";

/**
 * An environment's overlay: files kept outside any repo (a machine-specific .gitconfig, a
 * token-bearing config), stored encrypted on this host and written into the home after
 * the dotfiles setup at the next boot, so they win over the repo's.
 */
export interface Overlay {
  version: 1;
  /** path relative to HOME → content (base64) and mode */
  files: Record<string, { mode: number; data: string }>;
}

const purpose = (env: string) => `overlay:${env}`;

export function readOverlay(env: string): Overlay {
  return readVault<Overlay>(overlayFile(env), purpose(env)) ?? { version: 1, files: Object.create(null) };
}

export function writeOverlay(env: string, overlay: Overlay): void {
  if (Object.keys(overlay.files).length) writeVault(overlayFile(env), purpose(env), overlay);
  else removeVault(overlayFile(env));
}

/**
 * Reads, changes and writes ENV's overlay under an exclusive lock: two `overlay add` at once
 * both land (without it the last writer wins and the other's file is lost).
 */
export function updateOverlay<T>(env: string, change: (overlay: Overlay) => T): T {
  const file = overlayFile(env);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const lock = lockFile(`${file}.lock`, "exclusive")!;
  try {
    const overlay = readOverlay(env);
    const result = change(overlay);
    writeOverlay(env, overlay);
    return result;
  } finally {
    lock.release();
  }
}

/** HOME_PATH → a clean path relative to HOME; absolute paths, `..` and agentenv's own state are refused. */
export function checkOverlayPath(path: string | undefined): string {
  if (!path) throw new UserError("a path under HOME is needed", "e.g. agentenv env overlay dev add .gitconfig --from ~/.gitconfig");
  const rel = path.replace(/^~\//, "").replace(/^(\.\/)+/, "");
  // a trailing slash leaves an empty last part: not a file
  if (!isInsideHome(rel)) throw new UserError(`${path}: give a file path inside HOME, e.g. .bashrc or .config/nvim/init.lua (no absolute paths, no ..)`);
  if (touchesState(rel)) throw new UserError(`${path}: ${stateDir} is agentenv's own state`);
  if (rel.split("/")[0] === ".dotfiles") throw new UserError(`${path}: ~/.dotfiles is the dotfiles repo's checkout; change the repo instead`);
  return rel;
}

/** Changes whenever any file, its path or its mode does. */
export function overlayHash(overlay: Overlay): string {
  const hash = createHash("sha256");
  for (const path of Object.keys(overlay.files).sort()) {
    const file = overlay.files[path]!;
    hash.update(`${path}\0${file.mode}\0${file.data}\0`);
  }
  return hash.digest("hex");
}

/** The overlay in the clear under DIR/overlay (the session's handoff), with DIR/overlay.hash. */
export function writeOverlayFiles(overlay: Overlay, dir: string): void {
  for (const [path, file] of Object.entries(overlay.files)) {
    const target = join(dir, "overlay", path);
    mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
    writeFileSync(target, Buffer.from(file.data, "base64"));
    // the mode as stored, whatever the umask (cp -p in the container keeps it)
    chmodSync(target, file.mode & 0o777);
  }
  writeFileSync(join(dir, "overlay.hash"), `${overlayHash(overlay)}\n`, { mode: 0o600 });
}
