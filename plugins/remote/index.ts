import { UserError } from "../../core/errors.ts";
import { handoffTarget } from "../../core/handoff.ts";
import { containerHome, projectMountPoint } from "../../core/plan.ts";
import { createRuntime } from "../../core/runtime/index.ts";
import { envLabel, lastUsed, volumeName } from "../env/home.ts";
import { definePlugin, type SessionContext } from "../../core/plugins.ts";
import { remoteHandoffDir, type RemoteRuntime } from "../../core/runtime/remote.ts";
import type { DetachedShare, Share } from "./share.ts";

/**
 * Sessions on a remote host (`--host NAME`, `HOST:PATH`): the engine is that host's
 * Podman over SSH (core/runtime/remote.ts); this plugin maps what the plan names on this
 * machine onto that one. The project is either a directory there (`HOST:PATH`: mounted as
 * it is) or a local one live-shared by reverse SSHFS (./share.ts), mounted before the
 * container starts and unmounted when it ends. Any other path of this machine a plan
 * would bind-mount is refused in one line: it does not exist over there.
 */

interface RemoteState {
  /** the local project shared at `mountPoint` on the remote, while the session runs */
  local?: string;
  mountPoint?: string;
  share?: Share;
  /** `up` on the host: its roots of this machine's, each live-shared at its mount point there for the container's life */
  upShares?: Array<{ local: string; mountPoint: string }>;
}

/** What `down`, in another agentenv, needs to end an up container's shares (its record's part: ctx.saved.remote). */
interface SavedRemote {
  shares?: DetachedShare[];
}

function remoteOf(ctx: { runtime: unknown; config: { host?: string } }): RemoteRuntime | undefined {
  return ctx.config.host ? (ctx.runtime as RemoteRuntime) : undefined;
}

function stateOf(ctx: SessionContext): RemoteState {
  return (ctx.state.remote ??= {}) as RemoteState;
}

/** Whether the session's project is a directory on the remote (`HOST:PATH`). */
function remoteProject(ctx: SessionContext, host: string): boolean {
  return ctx.plan.labels["agentenv.project"]?.startsWith(`${host}:`) ?? false;
}

/** `session:mount`: the remote's label; a local project's mount is pointed at its share there. */
function mountRemote(ctx: SessionContext): void {
  const remote = remoteOf(ctx);
  if (!remote) return;
  const host = remote.host.name;
  ctx.plan.labels["agentenv.host"] = host;
  const env = ctx.plan.labels[envLabel];
  if (env) {
    ctx.plan.mounts.push({ type: "volume", source: volumeName(env), target: containerHome });
    ctx.plan.env.AGENTENV_ENV = env;
    if (ctx.config.env.strict) ctx.plan.env.AGENTENV_STRICT = "1";
  }
  if (ctx.mode === "up") return mountShared(ctx);
  if (remoteProject(ctx, host)) return;
  const project = ctx.plan.mounts.find((m) => m.type === "bind" && m.target === projectMountPoint);
  if (!project) return;
  const { shareMountPoint } = require("./share.ts") as typeof import("./share.ts");
  const state = stateOf(ctx);
  state.local = project.source;
  state.mountPoint = shareMountPoint(ctx.plan.name);
  project.source = state.mountPoint;
}

/** An up container's roots of this machine's (core/session.ts: `shared`): each mounted from its share there, at its own path. */
function mountShared(ctx: SessionContext): void {
  const shared = JSON.parse(ctx.plan.labels["agentenv.shared"] ?? "[]") as string[];
  if (!shared.length) return;
  const { shareMountPoint } = require("./share.ts") as typeof import("./share.ts");
  stateOf(ctx).upShares = shared.map((local, i) => {
    const mountPoint = shareMountPoint(`${ctx.plan.name}-${i}`);
    const mount = ctx.plan.mounts.find((m) => m.type === "bind" && m.source === local && m.target === local);
    if (mount) mount.source = mountPoint;
    return { local, mountPoint };
  });
}

/** `session:boot` (after every plugin's `session:mount`): no path of this machine may reach the remote's engine. */
function checkBinds(ctx: SessionContext): void {
  const remote = remoteOf(ctx);
  if (!remote) return;
  const host = remote.host.name;
  const state = stateOf(ctx);
  // an `up` container's roots there are directories on that host (core/session.ts), each at its own path
  const roots = ctx.mode === "up" ? (JSON.parse(ctx.plan.labels["agentenv.roots"] ?? "[]") as string[]) : [];
  for (const mount of ctx.plan.mounts) {
    if (mount.type !== "bind") continue;
    if (mount.target === projectMountPoint && (mount.source === state.mountPoint || remoteProject(ctx, host))) continue;
    if (mount.source === mount.target && roots.includes(mount.source) && remoteProject(ctx, host)) continue;
    if (state.upShares?.some((share) => share.mountPoint === mount.source && share.local === mount.target)) continue;
    if (mount.target === handoffTarget) {
      // a tmpfs directory there, filled from this machine's just before the run (core/runtime/remote.ts)
      mount.source = remoteHandoffDir(ctx.plan.name);
      continue;
    }
    throw new UserError(`${mount.source} (mounted at ${mount.target}) is a path on this machine: a session on ${host} cannot mount it`, `drop it from config (mounts, profile, --store host) for remote sessions`);
  }
}

async function startRemote(ctx: SessionContext): Promise<void> {
  const remote = remoteOf(ctx);
  const state = stateOf(ctx);
  if (!remote) return;
  // the image first: a missing one is shipped before anything is mounted
  await remote.ensureImage(ctx.plan.image);
  const env = ctx.plan.labels[envLabel];
  if (env) {
    await remoteHome(ctx, remote, env);
    // before the golden plugin clones that host's store for the session (this plugin starts first)
    const { shipTools } = await import("./tools.ts");
    await shipTools(ctx, remote, env);
  }
  if (state.upShares?.length) {
    const { openDetachedShare } = await import("./share.ts");
    // saved as each opens: a failure ends the ones before it (session:exit), and `down` ends them all
    const saved: SavedRemote = { shares: [] };
    ctx.saved.remote = saved;
    for (const share of state.upShares) {
      ctx.log.debug(`sharing ${share.local} with ${remote.host.name} at ${share.mountPoint} (reverse sshfs, for the container's life)`);
      saved.shares!.push(await openDetachedShare(remote.host, share.local, share.mountPoint, ctx.log));
    }
  }
  if (!state.local || !state.mountPoint) return;
  const { openShare } = await import("./share.ts");
  ctx.log.debug(`sharing ${state.local} with ${remote.host.name} at ${state.mountPoint} (reverse sshfs)`);
  state.share = await openShare(remote.host, state.local, state.mountPoint, ctx.log);
}

/**
 * The environment's home on the remote: made from this machine's on first use (the first
 * `env sync`), else the copy there as it is — with a word when this machine's was used
 * since they were last synced.
 */
async function remoteHome(ctx: SessionContext, remote: RemoteRuntime, env: string): Promise<void> {
  const host = remote.host.name;
  const { lastSync, syncEnv } = await import("../env/sync.ts");
  const synced = lastSync(host, env);
  if (synced && (await remote.volumeExists(volumeName(env)))) {
    const local = createRuntime(ctx.config.runtime);
    const dir = await local.volumeMountpoint(volumeName(env)).catch(() => undefined);
    const used = dir ? lastUsed(dir) : undefined;
    if (used && used > synced) ctx.log.warn(`environment ${env} on ${host} is older than this machine's (used here since the last sync, ${synced}): agentenv env sync ${env} --host ${host}`);
    return;
  }
  const local = createRuntime(ctx.config.runtime);
  const image = ctx.config.image;
  await syncEnv(env, host, { runtime: local, image, label: "this machine" }, { runtime: remote, image, label: host }, ctx.log);
}

async function exitRemote(ctx: SessionContext): Promise<void> {
  const state = stateOf(ctx);
  await state.share?.close();
  // an up container's shares, from its record (this agentenv, or the one that started it)
  const shares = (ctx.saved.remote as SavedRemote | undefined)?.shares ?? [];
  const host = remoteOf(ctx)?.host;
  if (!shares.length || !host) return;
  const { closeDetachedShare } = await import("./share.ts");
  for (const share of shares) {
    const sane = typeof share.pid === "number" && typeof share.sftpPid === "number" && typeof share.work === "string" && typeof share.mountPoint === "string" && share.mountPoint.startsWith("/tmp/agentenv-share-");
    if (sane) await closeDetachedShare(host, share);
  }
}

export default definePlugin({
  name: "remote",
  hooks: {
    "session:mount": mountRemote,
    "session:boot": checkBinds,
    "session:start": startRemote,
    "session:exit": exitRemote,
  },
  commands: {
    host: () => import("./command.ts").then((m) => m.default),
  },
});
