import { rmSync } from "node:fs";
import { join } from "pathe";
import { handoffDir, handoffTarget, useHandoff } from "../../core/handoff.ts";
import { definePlugin } from "../../core/plugins.ts";

/**
 * Long-running environment containers and the commands that join them: `up`, `exec`,
 * `down`, `ps`, `wrap`/`unwrap` (a host command that runs inside the environment) and
 * `worktrees`. The hooks only act on an `up` plan: its handoff directory lives as long as
 * the container and carries the markers wrappers read (see ./container.ts).
 */
const commands = () => import("./command.ts");

export default definePlugin({
  name: "wrap",
  hooks: {
    "session:mount"(ctx) {
      if (ctx.mode === "up") useHandoff(ctx);
    },
    async "session:start"(ctx) {
      if (ctx.mode !== "up") return;
      const dir = handoffDir(ctx);
      // a ready file left by a container that died unannounced would let wrappers in too early
      rmSync(join(dir, "up"), { force: true });
      const { writeRootMarkers } = await import("./container.ts");
      writeRootMarkers(dir, JSON.parse(ctx.plan.labels["agentenv.roots"] ?? "[]") as string[]);
    },
    "session:exit"(ctx) {
      // the directory it started with (XDG_RUNTIME_DIR may differ in the agentenv ending it)
      const handoff = ctx.plan.mounts.find((m) => m.target === handoffTarget)?.source;
      if (ctx.mode === "up" && handoff) rmSync(handoff, { recursive: true, force: true });
    },
  },
  commands: {
    up: () => commands().then((m) => m.up),
    exec: () => commands().then((m) => m.exec),
    down: () => commands().then((m) => m.down),
    ps: () => commands().then((m) => m.ps),
    wrap: () => commands().then((m) => m.wrap),
    unwrap: () => commands().then((m) => m.unwrap),
    worktrees: () => commands().then((m) => m.worktrees),
  },
});
