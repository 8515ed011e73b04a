import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readlinkSync } from "node:fs";
import { dirname, join, normalize } from "pathe";
import { checkEnvName } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { volumeDir } from "../../core/volumes.ts";
import { describeDotfiles, type DotfilesConfig } from "./dotfiles/repo.ts";

/**
 * An environment is one engine volume, `agentenv-env-NAME`, labelled `agentenv.env=NAME`,
 * mounted as HOME. What this host acts on (its source, shell, dotfiles repo) is its own
 * record of it (./record.ts); a copy lives inside the home, in ~/.local/state/agentenv/
 * (never among the user's dotfiles), for the in-container scripts and so it travels with
 * an export. Every session can rewrite that copy: the host reads it only through
 * `readHomeFile`, never following a link, and acts on none of it unchecked.
 *
 *   env.json      where it came from, when (written last: a home without it is unfinished)
 *   shell         the shell sessions start (zsh, bash…), read by the entrypoint
 *   last-used     touched by the entrypoint at every session start
 *   profile       the Nix profile ~/flake.nix is installed into (agentenv-install-tools)
 *   tools.hash    the content hash of the installed flake.nix + flake.lock
 *   dotfiles.*    the dotfiles repo: its config (.conf), what was applied (.hash,
 *                 .commit), the setup's output (.log); see image/dotfiles.sh
 */
export const stateDir = ".local/state/agentenv";
export const recordPath = `${stateDir}/env.json`;
export const envLabel = "agentenv.env";
const volumePrefix = "agentenv-env-";

/** REL is a clean path inside HOME: not empty or absolute, no "", "." or ".." parts, no newline or NUL. */
export function isInsideHome(rel: string): boolean {
  return rel !== "" && rel !== "~" && !/[\n\0]/.test(rel) && !rel.startsWith("/") && !rel.split("/").some((part) => part === "" || part === "." || part === "..");
}

/** REL (inside HOME) is agentenv's state dir, a path in it, or one of its parents. */
export function touchesState(rel: string): boolean {
  return rel === stateDir || rel.startsWith(`${stateDir}/`) || stateDir.startsWith(`${rel}/`);
}

export function volumeName(name: string): string {
  return volumePrefix + name;
}

/** The environment a volume of `volumeList(envLabel)` holds. */
export function envNameOf(volume: string): string {
  return volume.startsWith(volumePrefix) ? volume.slice(volumePrefix.length) : volume;
}

/** A shell name or path, as `env set NAME shell=SH` takes it (the entrypoint starts it). */
export function checkShell(shell: string): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(shell)) throw new UserError(`shell=${shell}: give a shell name or path, e.g. shell=zsh`);
  return shell;
}

/** NAME checked, for commands: a bad name is a one-line error before anything runs. */
export function checkName(name: string | undefined): string {
  if (!name) throw new UserError("an environment name is needed", "e.g. agentenv env create dev");
  return checkEnvName(name, "the command line")!;
}

export type EnvSource =
  /** the template shipped in agentenv (test-env/) */
  | { kind: "builtin"; hash: string }
  | { kind: "template"; path: string; hash: string }
  /** a legacy profile directory, copied to ~/TARGET, its activate.sh run once */
  | { kind: "profile"; path: string; target: string; hash: string }
  /** `env import`: the archive it came from */
  | { kind: "archive"; path: string; hash?: string }
  /** nothing but agentenv's state: a dotfiles repo fills it */
  | { kind: "empty" }
  /** `env pull`: the registry reference and the manifest digest it came from */
  | { kind: "registry"; ref: string; digest: string };

/** An environment's state in a registry: see EnvRecord.synced. */
export interface RegistrySync {
  ref: string;
  digest: string;
  parts: Record<string, string>;
  local: Record<string, string>;
  at: string;
}

export interface EnvRecord {
  version: 1;
  source: EnvSource;
  created: string;
  /** the last `env reset` */
  reset?: string;
  /** the shell recorded at creation (also in `shell`, where the entrypoint reads it) */
  shell?: string;
  /** the dotfiles repo the home's next session clones and sets up */
  dotfiles?: DotfilesConfig;
  /**
   * when this host took the record from the home, the environment being older than host
   * records: its source is then used only while its content still has the recorded hash
   */
  adopted?: string;
  /**
   * the registry artifact this home was last pulled from or pushed to (`env push`/`pull`):
   * its reference, manifest digest and the digest of each part of the home it held (PARTS),
   * and the sha256 of each part's tar as this home packs right after (LOCAL: a pulled home's
   * times and record differ from the pusher's) — what divergence is judged against
   */
  synced?: RegistrySync;
  /** a push under way: becomes `synced` once the tag points at its digest (a push that died in between is recognised by it) */
  pushing?: RegistrySync;
}

export function describeSource(source: EnvSource | undefined): string {
  switch (source?.kind) {
    case "builtin":
      return "test-env (built in)";
    case "template":
      return source.path;
    case "profile":
      return `profile ${source.path}`;
    case "archive":
      return `archive ${source.path}`;
    case "empty":
      return "empty";
    case "registry":
      return `registry ${source.ref}`;
    default:
      return "unknown";
  }
}

/** Source and dotfiles repo, for people: "dotfiles owner/repo", "~/tpl + dotfiles owner/repo". */
export function describeRecord(record: { source?: EnvSource; dotfiles?: DotfilesConfig } | undefined): string {
  const dotfiles = record?.dotfiles ? `dotfiles ${describeDotfiles(record.dotfiles)}` : undefined;
  if (dotfiles && record?.source?.kind === "empty") return dotfiles;
  return dotfiles ? `${describeSource(record?.source)} + ${dotfiles}` : describeSource(record?.source);
}

export interface Home {
  name: string;
  volume: string;
  /** the volume's directory on the engine's host (undefined: no such environment) */
  dir?: string;
  /** its files can be read from here (a local engine); false for a VM or remote engine */
  readable: boolean;
}

/** Finds an environment's volume; cached, so a session makes no engine call for it. */
export async function findHome(ctx: BaseContext, name: string): Promise<Home> {
  const volume = volumeName(name);
  const { dir, marked } = await volumeDir(ctx, volume, recordPath);
  return { name, volume, dir, readable: marked };
}

/** What PATH is, seen without following a link. */
export function kindOf(path: string): "dir" | "file" | "link" | "other" | undefined {
  try {
    const stat = lstatSync(path);
    return stat.isDirectory() ? "dir" : stat.isFile() ? "file" : stat.isSymbolicLink() ? "link" : "other";
  } catch {
    return undefined;
  }
}

/**
 * The host path of REL inside the home at DIR, when no part of it is a link: a file a
 * session wrote is read where it is, never followed out of the volume.
 */
export function inHome(dir: string, rel: string): string | undefined {
  let path = dir;
  for (const part of rel.split("/")) {
    path = join(path, part);
    const kind = kindOf(path);
    if (!kind || kind === "link") return undefined;
  }
  return path;
}

/** A file of the home, when it is a plain file (not a link, FIFO or device) of at most LIMIT bytes. */
export function readHomeFile(dir: string, rel: string, limit = 1 << 20): string | undefined {
  return readHomeBytes(dir, rel, limit)?.toString("utf8");
}

/** The bytes of a file of the home, as `readHomeFile` reads it. */
export function readHomeBytes(dir: string, rel: string, limit = 1 << 20): Buffer | undefined {
  const path = inHome(dir, rel);
  if (!path) return undefined;
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO put in its place must not hang the host
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const stat = fstatSync(fd);
    return stat.isFile() && stat.size <= limit ? readFileSync(fd) : undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** The time of a file of the home (a link's own), undefined when it is missing or under a link. */
function mtime(dir: string, rel: string): string | undefined {
  const path = inHome(dir, dirname(rel));
  try {
    return path ? lstatSync(join(dir, rel)).mtime.toISOString() : undefined;
  } catch {
    return undefined;
  }
}

export function lastUsed(dir: string): string | undefined {
  return mtime(dir, `${stateDir}/last-used`);
}

/** Disk usage of a directory tree, as `du` counts it (hard links once). */
export async function diskUsage(dir: string): Promise<number | undefined> {
  const child = Bun.spawn(["du", "-s", "--block-size=1", dir], { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(child.stdout).text();
  return (await child.exited) === 0 ? Number(out.split("\t")[0]) : undefined;
}

/**
 * The store path the environment's tools profile points at, read on the host. The
 * profile's links are made inside the container, so an absolute one names /root/…; they
 * are followed only while they stay in the home.
 */
export function toolsStorePath(dir: string): string | undefined {
  let rel = `${stateDir}/profile`;
  for (let hops = 0; hops < 10; hops++) {
    if (!inHome(dir, dirname(rel))) return undefined;
    let target: string;
    try {
      target = readlinkSync(join(dir, rel));
    } catch {
      return undefined;
    }
    if (target.startsWith("/nix/store/")) return target.split("/").slice(0, 4).join("/");
    rel = target.startsWith(`${containerHome}/`) ? target.slice(containerHome.length + 1) : normalize(join(dirname(rel), target));
    if (!isInsideHome(rel)) return undefined;
  }
  return undefined;
}

/** One line agentenv keeps in the home's state dir (tools.hash, dotfiles.commit…), read on the host. */
export function stateValue(dir: string, file: string): string | undefined {
  return readHomeFile(dir, `${stateDir}/${file}`, 4096)?.trim() || undefined;
}

export function hasFlake(dir: string): boolean {
  return mtime(dir, "flake.nix") !== undefined;
}

/**
 * Whether the link at REL → TARGET (REL relative to a tree: a template, an archive's
 * home) leads out of the tree, followed as the kernel follows it: part by part, each link
 * met on the way replaced by its own target (LINK_AT gives it, undefined for no link)
 * before a later ".." applies — so `escape → sub/up/../x` with `sub/up → ..` leads out,
 * though its text stays inside. ABSOLUTE says where an absolute target lands: at parts
 * inside the tree, "out", or "allowed" (a place outside a link may name, e.g. the store).
 * A climb above the tree or more than 40 links leads out.
 */
export function linkLeaves(
  rel: string,
  target: string,
  linkAt: (parts: readonly string[]) => string | undefined,
  absolute: (target: string) => string[] | "out" | "allowed",
): boolean {
  let at = rel.split("/").slice(0, -1);
  let pending: string[] = [];
  const follow = (to: string): "in" | "out" | "allowed" => {
    if (!to.startsWith("/")) {
      pending = [...to.split("/"), ...pending];
      return "in";
    }
    const lands = absolute(to);
    if (typeof lands === "string") return lands;
    at = [];
    pending = [...lands, ...pending];
    return "in";
  };
  let step = follow(target);
  for (let hops = 0; step === "in"; ) {
    const part = pending.shift();
    if (part === undefined) return false;
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (!at.length) return true;
      at.pop();
      continue;
    }
    at.push(part);
    const link = linkAt(at);
    if (link === undefined) continue;
    if (++hops > 40) return true;
    at.pop();
    step = follow(link);
  }
  return step === "out";
}
