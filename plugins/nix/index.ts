import { existsSync, realpathSync, statSync } from "node:fs";
import { dirname, join, resolve } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { definePlugin } from "../../core/plugins.ts";
import type { SessionContext } from "../../core/plugins.ts";

/** Where a nix-daemon listens unless NIX_DAEMON_SOCKET_PATH says otherwise (Nix's own default). */
export const defaultDaemonSocket = "/nix/var/nix/daemon-socket/socket";

/**
 * The host's nix-daemon socket, as Nix itself finds it (NIX_DAEMON_SOCKET_PATH, else the
 * default), resolved to the real socket so the directory mounted is the one holding it.
 * Throws a one-line UserError when nothing listens there.
 */
export function hostDaemonSocket(env: Record<string, string | undefined> = process.env): string {
  const path = resolve(env.NIX_DAEMON_SOCKET_PATH || defaultDaemonSocket);
  let isSocket = false;
  try {
    isSocket = statSync(path, { throwIfNoEntry: false })?.isSocket() ?? false;
  } catch (error) {
    // e.g. EACCES: the default socket's directory is only for root and the nix-users group
    throw new UserError(`cannot reach the nix-daemon socket at ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`, "check its directory's permissions, or use --store golden");
  }
  if (!isSocket) throw new UserError(`no nix-daemon socket at ${path}`, "start the host's nix-daemon, or use --store golden");
  return realpathSync(path);
}

/** The host's /nix/store must be there before a session mounts it (the engine's own error is a statfs). */
export function checkHostStore(store = "/nix/store"): void {
  if (!statSync(store, { throwIfNoEntry: false })?.isDirectory()) {
    throw new UserError(`--store host: this host has no ${store} (Nix is not installed here, or its store was never initialised)`, "install Nix with its nix-daemon (e.g. apt-get install nix-bin, then start nix-daemon), or use --store golden");
  }
}

/**
 * `--store host`: the host's /nix/store, read-only, and its daemon's socket directory at
 * the same paths, so `nix` in the container adds and builds through the host's daemon
 * (NIX_REMOTE=daemon) and the results land in the host's store. No engine call.
 */
function mountHostStore(ctx: SessionContext): void {
  checkHostStore();
  const socket = hostDaemonSocket();
  const socketDir = dirname(socket);
  ctx.plan.mounts.push(
    { type: "bind", source: "/nix/store", target: "/nix/store", readonly: true },
    // read-only too: the container may connect to the socket, not replace or remove it
    { type: "bind", source: socketDir, target: socketDir, readonly: true },
  );
  ctx.plan.env.NIX_REMOTE = "daemon";
  // the image's nix.conf turns the sandbox off for single-user Nix; sent by a trusted
  // client, that would reach the host's daemon: a client-only config instead
  ctx.plan.env.NIX_CONF_DIR = "/etc/agentenv/nix-host";
  if (socket !== defaultDaemonSocket) ctx.plan.env.NIX_DAEMON_SOCKET_PATH = socket;
  ctx.plan.labels["agentenv.store"] = "host";
}

/**
 * Nix in the session. A project with a `flake.nix` gets its dev shell: the image's
 * entrypoint wraps the shell (or `run`'s command) in `nix develop <workdir> --command …`
 * when AGENTENV_NIX_DEVELOP is set. With `--store host` the session uses the host's
 * nix-daemon and store (the golden plugin then does nothing).
 */
export default definePlugin({
  name: "nix",
  hooks: {
    "session:mount"(ctx) {
      if (ctx.config.store === "host") mountHostStore(ctx);
    },
    doctor(ctx, checks) {
      if (ctx.config.store !== "host") return;
      try {
        checkHostStore();
        checks.push({ name: "nix store", status: "ok", detail: `host (store: host): sessions use this host's /nix/store through the nix-daemon at ${hostDaemonSocket()}` });
      } catch (error) {
        checks.push({ name: "nix store", status: "fail", detail: messageOf(error), fix: 'start the host\'s nix-daemon, or store: "golden" in config' });
      }
    },
    "session:boot"(ctx) {
      // an `up` container has no one project: agentenv-exec enters a dev shell per command
      if (ctx.mode !== "up" && existsSync(join(ctx.project, "flake.nix"))) ctx.plan.env.AGENTENV_NIX_DEVELOP = ctx.plan.workdir;
    },
  },
});
