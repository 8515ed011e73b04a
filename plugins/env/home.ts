import { existsSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { dirname, join, resolve } from "pathe";
import { checkEnvName } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { volumeDir } from "../../core/volumes.ts";
import { describeDotfiles, type DotfilesConfig } from "../dotfiles/repo.ts";

/**
 * An environment is one engine volume, `agentenv-env-NAME`, labelled `agentenv.env=NAME`,
 * mounted as HOME. What agentenv keeps about it lives inside it, in
 * ~/.local/state/agentenv/ (never among the user's dotfiles), so it travels with an
 * export:
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
  | { kind: "empty" };

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

export function readRecord(dir: string): EnvRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, recordPath), "utf8")) as EnvRecord;
  } catch {
    return undefined;
  }
}

function mtime(file: string): string | undefined {
  try {
    return statSync(file).mtime.toISOString();
  } catch {
    return undefined;
  }
}

export function lastUsed(dir: string): string | undefined {
  return mtime(join(dir, stateDir, "last-used"));
}

/** Disk usage of a directory tree, as `du` counts it (hard links once). */
export async function diskUsage(dir: string): Promise<number | undefined> {
  const child = Bun.spawn(["du", "-s", "--block-size=1", dir], { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(child.stdout).text();
  return (await child.exited) === 0 ? Number(out.split("\t")[0]) : undefined;
}

/**
 * The store path the environment's tools profile points at, read on the host. The
 * profile's links are made inside the container, so an absolute one names /root/….
 */
export function toolsStorePath(dir: string): string | undefined {
  const hostPath = (link: string, target: string) =>
    target.startsWith(`${containerHome}/`) ? join(dir, target.slice(containerHome.length + 1)) : resolve(dirname(link), target);
  let link = join(dir, stateDir, "profile");
  for (let hops = 0; hops < 10; hops++) {
    let target: string;
    try {
      target = readlinkSync(link);
    } catch {
      return undefined;
    }
    if (target.startsWith("/nix/store/")) return target.split("/").slice(0, 4).join("/");
    link = hostPath(link, target);
  }
  return undefined;
}

/** One line agentenv keeps in the home's state dir (tools.hash, dotfiles.commit…), read on the host. */
export function stateValue(dir: string, file: string): string | undefined {
  try {
    return readFileSync(join(dir, stateDir, file), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

export function hasFlake(dir: string): boolean {
  return existsSync(join(dir, "flake.nix"));
}
