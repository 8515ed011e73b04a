import { lstatSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { UserError } from "./errors.ts";
import { hostUid } from "./paths.ts";
import type { SessionContext } from "./plugins.ts";

/**
 * The handoff: a private host directory per session, bind-mounted at /run/agentenv/handoff,
 * for what must reach the container but never its configuration, where the engine's
 * `inspect` would show it (secrets, the decrypted overlay). It is made at `session:start`
 * (mode 0700, on a RAM-backed tmpfs when the host has one); the entrypoint deletes each
 * file as it reads it, and `session:exit` removes the directory.
 */
export const handoffTarget = "/run/agentenv/handoff";

/** A per-user 0700 directory on tmpfs: $XDG_RUNTIME_DIR, else /dev/shm, else the temp dir. */
function baseDir(): string {
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, "agentenv");
  const shm = "/dev/shm";
  try {
    if (lstatSync(shm).isDirectory()) return join(shm, `agentenv-${hostUid() ?? "user"}`);
  } catch {
    // no /dev/shm (macOS)
  }
  return join(tmpdir(), `agentenv-${hostUid() ?? "user"}`);
}

/** The handoff directory of the container named NAME, on this host. */
export function handoffPath(name: string): string {
  return join(baseDir(), `handoff-${name}`);
}

function handoffSource(ctx: SessionContext): string {
  return handoffPath(ctx.plan.name);
}

/** At `session:mount`: the session gets a handoff directory (one, however many plugins ask). */
export function useHandoff(ctx: SessionContext): void {
  if (ctx.plan.mounts.some((m) => m.target === handoffTarget)) return;
  ctx.plan.mounts.push({ type: "bind", source: handoffSource(ctx), target: handoffTarget });
}

/** At `session:start`: the handoff directory on the host, created on first use. */
export function handoffDir(ctx: SessionContext): string {
  const dir = handoffSource(ctx);
  const base = baseDir();
  mkdirSync(base, { recursive: true, mode: 0o700 });
  // a shared /dev/shm: the directory must be ours and closed to others
  const stat = lstatSync(base);
  if (!stat.isDirectory() || stat.uid !== process.getuid?.() || stat.mode & 0o077) {
    throw new UserError(`${base} must be a directory owned by you with mode 0700 (it holds secrets while a session starts)`, `remove it, or fix it: chmod 700 ${base}`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** At `session:exit`: whatever the container did not consume goes. */
export function closeHandoff(ctx: SessionContext): void {
  if (ctx.plan.mounts.some((m) => m.target === handoffTarget)) rmSync(handoffSource(ctx), { recursive: true, force: true });
}
