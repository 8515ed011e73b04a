import { existsSync, mkdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "pathe";
import { UserError } from "./errors.ts";
import { lockFile } from "./linux.ts";
import { agentenvDir } from "./paths.ts";
import { writeAtomic } from "./volumes.ts";

/**
 * Trust: which projects the user vouches for. A project is code the user may not have
 * written (a cloned repo, what an agent wrote); until the user trusts it, its
 * `agentenv.config.ts` is never imported (it is code, and it would run on the host) and
 * its sessions get no secrets and keep nothing in the golden store.
 *
 * The user trusts a project with `agentenv trust DIR`, which records the project's real
 * path and its config file's real path and content hash (as `direnv allow` does): a config
 * edited since is refused again until trusted again. A whole tree of the user's own work
 * is trusted by listing it in the user config (`trust: ["~/Code"]`); configs inside it
 * are trusted whatever their content. The records live on the host, in agentenv's data
 * directory, which no session can see.
 */

export const projectConfigName = "agentenv.config.ts";

export interface TrustRecord {
  /** the project's real path */
  dir: string;
  /** its config when it was trusted: real path and sha256 of the content */
  config?: { file: string; sha256: string };
  trustedAt: string;
}

/** How a project's config file stands: imported only when "trusted". */
export type ConfigTrust = "trusted" | "untrusted" | "changed";

export interface ProjectTrust {
  /** the project (real path) */
  project: string;
  /** its sessions may get secrets and promote into the golden store */
  trusted: boolean;
  /** why, for messages: a `trust` tree of the user config, or `agentenv trust` */
  via?: "tree" | "record";
  /** the project config found for it, and whether it may be imported */
  config?: { file: string; status: ConfigTrust };
  /** config files on the way that were not considered at all, and why */
  passedOver?: Array<{ file: string; why: string }>;
  /** the golden store the config asked for became a thrown-away clone (as `--store ephemeral`) because the project is untrusted */
  storeWithheld?: boolean;
}

/** PATH is ROOT or inside it. */
export function isUnder(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

export function trustFile(env: Record<string, string | undefined> = process.env): string {
  return join(agentenvDir("data", env), "trust.json");
}

/**
 * A project on a remote host (`agentenv trust HOST:PATH`), trusted as named: the path on that
 * host, reached at that address. Nothing of it is read here — its config is never loaded —
 * so there is no file to hash: the record says only that its sessions may get secrets and
 * keep their store changes (in that host's own golden store). Kept apart from `projects`
 * (under `remote`), so no version of agentenv can read one as a directory on this machine.
 */
export interface RemoteTrustRecord {
  /** the host's name (`agentenv host add`) */
  host: string;
  /** how the host was reached when trusted (`ssh://USER@HOST:PORT`): the name given to another machine since is not trusted */
  url: string;
  /** the directory there: absolute, normalised, no ".." */
  path: string;
  trustedAt: string;
}

interface TrustData {
  projects: TrustRecord[];
  remote: RemoteTrustRecord[];
}

const remoteHostName = /^[a-z0-9][a-z0-9_-]{0,62}$/;

function readTrustData(env: Record<string, string | undefined>): TrustData {
  let text: string;
  try {
    text = readFileSync(trustFile(env), "utf8");
  } catch {
    return { projects: [], remote: [] };
  }
  try {
    const parsed = JSON.parse(text) as { projects?: TrustRecord[]; remote?: RemoteTrustRecord[] };
    return {
      projects: Array.isArray(parsed.projects) ? parsed.projects.filter((r) => typeof r?.dir === "string") : [],
      // a hand-edited entry that is not a plain (host, absolute path) pair is no trust at all
      remote: Array.isArray(parsed.remote)
        ? parsed.remote.filter((r) => typeof r?.host === "string" && remoteHostName.test(r.host) && typeof r.url === "string" && typeof r.path === "string" && r.path !== "/" && remotePathOrUndefined(r.path) === r.path)
        : [],
    };
  } catch {
    throw new UserError(`${trustFile(env)} is not valid JSON`, "fix or delete it (agentenv trust DIR records projects again)");
  }
}

export function readTrust(env: Record<string, string | undefined> = process.env): TrustRecord[] {
  return readTrustData(env).projects;
}

export function readRemoteTrust(env: Record<string, string | undefined> = process.env): RemoteTrustRecord[] {
  return readTrustData(env).remote;
}

/** Changes the records under a lock, so two `trust` commands at once both land. */
function updateTrustData(change: (data: TrustData) => TrustData, env: Record<string, string | undefined>): void {
  const file = trustFile(env);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const lock = lockFile(`${file}.lock`, "exclusive")!;
  try {
    const { projects, remote } = change(readTrustData(env));
    writeAtomic(file, `${JSON.stringify(remote.length ? { projects, remote } : { projects }, null, 2)}\n`, 0o600);
  } finally {
    lock.release();
  }
}

function updateTrust(change: (records: TrustRecord[]) => TrustRecord[], env: Record<string, string | undefined> = process.env): void {
  updateTrustData((data) => ({ ...data, projects: change(data.projects) }), env);
}

/** PATH as a remote project's directory: absolute, no "..", "." and repeated or trailing slashes dropped; undefined when it is none. */
function remotePathOrUndefined(path: string): string | undefined {
  if (!path.startsWith("/") || /[\0\n]/.test(path) || path.split("/").includes("..")) return undefined;
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  return `/${parts.join("/")}`;
}

export function remotePath(path: string, host: string): string {
  const normal = remotePathOrUndefined(path);
  if (!normal) throw new UserError(`${host}:${path}: the remote directory must be an absolute path with no ".." part`, `e.g. agentenv trust ${host}:/home/me/project`);
  return normal;
}

/** `agentenv trust HOST:PATH`: records PATH on HOST (reached at URL) as trusted, as named. */
export function trustRemote(host: string, url: string, path: string, env: Record<string, string | undefined> = process.env): RemoteTrustRecord {
  const dir = remotePath(path, host);
  if (dir === "/") throw new UserError(`refusing to trust ${host}:/ (every directory on ${host})`, `trust the project's own directory, e.g. agentenv trust ${host}:/srv/app`);
  const record: RemoteTrustRecord = { host, url, path: dir, trustedAt: new Date().toISOString() };
  updateTrustData((data) => ({ ...data, remote: [...data.remote.filter((r) => !(r.host === host && r.path === dir)), record] }), env);
  return record;
}

/** `agentenv untrust HOST:PATH`: forgets that record (exactly that path); `coveredBy`: a trusted parent that still covers it. */
export function untrustRemote(host: string, path: string, env: Record<string, string | undefined> = process.env): { project: string; removed: boolean; coveredBy?: string } {
  const dir = remotePath(path, host);
  let removed = false;
  let coveredBy: string | undefined;
  updateTrustData((data) => {
    const remote = data.remote.filter((r) => !(r.host === host && r.path === dir));
    removed = remote.length !== data.remote.length;
    const parent = remote.find((r) => r.host === host && isUnder(dir, r.path));
    if (parent) coveredBy = `${host}:${parent.path}`;
    return { ...data, remote };
  }, env);
  return { project: `${host}:${dir}`, removed, coveredBy };
}

/**
 * Whether the project PATH on HOST, reached at URL now, is trusted: a record for that host
 * whose path is PATH or a parent of it, made when the host was reached at the same URL.
 * `was`: a record that matched but for another URL (the name now points elsewhere).
 */
export function remoteTrust(host: string, url: string, path: string, records: readonly RemoteTrustRecord[]): { trust: ProjectTrust; was?: string } {
  const dir = remotePathOrUndefined(path);
  const matching = dir === undefined ? [] : records.filter((r) => r.host === host && isUnder(dir, r.path));
  const record = matching.find((r) => r.url === url);
  if (record) return { trust: { project: `${host}:${record.path}`, trusted: true, via: "record" } };
  return { trust: { project: `${host}:${dir ?? path}`, trusted: false }, was: matching[0]?.url };
}

function realOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/**
 * The project DIR belongs to: the nearest directory holding `.git` or an agentenv
 * config, not going above HOME; else DIR itself.
 */
export function projectOf(dir: string, home = homedir()): string {
  for (let current = dir; ; current = dirname(current)) {
    // HOME's own .git (a dotfiles repo) does not make all of HOME the project
    if (current === home && current !== dir) return dir;
    if (existsSync(join(current, ".git")) || existsSync(join(current, projectConfigName))) return current;
    if (current === "/") return dir;
  }
}

/**
 * A config file agentenv may consider at all: a regular file owned by the user and not
 * writable by group or others (anyone else who can write it could run code as the user).
 */
function whyNotOwn(file: string, uid = process.getuid?.()): string | undefined {
  const stat = statSync(file, { throwIfNoEntry: false });
  if (!stat) return "missing";
  if (!stat.isFile()) return "not a file";
  if (uid !== undefined && stat.uid !== uid) return "owned by another user";
  if (stat.mode & 0o022) return "writable by group or others";
  return undefined;
}

/**
 * The project config nearest to DIR: DIR itself, then its parents, stopping at the
 * repository root (a directory holding `.git`), at HOME, or at `/`. Files not owned by
 * the user, or writable by group or others, are passed over; PASSED_OVER collects them
 * with why, so a session can say so (a umask of 002 makes one's own files group-writable).
 */
export function findProjectConfig(dir: string, home = homedir(), passedOver: Array<{ file: string; why: string }> = []): string | undefined {
  for (let current = resolve(dir); ; current = dirname(current)) {
    const candidate = join(current, projectConfigName);
    const why = whyNotOwn(candidate);
    if (!why) return candidate;
    if (why !== "missing") passedOver.push({ file: candidate, why });
    if (existsSync(join(current, ".git")) || current === home || current === "/") return undefined;
  }
}

function sha256(file: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(file)).digest("hex");
}

/**
 * Whether PROJECT is trusted and whether its config FILE (when it has one) may be
 * imported: a stat and a hash of one small file, no engine call.
 */
export function projectTrust(dir: string, configFile: string | undefined, trees: readonly string[], records: readonly TrustRecord[], home = homedir()): ProjectTrust {
  const real = realOrSelf(dir);
  const inTree = trees.some((tree) => isUnder(real, realOrSelf(tree)));
  const record = records.find((r) => isUnder(real, r.dir));
  // named by its project (the repository), which is what `agentenv trust` records
  const project = record?.dir ?? projectOf(real, home);
  const result: ProjectTrust = { project, trusted: inTree || record !== undefined, via: inTree ? "tree" : record ? "record" : undefined };
  if (configFile) {
    const file = realOrSelf(configFile);
    let status: ConfigTrust = "untrusted";
    if (trees.some((tree) => isUnder(file, realOrSelf(tree)))) status = "trusted";
    else {
      const known = records.find((r) => r.config?.file === file);
      if (known) status = known.config!.sha256 === sha256(file) ? "trusted" : "changed";
    }
    result.config = { file: configFile, status };
  }
  return result;
}

/** `agentenv trust DIR`: records DIR's project and the config it has now. */
export function trustProject(dir: string, env: Record<string, string | undefined> = process.env): TrustRecord {
  const abs = resolve(dir);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) throw new UserError(`${dir}: no such directory`);
  const project = projectOf(realpathSync(abs), env.HOME || homedir());
  if (project === "/") throw new UserError("refusing to trust / (every directory on this host)", 'list the trees of your own work in your user config instead, e.g. trust: ["~/Code"]');
  const configFile = findProjectConfig(abs, env.HOME || homedir());
  const record: TrustRecord = { dir: project, trustedAt: new Date().toISOString() };
  if (configFile) record.config = { file: realpathSync(configFile), sha256: sha256(configFile) };
  updateTrust((records) => [...records.filter((r) => r.dir !== project), record], env);
  return record;
}

/** `agentenv untrust DIR`: forgets DIR's project; false when it was not trusted by a record. */
export function untrustProject(dir: string, env: Record<string, string | undefined> = process.env): { dir: string; removed: boolean } {
  const abs = realOrSelf(dir);
  const project = existsSync(abs) ? projectOf(abs, env.HOME || homedir()) : abs;
  let removed = false;
  updateTrust((records) => {
    const kept = records.filter((r) => r.dir !== project && r.dir !== abs);
    removed = kept.length !== records.length;
    return kept;
  }, env);
  return { dir: project, removed };
}

/** The one line a session prints when its project is not (fully) trusted; undefined when it is. */
export function trustNotice(trust: ProjectTrust): string | undefined {
  const skipped = trust.passedOver?.[0];
  const main = projectNotice(trust);
  if (!skipped || trust.config) return main;
  const note = `${skipped.file} is passed over (${skipped.why}; chmod go-w it if it is yours)`;
  return main ? `${note}; ${main}` : note;
}

function projectNotice(trust: ProjectTrust): string | undefined {
  const fix = `agentenv trust ${trust.project}`;
  if (trust.config?.status === "changed") {
    const rest = trust.trusted ? "" : "; the project is not trusted: no secrets, and its store changes are not kept";
    return `${trust.config.file} changed since you trusted it: not loaded${rest} — review it, then ${fix}`;
  }
  if (!trust.trusted) {
    const config = trust.config?.status === "untrusted" ? `its ${projectConfigName} is not loaded, ` : "";
    return `${trust.project} is not a trusted project: ${config}no secrets, and its store changes are not kept — ${fix} to trust it`;
  }
  if (trust.config?.status === "untrusted") return `${trust.config.file} is not trusted: not loaded — review it, then ${fix}`;
  return undefined;
}
