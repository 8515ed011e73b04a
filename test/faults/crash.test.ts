import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "pathe";
import { isolatedEnv, tempTree } from "../helpers/cli.ts";
import { requireImage } from "../helpers/engine.ts";
import { expectNothingHalfMade, fixture, homeHash, podman, removeVolumes, run, stateDir, stepsOf, volumeDir, volumeExists, type Run } from "./harness.ts";


/** each test's own timeout (and its hooks'): run after disk.test.ts, these files' tests were seen with Bun's 5 s default instead of the preloaded one */
const slow = 180_000;
/**
 * kill -9 at every step. Each command is run once to completion to learn the steps where
 * it changes state (the test hook AGENTENV_TEST_STEPS), then once per step stopped there
 * with SIGKILL (AGENTENV_TEST_CRASH_AT=STEP; STEP+MS for "while its helper container
 * runs"), followed by the next command. After it: every environment that existed has all
 * its files (hashed before and after), nothing half-made is left (volume, host record,
 * journal, helper container, partial archive), and the next command works.
 */
const prefix = `f${process.pid}`;
/** an environment no command here touches: it must come through every crash unchanged */
const witness = `${prefix}-witness`;
let witnessHash = "";

/** a helper step is also killed while its container runs */
const during = (steps: string[], helper: string[]) => steps.flatMap((s) => (helper.includes(s) ? [s, `${s}+150`] : [s]));

function expectKilledOrDone(result: Run, step: string): void {
  // a "+MS" kill may come after the command finished
  expect({ step, stopped: result.killed || result.code === 0 }).toEqual({ step, stopped: true });
}

beforeAll(async () => {
  await requireImage();
  expect((await run(["env", "create", witness, fixture])).code).toBe(0);
  writeFileSync(join(volumeDir(witness), "precious.txt"), "never lose me\n");
  witnessHash = homeHash(witness);
}, slow);

afterAll(() => {
  expect(homeHash(witness)).toBe(witnessHash);
  removeVolumes(prefix);
});

describe.concurrent("kill -9 at every step", () => {
  test("env create and env import: undone unless their record was written; the next create works", async () => {
    const archive = join(tempTree(), "home.tar.gz");
    expect((await run(["env", "export", witness, "-o", archive])).code).toBe(0);
    for (const [command, source, helper] of [
      ["create", fixture, "create:fill"],
      ["import", archive, "import:fill"],
    ] as const) {
      const name = `${prefix}-${command}`;
      const { result, steps } = await stepsOf(["env", command, name, source]);
      expect(result.code).toBe(0);
      const made = homeHash(name);
      expect(steps).toEqual([`${command}:journal`, `${command}:volume`, `${command}:fill`, `${command}:filled`, `${command}:record`]);
      expect((await run(["env", "rm", name])).code).toBe(0);
      for (const step of during(steps, [helper])) {
        expectKilledOrDone(await run(["env", command, name, source], { crashAt: step }), step);
        const next = await run(["env", command, name, source]);
        // rolled back (the next one makes it), or complete (its record was written: it stays)
        if (next.code !== 0) expect(next.stderr).toContain(`environment ${name} already exists`);
        expect({ step, home: homeHash(name) }).toEqual({ step, home: made });
        expectNothingHalfMade(name, { when: step });
        expect((await run(["env", "rm", name])).code).toBe(0);
      }
    }
    // from stdin: the archive is kept in the command's work directory meanwhile
    const name = `${prefix}-stdin`;
    for (const step of ["import:spooled", "import:fill+150"]) {
      const child = Bun.spawn(["sh", "-c", `exec "$0" "$1" env import ${name} - < ${archive}`, process.execPath, join(import.meta.dir, "../../bin/agentenv.ts")], {
        env: { ...process.env, ...isolatedEnv(), AGENTENV_TEST_CRASH_AT: step },
        stdout: "ignore",
        stderr: "ignore",
      });
      await child.exited;
      expect({ step, stopped: child.signalCode === "SIGKILL" || child.exitCode === 0 }).toEqual({ step, stopped: true });
      // the next command: rolled back, there is nothing to remove; finished, it is removed whole
      const next = await run(["env", "rm", name]);
      if (next.code !== 0) expect(next.stderr).toEndWith(`agentenv: no environment named ${name} — create it: agentenv env create ${name}\n`);
      expectNothingHalfMade(name, { when: step });
      expect(volumeExists(name)).toBe(false);
    }
  }, slow);

  test("env reset: the home is the old one or the new one, kept paths kept; a session started next works", async () => {
    const template = tempTree({ ".bashrc": "# v1\n" });
    const name = `${prefix}-reset`;
    expect((await run(["env", "create", name, template])).code).toBe(0);
    const dir = volumeDir(name);
    writeFileSync(join(dir, ".history"), "kept across resets\n");
    writeFileSync(join(template, ".bashrc"), "# v2\n");
    const reset = ["env", "reset", name, "--keep", ".history"];
    const { result, steps } = await stepsOf(reset);
    expect(result.code).toBe(0);
    expect(steps).toEqual(["reset:journal", "reset:swap", "reset:swapped", "reset:record"]);
    // a session makes ~/.bash_profile for a ~/.bashrc: not the reset's doing
    const hash = () => homeHash(name, ["./.bash_profile"]);
    const fresh = hash();
    for (const [i, step] of during(steps, ["reset:swap"]).entries()) {
      writeFileSync(join(dir, `scratch-${i}`), "the old home's\n");
      const old = hash();
      expectKilledOrDone(await run(reset, { crashAt: step }), step);
      const next = await run(["run", "--env", name, "--no-store", tempTree(), "--", "cat", "/root/.history"]);
      expect({ step, code: next.code, stdout: next.stdout }).toEqual({ step, code: 0, stdout: "kept across resets\n" });
      const now = hash();
      expect({ step, whole: now === old || now === fresh }).toEqual({ step, whole: true });
      expectNothingHalfMade(name, { when: step });
      // this host's record follows the home: the new source's after the swap, else the old
      const record = JSON.parse(readFileSync(join(stateDir(), "envs", `podman-${name}.json`), "utf8"));
      const inHome = JSON.parse(readFileSync(join(dir, ".local/state/agentenv/env.json"), "utf8"));
      expect({ step, reset: record.reset }).toEqual({ step, reset: inHome.reset });
      expect((await run(reset)).code).toBe(0);
      expect(hash()).toBe(fresh);
    }
  }, slow);

  test("env rm: finished by the next command, its overlay and secrets with it; a new environment of that name starts clean", async () => {
    const name = `${prefix}-rm`;
    const setUp = async () => {
      expect((await run(["env", "create", name, fixture])).code).toBe(0);
      expect((await run(["env", "overlay", name, "add", ".token"], { stdin: "overlay-secret\n" })).code).toBe(0);
      expect((await run(["secret", "set", "RM_TEST", "--env", name], { stdin: "s3cret\n" })).code).toBe(0);
    };
    await setUp();
    const { result, steps } = await stepsOf(["env", "rm", name]);
    expect(result.code).toBe(0);
    expect(steps).toEqual(["rm:journal", "rm:volume", "rm:record", "rm:overlay", "rm:plugins"]);
    // the secrets plugin removes its scope through the env:remove hook, and says so
    expect(result.stderr).toContain(`environment ${name} removed, with its overlay and its secrets (RM_TEST)`);
    for (const step of steps) {
      await setUp();
      expectKilledOrDone(await run(["env", "rm", name], { crashAt: step }), step);
      const next = await run(["env", "create", name, tempTree({ ".bashrc": "# a new one\n" })]);
      expect({ step, code: next.code }).toEqual({ step, code: 0 });
      expectNothingHalfMade(name, { when: step });
      expect(existsSync(join(volumeDir(name), ".config/fixture/settings"))).toBe(false);
      expect((await run(["env", "overlay", name, "ls"])).stdout).not.toContain(".token");
      expect(JSON.parse((await run(["secret", "list", "--env", name, "--json"])).stdout)).not.toContainEqual(expect.objectContaining({ name: "RM_TEST", scope: name }));
      expect((await run(["env", "rm", name])).code).toBe(0);
    }
  }, slow);

  test("env export: the old archive stays until a whole new one replaces it; no partial file is left", async () => {
    const name = `${prefix}-export`;
    expect((await run(["env", "create", name, fixture])).code).toBe(0);
    const outDir = tempTree();
    const out = join(outDir, "home.tar.gz");
    const { result, steps } = await stepsOf(["env", "export", name, "-o", out]);
    expect(result.code).toBe(0);
    expect(steps).toEqual(["export:registered", "export:partial", "export:write", "export:written", "export:verified", "export:renamed"]);
    const hash = homeHash(name);
    for (const step of during(steps, ["export:write"])) {
      writeFileSync(out, "old archive\n");
      const crashed = await run(["env", "export", name, "-o", out], { crashAt: step });
      expectKilledOrDone(crashed, step);
      const replaced = readFileSync(out).subarray(0, 2).equals(Buffer.from([0x1f, 0x8b]));
      // the old file, or a whole new one: never a part
      if (!replaced) expect(readFileSync(out, "utf8")).toBe("old archive\n");
      else expect(Bun.spawnSync(["tar", "-tzf", out]).exitCode).toBe(0);
      // a reset checks who uses the home: what the dead export left goes
      const reset = await run(["env", "reset", name]);
      expect({ step, code: reset.code, stderr: reset.stderr }).toMatchObject({ step, code: 0 });
      expect({ step, left: readdirSync(outDir) }).toEqual({ step, left: ["home.tar.gz"] });
      expect((await run(["env", "export", name, "-o", out])).code).toBe(0);
      expect(Bun.spawnSync(["tar", "-tzf", out]).exitCode).toBe(0);
      expect(homeHash(name)).toBe(hash);
      expectNothingHalfMade(name, { when: step });
    }
  }, slow);

  test("a session's start and exit: the home keeps what it wrote; reset and rm work after", async () => {
    const name = `${prefix}-session`;
    expect((await run(["env", "create", name, fixture])).code).toBe(0);
    const dir = volumeDir(name);
    const session = (i: number) => ["run", "--env", name, "--no-store", tempTree(), "--", "sh", "-c", `echo ${i} >> /root/log; sleep 0.3`];
    const { result, steps } = await stepsOf(session(0));
    expect(result.code).toBe(0);
    expect(steps).toEqual(["session:registered", "session:exit"]);
    let lines = "0\n";
    for (const [i, step] of ["session:registered", "session:registered+600", "session:exit"].entries()) {
      const crashed = await run(session(i + 1), { crashAt: step });
      expectKilledOrDone(crashed, step);
      // the container goes on without agentenv and ends; nothing of it may stay
      for (let t = 0; t < 100 && podman(["ps", "-a", "--filter", `volume=agentenv-env-${name}`, "--format", "{{.Names}}"]).trim(); t++) await Bun.sleep(100);
      expect(podman(["ps", "-a", "--filter", `volume=agentenv-env-${name}`, "--format", "{{.Names}}"]).trim()).toBe("");
      // killed before its container started: no line; after: the container wrote it
      const log = readFileSync(join(dir, "log"), "utf8");
      const wrote = `${lines}${i + 1}\n`;
      expect({ step, log }).toEqual({ step, log: step === "session:registered" ? lines : step === "session:exit" ? wrote : log === lines ? lines : wrote });
      lines = log;
      // its registration died with it: reset does not take it for a session still running
      const reset = await run(["env", "reset", name, "--keep", "log"]);
      expect({ step, code: reset.code, stderr: reset.stderr }).toMatchObject({ step, code: 0 });
      expect(readdirSync(join(stateDir(), "sessions", `podman-agentenv-env-${name}`))).toEqual([]);
      expectNothingHalfMade(name, { when: step });
    }
    expect((await run(["env", "rm", name])).code).toBe(0);
    expect(volumeExists(name)).toBe(false);
    expect(existsSync(dirname(dir))).toBe(false);
  }, slow);
});
