import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { join } from "pathe";
import type { ResolvedConfig } from "./config.ts";
import { UserError, messageOf } from "./errors.ts";
import { handoffPath, handoffTarget } from "./handoff.ts";
import { lockFile, type FileLock } from "./linux.ts";
import { agentenvDir } from "./paths.ts";
import type { Plan, SessionMode } from "./plan.ts";
import type { BaseContext, SessionContext } from "./plugins.ts";

/**
 * A session is one record: a file per container in agentenv's state dir
 * (`running/RUNTIME-CONTAINER.json`), written when the session starts — the final plan, the
 * config it resolved, and each plugin's part (`ctx.saved`) once `session:start` is done —
 * and read by whoever ends it:
 *   - the agentenv that runs it holds the file's flock until the container is removed and
 *     `session:exit` has run, then removes it;
 *   - a detached session (`agentenv up`) keeps its record once its agentenv returns, and
 *     `down` ends it from that record alone (`readRecord`): the plan and settings it started
 *     with, whatever the config files say by then;
 *   - when an agentenv is killed (kill -9, a crash, power loss) the next session's start
 *     finds the records whose lock nobody holds (one readdir, a try-lock each: no engine
 *     call unless something was left), removes the container once the engine says it is
 *     not running — the docker CLI's `run` leaves it, stopped — and the handoff directory
 *     (which may still hold secrets the container never read). A container that still
 *     runs is left alone (its engine runs it on after its agentenv died) and looked at
 *     again by a later session. What plugins keep elsewhere they reap themselves (the
 *     golden store discards a dead session's clone, unpromoted: its end never screened it).
 * Helper containers get a record too (container and engine only).
 */
export interface RecordedSession {
  container: string;
  runtime: string;
  /** which engine instance: another socket's (or host's) container is not this engine's to remove */
  endpoint: string;
  handoff?: string;
  /** the agentenv that started it */
  pid?: number;
  started?: string;
  mode?: SessionMode;
  /** the project directory (a path on the engine's host for `HOST:PATH`) */
  project?: string;
  plan?: Plan;
  /** the config it resolved, without its layers (code is not data) */
  config?: Omit<ResolvedConfig, "layers">;
  /** each plugin's part, under its name: what `ctx.saved` held once `session:start` was done */
  plugins?: Record<string, unknown>;
}

export interface HeldRecord {
  file: string;
  /** rewrites the record with what the plugins saved (`ctx.saved`), once `session:start` is done */
  update(ctx: SessionContext): void;
  /** the session ended: the record goes */
  release(): void;
  /** a detached session runs on: the record stays for `down`, its lock is let go */
  keep(): void;
}

function recordsDir(): string {
  return join(agentenvDir("state"), "running");
}

/** The record's file: a remote engine's containers are named apart from this machine's. */
export function recordFile(runtime: string, container: string, endpoint?: string): string {
  const engine = endpoint ? `${runtime}@${endpoint.replace(/[^A-Za-z0-9._-]/g, "_")}` : runtime;
  return join(recordsDir(), `${engine}-${container}.json`);
}

function endpointOf(runtime: string, endpoint?: string): string {
  if (endpoint) return endpoint;
  const env = process.env;
  return runtime === "docker" ? `${env.DOCKER_HOST ?? ""}|${env.DOCKER_CONTEXT ?? ""}` : `${env.CONTAINER_HOST ?? ""}|${env.CONTAINER_CONNECTION ?? ""}`;
}

function withoutLayers(config: ResolvedConfig): Omit<ResolvedConfig, "layers"> {
  const { layers: _layers, ...rest } = config;
  return rest;
}

/** What CTX's session is, as data: its record before the plugins have saved anything. */
function sessionEntry(ctx: SessionContext): RecordedSession {
  // a remote engine's handoff directory is on that machine (it removes it with the container): this one's is the local half
  const mounted = ctx.runtime.endpoint ? undefined : ctx.plan.mounts.find((m) => m.target === handoffTarget)?.source;
  return {
    container: ctx.plan.name,
    runtime: ctx.runtime.name,
    endpoint: endpointOf(ctx.runtime.name, ctx.runtime.endpoint),
    handoff: mounted ?? handoffPath(ctx.plan.name),
    pid: process.pid,
    started: new Date().toISOString(),
    mode: ctx.mode,
    project: ctx.project,
    plan: ctx.plan,
    config: withoutLayers(ctx.config),
    plugins: ctx.saved,
  };
}

/**
 * Records the session about to run: call before its container is created. Undefined when
 * the state dir is not writable — then only the cleanup after a crash is lost, and a
 * detached session cannot run at all (`down` would not know it): REQUIRED throws instead.
 */
export function recordSession(ctx: SessionContext, required = false): HeldRecord | undefined {
  const entry = sessionEntry(ctx);
  try {
    const { file, lock } = writeLocked(entry, ctx.runtime.endpoint);
    return {
      file,
      update(current) {
        // in place, under the lock this process holds: no one reads it meanwhile
        writeFileSync(file, JSON.stringify({ ...entry, plan: current.plan, plugins: current.saved }, null, 2));
      },
      release() {
        rmSync(file, { force: true });
        lock.release();
      },
      keep() {
        lock.release();
      },
    };
  } catch (error) {
    if (required) throw new UserError(`could not record ${ctx.plan.name} in ${recordsDir()}: ${messageOf(error)}`, "a container that outlives agentenv needs its record there: make agentenv's state dir writable (XDG_STATE_HOME)");
    ctx.log.debug(`could not record this session for the cleanup after a crash: ${messageOf(error)}`);
    return undefined;
  }
}

/**
 * Records CONTAINER of RUNTIME (a helper container: no plan) for the cleanup after a
 * crash, until the lock returned is released. Throws when the state dir is not writable.
 */
export function registerContainer(runtime: string, container: string, handoff?: string, endpoint?: string): FileLock {
  const { file, lock } = writeLocked({ container, runtime, endpoint: endpointOf(runtime, endpoint), handoff }, endpoint);
  return {
    release() {
      rmSync(file, { force: true });
      lock.release();
    },
  };
}

function writeLocked(entry: RecordedSession, endpoint?: string): { file: string; lock: FileLock } {
  const file = recordFile(entry.runtime, entry.container, endpoint);
  const tmp = `${file}.tmp-${process.pid}`;
  let lock: FileLock | undefined;
  try {
    mkdirSync(recordsDir(), { recursive: true, mode: 0o700 });
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify(entry, null, 2));
    } finally {
      closeSync(fd);
    }
    // locked before it is seen under its name: a session sweeping meanwhile never takes it for a dead one's
    lock = lockFile(tmp, "exclusive")!;
    renameSync(tmp, file);
  } catch (error) {
    lock?.release();
    rmSync(tmp, { force: true });
    throw error;
  }
  return { file, lock };
}

/**
 * The record in FILE, when it reads as one. It is agentenv's own file (the state dir is
 * the host's: no session writes there), but it may be cut short or from another version.
 */
export function readRecord(file: string): RecordedSession | undefined {
  try {
    const entry = JSON.parse(readFileSync(file, "utf8")) as RecordedSession;
    return typeof entry?.container === "string" && typeof entry.runtime === "string" ? entry : undefined;
  } catch {
    return undefined;
  }
}
/** Removes what sessions whose agentenv died left: their stopped containers and handoff directories. */
export async function sweepSessions(ctx: BaseContext): Promise<void> {
  const dir = recordsDir();
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of files) {
    const file = join(dir, name);
    if (name.includes(".tmp-")) {
      // a record cut before its rename: its container was never created
      const pid = Number(name.slice(name.lastIndexOf("-") + 1));
      if (!alive(pid)) rmSync(file, { force: true });
      continue;
    }
    if (!name.endsWith(".json")) continue;
    let lock: FileLock | undefined;
    try {
      lock = lockFile(file, "exclusive", false, false);
    } catch {
      continue; // removed meanwhile
    }
    if (!lock) continue; // its agentenv is alive
    try {
      const entry = readRecord(file);
      if (!entry) {
        rmSync(file, { force: true }); // unreadable: it names nothing to clean
        continue;
      }
      // a detached session's record is what its `down` ends it by
      if (entry.mode === "up") continue;
      if (entry.runtime !== ctx.runtime.name || entry.endpoint !== endpointOf(ctx.runtime.name, ctx.runtime.endpoint)) continue;
      const status = await ctx.runtime.containerStatus(entry.container);
      if (status === "running") continue;
      // a remote engine's removal also clears what the session had there (its handoff directory)
      if (status === "stopped" || ctx.runtime.endpoint) await ctx.runtime.removeContainer(entry.container);
      if (entry.handoff) rmSync(entry.handoff, { recursive: true, force: true });
      rmSync(file, { force: true });
      ctx.log.debug(`removed what session ${entry.container} left (its agentenv died)`);
    } catch (error) {
      ctx.log.debug(`could not clean up after the session of ${file}: ${messageOf(error)}`);
    } finally {
      lock.release();
    }
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
