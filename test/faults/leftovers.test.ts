import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { entry, isolatedEnv, tempTree } from "../helpers/cli.ts";
import { handoffPath } from "../../core/handoff.ts";
import { DockerApi, leftoverContainers, removeStoreVolume, requireImage } from "../helpers/engine.ts";
import { expectNothingHalfMade, fixture, podman, removeVolumes, run, stateDir, volumeDir, volumeExists, volumeName } from "./harness.ts";

/**
 * What crashes and commands at work leave where users look: `env list` never shows a
 * half-made home as a usable environment — what a crash left is cleaned first, a home
 * another command is making is marked so, as is one whose home holds no record; a
 * session killed while its container runs leaves its container (stopped, on the Docker
 * runtime) and its handoff directory, which the next session removes.
 */
const slow = 180_000;
const prefix = `l${process.pid}`;

interface Listed {
  name: string;
  state?: string;
  source?: { kind: string };
}

async function listed(name: string): Promise<{ json?: Listed; line?: string }> {
  const json = await run(["env", "list", "--json"]);
  // what a crash left is cleaned first, and said; lines about other tests' environments on this engine are theirs
  const ours = (stderr: string) => stderr.split("\n").filter((line) => line.includes(prefix) && !/^environment \S+: cleaned up after an interrupted agentenv command$/.test(line)).join("\n");
  expect({ code: json.code, stderr: ours(json.stderr) }).toEqual({ code: 0, stderr: "" });
  const table = await run(["env", "list"]);
  expect({ code: table.code, stderr: ours(table.stderr) }).toEqual({ code: 0, stderr: "" });
  return {
    json: (JSON.parse(json.stdout) as Listed[]).find((e) => e.name === name),
    line: table.stdout.split("\n").find((l) => l.startsWith(`${name} `)),
  };
}

/** The real docker CLI against Podman's Docker API, on a socket of this file's own (see test/integration/docker.test.ts). */
const api = new DockerApi("faults-docker");
const docker = api.env;

beforeAll(async () => {
  await requireImage();
  await api.start();
}, slow);

afterAll(async () => {
  await run(["secret", "rm", "LEFTOVER_SECRET"]);
  api.stop();
  removeVolumes(prefix);
});

describe("what crashes and commands at work leave: env list, killed sessions and helpers", () => {
  test("a create killed at any step: list finishes or undoes it first, and shows only a whole one", async () => {
    const name = `${prefix}-killed`;
    for (const step of ["create:volume", "create:fill+150", "create:filled", "create:record"]) {
      const killed = await run(["env", "create", name, fixture], { crashAt: step });
      expect({ step, stopped: killed.killed || (step.includes("+") && killed.code === 0) }).toEqual({ step, stopped: true });
      const { json, line } = await listed(name);
      if (step === "create:record" || !killed.killed) {
        // its record was written: it is whole, and kept
        expect({ step, json }).toMatchObject({ step, json: { name, state: "ready", source: { kind: "template" } } });
        expect(line).toContain(fixture);
      } else {
        expect({ step, json, line, volume: volumeExists(name) }).toEqual({ step, json: undefined, line: undefined, volume: false });
      }
      expectNothingHalfMade(name, { when: step });
      if (volumeExists(name)) expect((await run(["env", "rm", name])).code).toBe(0);
    }
  }, slow);

  test("a create at work is marked as being created, then listed whole once it finished", async () => {
    const name = `${prefix}-busy`;
    const steps = join(mkdtempSync(join(tmpdir(), "agentenv-steps-")), "steps");
    const child = Bun.spawn([process.execPath, entry, "env", "create", name, fixture], {
      env: { ...process.env, ...isolatedEnv(), AGENTENV_TEST_STEPS: steps },
      stdout: "ignore",
      stderr: "pipe",
    });
    // stopped once its volume exists, before its record is written (its fill helper takes longer than a poll)
    for (let i = 0; i < 3000 && !(existsSync(steps) && readFileSync(steps, "utf8").includes("create:volume")); i++) await Bun.sleep(5);
    child.kill("SIGSTOP");
    try {
      expect(readFileSync(steps, "utf8")).not.toContain("create:record");
      expect(volumeExists(name)).toBe(true);
      const { json, line } = await listed(name);
      expect(json).toMatchObject({ name, state: "creating" });
      expect(line).toMatch(new RegExp(`^${name}\\s+\\(being created by another agentenv command\\)`));
    } finally {
      child.kill("SIGCONT");
    }
    expect(await child.exited).toBe(0);
    const { json } = await listed(name);
    expect(json).toMatchObject({ name, state: "ready", source: { kind: "template" } });
    expectNothingHalfMade(name);
    expect((await run(["env", "rm", name])).code).toBe(0);
  }, slow);

  test("a volume whose home holds no record (another host's create, or an old crash) is marked incomplete; env rm removes it", async () => {
    const name = `${prefix}-incomplete`;
    expect(podman(["volume", "create", "--label", `agentenv.env=${name}`, "--label", "agentenv.volume=1", volumeName(name)]).trim()).toBe(volumeName(name));
    const { json, line } = await listed(name);
    expect(json).toMatchObject({ name, state: "incomplete" });
    expect(json?.source).toBeUndefined();
    expect(line).toContain(`(incomplete: being made elsewhere, or left by a crash — agentenv env rm ${name} removes it)`);
    const rm = await run(["env", "rm", name]);
    expect({ code: rm.code, stderr: rm.stderr }).toMatchObject({ code: 0 });
    expect(volumeExists(name)).toBe(false);
    expect((await listed(name)).json).toBeUndefined();
  }, slow);

  test("a whole environment is listed ready, even when a session deleted its home's copy of the record", async () => {
    const name = `${prefix}-whole`;
    expect((await run(["env", "create", name, tempTree({ ".bashrc": "# whole\n" })])).code).toBe(0);
    expect((await listed(name)).json).toMatchObject({ name, state: "ready", source: { kind: "template" } });
    expect((await run(["run", "--env", name, "--no-store", tempTree(), "--", "rm", "/root/.local/state/agentenv/env.json"])).code).toBe(0);
    expect(existsSync(join(volumeDir(name), ".local/state/agentenv/env.json"))).toBe(false);
    expect((await listed(name)).json).toMatchObject({ name, state: "ready", source: { kind: "template" } });
    expect((await run(["env", "rm", name])).code).toBe(0);
  }, slow);

  for (const engine of ["podman", "docker"] as const) {
    test(`${engine}: a session killed while its container runs leaves its container and handoff directory; the next session removes both`, async () => {
      const env = engine === "docker" ? docker : {};
      // a secret gives the session a handoff directory (trusted: the tests' temp dir is)
      expect((await run(["secret", "set", "LEFTOVER_SECRET"], { stdin: "s3cret\n" })).code).toBe(0);
      const project = tempTree();
      const child = Bun.spawn([process.execPath, entry, "run", "--no-store", "--no-env", project, "--", "sh", "-c", "touch /work/started; sleep 1"], {
        env: { ...process.env, ...isolatedEnv(), ...env },
        stdout: "ignore",
        stderr: "ignore",
      });
      for (let i = 0; i < 600 && !existsSync(join(project, "started")); i++) await Bun.sleep(50);
      const [container] = leftoverContainers(project, "podman");
      expect(container).toBeDefined();
      const handoff = handoffPath(container!);
      expect(existsSync(handoff)).toBe(true);
      child.kill("SIGKILL");
      await child.exited;
      // the container ends on its own; Podman's --rm removes it, the docker CLI's run leaves it
      for (let i = 0; i < 100 && podman(["ps", "--filter", `name=^${container}$`, "--format", "{{.Names}}"]).trim(); i++) await Bun.sleep(100);
      await Bun.sleep(500);
      const left = podman(["ps", "-a", "--filter", `name=^${container}$`, "--format", "{{.Names}}"]).trim();
      if (engine === "docker") expect(left).toBe(container!);
      expect(existsSync(handoff)).toBe(true);
      // the next session, in another project
      const next = await run(["run", "--no-store", "--no-env", tempTree(), "--", "true"], { env });
      expect({ code: next.code, stderr: next.stderr }).toMatchObject({ code: 0 });
      expect({ containers: leftoverContainers(project, "podman"), handoff: existsSync(handoff) }).toEqual({ containers: [], handoff: false });
      const running = join(stateDir(), "running");
      expect(existsSync(running) ? readdirSync(running) : []).toEqual([]);
      expect((await run(["secret", "rm", "LEFTOVER_SECRET"])).code).toBe(0);
    }, slow);
  }

  test("docker: env rm right after a killed session of that environment removes the stopped container it left, then the home", async () => {
    const name = `${prefix}-dkill`;
    expect((await run(["env", "create", name, fixture], { env: docker })).code).toBe(0);
    const project = tempTree();
    const child = Bun.spawn([process.execPath, entry, "run", "--no-store", "--env", name, project, "--", "sh", "-c", "touch /work/started; sleep 1"], {
      env: { ...process.env, ...isolatedEnv(), ...docker },
      stdout: "ignore",
      stderr: "ignore",
    });
    for (let i = 0; i < 600 && !existsSync(join(project, "started")); i++) await Bun.sleep(50);
    child.kill("SIGKILL");
    await child.exited;
    const [container] = leftoverContainers(project, "podman");
    expect(container).toBeDefined();
    for (let i = 0; i < 100 && podman(["ps", "--filter", `name=^${container}$`, "--format", "{{.Names}}"]).trim(); i++) await Bun.sleep(100);
    // stopped, still holding the home's volume: no session ran since to remove it
    expect(podman(["ps", "-a", "--filter", `name=^${container}$`, "--format", "{{.Names}}"]).trim()).toBe(container!);
    const rm = await run(["env", "rm", name], { env: docker });
    expect({ code: rm.code, stderr: rm.stderr }).toMatchObject({ code: 0 });
    expect({ containers: leftoverContainers(project, "podman"), volume: volumeExists(name) }).toEqual({ containers: [], volume: false });
  }, slow);

  test("docker: a helper container whose agentenv was killed (seeding the golden store) is removed by the next session", async () => {
    const volume = `agentenv-test-faults-dstore-${process.pid}`;
    const env = { ...docker, AGENTENV_STORE_VOLUME: volume };
    const helpers = (all: boolean) => podman(["ps", ...(all ? ["-a"] : []), "--filter", "label=agentenv.helper=seed-store", "--filter", `volume=${volume}`, "--format", "{{.Names}}"]).split("\n").filter(Boolean);
    try {
      // killed once the seed's helper container exists: later on a loaded machine, where the engine takes longer to create it
      for (const delay of [150, 500, 1500]) {
        const killed = await run(["store", "reset", "--yes"], { env, crashAt: `store:seed+${delay}` });
        expect(killed.killed).toBe(true);
        if (helpers(true).length) break;
      }
      // the seed goes on without agentenv, and stops
      for (let i = 0; i < 300 && helpers(false).length; i++) await Bun.sleep(100);
      expect(helpers(true)).toHaveLength(1);
      const next = await run(["run", "--no-store", "--no-env", tempTree(), "--", "true"], { env });
      expect({ code: next.code, stderr: next.stderr }).toMatchObject({ code: 0 });
      expect(helpers(true)).toEqual([]);
    } finally {
      for (const name of helpers(true)) podman(["rm", "--force", name]);
      await removeStoreVolume(volume);
    }
  }, slow);
});
