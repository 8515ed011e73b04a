import { definePlugin } from "../../core/plugins.ts";

/**
 * Environments (layer 2): named, persistent homes. A session with `--env NAME` (or
 * config `env.default`) gets the volume `agentenv-env-NAME` as HOME; the image's
 * entrypoint installs the home's ~/flake.nix tools when it changed. The work lives in
 * ./session.ts and the `agentenv env` command, loaded on first use.
 */
const session = () => import("./session.ts");

export default definePlugin({
  name: "env",
  hooks: {
    async "session:mount"(ctx) {
      if (ctx.config.env.name) await (await session()).mountEnv(ctx);
    },
    async "session:start"(ctx) {
      if (ctx.config.env.name) await (await session()).startEnv(ctx);
    },
    async "session:exit"(ctx) {
      if (ctx.config.env.name) await (await session()).endEnv(ctx);
    },
    async "store:roots"(ctx, roots) {
      // a remote or VM engine's homes are not directories here: their profiles are read there
      if (!ctx.runtime.sharesHostKernel) return (await import("./roots.ts")).engineRoots(ctx, roots);
      await (await session()).envRoots(ctx, roots);
    },
  },
  commands: {
    env: () => import("./command.ts").then((m) => m.default),
  },
});
