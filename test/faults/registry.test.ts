import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { isolatedEnv } from "../helpers/cli.ts";
import { requireImage } from "../helpers/engine.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { expectNothingHalfMade, fixture, homeHash, podman, removeVolumes, run, stepsOf, volumeDir, type Run } from "./harness.ts";

/**
 * `env push` and `env pull` killed with SIGKILL at each of their steps (a registry on
 * loopback, real Podman): a pull makes its environment whole or not at all (the machinery
 * of env import: journal, nonce, lock), a pull over an existing one leaves the old home or
 * the new one, and a push that died after moving its tag is recognised by the next one.
 */

const prefix = `rf${process.pid}`;
const slow = 600_000;
let registry: TestRegistry;

function expectKilledOrDone(result: Run, step: string): void {
  expect({ step, stopped: result.killed || result.code === 0 }).toEqual({ step, stopped: true });
}

/** No helper container or spool directory left by a push. */
function expectNoPushLeftovers(when: string): void {
  const spool = join(isolatedEnv().HOME!, ".cache", "agentenv", "push");
  const left = existsSync(spool) ? readdirSync(spool) : [];
  expect({ when, left }).toEqual({ when, left: [] });
  expect({ when, helpers: podman(["ps", "-a", "--filter", "label=agentenv.helper", "--filter", `volume=agentenv-env-${prefix}-src`, "--format", "{{.Names}}"]).trim() }).toEqual({ when, helpers: "" });
}

beforeAll(async () => {
  await requireImage();
  registry = await startRegistry();
  expect((await run(["env", "create", `${prefix}-src`, fixture])).code).toBe(0);
  writeFileSync(join(volumeDir(`${prefix}-src`), "precious.txt"), "never lose me\n");
}, slow);

afterAll(() => {
  registry?.stop();
  removeVolumes(prefix);
});

describe("kill -9 at every step", () => {
  test(
    "env pull into a new name: undone unless its record was written; the next pull makes it whole",
    async () => {
      const ref = `${registry.address}/faults/${prefix}:v1`;
      expect((await run(["env", "push", `${prefix}-src`, ref])).code).toBe(0);
      const source = homeHash(`${prefix}-src`);
      const name = `${prefix}-new`;
      const { result, steps } = await stepsOf(["env", "pull", ref, name]);
      expect(result.code).toBe(0);
      expect(steps).toEqual(["pull:downloaded", "pull:journal", "pull:volume", "pull:fill", "pull:filled", "pull:record"]);
      expect(homeHash(name)).toBe(source);
      expect((await run(["env", "rm", name])).code).toBe(0);
      for (const step of [...steps, "pull:fill+150"]) {
        expectKilledOrDone(await run(["env", "pull", ref, name], { crashAt: step }), step);
        const next = await run(["env", "pull", ref, name]);
        // rolled back (the next pull makes it), or complete (its record was written: it is there, at that digest)
        expect({ step, code: next.code, stderr: next.code ? next.stderr : "" }).toEqual({ step, code: 0, stderr: "" });
        expect({ step, home: homeHash(name) }).toEqual({ step, home: source });
        expectNothingHalfMade(name, { when: step });
        expect((await run(["env", "rm", name])).code).toBe(0);
      }
    },
    slow,
  );

  test(
    "env pull over an existing environment: the old home or the new one, whole; the next pull finishes",
    async () => {
      const ref = `${registry.address}/faults/${prefix}:follow`;
      const src = `${prefix}-src`;
      expect((await run(["env", "push", src, ref, "--force"])).code).toBe(0);
      const name = `${prefix}-follow`;
      expect((await run(["env", "pull", ref, name])).code).toBe(0);
      const old = homeHash(name);
      let version = 0;
      const moveUpstream = async () => {
        writeFileSync(join(volumeDir(src), "news.txt"), `v${++version}\n`);
        expect((await run(["env", "push", src, ref])).code).toBe(0);
        return homeHash(src);
      };
      let upstream = await moveUpstream();
      const { result, steps } = await stepsOf(["env", "pull", ref, name]);
      expect(result.code).toBe(0);
      expect(steps).toEqual(["pull:downloaded", "reset:journal", "reset:swap", "reset:swapped", "reset:record"]);
      expect(homeHash(name)).toBe(upstream);
      for (const step of [...steps, "reset:swap+150"]) {
        const before = homeHash(name);
        upstream = await moveUpstream();
        expectKilledOrDone(await run(["env", "pull", ref, name], { crashAt: step }), step);
        // the old home or the new one, never a mix (killed while its helper swaps, the helper
        // may still be at work: the next command, below, stops it and finishes the swap)
        if (!step.includes("+")) {
          const now = homeHash(name);
          expect({ step, whole: now === before || now === upstream }).toEqual({ step, whole: true });
        }
        const next = await run(["env", "pull", ref, name]);
        expect({ step, code: next.code, stderr: next.code ? next.stderr : "" }).toEqual({ step, code: 0, stderr: "" });
        expect({ step, home: homeHash(name) }).toEqual({ step, home: upstream });
        expectNothingHalfMade(name, { when: step });
      }
      expect(old).not.toBe(upstream);
    },
    slow,
  );

  test(
    "env push: killed at each step, the next push works — one that died after moving the tag is recognised as this environment's",
    async () => {
      const src = `${prefix}-src`;
      const ref = `${registry.address}/faults/${prefix}:push`;
      const { result, steps } = await stepsOf(["env", "push", src, ref, "--force"]);
      expect(result.code).toBe(0);
      expect(steps).toEqual(["push:packed", "push:uploaded", "push:tagged"]);
      for (const step of steps) {
        writeFileSync(join(volumeDir(src), "precious.txt"), `changed before ${step}\n`);
        expectKilledOrDone(await run(["env", "push", src, ref], { crashAt: step }), step);
        const next = await run(["env", "push", src, ref]);
        expect({ step, code: next.code, stderr: next.code ? next.stderr : "" }).toEqual({ step, code: 0, stderr: "" });
        expectNoPushLeftovers(step);
        const copy = `${prefix}-copy`;
        expect((await run(["env", "pull", ref, copy])).code).toBe(0);
        expect({ step, home: homeHash(copy) }).toEqual({ step, home: homeHash(src) });
        expect((await run(["env", "rm", copy])).code).toBe(0);
      }
    },
    slow,
  );
});
