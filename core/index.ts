/**
 * The public API: what a config or plugin gets from `import … from "agentenv"`
 * (served as a virtual module inside the compiled binary).
 */
export { defineConfig } from "./config.ts";
export type { AgentenvConfig, MountConfig, ResolvedConfig, RuntimeName } from "./config.ts";
export { definePlugin } from "./plugins.ts";
export type { Hooks, HookName, Plugin, SessionContext, VolumeSpec } from "./plugins.ts";
export type { Mount, Plan, SessionMode } from "./plan.ts";
export type { Runtime } from "./runtime/types.ts";
