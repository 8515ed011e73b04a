import { existsSync, lstatSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join, normalize, resolve } from "pathe";
import { expandHome } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { shellQuote } from "../../core/plan.ts";
import { refuseSharedPath } from "../wrap/roots.ts";

/**
 * An environment's dotfiles repo, as recorded in its env.json and, for the in-container
 * half (image/dotfiles.sh), in ~/.local/state/agentenv/dotfiles.conf. The container clones
 * it into ~/.dotfiles at its next boot and runs its setup script; a repo on this host's
 * disk is mounted read-only at `localRepoTarget` for that.
 */
export interface DotfilesConfig {
  /** a git URL, or the absolute path of a repository on this host */
  url: string;
  /** branch, tag or commit (default: the repo's HEAD) */
  ref?: string;
  /** the setup script, relative to the repo (default: the first of install.sh, install, bootstrap.sh…) */
  setup?: string;
}

export const localRepoTarget = "/run/agentenv/dotfiles-repo";
export const confPath = ".local/state/agentenv/dotfiles.conf";

export function isLocalRepo(url: string): boolean {
  return url.startsWith("/");
}

/** A git repository (a work tree's `.git`, or a bare one), seen without following links. */
function isGitRepo(dir: string): boolean {
  const kind = (rel: string) => {
    try {
      const stat = lstatSync(join(dir, rel));
      return stat.isDirectory() ? "dir" : stat.isFile() ? "file" : "other";
    } catch {
      return undefined;
    }
  };
  const git = kind(".git");
  return git === "dir" || git === "file" || (kind("HEAD") === "file" && kind("objects") === "dir");
}

/**
 * A repository on this host that sessions mount (read-only, at `localRepoTarget`): an
 * absolute path with no symlink on the way (what is checked is what is mounted), a git
 * repository, never a system path or one holding agentenv's own files. SHOWN is how the
 * user wrote it, for messages.
 */
export function checkLocalRepo(path: string, shown = path): string {
  if (!isAbsolute(path) || /[\n\0]/.test(path)) throw new UserError(`dotfiles repo ${JSON.stringify(shown)}: not an absolute path`);
  const clean = normalize(path).replace(/(.)\/$/, "$1");
  refuseSharedPath(clean, "dotfiles repo");
  let real: string;
  try {
    real = realpathSync(clean);
  } catch {
    throw new UserError(`${shown}: no such directory`, "give a git URL, a local repository, or owner/repo (GitHub)");
  }
  if (real !== clean) throw new UserError(`dotfiles repo ${clean} is a link (to ${real})`, "name the repository itself");
  if (!statSync(real).isDirectory()) throw new UserError(`${shown}: no such directory`, "give a git URL, a local repository, or owner/repo (GitHub)");
  if (!isGitRepo(real)) throw new UserError(`${shown} is not a git repository`, "commit your dotfiles to a git repository first (git init && git add -A && git commit)");
  if (real.includes(":")) throw new UserError(`${real}: a repository path with ":" cannot be mounted into the container`);
  return real;
}

/** A git URL as recorded: a scheme:// URL or scp-like user@host:path, no credentials in it. */
function checkRemoteUrl(url: string): string {
  if (/^https?:\/\/[^/@]*:[^/@]*@/i.test(url)) {
    // it would sit in the home in the clear (env.json, ~/.dotfiles/.git/config) and in messages
    throw new UserError("a dotfiles URL must not carry a password or token", "put the credentials in the overlay instead (e.g. agentenv env overlay NAME add .git-credentials), which is written before the clone");
  }
  // a leading "-" would be an option to git or ssh
  if (!/[\s\0]/.test(url) && !url.startsWith("-") && (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) || /^[^\s/@]+@[^\s:]+:/.test(url))) return url;
  throw new UserError(`${url}: not a git URL, a local repository, or owner/repo`);
}

/**
 * URL as the user wrote it → as recorded: a git URL stays; a local path (or file://)
 * becomes its real absolute path and must be a repository; `owner/repo` is GitHub.
 */
export function resolveDotfilesUrl(url: string, cwd = process.cwd()): string {
  const value = url.trim();
  if (!value || /[\n\0]/.test(value)) throw new UserError("--dotfiles needs a git URL, a local repository, or owner/repo");
  if (value.startsWith("file://")) return resolveDotfilesUrl(value.slice("file://".length), cwd);
  const path = resolve(cwd, expandHome(value));
  const looksLikePath = value.startsWith("/") || value.startsWith(".") || value.startsWith("~");
  if (looksLikePath || existsSync(path)) {
    if (!existsSync(path) || !statSync(path).isDirectory()) throw new UserError(`${url}: no such directory`, "give a git URL, a local repository, or owner/repo (GitHub)");
    return checkLocalRepo(realpathSync(path), url);
  }
  if (/^[A-Za-z0-9][A-Za-z0-9-]*\/[A-Za-z0-9._-]+$/.test(value)) return `https://github.com/${value.replace(/\.git$/, "")}.git`;
  return checkRemoteUrl(value);
}

/** A branch, tag or commit: one line, and not an option git would read. */
export function checkRef(ref: string | undefined): string | undefined {
  if (ref === undefined || ref === "") return undefined;
  if (/[\s\0~^:?*[\\]/.test(ref) || ref.startsWith("-")) throw new UserError(`dotfiles ref "${ref}" is not a branch, tag or commit name`);
  // a commit is fetched by its full hash: a short one could only be looked for as a branch
  if (/^[0-9a-fA-F]{40}$/.test(ref)) return ref.toLowerCase();
  if (/^[0-9a-fA-F]{7,39}$/.test(ref) && /[0-9]/.test(ref)) throw new UserError(`dotfiles ref ${ref}: give a commit as its full 40-character hash (git rev-parse ${ref})`);
  return ref;
}

/** The setup script: a path inside the repo. */
export function checkSetup(setup: string | undefined): string | undefined {
  if (setup === undefined || setup === "") return undefined;
  const rel = setup.replace(/^\.\//, "");
  if (/[\n\0]/.test(rel) || rel.startsWith("/") || rel.split("/").some((part) => part === ".." || part === "")) {
    throw new UserError(`setup script "${setup}" must be a path inside the repo, e.g. script/setup`);
  }
  return rel;
}

/**
 * A dotfiles setting read from somewhere a session could write (an archive's env.json, a
 * home made before this host kept records): every field checked as at `env create`, a
 * repository on this host as one sessions would mount. Throws UserError.
 */
export function checkDotfiles(value: unknown): DotfilesConfig {
  const { url, ref, setup } = (value && typeof value === "object" ? value : {}) as Record<string, unknown>;
  if (typeof url !== "string") throw new UserError(`dotfiles ${JSON.stringify(value)}: no URL`);
  for (const [field, given] of [["ref", ref], ["setup", setup]] as const) {
    if (given !== undefined && typeof given !== "string") throw new UserError(`dotfiles ${field} ${JSON.stringify(given)}: not text`);
  }
  const dotfiles: DotfilesConfig = { url: isLocalRepo(url) ? checkLocalRepo(url) : checkRemoteUrl(url) };
  const checkedRef = checkRef(ref as string | undefined);
  const checkedSetup = checkSetup(setup as string | undefined);
  if (checkedRef) dotfiles.ref = checkedRef;
  if (checkedSetup) dotfiles.setup = checkedSetup;
  return dotfiles;
}

/** For people: owner/repo for GitHub, a password in the URL masked. */
export function describeDotfiles(dotfiles: DotfilesConfig): string {
  const url = dotfiles.url.replace(/^https:\/\/github\.com\/(.+)\.git$/, "$1").replace(/\/\/([^/@:]+):[^/@]+@/, "//$1:***@");
  return `${url}${dotfiles.ref ? `@${dotfiles.ref}` : ""}`;
}

/** Shell lines that write (or remove) dotfiles.conf in HOME=$1, for a helper container. */
export function confScript(home: string, dotfiles: DotfilesConfig | undefined): string[] {
  const file = `${home}/${confPath}`;
  if (!dotfiles) return [`rm -f ${file}`];
  const lines = [`url=${dotfiles.url}`, `ref=${dotfiles.ref ?? ""}`, `setup=${dotfiles.setup ?? ""}`, `local=${isLocalRepo(dotfiles.url) ? localRepoTarget : ""}`];
  // by rename: a session reading it meanwhile sees the old or the new one
  return [`printf '%s\\n' ${lines.map(shellQuote).join(" ")} > ${file}.tmp`, `mv ${file}.tmp ${file}`];
}
