import { readlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { replaceProcess } from "../linux.ts";
import type { Log } from "../log.ts";
import { agentenvCommand } from "../paths.ts";
import { readOrEmpty } from "./rootless.ts";

/**
 * Rootless Podman runs every container in a user namespace of its own (uid 0 there is you
 * here; 1… are your subordinate ids) and a mount namespace its pause process keeps alive.
 * agentenv's host-side steps on volume contents belong there too: an overlay mount of the
 * golden store that Podman's containers can see, moving Nix's read-only (0555) store
 * directories, removing files an in-container user made, measuring a home. So, as Podman
 * does for each of its own commands, agentenv re-executes itself in there before any command
 * but `image` starts: by `nsenter` into the pause process (≈2 ms), with the
 * variables Podman's own re-exec sets, so the `podman` it runs knows it is already inside.
 * `podman unshare` (≈60 ms) is only used to start a pause process when none runs yet.
 */

/**
 * Before a command runs (core/cli.ts): joins when the engine its command line would use is
 * Podman — the `--runtime` flag, AGENTENV_RUNTIME, the config of this directory, else what
 * is installed. A project elsewhere (`run DIR`) that names another engine only makes the
 * join needless: Docker's CLI works the same from inside.
 */
export async function joinForCommand(runtimeFlag: string | undefined, log: Log): Promise<void> {
  if (reasonToStay(here())) return;
  let engine: string;
  try {
    const { loadConfig } = await import("../config.ts");
    const { detectRuntime } = await import("./index.ts");
    const config = await loadConfig({ project: process.cwd(), flags: { runtime: runtimeFlag } });
    engine = config.runtime ?? detectRuntime();
  } catch {
    return; // a bad config or no engine: the command says so itself, if it needs either
  }
  if (engine === "podman") joinPodmanNamespace("podman", log);
}

/** What decides whether to join, as read from this process. */
export interface JoinSituation {
  platform: string;
  uid: number | undefined;
  env: Record<string, string | undefined>;
}

const here = (): JoinSituation => ({ platform: process.platform, uid: process.getuid?.(), env: process.env });

/** Why agentenv stays where it is, or undefined when it should join. */
export function reasonToStay({ platform, uid, env }: JoinSituation): string | undefined {
  if (platform !== "linux") return `not Linux (${platform})`;
  if (uid === 0 || uid === undefined) return "root: Podman is not rootless";
  if (env._CONTAINERS_USERNS_CONFIGURED) return "already inside Podman's user namespace";
  if (env.CONTAINER_HOST || env.CONTAINER_CONNECTION) return "Podman is remote (CONTAINER_HOST/CONTAINER_CONNECTION)";
  return undefined;
}

/** Where Podman keeps its pause process's pid: under its runtime directory, by its own precedence. */
export function pausePidFiles(uid: number, env: Record<string, string | undefined>): string[] {
  const dirs = [env.XDG_RUNTIME_DIR, `/run/user/${uid}`, join(env.TMPDIR || tmpdir(), `podman-run-${uid}`)];
  return [...new Set(dirs.filter((d): d is string => !!d))].map((dir) => join(dir, "libpod/tmp/pause.pid"));
}

/** The running pause process of UID's rootless Podman: its pid file names a live process of ours in another user namespace. */
function pauseProcess(uid: number, env: Record<string, string | undefined>): number | undefined {
  for (const file of pausePidFiles(uid, env)) {
    const pid = Number(readOrEmpty(file).trim());
    if (!Number.isInteger(pid) || pid <= 0) continue;
    // a stale file may name a recycled pid: it must be ours and hold a namespace of its own
    const owner = /^Uid:\s+(\d+)/m.exec(readOrEmpty(`/proc/${pid}/status`))?.[1];
    if (owner !== String(uid)) continue;
    try {
      if (readlinkSync(`/proc/${pid}/ns/user`) !== readlinkSync("/proc/self/ns/user")) return pid;
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/**
 * Re-executes agentenv inside rootless Podman's namespaces when it is not already there;
 * returns (and agentenv goes on as itself) when it need not or cannot, saying why in
 * verbose output. `podman` is the engine's binary.
 */
export function joinPodmanNamespace(podman: string, log: Log, situation: JoinSituation = here()): void {
  if (reasonToStay(situation)) return;
  const uid = situation.uid!;
  let pid = pauseProcess(uid, situation.env);
  if (pid === undefined) {
    // first Podman use since boot (or after `podman system migrate`): let Podman make it
    Bun.spawnSync([podman, "unshare", "true"], { stdout: "ignore", stderr: "ignore" });
    pid = pauseProcess(uid, situation.env);
  }
  const nsenter = Bun.which("nsenter");
  if (pid === undefined || !nsenter) {
    log.debug(`staying outside rootless Podman's namespace: ${nsenter ? "no pause process found" : "nsenter (util-linux) not found"} — the golden store falls back to engine volumes`);
    return;
  }
  const gid = process.getgid?.() ?? uid;
  try {
    const argv = [nsenter, `--target=${pid}`, "--user", "--mount", "--preserve-credentials", `--wd=${process.cwd()}`, "--", ...agentenvCommand(), ...process.argv.slice(2)];
    replaceProcess(argv, { ...situation.env, _CONTAINERS_USERNS_CONFIGURED: "done", _CONTAINERS_ROOTLESS_UID: String(uid), _CONTAINERS_ROOTLESS_GID: String(gid) });
  } catch (error) {
    // nothing changed: go on outside
    log.debug(`staying outside rootless Podman's namespace: ${(error as Error).message}`);
  }
}
