import { realpathSync } from "node:fs";
import { UserError } from "./errors.ts";
import { agentenvDir } from "./paths.ts";
import { isUnder } from "./trust.ts";

/**
 * Which host paths may be shared with a container at all — as a root, a template copied
 * into a home, a dotfiles repo mounted in a session: never "/", a system path, nor one
 * that is or holds agentenv's own directories (its key, secrets, config).
 */

/** Paths the container needs for itself: a root may be neither one of them nor inside one. */
const systemPaths = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/nix", "/proc", "/run", "/sbin", "/sys", "/usr"];

/** "/" or a path the container needs for itself, or one inside it. */
export function isSystemPath(path: string): boolean {
  return path === "/" || systemPaths.some((p) => isUnder(path, p));
}

/**
 * agentenv's own directory (its key, secrets or config) that PATH is or holds: shared
 * with a container, whatever runs inside could read them.
 */
export function ownDirIn(path: string): string | undefined {
  return [agentenvDir("config"), agentenvDir("data")].find((own) => isUnder(own, path));
}

/**
 * A host path the user named for an environment, which agentenv copies into a home or
 * mounts elsewhere than at its own path (a template, a dotfiles repo, an archive): the
 * roots' rules for system paths and agentenv's own files, checked as written and after
 * symlinks. WHAT names it in the message ("dotfiles repo").
 */
export function refuseSharedPath(path: string, what: string): void {
  let real = path;
  try {
    real = realpathSync(path);
  } catch {
    // a path that does not exist is the caller's to report
  }
  for (const p of new Set([path, real])) {
    if (isSystemPath(p)) throw new UserError(`${what} ${p} is a system path`, "name a directory of your own");
    const own = ownDirIn(p);
    if (own) throw new UserError(`${what} ${p} holds agentenv's own keys and settings (${own})`, "name a directory of your own");
  }
}

