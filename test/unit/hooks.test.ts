import { describe, expect, test } from "bun:test";
import { loadConfig } from "../../core/config.ts";
import { PluginError } from "../../core/errors.ts";
import { createLog } from "../../core/log.ts";
import { basePlan } from "../../core/plan.ts";
import { callHook, definePlugin, loadPlugins, type SessionContext } from "../../core/plugins.ts";
import { OciRuntime, podmanDialect } from "../../core/runtime/oci.ts";
import { tempTree, trustIn } from "../helpers/cli.ts";

async function contextFor(project: string) {
  const config = await loadConfig({ project, env: trustIn({ HOME: project }, project) });
  const ctx: SessionContext = {
    config,
    plan: basePlan({ project, mode: "run", command: ["true"], config, stdinIsTTY: true }),
    runtime: new OciRuntime("podman", podmanDialect),
    log: createLog({ quiet: true }),
    plugins: [],
    project,
    mode: "run",
    state: {},
    saved: {},
  };
  return { config, ctx };
}

describe("hooks", () => {
  test("run in series, in plugin order: built-ins, then config plugins, then the config's inline hooks", async () => {
    const project = tempTree({
      "agentenv.config.ts": `
        import { definePlugin } from "agentenv";
        const order = (globalThis.__order ??= []);
        export default {
          plugins: [
            false,
            definePlugin({ name: "first", hooks: { async "session:mount"() { await Bun.sleep(5); order.push("first:mount"); }, "session:boot"() { order.push("first:boot"); } } }),
            "./my-plugin.ts",
          ],
          hooks: { "session:mount"() { order.push("inline:mount"); } },
        };`,
      "my-plugin.ts": `export default { name: "from-file", hooks: { "session:mount"(ctx) { globalThis.__order.push("file:mount"); ctx.plan.env.FROM_FILE = "1"; } } };`,
    });
    const { config, ctx } = await contextFor(project);
    const builtin = definePlugin({ name: "builtin", hooks: { "session:mount"() { (globalThis as any).__order.push("builtin:mount"); } } });
    const plugins = await loadPlugins(config, [builtin]);
    expect(plugins.map((p) => p.name)).toEqual(["builtin", "first", "from-file", "project config"]);
    await callHook(plugins, "session:mount", ctx);
    await callHook(plugins, "session:boot", ctx);
    expect((globalThis as any).__order).toEqual(["builtin:mount", "first:mount", "file:mount", "inline:mount", "first:boot"]);
    expect(ctx.plan.env.FROM_FILE).toBe("1");
  });

  test("a throwing hook is reported as: plugin X failed in hook Y: message", async () => {
    const project = tempTree({
      "agentenv.config.ts": `export default { plugins: [{ name: "broken", hooks: { "session:boot"() { throw new Error("cannot reach vault"); } } }] };`,
    });
    const { config, ctx } = await contextFor(project);
    const plugins = await loadPlugins(config, []);
    const error = await callHook(plugins, "session:boot", ctx).catch((e) => e);
    expect(error).toBeInstanceOf(PluginError);
    expect(error.message).toBe("plugin broken failed in hook session:boot: cannot reach vault");
  });

  test("unknown hook names and plugins that fail to load are clear errors", async () => {
    const typo = tempTree({ "agentenv.config.ts": `export default { hooks: { "session:begin"() {} } };` });
    const { config } = await contextFor(typo);
    await expect(loadPlugins(config, [])).rejects.toThrow('unknown hook "session:begin"');
    const missing = tempTree({ "agentenv.config.ts": `export default { plugins: ["./nope.ts"] };` });
    const loaded = await contextFor(missing);
    await expect(loadPlugins(loaded.config, [])).rejects.toThrow(/plugin \.\/nope\.ts \(from .*agentenv\.config\.ts\) failed to load/);
  });
});
