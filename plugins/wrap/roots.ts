import { existsSync, realpathSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "pathe";
import { expandHome, projectConfigName } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { agentenvDir } from "../../core/paths.ts";
import { containerHome } from "../../core/plan.ts";

/**
 * Roots: the host directories an environment container may see, each mounted at its
 * own absolute path. Everything outside them stays on the host.
 */

/** Paths the container needs for itself: a root may be neither one of them nor inside one. */
const systemPaths = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/nix", "/proc", "/run", "/sbin", "/sys", "/usr"];

/** PATH is ROOT or inside it. */
export function isUnder(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/** A root may be neither a system path nor contain agentenv's own files: checked before and after symlinks. */
function refuseSystemPath(root: string): void {
  if (root === "/" || systemPaths.some((p) => isUnder(root, p))) {
    throw new UserError(`root ${root}: the container needs that path for itself`, "use a project directory, e.g. ~/Code");
  }
  if (isUnder(root, containerHome)) {
    throw new UserError(`root ${root}: inside ${containerHome}, which is the environment's home in the container`, "keep projects outside it (e.g. /srv/code), or run agentenv as a user whose HOME is elsewhere");
  }
  // agentenv's key, secrets and config would be open to whatever runs inside
  for (const own of [agentenvDir("config"), agentenvDir("data")]) {
    if (isUnder(own, root)) throw new UserError(`root ${root}: it holds agentenv's own keys and settings (${own})`, "use a project directory, e.g. ~/Code");
  }
}

/**
 * Absolute, not a system path, existing, real, no nesting: what `up` mounts. The path as
 * written is refused before it is looked at (a system path is refused whether or not
 * this host has it), its real path again after symlinks are resolved.
 */
export function checkRoots(dirs: readonly string[], from = process.cwd()): string[] {
  const roots = dirs.map((dir) => {
    const abs = resolve(from, expandHome(dir));
    refuseSystemPath(abs);
    if (!existsSync(abs)) throw new UserError(`root ${dir}: no such directory`);
    if (!statSync(abs).isDirectory()) throw new UserError(`root ${dir}: not a directory`);
    const root = realpathSync(abs);
    // the engines' -v syntax splits on ":", and roots travel as a ","-separated list
    if (/[:,\n]/.test(root)) throw new UserError(`root ${root}: a path with ":", "," or a newline cannot be mounted`);
    refuseSystemPath(root);
    return root;
  });
  // a root inside another is already mounted with it
  const sorted = [...new Set(roots)].sort();
  return sorted.filter((root) => !sorted.some((other) => other !== root && isUnder(root, other)));
}

/**
 * The project CWD belongs to: the nearest directory holding `.git` or an agentenv
 * config, not going above HOME; else CWD itself.
 */
export function projectOf(cwd: string, home = homedir()): string {
  for (let dir = cwd; ; dir = dirname(dir)) {
    // HOME's own .git (a dotfiles repo) does not make all of HOME the project
    if (dir === home && dir !== cwd) return cwd;
    if (existsSync(join(dir, ".git")) || existsSync(join(dir, projectConfigName))) return dir;
    if (dir === "/") return cwd;
  }
}

/** `--roots a,b` > config `roots` > the current project. */
export function wantedRoots(flag: string | undefined, configured: readonly string[], cwd: string): string[] {
  if (flag !== undefined) {
    const dirs = flag.split(",").filter(Boolean);
    if (!dirs.length) throw new UserError("--roots needs at least one directory");
    return checkRoots(dirs);
  }
  return checkRoots(configured.length ? configured : [projectOf(cwd)]);
}

/** The current directory must be inside one of ROOTS; checked before any engine call. */
export function checkInside(cwd: string, roots: readonly string[], what: string, hint?: string): void {
  if (roots.some((root) => isUnder(cwd, root))) return;
  throw new UserError(`${cwd} is outside the roots ${what}: ${roots.join(", ")}`, hint, 126);
}
