import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "pathe";
import { messageOf } from "./errors.ts";
import { handoffPath, handoffTarget } from "./handoff.ts";
import { lockFile, type FileLock } from "./linux.ts";
import { agentenvDir } from "./paths.ts";
import type { BaseContext, SessionContext } from "./plugins.ts";

/**
 * What a session leaves behind if its agentenv is killed (kill -9, a crash, power loss):
 * its container — the docker CLI's `run` does not remove it, agentenv does afterwards,
 * so it stays, stopped (a helper container too) — and its handoff directory (which may
 * still hold secrets the container never read). Each session registers them in a file of
 * agentenv's state dir whose flock it holds until both are gone; the next session's start
 * finds the files whose lock nobody holds (one readdir, a try-lock each: no engine call
 * unless something was left), removes the container once the engine says it is not
 * running, and the directory. A container that still runs is left alone (the engine runs
 * it on after its agentenv died), and looked at again by a later session.
 */
interface Registration {
  container: string;
  runtime: string;
  /** which engine instance: another socket's container is not this engine's to remove */
  endpoint: string;
  handoff?: string;
}

function registryDir(): string {
  return join(agentenvDir("state"), "running");
}

function endpointOf(runtime: string, endpoint?: string): string {
  if (endpoint) return endpoint;
  const env = process.env;
  return runtime === "docker" ? `${env.DOCKER_HOST ?? ""}|${env.DOCKER_CONTEXT ?? ""}` : `${env.CONTAINER_HOST ?? ""}|${env.CONTAINER_CONNECTION ?? ""}`;
}

/**
 * Registers the session about to run: call before its container is created, release once
 * it is removed and `session:exit` has run. Undefined when the state dir is not writable
 * (only the cleanup after a crash is lost).
 */
export function registerSession(ctx: SessionContext): FileLock | undefined {
  // a remote engine's handoff directory is on that machine (it removes it with the container): this one's is the local half
  const mounted = ctx.runtime.endpoint ? undefined : ctx.plan.mounts.find((m) => m.target === handoffTarget)?.source;
  const handoff = mounted ?? handoffPath(ctx.plan.name);
  try {
    return registerContainer(ctx.runtime.name, ctx.plan.name, handoff, ctx.runtime.endpoint);
  } catch (error) {
    ctx.log.debug(`could not register this session for the cleanup after a crash: ${messageOf(error)}`);
    return undefined;
  }
}

/**
 * Registers CONTAINER of RUNTIME (and its HANDOFF directory) for the cleanup after a
 * crash, until the lock returned is released. Throws when the state dir is not writable.
 */
export function registerContainer(runtime: string, container: string, handoff?: string, endpoint?: string): FileLock {
  const dir = registryDir();
  const entry: Registration = { container, runtime, endpoint: endpointOf(runtime, endpoint), handoff };
  const file = join(dir, `${runtime}-${container}.json`);
  const tmp = `${file}.tmp-${process.pid}`;
  let lock: FileLock | undefined;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify(entry));
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
  return {
    release() {
      rmSync(file, { force: true });
      lock!.release();
    },
  };
}

/** Removes what sessions whose agentenv died left: their stopped containers and handoff directories. */
export async function sweepSessions(ctx: BaseContext): Promise<void> {
  const dir = registryDir();
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of files) {
    const file = join(dir, name);
    if (name.includes(".tmp-")) {
      // a registration cut before its rename: its container was never created
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
      let entry: Registration;
      try {
        entry = JSON.parse(readFileSync(file, "utf8")) as Registration;
      } catch {
        rmSync(file, { force: true }); // unreadable: it names nothing to clean
        continue;
      }
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
