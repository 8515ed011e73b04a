import { existsSync, realpathSync, statSync } from "node:fs";
import { resolve } from "pathe";
import { expandHome } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import { isSystemPath, ownDirIn } from "../../core/hostpaths.ts";
import { isUnder, projectOf } from "../../core/trust.ts";

/**
 * Roots: the host directories an environment container may see, each mounted at its
 * own absolute path. Everything outside them stays on the host.
 */

/** A root may be neither a system path nor contain agentenv's own files: checked before and after symlinks. */
function refuseSystemPath(root: string): void {
  if (isSystemPath(root)) {
    throw new UserError(`root ${root}: the container needs that path for itself`, "use a project directory, e.g. ~/Code");
  }
  if (isUnder(root, containerHome)) {
    throw new UserError(`root ${root}: inside ${containerHome}, which is the environment's home in the container`, "keep projects outside it (e.g. /srv/code), or run agentenv as a user whose HOME is elsewhere");
  }
  const own = ownDirIn(root);
  if (own) throw new UserError(`root ${root}: it holds agentenv's own keys and settings (${own})`, "use a project directory, e.g. ~/Code");
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

/**
 * The roots of an environment container on remote host HOST (`up --host`), from `--roots`
 * only (config `roots` are this machine's directories): a directory there, written
 * `HOST:PATH` (as scp and rsync write them) — absolute, no "..", not a path the container
 * needs for itself — is mounted as it is; any other is a directory on this machine
 * (checked as a local root), live-shared there for the container's life (plugins/remote).
 * Each is at the same path inside. No `--roots`: undefined (a running container's own).
 */
export function hostRoots(flag: string | undefined, host: string): { roots: string[]; shared: string[] } | undefined {
  if (flag === undefined) return undefined;
  const words = flag.split(",").filter(Boolean);
  if (!words.length) throw new UserError("--roots needs at least one directory");
  const there: string[] = [];
  const here: string[] = [];
  for (const word of words) {
    const colon = word.indexOf(":");
    const named = colon > 0 ? word.slice(0, colon) : undefined;
    if (named !== host) {
      if (named && /^[a-z0-9][a-z0-9_-]*$/.test(named) && !word.startsWith("/") && !word.startsWith(".")) {
        throw new UserError(`root ${word} is on host ${named}, but the container runs on ${host}`, `write its roots as ${host}:/path, or directories on this machine`);
      }
      here.push(word);
      continue;
    }
    const path = word.slice(colon + 1);
    if (!path.startsWith("/") || path.split("/").includes("..") || /[:,\n\r\0]/.test(path)) {
      throw new UserError(`root ${word}: the directory on ${host} must be an absolute path with no ".." part (and no ":", "," or newline)`, `e.g. --roots ${host}:/srv/app`);
    }
    const root = path.length > 1 ? path.replace(/\/+$/, "") : path;
    if (isSystemPath(root)) throw new UserError(`root ${word}: the container needs that path for itself`, `use a project directory on ${host}, e.g. ${host}:/srv/app`);
    if (isUnder(root, containerHome)) throw new UserError(`root ${word}: inside ${containerHome}, which is the environment's home in the container`, `keep projects outside it on ${host} (e.g. /srv/code)`);
    there.push(root);
  }
  const shared = here.length ? checkRoots(here) : [];
  const clash = shared.find((local) => there.some((t) => isUnder(local, t) || isUnder(t, local)));
  if (clash) throw new UserError(`root ${clash} (on this machine) and a root on ${host} contain one another`, "give roots that do not nest");
  const remote = [...new Set(there)].sort().filter((root, _, all) => !all.some((other) => other !== root && isUnder(root, other)));
  return { roots: [...remote, ...shared].sort(), shared };
}
