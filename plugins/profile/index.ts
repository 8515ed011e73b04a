import { existsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, relative } from "pathe";
import { UserError } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import { definePlugin } from "../../core/plugins.ts";

/** Where a profile DIR appears in HOME: at its place under the host's HOME, else ~/BASENAME. */
export function profileTarget(dir: string, hostHome = process.env.HOME || homedir()): string {
  const rel = relative(hostHome, dir);
  return rel && !rel.startsWith("..") && !rel.startsWith("/") ? rel : dir.split("/").filter(Boolean).pop() ?? "profile";
}

/**
 * Legacy profiles: `--profile DIR` (config `profile`) mounts DIR live at the same place
 * under HOME (`~/config` → /root/config) and the entrypoint runs its activate.sh before
 * the shell, which links dotfiles and skills into place. Environments replace this:
 * `agentenv env create NAME --from-profile DIR` turns a profile into one.
 */
export default definePlugin({
  name: "profile",
  hooks: {
    "session:mount"(ctx) {
      const dir = ctx.config.profile;
      if (!dir) return;
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`profile ${dir}: no such directory`);
      const target = `${containerHome}/${profileTarget(dir)}`;
      ctx.plan.mounts.push({ type: "bind", source: dir, target });
      if (existsSync(join(dir, "activate.sh"))) ctx.plan.env.AGENTENV_ACTIVATE = `${target}/activate.sh`;
      ctx.log.warn(`--profile is the legacy model: \`agentenv env create NAME --from-profile ${dir}\` turns it into an environment`);
    },
  },
});
