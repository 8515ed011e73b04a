import { existsSync, lstatSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join, normalize, resolve } from "pathe";
import { expandHome } from "../../../core/config.ts";
import { UserError } from "../../../core/errors.ts";
import { shellJoin, shellQuote } from "../../../core/plan.ts";
import { refuseSharedPath } from "../../../core/hostpaths.ts";

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
  /**
   * the setup command: a program of the repo (or one on PATH) and its arguments, as
   * shell-quoted words (see checkSetup); "none": no command, the files are placed by a
   * manager. Default: the first of install.sh, install, bootstrap.sh… in the repo
   */
  setup?: string;
  /** how agentenv itself places the repo's files into the home (docs/dotfiles.md); default: none chosen */
  manager?: DotfilesManager;
  /** seconds the setup command may run (default 600) */
  timeout?: number;
}

export const dotfilesManagers = ["plain", "rcm", "stow", "chezmoi"] as const;
export type DotfilesManager = (typeof dotfilesManagers)[number];

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

/** Characters a shell would treat as more than a word's letters when unquoted. */
const shellSpecial = new Set(["$", "`", ";", "&", "|", "<", ">", "(", ")", "*", "?", "[", "]", "{", "}"]);

/**
 * A command line split into words as a POSIX shell reads them: blanks separate words,
 * single quotes, double quotes and backslashes quote. What a shell would expand or run
 * (variables, command substitution, globs, `;`, `|`, redirections…) is refused, so the
 * words mean the same wherever they run. Throws UserError naming what is wrong.
 */
export function splitCommandLine(line: string, what = "setup"): string[] {
  const refuse = (why: string) => new UserError(`${what} ${JSON.stringify(line)}: ${why}`, "give the program and its arguments, quoted as a shell would, e.g. --setup 'bootstrap.sh --force'");
  if (/[\n\r\0]/.test(line)) throw refuse("one line, please");
  const words: string[] = [];
  let word = "";
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === " " || c === "\t") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      continue;
    }
    if (!inWord && (c === "#" || c === "~")) throw refuse(`a word starting with ${c} means something else to a shell; quote it`);
    inWord = true;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw refuse("a ' is not closed");
      word += line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      for (i++; i < line.length && line[i] !== '"'; i++) {
        const d = line[i]!;
        if (d === "$" || d === "`") throw refuse(`${d} inside double quotes would be expanded; use single quotes`);
        if (d === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1]!)) i++;
        word += line[i];
      }
      if (i >= line.length) throw refuse('a " is not closed');
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw refuse("it ends with a backslash");
      word += line[++i];
    } else if (shellSpecial.has(c)) {
      throw refuse(`${c} is not allowed unquoted (no variables, globs, pipes or redirections)`);
    } else {
      word += c;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/**
 * The setup command (`--setup`, `dotfiles.setup=`): "none", or a program of the repo (a
 * path inside it) or on PATH (a bare name), and its arguments — recorded as shell-quoted
 * words, which the container reads back with `eval "set -- …"`.
 */
export function checkSetup(setup: string | undefined): string | undefined {
  if (setup === undefined || setup.trim() === "") return undefined;
  if (setup.trim() === "none") return "none";
  const [program, ...args] = splitCommandLine(setup.trim());
  // "./none" is a script of that name, not the keyword
  const rel = program === "./none" ? program : program!.replace(/^\.\//, "");
  if (rel.startsWith("/") || rel.split("/").some((part) => part === ".." || part === "")) {
    throw new UserError(`setup script "${program}" must be a path inside the repo, e.g. script/setup (or a command on PATH, e.g. make)`);
  }
  return shellJoin([rel, ...args]);
}

export function checkManager(manager: string | undefined): DotfilesManager | undefined {
  if (manager === undefined || manager === "") return undefined;
  if (!(dotfilesManagers as readonly string[]).includes(manager)) throw new UserError(`dotfiles manager ${JSON.stringify(manager)}: use one of ${dotfilesManagers.join(", ")}`, "see docs/dotfiles.md for what each does");
  return manager as DotfilesManager;
}

/** A time limit: seconds, or with a unit (90s, 10m, 1h); from 1 s to 24 h. */
export function checkTimeout(value: string | number | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  const match = /^(\d+)\s*(s|sec|m|min|h)?$/.exec(String(value).trim());
  const seconds = match ? Number(match[1]) * ({ m: 60, min: 60, h: 3600 }[match[2] as string] ?? 1) : NaN;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86400) throw new UserError(`dotfiles timeout ${JSON.stringify(value)}: give seconds, or 90s, 10m, 1h (at most 24h)`);
  return seconds;
}

/**
 * A dotfiles setting read from somewhere a session could write (an archive's env.json, a
 * home made before this host kept records): every field checked as at `env create`, a
 * repository on this host as one sessions would mount. Throws UserError.
 */
export function checkDotfiles(value: unknown): DotfilesConfig {
  const { url, ref, setup, manager, timeout } = (value && typeof value === "object" ? value : {}) as Record<string, unknown>;
  if (typeof url !== "string") throw new UserError(`dotfiles ${JSON.stringify(value)}: no URL`);
  for (const [field, given] of [["ref", ref], ["setup", setup], ["manager", manager]] as const) {
    if (given !== undefined && typeof given !== "string") throw new UserError(`dotfiles ${field} ${JSON.stringify(given)}: not text`);
  }
  if (timeout !== undefined && typeof timeout !== "number") throw new UserError(`dotfiles timeout ${JSON.stringify(timeout)}: not a number`);
  const dotfiles: DotfilesConfig = { url: isLocalRepo(url) ? checkLocalRepo(url) : checkRemoteUrl(url) };
  const checkedRef = checkRef(ref as string | undefined);
  const checkedSetup = checkSetup(setup as string | undefined);
  const checkedManager = checkManager(manager as string | undefined);
  const checkedTimeout = checkTimeout(timeout as number | undefined);
  if (checkedRef) dotfiles.ref = checkedRef;
  if (checkedSetup) dotfiles.setup = checkedSetup;
  if (checkedManager) dotfiles.manager = checkedManager;
  if (checkedTimeout) dotfiles.timeout = checkedTimeout;
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
  const lines = [
    `url=${dotfiles.url}`,
    `ref=${dotfiles.ref ?? ""}`,
    `setup=${dotfiles.setup ?? ""}`,
    `local=${isLocalRepo(dotfiles.url) ? localRepoTarget : ""}`,
    `manager=${dotfiles.manager ?? ""}`,
    `timeout=${dotfiles.timeout ?? ""}`,
  ];
  // by rename: a session reading it meanwhile sees the old or the new one
  return [`printf '%s\\n' ${lines.map(shellQuote).join(" ")} > ${file}.tmp`, `mv ${file}.tmp ${file}`];
}
