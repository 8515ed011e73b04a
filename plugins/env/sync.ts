import { defineCommand } from "citty";
import { globalArgs, logFor, runtimeArgs } from "../../core/commands/_shared.ts";
import { createRuntime } from "../../core/runtime/index.ts";
import { commandContext } from "../../core/session.ts";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { envNamePattern } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import type { Log } from "../../core/log.ts";
import { agentenvDir } from "../../core/paths.ts";
import { helperPlan, shellQuote } from "../../core/plan.ts";
import type { RemoteRuntime } from "../../core/runtime/remote.ts";
import type { Runtime } from "../../core/runtime/types.ts";
import { writeAtomic } from "../../core/volumes.ts";
import { checkArchive } from "./archive.ts";
import { checkName, envLabel, envNameOf, lastUsed, volumeName } from "./home.ts";
import { manifestOf, mergeManifests, neededFrom, type Change, type Manifest, type MergePlan } from "./merge.ts";

/**
 * `agentenv env sync NAME --host H`: the environment's home here and its copy on host H,
 * reconciled three-way (./merge.ts) against the manifest both had at their last sync,
 * kept under ~/.local/state/agentenv/sync/H/NAME.json. Each side's home is read out
 * through a helper container (a tar of its files, links and directories, checked like any
 * imported archive before it is unpacked here), the merge is computed here, and each side's
 * part is applied in a helper container on that side. The new base is written only once
 * both sides have theirs: a sync cut short is merged again, and nothing is lost (a change
 * already on both sides is no conflict). A remote without a copy gets one: the first sync.
 */

export interface Side {
  runtime: Runtime;
  image: string;
  /** how the side is named in messages ("this machine", "box") */
  label: string;
}

export interface SyncResult {
  toOther: number;
  toLocal: number;
  conflicts: MergePlan["conflicts"];
  created: boolean;
}

function baseFile(host: string, name: string): string {
  return join(agentenvDir("state"), "sync", host, `${name}.json`);
}

export function readBase(host: string, name: string): Manifest {
  try {
    const data = JSON.parse(readFileSync(baseFile(host, name), "utf8")) as { manifest?: Manifest };
    return data.manifest && typeof data.manifest === "object" ? data.manifest : {};
  } catch {
    return {};
  }
}

function writeBase(host: string, name: string, manifest: Manifest): void {
  mkdirSync(join(agentenvDir("state"), "sync", host), { recursive: true });
  writeAtomic(baseFile(host, name), `${JSON.stringify({ synced: new Date().toISOString(), manifest })}\n`, 0o600);
}

/** When NAME was last synced with HOST (undefined: never). */
export function lastSync(host: string, name: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(baseFile(host, name), "utf8")) as { synced?: string }).synced;
  } catch {
    return undefined;
  }
}

/** The helper's files: plain files, links and directories only (no device, FIFO or socket is carried). */
const exportScript = "cd /h && find . -mindepth 1 \\( -type f -o -type l -o -type d \\) -print0 | tar --null --no-recursion -T - -cf -";

/** Reads VOLUME on SIDE out into DIR (made here), checked first: a session wrote that home. */
async function readOut(side: Side, volume: string, dir: string, work: string): Promise<void> {
  const archive = join(work, `${side.label.replace(/[^a-z0-9-]/gi, "_")}.tar`);
  const plan = helperPlan({ image: side.image, purpose: "env-sync", mounts: [{ type: "volume", source: volume, target: "/h", readonly: true }], script: exportScript });
  const result = await side.runtime.capture(plan, { stdout: archive });
  if (result.code !== 0) throw new UserError(`could not read environment volume ${volume} on ${side.label}: ${result.stderr.trim().split("\n").pop() ?? `exit ${result.code}`}`);
  await checkArchive(archive, false, `the home on ${side.label}`);
  mkdirSync(dir, { recursive: true });
  const unpack = Bun.spawnSync(["tar", "-x", "--no-same-owner", "-f", archive, "-C", dir], { stderr: "pipe" });
  if (unpack.exitCode !== 0) throw new UserError(`could not unpack the home from ${side.label}: ${unpack.stderr.toString().trim()}`);
  rmSync(archive, { force: true });
}

/** The shell steps carrying out CHANGES on /h, the incoming files under /in (pure). */
export function applyScript(changes: readonly Change[]): string {
  const lines = ["set -e"];
  const parent = (path: string) => path.split("/").slice(0, -1).join("/");
  for (const change of changes) {
    const target = `/h/${change.path}`;
    if (parent(change.path)) lines.push(`mkdir -p -- ${shellQuote(`/h/${parent(change.path)}`)}`);
    if (change.op === "delete") lines.push(`rm -f -- ${shellQuote(target)}`);
    else if (change.op === "rename") {
      if (parent(change.to)) lines.push(`mkdir -p -- ${shellQuote(`/h/${parent(change.to)}`)}`);
      lines.push(`if [ -e ${shellQuote(target)} ] || [ -L ${shellQuote(target)} ]; then mv -f -- ${shellQuote(target)} ${shellQuote(`/h/${change.to}`)}; fi`);
    } else {
      const tmp = shellQuote(`${target}.agentenv-sync-tmp`);
      lines.push(`rm -rf -- ${tmp}`, `cp -P -- ${shellQuote(`/in/${change.from}`)} ${tmp}`);
      if (change.entry.type !== "symlink") lines.push(`chmod ${(change.entry.mode & 0o7777).toString(8)} ${tmp}`);
      lines.push(`mv -f -T -- ${tmp} ${shellQuote(target)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** Applies CHANGES to VOLUME on SIDE: the files they need (from INCOMING, the other side's copy) and the steps, as one tar on stdin. */
async function applyOn(side: Side, volume: string, changes: readonly Change[], incoming: string, work: string): Promise<void> {
  if (!changes.length) return;
  const stage = mkdtempSync(join(work, "apply-"));
  mkdirSync(join(stage, "in"));
  const needed = neededFrom(changes);
  writeFileSync(join(stage, "steps.sh"), applyScript(changes));
  const list = join(stage, "list");
  writeFileSync(list, needed.map((p) => `in/${p}\0`).join(""));
  // the needed files, at their paths under in/, then the steps
  for (const path of needed) {
    const copy = Bun.spawnSync(["cp", "-P", "--parents", "--", path, join(stage, "in")], { cwd: incoming, stderr: "pipe" });
    if (copy.exitCode !== 0) throw new UserError(`could not stage ${path} for ${side.label}: ${copy.stderr.toString().trim()}`);
  }
  const archive = join(stage, "apply.tar");
  const tar = Bun.spawnSync(["tar", "--null", "--no-recursion", "-C", stage, "-cf", archive, "-T", list, "steps.sh"], { stderr: "pipe" });
  if (tar.exitCode !== 0) throw new UserError(`could not pack the changes for ${side.label}: ${tar.stderr.toString().trim()}`);
  const plan = helperPlan({ image: side.image, purpose: "env-sync", mounts: [{ type: "volume", source: volume, target: "/h" }], script: "mkdir /stage && tar -x -C /stage && ln -s /stage/in /in && sh /stage/steps.sh" });
  const result = await side.runtime.capture(plan, { stdin: archive });
  if (result.code !== 0) throw new UserError(`could not apply the sync on ${side.label}: ${result.stderr.trim().split("\n").pop() ?? `exit ${result.code}`}`, "run the sync again: what was applied is merged again, nothing is lost");
}

/**
 * Syncs environment NAME between LOCAL and REMOTE (host HOST). The remote's volume is
 * made when it has none (its first copy: everything goes over). Neither side may have a
 * container using the home meanwhile.
 */
export async function syncEnv(name: string, host: string, local: Side, remote: Side, log: Log): Promise<SyncResult> {
  const volume = volumeName(name);
  if (!(await local.runtime.volumeExists(volume))) throw new UserError(`no environment named ${name} on this machine`, `agentenv env list shows them; create it: agentenv env create ${name}`);
  for (const side of [local, remote]) {
    const users = (await side.runtime.volumeUsers(volume).catch(() => [])).filter((u) => u.running);
    if (users.length) throw new UserError(`environment ${name} is in use on ${side.label} (${users.map((u) => u.name).join(", ")})`, "end those sessions first (agentenv down, or exit them), then sync");
  }
  const created = !(await remote.runtime.volumeExists(volume));
  if (created) {
    await remote.runtime.volumeCreate(volume, { [envLabel]: name, "agentenv.synced-from": "local" });
    log.info(`environment ${name} has no copy on ${host}: making one from this machine's`);
  }
  const work = mkdtempSync(join(tmpdir(), "agentenv-sync-"));
  try {
    const localDir = join(work, "local");
    const remoteDir = join(work, "remote");
    await readOut(local, volume, localDir, work);
    if (created) mkdirSync(remoteDir);
    else await readOut(remote, volume, remoteDir, work);
    const base = created ? {} : readBase(host, name);
    const plan = mergeManifests(base, manifestOf(localDir), manifestOf(remoteDir), { otherName: host });
    // the remote first: a copy made there is whole before this machine's home changes
    await applyOn(remote, volume, plan.other, localDir, work);
    await applyOn(local, volume, plan.local, remoteDir, work);
    writeBase(host, name, plan.result);
    return { toOther: plan.other.filter((c) => c.op !== "rename").length, toLocal: plan.local.length, conflicts: plan.conflicts, created };
  } catch (error) {
    // a copy that never got its files is no copy: the next sync makes it again
    if (created) await remote.runtime.volumeRemove(volume).catch(() => {});
    throw error;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * `env list --host H`: the environments' copies on host H (volumes labelled agentenv.env
 * there) and when each was last synced with this machine's.
 */
export async function listCopies(host: string, json: boolean, log: Log): Promise<number> {
  const remote = createRuntime(undefined, host);
  (remote as { log?: Log }).log = log;
  const volumes = await remote.volumeList(envLabel);
  const rows = volumes
    .map((v) => v.name)
    // a name the remote made up (a path, escapes) is no environment of ours
    .filter((volume) => envNameOf(volume) !== volume && envNamePattern.test(envNameOf(volume)))
    .sort()
    .map((volume) => ({ name: envNameOf(volume), volume, lastSync: lastSync(host, envNameOf(volume)) ?? null }));
  if (json) console.log(JSON.stringify(rows, null, 2));
  else if (!rows.length) log.info(`no environment has a copy on ${host} yet (the first --env session there, or env sync, makes one)`);
  else for (const row of rows) console.log(`${row.name}\t${row.lastSync ? `synced ${row.lastSync}` : "never synced from here"}`);
  return 0;
}

/** Text the remote answered, as one printable line: a hostile engine there could send terminal escapes. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

/** The record of NAME's last sync with HOST: when, and how many files both sides had then. */
export function syncRecord(host: string, name: string): { at: string; files: number } | undefined {
  try {
    const data = JSON.parse(readFileSync(baseFile(host, name), "utf8")) as { synced?: unknown; manifest?: unknown };
    if (typeof data.synced !== "string" || Number.isNaN(Date.parse(data.synced))) return undefined;
    const files = data.manifest && typeof data.manifest === "object" ? Object.keys(data.manifest).length : 0;
    return { at: data.synced, files };
  } catch {
    return undefined;
  }
}

export interface CopyInfo {
  name: string;
  host: string;
  volume: string;
  /** when the engine there made the volume (as it says: the remote's clock) */
  created?: string;
  /** the record of their last sync, kept on this machine; null: never synced from here */
  lastSync: { at: string; files: number } | null;
  /** this machine's home: whether it exists, and whether it was used since the last sync */
  here: { exists: boolean; usedSinceSync?: boolean };
  /** containers there using the copy now */
  sessions: string[];
}

/**
 * `env show NAME --host H`: the environment's copy on host H — its volume there, when it
 * was made, the record of their last sync (kept here), whether this machine's home was used
 * since, and the containers there using it. What the remote answers is shown, never
 * trusted: dates must parse, names must be names.
 */
export async function showCopy(name: string, host: string, json: boolean, local: Runtime, log: Log): Promise<number> {
  const remote = createRuntime(undefined, host) as RemoteRuntime;
  remote.log = log;
  const volume = volumeName(name);
  const inspect = await remote.callChecked(["volume", "inspect", "--format", '{{.CreatedAt.UTC.Format "2006-01-02T15:04:05Z07:00"}}', volume]);
  if (inspect.code !== 0) {
    if (!/no such volume|no volume with name/i.test(inspect.stderr)) throw new UserError(`podman on ${host} could not inspect volume ${volume}: ${printable(inspect.stderr.trim().split("\n").pop() ?? `exit ${inspect.code}`)}`, `agentenv host check ${host}`);
    throw new UserError(`environment ${name} has no copy on ${host}`, `agentenv env list --host ${host} shows the copies there (the first --env ${name} session there, or env sync ${name} --host ${host}, makes one)`);
  }
  const stamp = inspect.stdout.trim();
  const created = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(stamp) && !Number.isNaN(Date.parse(stamp)) ? stamp : undefined;
  const sessions = (await remote.volumeUsers(volume)).filter((u) => u.running).map((u) => (/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(u.name) ? u.name : printable(u.name)));
  const record = syncRecord(host, name) ?? null;
  const dir = await local.volumeMountpoint(volume).catch(() => undefined);
  const exists = dir !== undefined || (await local.volumeExists(volume).catch(() => false));
  const used = dir ? lastUsed(dir) : undefined;
  const info: CopyInfo = {
    name,
    host,
    volume,
    created,
    lastSync: record,
    here: { exists, ...(exists && record ? { usedSinceSync: used !== undefined && used > record.at } : {}) },
    sessions,
  };
  if (json) {
    console.log(JSON.stringify(info, null, 2));
    return 0;
  }
  const synced = record ? `${record.at} (${record.files} file${record.files === 1 ? "" : "s"} on both sides then; the record is on this machine)` : `never synced from here — agentenv env sync ${name} --host ${host}`;
  const here = !exists
    ? `no environment ${name} on this machine (env sync needs one)`
    : info.here.usedSinceSync
      ? `used since the last sync: ${host}'s copy is older — agentenv env sync ${name} --host ${host}`
      : record
        ? "not used since the last sync"
        : "has never been synced with this copy";
  const rows: Array<[string, string]> = [
    ["name", name],
    ["host", host],
    ["volume", `${volume} (on ${host})`],
    ["created", created ?? "?"],
    ["synced", synced],
    ["here", here],
    ["sessions", sessions.length ? sessions.join(", ") : `none running on ${host}`],
  ];
  for (const [key, value] of rows) console.log(`${key.padEnd(9)} ${value}`);
  return 0;
}

/**
 * `env rm NAME --host H`: the environment's copy on host H, and the record of their last
 * sync (the next session there makes a new copy from this machine's). This machine's home
 * is not touched. Refused while a session there uses it, unless FORCE (which stops them).
 */
export async function removeCopy(name: string, host: string, force: boolean, log: Log): Promise<number> {
  const remote = createRuntime(undefined, host);
  const volume = volumeName(name);
  if (!(await remote.volumeExists(volume))) throw new UserError(`environment ${name} has no copy on ${host}`, `agentenv env list --host ${host} shows the copies there`);
  const users = (await remote.volumeUsers(volume)).filter((u) => u.running);
  if (users.length && !force) throw new UserError(`environment ${name} is in use on ${host} (${users.map((u) => u.name).join(", ")})`, "end those sessions first, or pass --force (it stops them)");
  await remote.volumeRemove(volume);
  rmSync(baseFile(host, name), { force: true });
  log.success(`the copy of environment ${name} on ${host} removed (this machine's is as it was)`);
  return 0;
}

export const syncCommand = defineCommand({
  meta: { name: "sync", description: "Reconcile an environment's home with its copy on a remote host, three-way: sync NAME --host H" },
  args: {
    name: { type: "positional", required: true, valueHint: "NAME", description: "The environment" },
    host: { type: "string", required: true, valueHint: "name", description: "The remote host (agentenv host list)" },
    json: { type: "boolean", description: "Print what moved and the conflicts as JSON" },
    ...runtimeArgs,
    ...globalArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    if (!args.host) throw new UserError("env sync needs --host NAME", "agentenv env sync NAME --host H");
    const log = logFor(args);
    const ctx = await commandContext({ runtime: args.runtime, verbose: args.verbose, quiet: args.quiet });
    const remote = createRuntime(undefined, args.host);
    (remote as { log?: Log }).log = log;
    const image = ctx.config.image;
    const result = await syncEnv(name, args.host, { runtime: ctx.runtime, image, label: "this machine" }, { runtime: remote, image, label: args.host }, log);
    if (args.json) console.log(JSON.stringify(result, null, 2));
    else {
      log.success(`environment ${name} synced with ${args.host}: ${result.toOther} file(s) to ${args.host}, ${result.toLocal} to this machine${result.conflicts.length ? `, ${result.conflicts.length} conflict(s)` : ""}`);
      for (const c of result.conflicts) {
        if (c.kind === "both") log.warn(`conflict: ${c.path} changed on both sides — this machine's kept at ${c.path}, ${args.host}'s at ${c.copy} (on both sides)`);
        else log.warn(`conflict: ${c.path} was deleted on ${c.kind === "deleted-local" ? "this machine" : args.host} and changed on the other: the changed file is kept`);
      }
    }
    return 0;
  },
});
