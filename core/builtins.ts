import type { Plugin } from "./plugins.ts";

/**
 * The built-in plugins, handed to core by the entry (bin/agentenv.ts): core imports
 * nothing from plugins/, so the layering is core ← plugins ← entry and a built-in is a
 * plugin like a user's.
 */
let builtins: readonly Plugin[] | undefined;

export function useBuiltinPlugins(plugins: readonly Plugin[]): void {
  builtins = plugins;
}

export function builtinPlugins(): readonly Plugin[] {
  if (!builtins) throw new Error("agentenv's built-in plugins were not handed to core (bin/agentenv.ts does that)");
  return builtins;
}
