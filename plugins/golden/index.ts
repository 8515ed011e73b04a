import { usesGoldenStore } from "../../core/config.ts";
import { definePlugin } from "../../core/plugins.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";

/**
 * The golden Nix store (layer 1): every session's /nix is a copy-on-write clone of one
 * cached store, and what a session adds is promoted back when it ends. The work lives
 * in ./session.ts, loaded on first use so `--no-store` and `--store host` sessions and
 * other commands pay nothing for it.
 */
const session = () => import("./session.ts");

export default definePlugin({
  name: "golden",
  hooks: {
    async "session:mount"(ctx: SessionContext) {
      if (usesGoldenStore(ctx.config.store)) await (await session()).mountStore(ctx);
    },
    async "session:start"(ctx: SessionContext) {
      if (usesGoldenStore(ctx.config.store)) await (await session()).startStore(ctx);
    },
    async "session:exit"(ctx: SessionContext, result) {
      if (usesGoldenStore(ctx.config.store)) await (await session()).endStore(ctx, result);
    },
    async "volume:seed"(ctx: BaseContext, volume) {
      if (volume.name === ctx.config.storeVolume) await (await session()).seedGolden(ctx, volume);
    },
    async doctor(ctx: BaseContext, checks) {
      if (ctx.config.store === "none") checks.push({ name: "nix store", status: "ok", detail: "off (store: none): sessions use the image's /nix" });
      else if (usesGoldenStore(ctx.config.store)) checks.push(await (await import("./doctor.ts")).storeCheck(ctx));
    },
  },
  commands: {
    store: () => import("./command.ts").then((m) => m.default),
  },
});
