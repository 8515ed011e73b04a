import type { BaseContext } from "../../core/plugins.ts";
import type { Check } from "../../core/runtime/types.ts";
import { isVolumeChoice } from "./clone.ts";
import { locateStore } from "./session.ts";
import { describeVolumeStore } from "./volume.ts";

/** `agentenv doctor`: where the golden store is and how sessions clone it (no engine call when cached). */
export async function storeCheck(ctx: BaseContext): Promise<Check> {
  const located = await locateStore(ctx);
  if (isVolumeChoice(located.choice)) return { name: "nix store", status: "ok", detail: describeVolumeStore(ctx, located.choice) };
  const strategy = located.choice?.strategy;
  if (!located.root && !located.choice) return { name: "nix store", status: "ok", detail: `volume ${located.volume} not created yet (the first session seeds it)` };
  if (!strategy) return { name: "nix store", status: "warn", detail: `unavailable: ${located.choice?.reason}`, fix: "use a local engine, or store: \"none\" in config" };
  return { name: "nix store", status: "ok", detail: `${located.volume}: ${strategy.cost}` };
}
