import { existsSync } from "node:fs";
import { join } from "pathe";
import { closeHandoff, handoffDir, useHandoff } from "../../core/handoff.ts";
import { messageOf } from "../../core/errors.ts";
import { agentenvDir } from "../../core/paths.ts";
import { shellQuote } from "../../core/plan.ts";
import { definePlugin } from "../../core/plugins.ts";
import { writeAtomic } from "../../core/volumes.ts";

/**
 * Secrets as environment variables: decrypted on the host, written to the session's
 * handoff directory as `secrets.env`, sourced and deleted by the entrypoint before
 * anything else runs. They never enter the plan (so not `--dry-run`, `--json`, `-v`, nor
 * the engine's container config) and never the home volume.
 */
const store = () => import("./store.ts");

/** Where the secrets are, encrypted (see core/vault.ts): known without loading the crypto. */
export function secretsFile(): string {
  return join(agentenvDir("data"), "secrets.enc");
}

export default definePlugin({
  name: "secrets",
  hooks: {
    async "session:mount"(ctx) {
      // the common case costs one stat: no secrets file, nothing to do
      if (!existsSync(secretsFile())) return;
      const { readSecrets, secretsFor } = await store();
      const values = secretsFor(readSecrets(), ctx.config.env.name);
      const names = Object.keys(values);
      if (!names.length) return;
      // code in an untrusted project (its flake's shellHook, an agent) would read them first
      if (ctx.config.trust && !ctx.config.trust.trusted) {
        ctx.log.debug(`secrets withheld (${ctx.config.trust.project} is not trusted): ${names.join(" ")}`);
        return;
      }
      useHandoff(ctx);
      ctx.state.secrets = values;
      ctx.log.debug(`secrets passed through the handoff directory, not the engine: ${names.map((n) => `${n}=***`).join(" ")}`);
    },
    "session:start"(ctx) {
      const values = ctx.state.secrets as Record<string, string> | undefined;
      if (!values) return;
      const lines = Object.entries(values).map(([name, value]) => `export ${name}=${shellQuote(value)}`);
      writeAtomic(join(handoffDir(ctx), "secrets.env"), `${lines.join("\n")}\n`, 0o600);
    },
    "session:exit"(ctx) {
      if (ctx.state.secrets) closeHandoff(ctx);
      delete ctx.state.secrets;
    },
    async "env:remove"(ctx, name, removed) {
      if (!existsSync(secretsFile())) return;
      try {
        const { readSecrets, updateSecrets } = await store();
        // written only when there is something to take out: a full disk must not fail an rm that has nothing to do here
        if (!readSecrets().scopes[name]) return;
        const names = updateSecrets((secrets) => {
          const names = Object.keys(secrets.scopes[name] ?? {});
          delete secrets.scopes[name];
          return names;
        });
        if (names.length) removed.push(`its secrets (${names.join(", ")})`);
      } catch (error) {
        // the home is gone either way; say what could not be tidied
        ctx.log.warn(`the secrets of environment ${name} were left in place: ${messageOf(error)}`);
      }
    },
  },
  commands: {
    secret: () => import("./command.ts").then((m) => m.default),
  },
});
