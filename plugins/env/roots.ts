import { envNamePattern } from "../../core/config.ts";
import { messageOf } from "../../core/errors.ts";
import { containerHome, helperPlan, shellQuote, type Mount } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { isStorePath } from "../golden/api.ts";
import { envLabel, envNameOf, stateDir } from "./home.ts";

/**
 * `store:roots` on an engine whose volumes are not directories here (a remote host over SSH,
 * a VM): every environment's tools profile, read in one helper container there with each
 * home mounted read-only. The profile's links are followed as `toolsStorePath` follows them
 * here (an absolute one names /root/…), at most 10 hops. The homes are hostile input and so
 * is the engine's answer: only `/nix/store/<hash>-<name>` lines for a mounted home count.
 * A failure is a warning (its tools may then be collected; the next session reinstalls them).
 */
export async function engineRoots(ctx: BaseContext, roots: Set<string>): Promise<void> {
  const volumes = (await ctx.runtime.volumeList(envLabel)).map((v) => v.name).filter((v) => envNameOf(v) !== v && envNamePattern.test(envNameOf(v)));
  if (!volumes.length) return;
  const mounts: Mount[] = volumes.map((volume, i) => ({ type: "volume", source: volume, target: `/envs/${i}`, readonly: true }));
  const script = [
    `for i in $(seq 0 ${volumes.length - 1}); do`,
    `  rel=${shellQuote(`${stateDir}/profile`)}; hops=0`,
    "  while [ $hops -lt 10 ]; do",
    '    t=$(readlink "/envs/$i/$rel") || break',
    '    case $t in',
    '      /nix/store/*) echo "$i $(printf %s "$t" | cut -d/ -f1-4)"; break ;;',
    `      ${containerHome}/*) rel=\${t#${containerHome}/} ;;`,
    "      /*) break ;;",
    '      *) rel=$(dirname "$rel")/$t ;;',
    "    esac",
    "    hops=$((hops + 1))",
    "  done",
    "done",
  ].join("\n");
  const where = ctx.config.host ? ` on ${ctx.config.host}` : "";
  let stdout: string;
  try {
    const result = await ctx.runtime.capture(helperPlan({ image: ctx.config.image, purpose: "env-roots", mounts, script }));
    if (result.code !== 0) throw new Error(result.stderr.trim().split("\n").pop() || `exit ${result.code}`);
    stdout = result.stdout;
  } catch (error) {
    ctx.log.warn(`the environments' tools profiles${where} could not be read (${messageOf(error)}): their tools may be collected (each one's next session reinstalls them)`);
    return;
  }
  for (const line of stdout.split("\n")) {
    const match = /^(\d+) (\S+)$/.exec(line);
    if (match && Number(match[1]) < volumes.length && isStorePath(match[2])) roots.add(match[2]!);
  }
}
