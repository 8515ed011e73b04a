import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { usesGoldenStore } from "../../core/config.ts";
import { messageOf } from "../../core/errors.ts";
import { helperPlan, shellQuote } from "../../core/plan.ts";
import type { SessionContext } from "../../core/plugins.ts";
import { createRuntime } from "../../core/runtime/index.ts";
import type { RemoteRuntime } from "../../core/runtime/remote.ts";
import { toolsStorePath, volumeName } from "../env/home.ts";
import { isStorePath, runPromoted, withVolumeStore } from "../golden/api.ts";

/**
 * The environment's tools on a remote host that may reach no binary cache: the closure of
 * its tools profile (the store path ~/.local/state/agentenv/profile points at, built here
 * by an earlier session) goes from this machine's golden store into that host's own,
 * before the session's clone of it is made — only the paths the host lacks:
 *
 *   1. here, in a golden-store clone: the profile's closure (`nix-store -qR`)
 *   2. there, in the golden volume: which of them it lacks (`--check-validity --print-invalid`)
 *   3. here: `nix-store --export` of those, gzip-compressed
 *   4. there: `nix-store --import` into the golden volume (under its exclusive lock)
 *
 * A profile already valid there costs step 2 only; nothing to ship, nothing else runs.
 * Failures are warnings: the session still opens (the entrypoint then builds the tools
 * itself, when it can).
 */
export async function shipTools(ctx: SessionContext, remote: RemoteRuntime, env: string): Promise<void> {
  const host = remote.host.name;
  const local = createRuntime(ctx.config.runtime);
  const dir = await local.volumeMountpoint(volumeName(env)).catch(() => undefined);
  const profile = dir ? toolsStorePath(dir) : undefined;
  if (!profile) return;
  if (!usesGoldenStore(ctx.config.store)) {
    ctx.log.info(`environment ${env} has tools (~/flake.nix): they reach ${host} with --store golden (its own golden store); without it the session there builds them, if it can`);
    return;
  }
  const work = mkdtempSync(join(tmpdir(), "agentenv-tools-"));
  try {
    const remoteCtx = { config: ctx.config, runtime: remote, log: ctx.log, plugins: ctx.plugins };
    const localCtx: SessionContext = { ...ctx, config: { ...ctx.config, host: undefined, store: "golden" }, runtime: local, state: {}, saved: {} };
    // 1. the closure, from this machine's golden store
    const listed = helperPlan({
      image: ctx.config.image,
      purpose: "tools-closure",
      mounts: [{ type: "bind", source: work, target: "/out" }],
      script: `nix-store -qR ${shellQuote(profile)} > /out/closure 2>/out/closure.err || exit 3`,
    });
    if ((await runPromoted(localCtx, listed)) !== 0) {
      ctx.log.warn(`environment ${env}: its tools (${profile}) are not in this machine's golden store: ${host} builds them itself, if it can`);
      return;
    }
    const closure = readFileSync(join(work, "closure"), "utf8").split("\n").filter((p) => isStorePath(p));
    writeFileSync(join(work, "closure.list"), `${closure.join("\n")}\n`);
    // the remote's golden volume, seeded first; its lock held while it is asked and filled
    await withVolumeStore(remoteCtx, `the engine on ${host} is reached over SSH: its volumes are not directories here`, async (storeVolume) => {
      // 2. what the host lacks
      const check = helperPlan({
        image: ctx.config.image,
        purpose: "tools-check",
        mounts: [{ type: "volume", source: storeVolume, target: "/nix" }],
        script: "xargs nix-store --check-validity --print-invalid",
      });
      const missing = await remote.capture(check, { stdin: join(work, "closure.list") });
      if (missing.code !== 0) throw new Error(`checking ${host}'s store: ${missing.stderr.trim().split("\n").pop()}`);
      const lacking = missing.stdout.split("\n").filter((p) => closure.includes(p));
      if (!lacking.length) {
        ctx.log.debug(`environment ${env}: its tools are in ${host}'s golden store`);
        return;
      }
      // 3. only those, exported here (in closure order: references first)
      writeFileSync(join(work, "missing"), `${closure.filter((p) => lacking.includes(p)).join("\n")}\n`);
      ctx.log.start(`environment ${env}: shipping ${lacking.length} of the ${closure.length} store paths of its tools to ${host}…`);
      const exported = helperPlan({
        image: ctx.config.image,
        purpose: "tools-export",
        mounts: [{ type: "bind", source: work, target: "/out" }],
        script: "nix-store --export $(cat /out/missing) | gzip -n -6 > /out/tools.nar.gz",
      });
      if ((await runPromoted(localCtx, exported)) !== 0) throw new Error("exporting them here failed");
      // 4. imported there
      const imported = helperPlan({
        image: ctx.config.image,
        purpose: "tools-import",
        mounts: [{ type: "volume", source: storeVolume, target: "/nix" }],
        script: "gunzip -c | nix-store --import >/dev/null",
      });
      const result = await remote.capture(imported, { stdin: join(work, "tools.nar.gz") });
      if (result.code !== 0) throw new Error(`importing them on ${host} failed: ${result.stderr.trim().split("\n").pop()}`);
      const size = Bun.file(join(work, "tools.nar.gz")).size;
      ctx.log.success(`environment ${env}: ${lacking.length} store paths of its tools shipped to ${host} (${(size / 1024 / 1024).toFixed(1)} MiB compressed)`);
    });
  } catch (error) {
    ctx.log.warn(`environment ${env}: its tools could not be shipped to ${host} (${messageOf(error)}): the session there builds them itself, if it can`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
