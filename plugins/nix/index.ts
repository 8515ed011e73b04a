import { existsSync } from "node:fs";
import { join } from "pathe";
import { definePlugin } from "../../core/plugins.ts";

/**
 * A project with a `flake.nix` gets its dev shell: the image's entrypoint wraps the
 * shell (or `run`'s command) in `nix develop <workdir> --command …` when this is set.
 */
export default definePlugin({
  name: "nix",
  hooks: {
    "session:boot"(ctx) {
      if (existsSync(join(ctx.project, "flake.nix"))) ctx.plan.env.AGENTENV_NIX_DEVELOP = ctx.plan.workdir;
    },
  },
});
