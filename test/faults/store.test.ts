import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "pathe";
import { tempTree } from "../helpers/cli.ts";
import { derivationExpr, leftoverContainers, removeStoreVolume, requireImage } from "../helpers/engine.ts";
import { fixture, podman, removeVolumes, run, stateDir, stepsOf, type Run } from "./harness.ts";

/**
 * kill -9 at every step of what changes the golden store: a session's exit (promotion),
 * `store gc`, `store reset` and `down` of an `up` container. Each command is run once to
 * learn its steps (AGENTENV_TEST_STEPS), then stopped by SIGKILL at each of them
 * (AGENTENV_TEST_CRASH_AT), followed by the next command. After it the golden store
 * verifies (`nix-store --verify --check-contents` in a session), what was promoted before
 * is still valid, nothing half-made is left (session directory, trashed clone, unlisted
 * layer, mount, container, stray volume), and the next command works.
 *
 * One golden store volume for the file (its own: the machine's and other tests' stay
 * untouched), so the tests run one after the other.
 */
const slow = 300_000;
const volume = `agentenv-test-faults-${process.pid}`;
const env = { AGENTENV_STORE_VOLUME: volume };
const nonce = Date.now().toString(36);
const prefix = `g${process.pid}`;

/** A command that builds NAME's derivation and writes its store path to OUT (a session's project is at /work). */
const build = (name: string, out = "/work/out") => ["sh", "-c", `nix-build --no-out-link -E '${derivationExpr(`${name}-${nonce}`)}' > ${out}`];

function storeRoot(): string {
  return podman(["volume", "inspect", "--format", "{{.Mountpoint}}", volume]).trim();
}

function expectKilled(result: Run, step: string): void {
  // a "+MS" kill may come after the command finished
  const stopped = result.killed || (step.includes("+") && result.code === 0);
  expect({ step, stopped, stderr: stopped ? "" : result.stderr }).toEqual({ step, stopped: true, stderr: "" });
}

/** Builds a path in a session of its own (promoted when it ends); returns it. */
async function promoted(name: string): Promise<string> {
  const project = tempTree();
  const result = await run(["run", "--no-env", project, "--", ...build(name)], { env });
  expect({ name, code: result.code, stderr: result.stderr }).toMatchObject({ name, code: 0 });
  expect(result.stderr).toContain("golden store: promoted");
  return readFileSync(join(project, "out"), "utf8").trim();
}

/**
 * The next command: a session that checks the golden store whole (the verify exits 1 on
 * any error); returns which of PATHS are valid in it.
 */
async function verify(when: string, paths: string[]): Promise<Record<string, boolean>> {
  const script = `for p in ${paths.join(" ")}; do nix-store --check-validity $p 2>/dev/null && echo "valid $p"; done; nix-store --verify --check-contents`;
  const result = await run(["run", "--no-env", tempTree(), "--", "sh", "-c", script], { env });
  expect({ when, code: result.code, stderr: result.stderr }).toMatchObject({ when, code: 0 });
  expect({ when, errors: result.stderr.split("\n").filter((l) => /error|modified|missing|invalid/i.test(l)) }).toEqual({ when, errors: [] });
  return Object.fromEntries(paths.map((p) => [p, result.stdout.includes(`valid ${p}\n`)]));
}

/**
 * Nothing half-made in the golden store: no session directory (none runs), nothing in
 * trash/, a layer on disk for each one `stack` lists and no other, no mount left under
 * the store, the marker there, one store volume. PROJECT's containers are gone.
 */
function expectStoreClean(when: string, projects: string[] = []): void {
  const root = storeRoot();
  expect({ when, root: Boolean(root) }).toEqual({ when, root: true });
  const stack = readFileSync(join(root, "stack"), "utf8").split("\n").filter(Boolean).sort();
  const layers = readdirSync(join(root, "layers")).sort();
  expect({ when, layers }).toEqual({ when, layers: stack });
  expect({ when, sessions: readdirSync(join(root, "sessions")) }).toEqual({ when, sessions: [] });
  expect({ when, trash: existsSync(join(root, "trash")) ? readdirSync(join(root, "trash")) : [] }).toEqual({ when, trash: [] });
  const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(root));
  expect({ when, mounts }).toEqual({ when, mounts: [] });
  expect({ when, marker: existsSync(join(root, "agentenv-store.json")) }).toEqual({ when, marker: true });
  const volumes = podman(["volume", "ls", "--format", "{{.Name}}"]).split("\n").filter((v) => v.startsWith(volume));
  expect({ when, volumes }).toEqual({ when, volumes: [volume] });
  // the store volume carries the nonce of the command that made it (it never fills or removes another's)
  expect({ when, nonce: JSON.parse(podman(["volume", "inspect", "--format", "{{json .Labels}}", volume]) || "{}")["agentenv.nonce"] }).toEqual({ when, nonce: expect.stringMatching(/^[0-9a-f]{16}$/) });
  for (const project of projects) expect({ when, containers: leftoverContainers(project) }).toEqual({ when, containers: [] });
}

/** Waits until PROJECT's containers are gone (a session's container ends on its own after agentenv dies). */
async function containersGone(project: string): Promise<void> {
  for (let i = 0; i < 100 && leftoverContainers(project).length; i++) await Bun.sleep(100);
}

/** A session killed once its clone is mounted, before its container starts: a dead session with a mount. */
async function deadSession(): Promise<void> {
  const project = tempTree();
  expectKilled(await run(["run", "--no-env", project, "--", "true"], { env, crashAt: "store:cloned" }), "store:cloned");
  const root = storeRoot();
  expect(readdirSync(join(root, "sessions")).length).toBeGreaterThan(0);
}

/** paths promoted in earlier steps: every later check wants them valid */
const kept: string[] = [];

beforeAll(async () => {
  await requireImage();
  kept.push(await promoted("first"));
  expectStoreClean("seeded");
}, slow);

afterAll(async () => {
  await run(["down", "--env", `${prefix}-down`]);
  await run(["env", "rm", `${prefix}-down`]);
  removeVolumes(prefix);
  await removeStoreVolume(volume);
});

describe("kill -9 in the golden store", () => {
  test("a session's start and exit: a promotion is whole or absent; the next session reaps what is left", async () => {
    const { result, steps } = await stepsOf(["run", "--no-env", tempTree(), "--", ...build("steps")], { env });
    expect(result.code).toBe(0);
    expect(steps).toEqual(["store:cloned", "store:released", "promote:built", "layer:renamed", "layer:published", "store:trashed"]);
    const published = ["layer:published", "store:trashed"];
    for (const [i, step] of steps.entries()) {
      const project = tempTree();
      expectKilled(await run(["run", "--no-env", project, "--", ...build(`exit-${i}`)], { env, crashAt: step }), step);
      await containersGone(project);
      const built = step === "store:cloned" ? [] : [readFileSync(join(project, "out"), "utf8").trim()];
      const valid = await verify(step, [...kept, ...built]);
      // what was promoted before stays; this session's path is promoted only once its layer was published
      for (const path of kept) expect({ step, path, valid: valid[path] }).toEqual({ step, path, valid: true });
      for (const path of built) expect({ step, valid: valid[path] }).toEqual({ step, valid: published.includes(step) });
      expectStoreClean(step, [project]);
      if (published.includes(step)) kept.push(...built);
    }
  }, slow);

  test("store gc: the old store or the collected one, never a part; the next gc finishes", async () => {
    const { result, steps } = await stepsOf(["store", "gc"], { env });
    expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code: 0 });
    expect(steps).toEqual(["rebuild:built", "layer:renamed", "layer:published"]);
    kept.length = 0; // nothing roots them: that gc collected them all
    for (const [i, step] of steps.entries()) {
      const path = await promoted(`gc-${i}`);
      await deadSession();
      expectKilled(await run(["store", "gc"], { env, crashAt: step }), step);
      const valid = await verify(step, [path]);
      expect({ step, valid: valid[path] }).toEqual({ step, valid: step !== "layer:published" });
      expectStoreClean(step);
      const again = await run(["store", "gc", "--json"], { env });
      expect({ step, code: again.code, stderr: again.stderr }).toMatchObject({ step, code: 0 });
      expect((await verify(`${step}, then gc`, [path]))[path]).toBe(false);
      expectStoreClean(`${step}, then gc`);
    }
  }, slow);

  test("store reset: killed at any step, the next reset finishes it (dead sessions' mounts included); the store verifies", async () => {
    const { result, steps } = await stepsOf(["store", "reset", "--yes"], { env });
    expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code: 0 });
    expect(steps).toEqual(["store-reset:unmarked", "store-reset:removed", "store:seed"]);
    kept.length = 0; // that reset threw them away
    for (const [i, step] of [...steps, "store:seed+300"].entries()) {
      const path = await promoted(`reset-${i}`);
      await deadSession();
      const killed = await run(["store", "reset", "--yes"], { env, crashAt: step });
      expectKilled(killed, step);
      // the user runs it again
      const again = await run(["store", "reset", "--yes"], { env });
      expect({ step, code: again.code, stderr: again.stderr }).toMatchObject({ step, code: 0 });
      expect((await verify(step, [path]))[path]).toBe(false);
      expectStoreClean(step);
    }
    // a session (not a reset) after a reset killed once it unmarked the store: the store is used as it is
    const path = await promoted("reset-session");
    await deadSession();
    expectKilled(await run(["store", "reset", "--yes"], { env, crashAt: "store-reset:unmarked" }), "unmarked");
    expect(await verify("a session after an unmarked store", [path])).toEqual({ [path]: true });
    expectStoreClean("a session after an unmarked store");
    kept.push(path);
  }, slow);

  test("down of an up container: the next down finishes it — container, handoff, state gone; its paths promoted once", async () => {
    const name = `${prefix}-down`;
    expect((await run(["env", "create", name, fixture])).code).toBe(0);
    const container = `agentenv-up-${name}`;
    const roots = realpathSync(tempTree());
    const upAndBuild = async (i: number | string) => {
      const up = await run(["up", "--env", name, "--roots", roots], { env, cwd: roots });
      expect({ i, code: up.code, stderr: up.stderr }).toMatchObject({ i, code: 0 });
      const built = await run(["exec", "--env", name, "--", ...build(`down-${i}`, join(roots, "out"))], { env, cwd: roots });
      expect({ i, code: built.code, stderr: built.stderr }).toMatchObject({ i, code: 0 });
      return readFileSync(join(roots, "out"), "utf8").trim();
    };
    const stateFile = join(stateDir(), "running", `podman-${container}.json`);
    await upAndBuild("steps");
    const handoffDir = (JSON.parse(readFileSync(stateFile, "utf8")) as { plan: { mounts: Array<{ source: string; target: string }> } }).plan.mounts.find((m) => m.target === "/run/agentenv/handoff")!.source;
    const { result, steps } = await stepsOf(["down", "--env", name], { env, cwd: roots });
    expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code: 0 });
    expect(steps).toEqual(["down:removed", "store:released", "promote:built", "layer:renamed", "layer:published", "store:trashed", "down:ended"]);
    for (const [i, step] of steps.entries()) {
      const path = await upAndBuild(i);
      expectKilled(await run(["down", "--env", name], { env, cwd: roots, crashAt: step }), step);
      const next = await run(["down", "--env", name], { env, cwd: roots });
      expect({ step, code: next.code, stderr: next.stderr }).toMatchObject({ step, code: 0 });
      expect({ step, container: podman(["ps", "-a", "--filter", `name=^${container}$`, "--format", "{{.Names}}"]).trim() }).toEqual({ step, container: "" });
      expect({ step, state: existsSync(stateFile), handoff: existsSync(handoffDir) }).toEqual({ step, state: false, handoff: false });
      // promoted by the killed down once it published, else by the next one
      expect(await verify(step, [...kept, path])).toEqual(Object.fromEntries([...kept, path].map((p) => [p, true])));
      expectStoreClean(step);
      kept.push(path);
    }
  }, slow);
});

/**
 * The same for the "volume" clone strategy (plugins/golden/volume.ts: engine volumes
 * throughout, as on Apple `container`, a VM or remote engine), forced on Podman with its
 * own golden volume: a session killed at each step of its start and exit (its clone made,
 * the session's store read, Nix's copy into the golden volume done, its volume removed).
 * The next session reaps what the killed one left — its volume, its record — and the store
 * verifies; the killed session's path is kept only when its copy was done.
 */
describe("kill -9 in the golden store, volume strategy", () => {
  const vvolume = `agentenv-test-faults-v-${process.pid}`;
  const venv = { AGENTENV_STORE_VOLUME: vvolume, AGENTENV_STORE_CLONE: "volume" };
  const vkept: string[] = [];
  const sessionVolumes = () => podman(["volume", "ls", "--filter", `label=agentenv.store-of=${vvolume}`, "--format", "{{.Name}}"]).split("\n").filter(Boolean);
  /** the host's records of sessions of this golden volume (json, and the lock beside it) */
  const sessionRecords = () => {
    const dir = join(stateDir(), "store", "sessions");
    const ours = (name: string) => name.endsWith(".json") && existsSync(join(dir, name)) && readFileSync(join(dir, name), "utf8").includes(`"${vvolume}"`);
    // a promotion's work directory (`.promote`) goes with the record
    return existsSync(dir) ? readdirSync(dir).filter((name) => ours(name) || (name.endsWith(".lock") && ours(name.replace(/\.lock$/, ".json"))) || name.endsWith(".promote")) : [];
  };

  afterAll(() => removeStoreVolume(vvolume));

  test("a session's start and exit: its path promoted once Nix's copy is done, else not; the next session reaps its volume and record", async () => {
    const first = tempTree();
    const seeded = await run(["run", "--no-env", first, "--", ...build("v-first")], { env: venv });
    expect({ code: seeded.code, stderr: seeded.stderr }).toMatchObject({ code: 0, stderr: expect.stringContaining("golden store: promoted") });
    vkept.push(readFileSync(join(first, "out"), "utf8").trim());
    const { result, steps } = await stepsOf(["run", "--no-env", tempTree(), "--", ...build("v-steps")], { env: venv });
    expect(result.code).toBe(0);
    expect(steps).toEqual(["volume:cloned", "volume:inspected", "volume:copied", "volume:removed"]);
    const copied = ["volume:copied", "volume:removed"];
    for (const [i, step] of steps.entries()) {
      const project = tempTree();
      expectKilled(await run(["run", "--no-env", project, "--", ...build(`v-exit-${i}`)], { env: venv, crashAt: step }), step);
      await containersGone(project);
      const built = step === "volume:cloned" ? [] : [readFileSync(join(project, "out"), "utf8").trim()];
      // the next session: reaps the killed one's volume and record first, then checks the store whole
      const script = `for p in ${[...vkept, ...built].join(" ")}; do nix-store --check-validity $p 2>/dev/null && echo "valid $p"; done; nix-store --verify --check-contents`;
      const next = await run(["run", "--no-env", tempTree(), "--", "sh", "-c", script], { env: { ...venv, AGENTENV_STORE: "ephemeral" } });
      expect({ step, code: next.code, errors: next.stderr.split("\n").filter((l) => /error|modified|missing|invalid/i.test(l)) }).toEqual({ step, code: 0, errors: [] });
      for (const path of vkept) expect({ step, path, valid: next.stdout.includes(`valid ${path}\n`) }).toEqual({ step, path, valid: true });
      for (const path of built) expect({ step, valid: next.stdout.includes(`valid ${path}\n`) }).toEqual({ step, valid: copied.includes(step) });
      expect({ step, volumes: sessionVolumes(), records: sessionRecords(), containers: leftoverContainers(project) }).toEqual({ step, volumes: [], records: [], containers: [] });
      if (copied.includes(step)) vkept.push(...built);
    }
  }, slow);
});
