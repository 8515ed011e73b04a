import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "pathe";
import { closeHandoff, handoffDir, useHandoff } from "../../../core/handoff.ts";
import { agentenvDir } from "../../../core/paths.ts";
import { definePlugin } from "../../../core/plugins.ts";
import { messageOf } from "../../../core/errors.ts";
import { checkLocalRepo, isLocalRepo, localRepoTarget } from "./repo.ts";
import type { Overlay } from "./overlay.ts";

/**
 * Dotfiles for environments: a repo cloned into ~/.dotfiles and set up inside the
 * container (image/dotfiles.sh, run by the entrypoint when its inputs changed), and an
 * encrypted overlay of files written after it. This side only makes them reachable: a
 * repo on this host's disk is mounted read-only, the overlay is decrypted into the
 * session's handoff directory. Its commands are `agentenv env set|update|overlay`.
 */

/** Where an environment's overlay is, encrypted (see core/vault.ts): known without loading the crypto. */
export function overlayFile(env: string): string {
  return join(agentenvDir("data"), "overlays", `${env}.enc`);
}

export function hasOverlay(env: string): boolean {
  return existsSync(overlayFile(env));
}

export default definePlugin({
  name: "dotfiles",
  hooks: {
    async "session:mount"(ctx) {
      const name = ctx.config.env.name;
      if (!name) return;
      // this host's record, found by the env plugin's session:mount, which runs first
      const dotfiles = (await import("../session.ts")).sessionRecord(ctx)?.dotfiles;
      // rcm's host-NAME directories name machines: this one, not the container (named after the project)
      if (dotfiles) ctx.plan.env.AGENTENV_HOST_HOSTNAME = hostname().split(".")[0]!;
      if (dotfiles && isLocalRepo(dotfiles.url)) {
        if (!existsSync(dotfiles.url)) {
          ctx.log.warn(`the dotfiles repo of environment ${name}, ${dotfiles.url}, is gone: ~/.dotfiles stays as it is (agentenv env set ${name} dotfiles.url=…)`);
        } else {
          // checked again: the path may have been replaced (by a link, say) since it was recorded
          try {
            ctx.plan.mounts.push({ type: "bind", source: checkLocalRepo(dotfiles.url), target: localRepoTarget, readonly: true });
          } catch (error) {
            ctx.log.warn(`the dotfiles repo of environment ${name} is not mounted: ${messageOf(error)}`);
          }
        }
      }
      if (!hasOverlay(name)) return;
      // decrypted now: a wrong key or a changed file stops the session before anything runs
      const { readOverlay } = await import("./overlay.ts");
      ctx.state.dotfiles = readOverlay(name);
      useHandoff(ctx);
    },
    async "session:start"(ctx) {
      const overlay = ctx.state.dotfiles as Overlay | undefined;
      if (overlay) (await import("./overlay.ts")).writeOverlayFiles(overlay, handoffDir(ctx));
    },
    "session:exit"(ctx) {
      if (ctx.state.dotfiles) closeHandoff(ctx);
      delete ctx.state.dotfiles;
    },
  },
});
