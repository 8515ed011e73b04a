import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "pathe";

const defaults = { config: ".config", data: ".local/share", cache: ".cache", state: ".local/state" } as const;

/**
 * agentenv's directory under one of the user's XDG base directories: $XDG_CONFIG_HOME/agentenv
 * (default ~/.config/agentenv), data (~/.local/share), cache (~/.cache), state (~/.local/state).
 */
export function agentenvDir(kind: keyof typeof defaults, env: Record<string, string | undefined> = process.env): string {
  const base = env[`XDG_${kind.toUpperCase()}_HOME`] || join(env.HOME || homedir(), defaults[kind]);
  return join(base, "agentenv");
}

/** The command line that runs agentenv itself: the compiled binary, or bun and the script on disk. */
export function agentenvCommand(execPath = process.execPath, script = process.argv[1]): string[] {
  // inside a compiled binary the script is a virtual path (/$bunfs/…), not a file
  return script && /\.[cm]?[jt]s$/.test(script) && existsSync(script) ? [execPath, script] : [execPath];
}

/**
 * The user's uid on the host. Inside rootless Podman's user namespace (which agentenv
 * joins: ./runtime/userns.ts) getuid() says 0; Podman passes the real one along.
 */
export function hostUid(env: Record<string, string | undefined> = process.env): number | undefined {
  const passed = Number(env._CONTAINERS_ROOTLESS_UID);
  return env._CONTAINERS_USERNS_CONFIGURED && Number.isInteger(passed) ? passed : process.getuid?.();
}
