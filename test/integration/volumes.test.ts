import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { loadConfig } from "../../core/config.ts";
import { createLog } from "../../core/log.ts";
import { basePlan } from "../../core/plan.ts";
import { definePlugin, loadPlugins, type Plugin, type SessionContext } from "../../core/plugins.ts";
import { createRuntime } from "../../core/runtime/index.ts";
import { ensureVolume } from "../../core/volumes.ts";
import { tempTree } from "../helpers/cli.ts";
import { requireImage } from "../helpers/engine.ts";

const names = [`agentenv-test-vol-${process.pid}`, `agentenv-test-bad-${process.pid}`, `agentenv-test-race-${process.pid}`];
const runtime = createRuntime("podman");

async function context(plugins: Plugin[]): Promise<SessionContext> {
  const project = tempTree();
  const config = await loadConfig({ project, env: { HOME: project } });
  const plan = basePlan({ project, mode: "run", command: [], config, stdinIsTTY: true });
  return { config, plan, runtime, log: createLog({ quiet: true }), plugins: await loadPlugins(config, plugins), project, mode: "run", state: {}, saved: {} };
}

beforeAll(() => requireImage());
afterAll(async () => {
  for (const name of names) await runtime.volumeRemove(name).catch(() => {});
});

describe("volume:create and volume:seed", () => {
  test("fire once, in order, on a real volume; the seed's files are in it", async () => {
    const calls: string[] = [];
    const seeder = definePlugin({
      name: "seeder",
      hooks: {
        "volume:create"(_ctx, volume) {
          calls.push(`create:${volume.name}`);
          volume.labels["test.seeded-by"] = "seeder";
        },
        async "volume:seed"(c, volume) {
          calls.push(`seed:${volume.name}`);
          const r = await c.runtime.call(["run", "--rm", "-v", `${volume.name}:/v`, c.config.image, "sh", "-c", "echo seeded > /v/file"]);
          if (r.code !== 0) throw new Error(r.stderr);
        },
      },
    });
    const ctx = await context([seeder]);
    expect(await ensureVolume(ctx, { name: names[0]!, labels: {} })).toBe(true);
    expect(await ensureVolume(ctx, { name: names[0]!, labels: {} })).toBe(false);
    expect(calls).toEqual([`create:${names[0]}`, `seed:${names[0]}`]);
    const read = await runtime.call(["run", "--rm", "-v", `${names[0]}:/v`, ctx.config.image, "cat", "/v/file"]);
    expect(read.stdout).toBe("seeded\n");
    const labels = await runtime.call(["volume", "inspect", "--format", "{{json .Labels}}", names[0]!]);
    // the nonce proves it is the volume this call created (see the race below)
    expect(JSON.parse(labels.stdout)).toEqual({ "agentenv.volume": "1", "test.seeded-by": "seeder", "agentenv.nonce": expect.stringMatching(/^[0-9a-f]{16}$/) });
  });

  test("a seed that fails leaves no volume behind", async () => {
    const broken = definePlugin({ name: "broken-seed", hooks: { "volume:seed"() { throw new Error("template unreadable"); } } });
    const ctx = await context([broken]);
    const error = await ensureVolume(ctx, { name: names[1]!, labels: {} }).catch((e) => e);
    expect(error.message).toBe("plugin broken-seed failed in hook volume:seed: template unreadable");
    expect(await runtime.volumeExists(names[1]!)).toBe(false);
  });

  test("a volume another command made meanwhile is neither seeded nor removed, even when the seed fails (Docker's create says yes to an existing name)", async () => {
    const name = names[2]!;
    expect((await runtime.call(["volume", "create", "--label", "test.owner=other", name])).code).toBe(0);
    const seeded: string[] = [];
    const broken = definePlugin({ name: "broken-seed", hooks: { "volume:seed"(_c, volume) { seeded.push(volume.name); throw new Error("never reached"); } } });
    const ctx = await context([broken]);
    // the engine as another command's create leaves it: "absent" when asked first, then a create that answers yes (as Docker's does)
    let asked = false;
    const racing = Object.create(runtime, {
      volumeExists: { value: async (v: string) => (v === name && !asked ? ((asked = true), false) : runtime.volumeExists(v)) },
      volumeCreate: { value: async (v: string, labels: Record<string, string>) => (v === name ? undefined : runtime.volumeCreate(v, labels)) },
    });
    expect(await ensureVolume({ ...ctx, runtime: racing }, { name, labels: {} })).toBe(false);
    expect(seeded).toEqual([]);
    expect(await runtime.volumeExists(name)).toBe(true);
    const labels = await runtime.call(["volume", "inspect", "--format", "{{json .Labels}}", name]);
    expect(JSON.parse(labels.stdout)).toEqual({ "test.owner": "other" });
  });
});
