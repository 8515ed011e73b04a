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
