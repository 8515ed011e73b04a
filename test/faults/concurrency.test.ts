import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "pathe";
import { tempTree } from "../helpers/cli.ts";
import { DockerApi, requireImage } from "../helpers/engine.ts";
import { expectNothingHalfMade, podman, removeVolumes, run, stateDir, volumeDir, volumeName, type Run } from "./harness.ts";


/** each test's own timeout (and its hooks'): run after disk.test.ts, these files' tests were seen with Bun's 5 s default instead of the preloaded one */
const slow = 180_000;
/** Two commands at once: nothing either of them wrote is lost, and nothing is made twice. */
const prefix = `c${process.pid}`;

beforeAll(async () => {
  await requireImage();
}, slow);

afterAll(() => {
  removeVolumes(prefix);
});

describe.concurrent("two commands at once", () => {
  test("20 `secret set` of different names at once: all 20 are there", async () => {
    const env = { XDG_DATA_HOME: tempTree() };
    const names = Array.from({ length: 20 }, (_, i) => `CONCURRENT_${i}`);
    const results = await Promise.all(names.map((name) => run(["secret", "set", name], { env, stdin: `value of ${name}\n` })));
    expect(results.map((r) => r.code)).toEqual(names.map(() => 0));
    const listed = JSON.parse((await run(["secret", "list", "--json"], { env })).stdout).map((s: { name: string }) => s.name);
    expect(listed.sort()).toEqual([...names].sort());
  }, slow);

  test("10 `env overlay add` of different files at once: all 10 are there", async () => {
    const name = `${prefix}-overlay`;
    const env = { XDG_DATA_HOME: tempTree() };
    expect((await run(["env", "create", name, tempTree({ ".bashrc": "" })], { env })).code).toBe(0);
    const paths = Array.from({ length: 10 }, (_, i) => `.config/concurrent/file-${i}`);
    const results = await Promise.all(paths.map((path) => run(["env", "overlay", name, "add", path], { env, stdin: `content of ${path}\n` })));
    expect(results.map((r) => r.code)).toEqual(paths.map(() => 0));
    const listed = JSON.parse((await run(["env", "overlay", name, "ls", "--json"], { env })).stdout).map((f: { path: string }) => f.path);
    expect(listed.sort()).toEqual([...paths].sort());
  }, slow);

  test("env reset while a session starts: one waits or refuses, the session's files are never lost", async () => {
    const name = `${prefix}-reset`;
    expect((await run(["env", "create", name, tempTree({ ".bashrc": "# v1\n" })])).code).toBe(0);
    const outcomes = new Set<string>();
    // the reset starts this many ms after the session (negative: before it)
    for (const [round, offset] of [-150, -50, 0, 0, 25, 50, 100].entries()) {
      // the session writes at once, then stays a while: a reset that ran under it would delete the line
      const startSession = () => run(["run", "--env", name, "--no-store", tempTree(), "--", "sh", "-c", `echo ${round} >> /root/notes; sleep 0.8; cat /root/notes`]);
      let session: Promise<Run>;
      let resetting: Promise<Run>;
      if (offset < 0) {
        resetting = run(["env", "reset", name]);
        await Bun.sleep(-offset);
        session = startSession();
      } else {
        session = startSession();
        await Bun.sleep(offset);
        resetting = run(["env", "reset", name]);
      }
      const [reset, done] = await Promise.all([resetting, session]);
      expect({ round, code: done.code, stderr: done.stderr }).toMatchObject({ round, code: 0 });
      // the session's line is in the home it saw, and still in the home now
      expect({ round, seen: done.stdout.trim().split("\n").at(-1) }).toEqual({ round, seen: `${round}` });
      expect({ round, now: readFileSync(join(volumeDir(name), "notes"), "utf8").trim().split("\n").at(-1) }).toEqual({ round, now: `${round}` });
      if (reset.code === 0) outcomes.add("reset first, the session waited");
      else {
        expect(reset.stderr).toMatch(new RegExp(`^agentenv: environment ${name} is in use by agentenv-`));
        outcomes.add("the session first, reset refused");
      }
    }
    expectNothingHalfMade(name, { when: "reset and sessions" });
    expect(outcomes.size).toBeGreaterThan(0);
  }, slow);
});

describe("two `env create` of one name on the Docker runtime (its `volume create` says yes to an existing name)", () => {
  const api = new DockerApi("faults-docker-race");
  const docker = api.env;

  beforeAll(() => api.start(), slow);

  afterAll(() => {
    api.stop();
  });

  test("exactly one home is made, and the loser neither fills nor removes it: on one host (its lock) and on two (the volume's nonce)", async () => {
    const templates = { a: tempTree({ ".bashrc": "# from a\n", "a.txt": "a\n" }), b: tempTree({ ".bashrc": "# from b\n", "b.txt": "b\n" }) };
    for (const hosts of ["one host", "two hosts"] as const) {
      for (let round = 0; round < 2; round++) {
        const name = `${prefix}-docker-${hosts === "one host" ? 1 : 2}-${round}`;
        // two hosts: two state dirs, so no host lock orders them; only the engine sees both
        const own = (): Record<string, string> => (hosts === "one host" ? {} : { XDG_STATE_HOME: tempTree() });
        const states = { a: own(), b: own() };
        const state = (who: "a" | "b") => states[who];
        const [a, b] = await Promise.all([
          run(["env", "create", name, templates.a], { env: { ...docker, ...state("a") } }),
          run(["env", "create", name, templates.b], { env: { ...docker, ...state("b") } }),
        ]);
        const codes = [a.code, b.code].sort();
        expect({ hosts, round, codes }).toEqual({ hosts, round, codes: [0, 1] });
        const [winner, loser] = a.code === 0 ? (["a", b] as const) : (["b", a] as const);
        expect(loser.stderr).toContain(`environment ${name} already exists`);
        const dir = volumeDir(name);
        expect({ hosts, round, bashrc: readFileSync(join(dir, ".bashrc"), "utf8") }).toEqual({ hosts, round, bashrc: `# from ${winner}\n` });
        expect(podman(["volume", "ls", "--format", "{{.Name}}"]).split("\n").filter((v) => v === volumeName(name))).toHaveLength(1);
        expect(podman(["ps", "-a", "--filter", `volume=${volumeName(name)}`, "--format", "{{.Names}}"]).trim()).toBe("");
        // this host's record is the winner's alone
        const records = (["a", "b"] as const).filter((who) => existsSync(join(stateDir(states[who].XDG_STATE_HOME), "envs", `docker-${name}.json`)));
        expect({ hosts, round, records }).toEqual({ hosts, round, records: hosts === "one host" ? ["a", "b"] : [winner] });
        // the home is whole and usable from the winner's side
        const session = await run(["run", "--env", name, "--no-store", tempTree(), "--", "cat", `/root/${winner}.txt`], { env: { ...docker, ...state(winner) } });
        expect({ hosts, round, stdout: session.stdout }).toEqual({ hosts, round, stdout: `${winner}\n` });
      }
    }
  }, slow);
});
