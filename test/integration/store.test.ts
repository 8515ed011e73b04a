import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, entry, isolatedEnv, tempTree } from "../helpers/cli.ts";
import { derivationExpr, expectNoStackTrace, leftoverContainers, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/** Each test file gets its own golden store, so the machine's and other tests' stay untouched. */
const volume = `agentenv-test-store-${process.pid}`;
const env = { AGENTENV_STORE_VOLUME: volume };
const nonce = Date.now().toString(36);
/** built by the first test; later tests check what becomes of it */
let sharedPath = "";

const run = (project: string, command: string[], extra: string[] = []) => agentenv(["run", ...extra, project, "--", ...command], { env });
const build = (name: string) => ["nix-build", "--no-out-link", "-E", derivationExpr(`${name}-${nonce}`)];

async function status(): Promise<Record<string, any>> {
  const result = await agentenv(["store", "status", "--json"], { env });
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout);
}

/** Built path (last line of nix-build's output). */
function outPath(stdout: string): string {
  const path = stdout.trim().split("\n").pop()!;
  expect(path).toMatch(/^\/nix\/store\/[a-z0-9]{32}-/);
  return path;
}

async function waitFor(file: string, seconds = 60): Promise<void> {
  for (let i = 0; i < seconds * 10; i++) {
    if (existsSync(file)) return;
    await Bun.sleep(100);
  }
  throw new Error(`timed out waiting for ${file}`);
}

/** What on disk makes up the golden store's current state: its stack and layer names. */
function snapshot(root: string): { stack: string; layers: string[] } {
  return { stack: readFileSync(join(root, "stack"), "utf8"), layers: readdirSync(join(root, "layers")).sort() };
}

beforeAll(() => requireImage());
afterAll(() => removeStoreVolume(volume));

describe("the golden store", () => {
  test("is seeded on first use; a path built in one project's session is there, unbuilt, in another's", async () => {
    const first = await run(tempTree(), build("shared"));
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(`seeding the golden Nix store (volume ${volume})`);
    expect(first.stderr).toContain("golden store: promoted 2 new store paths");
    const path = outPath(first.stdout);
    sharedPath = path;

    const second = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${path} && cat ${path} && nix-store --verify --check-contents 2>&1 | tail -1`]);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`shared-${nonce}\n`);
    expect(second.stderr).not.toContain("seeding");
    expect(second.stderr).not.toContain("promoted"); // nothing new: nothing promoted

    // building it again is a no-op: nix-build finds it valid and prints it without building
    const again = await run(tempTree(), ["sh", "-c", `${build("shared").map((w) => `'${w}'`).join(" ")} 2>&1`]);
    expect(again.stdout).not.toContain("building");
    expect(again.stdout.trim()).toBe(path);

    const s = await status();
    expect(s).toMatchObject({ engine: "podman", volume, exists: true, strategy: "overlay", sessions: [] });
    expect(s.paths).toBeGreaterThanOrEqual(2);
    expect(s.layers).toBeGreaterThanOrEqual(2);
    expect(s.seeded).toMatchObject({ volume, image: "localhost/agentenv:latest" });
    expect(s.lastPromotion).toMatchObject({ paths: 2 });
    expect(typeof s.root).toBe("string");

    const doctor = await agentenv(["doctor", "--json"], { env });
    const checks = JSON.parse(doctor.stdout) as Array<{ name: string; status: string; detail: string }>;
    expect(checks.find((c) => c.name === "nix store")).toMatchObject({ status: "ok", detail: `${volume}: copy-on-write overlay: constant time, whatever the store's size` });
    expect(doctor.code).toBe(0);
  });

  test("two concurrent sessions each add paths: both sets survive, and the database verifies", async () => {
    const [a, b] = [tempTree(), tempTree()];
    const script = (name: string) =>
      `${build(name).map((w) => `'${w}'`).join(" ")} > /work/out && touch /work/built && while [ ! -e /work/go ]; do sleep 0.1; done`;
    const sessions = [run(a, ["sh", "-c", script("concurrent-a")]), run(b, ["sh", "-c", script("concurrent-b")])];
    // both have built before either ends: each started from the same golden store
    await Promise.all([waitFor(join(a, "built")), waitFor(join(b, "built"))]);
    expect((await status()).sessions).toHaveLength(2);
    writeFileSync(join(a, "go"), "");
    writeFileSync(join(b, "go"), "");
    const results = await Promise.all(sessions);
    expect(results.map((r) => r.code)).toEqual([0, 0]);
    const paths = [a, b].map((p) => readFileSync(join(p, "out"), "utf8").trim());

    const check = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${paths.join(" ")} && nix-store --verify --check-contents`]);
    expect(check.code).toBe(0);
    expect(check.stderr).not.toContain("error");
  });

  test("SIGKILL mid-session leaves the golden store exactly as it was; the next run cleans up", async () => {
    const root = (await status()).root as string;
    const before = snapshot(root);
    const project = tempTree();
    const child = Bun.spawn(
      [process.execPath, entry, "run", project, "--", "sh", "-c", `${build("killed").map((w) => `'${w}'`).join(" ")} > /work/out && touch /work/built && sleep 300`],
      { env: { ...process.env, ...isolatedEnv(), ...env }, stdout: "ignore", stderr: "ignore" },
    );
    await waitFor(join(project, "built"));
    child.kill("SIGKILL");
    await child.exited;
    // the engine goes down with it: its container is killed too
    for (const name of leftoverContainers(project)) Bun.spawnSync(["podman", "kill", name]);
    for (let i = 0; i < 100 && leftoverContainers(project).length; i++) await Bun.sleep(100);
    expect(snapshot(root)).toEqual(before);
    expect(readdirSync(join(root, "sessions"))).toHaveLength(1); // its clone, left behind

    const path = readFileSync(join(project, "out"), "utf8").trim();
    const next = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${path}; echo valid=$?; nix-store --verify --check-contents`]);
    expect(next.stdout).toContain("valid=1");
    expect(next.code).toBe(0);
    expect(snapshot(root)).toEqual(before);
    expect(readdirSync(join(root, "sessions"))).toEqual([]);
    const mounts = readFileSync("/proc/self/mountinfo", "utf8");
    expect(mounts).not.toContain(join(root, "sessions"));
  });

  test("--store ephemeral promotes nothing; --no-store runs on the image's own /nix", async () => {
    const root = (await status()).root as string;
    const before = snapshot(root);
    const ephemeral = await run(tempTree(), build("ephemeral"), ["--store", "ephemeral"]);
    expect(ephemeral.code).toBe(0);
    expect(ephemeral.stderr).not.toContain("promoted");
    expect(snapshot(root)).toEqual(before);
    const path = outPath(ephemeral.stdout);
    const later = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${path}; echo valid=$?`]);
    expect(later.stdout).toContain("valid=1");

    const none = await run(tempTree(), ["sh", "-c", "grep -c ' /nix ' /proc/mounts; ls /nix 2>&1 | head -1"], ["--no-store"]);
    expect(none.stdout).toStartWith("0\n");
    const dry = await agentenv(["run", "--dry-run", "--store", "none", tempTree(), "--", "true"], { env });
    expect(dry.stdout).not.toContain(":/nix");
    const golden = await agentenv(["run", "--dry-run", tempTree(), "--", "true"], { env });
    expect(golden.stdout).toContain(`${root}/sessions/`);
    expect(golden.stdout).toContain("/merged:/nix");
  });

  test("a path gc removes while a session still uses it comes back with what that session promotes — and nothing else does", async () => {
    const project = tempTree();
    const depExpr = derivationExpr(`revived-dep-${nonce}`);
    const dep = outPath((await run(tempTree(), ["nix-build", "--no-out-link", "-E", depExpr])).stdout);
    const topExpr = `let dep = ${depExpr}; in derivation { name = "revived-top-${nonce}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`;
    const session = run(project, ["sh", "-c", `touch /work/started; while [ ! -e /work/go ]; do sleep 0.1; done; nix-build --no-out-link -E '${topExpr}' > /work/out`]);
    await waitFor(join(project, "started"));
    const gc = await agentenv(["store", "gc", "--json"], { env }); // no roots: everything goes
    expect(JSON.parse(gc.stdout).live).toBe(0);
    expect((await status()).paths).toBe(0);
    writeFileSync(join(project, "go"), "");
    expect((await session).code).toBe(0);
    const top = readFileSync(join(project, "out"), "utf8").trim();
    const check = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${top} ${dep} && cat ${top} && nix-store --verify --check-contents`]);
    expect(check.code).toBe(0);
    expect(check.stdout).toContain(dep);
    // the session saw every path gc removed, but only the closure of what it built returns:
    // the two outputs and their two .drv files
    expect((await status()).paths).toBe(4);
    const gone = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${sharedPath}; echo valid=$?`]);
    expect(gone.stdout).toContain("valid=1");
    // the layers gc replaced were kept while the session used them, and went when it ended
    const root = (await status()).root as string;
    const { stack, layers } = snapshot(root);
    expect(layers).toEqual(stack.trim().split("\n").sort());
  });

  test("past the layer limit a promotion compacts the stack into one layer of hard links", async () => {
    const compactEnv = { ...env, AGENTENV_STORE_MAX_LAYERS: "2" };
    const paths: string[] = [];
    let compacted = 0;
    for (const name of ["compact-1", "compact-2", "compact-3"]) {
      const result = await agentenv(["run", tempTree(), "--", ...build(name)], { env: compactEnv });
      expect(result.code).toBe(0);
      paths.push(outPath(result.stdout));
      if (result.stderr.includes("golden store: compacting")) compacted++;
    }
    expect(compacted).toBeGreaterThan(0);
    const s = await status();
    expect(s.layers).toBeLessThanOrEqual(2);
    const root = s.root as string;
    const { stack, layers } = snapshot(root);
    expect(layers).toEqual(stack.trim().split("\n").sort()); // replaced layers are gone
    const check = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${paths.join(" ")} && nix-store --verify --check-contents`]);
    expect(check.code).toBe(0);
  });

  test("bad store settings are one-line errors", async () => {
    const bad = await agentenv(["run", "--store", "shared", tempTree(), "--", "true"], { env });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim()).toBe('agentenv: unknown store mode "shared" (from --store) — use one of: golden, ephemeral, none, host');
    const badVolume = await agentenv(["store", "status"], { env: { AGENTENV_STORE_VOLUME: "../etc" } });
    expect(badVolume.stderr).toContain('invalid volume name "../etc" (from AGENTENV_STORE_VOLUME)');
    expectNoStackTrace(badVolume.stderr);
  });

  test("gc keeps what plugins name as roots (and their closure), deletes the rest", async () => {
    const project = tempTree();
    const expr = `let dep = ${derivationExpr(`gc-dep-${nonce}`)}; in derivation { name = "gc-root-${nonce}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`;
    const built = await run(project, ["sh", "-c", `nix-build --no-out-link -E '${expr}' && nix-build --no-out-link -E '${derivationExpr(`gc-junk-${nonce}`)}'`]);
    expect(built.code).toBe(0);
    const [root, junk] = built.stdout.trim().split("\n");
    const dep = (await run(project, ["cat", root!])).stdout.trim();
    expect(dep).toContain(`gc-dep-${nonce}`);
    // store commands are no project's: the plugin comes from the user's config
    const userConfig = tempTree({
      "agentenv/config.ts": `export default { plugins: [{ name: "keeper", hooks: { "store:roots"(ctx, roots) { roots.add(${JSON.stringify(root)}); } } }] };`,
    });
    const keeperEnv = { ...env, XDG_CONFIG_HOME: userConfig };
    const dry = await agentenv(["store", "gc", "--dry-run", "--json"], { env: keeperEnv });
    expect(JSON.parse(dry.stdout).wouldDelete).toBeGreaterThan(0);
    const gc = await agentenv(["store", "gc", "--json"], { env: keeperEnv });
    expect(gc.code).toBe(0);
    const report = JSON.parse(gc.stdout);
    expect(report.deleted).toBeGreaterThan(0);
    expect(report.live).toBe(2); // the root and its dependency
    expect((await status()).layers).toBe(1);
    const after = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${root} ${dep} && echo kept; nix-store --check-validity ${junk}; echo junk=$?; nix-store --verify --check-contents`]);
    expect(after.stdout).toContain("kept\n");
    expect(after.stdout).toContain("junk=1");
    expect(after.code).toBe(0);
  });

  test("reset asks first (refuses without --yes off a terminal), refuses while a session runs, then reseeds from the image", async () => {
    const refused = await agentenv(["store", "reset"], { env });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe("agentenv: store reset deletes every path in the golden store: pass --yes to confirm");
    const project = tempTree();
    const session = run(project, ["sh", "-c", "touch /work/started; while [ ! -e /work/go ]; do sleep 0.1; done"]);
    await waitFor(join(project, "started"));
    const busy = await agentenv(["store", "reset", "--yes"], { env });
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/^agentenv: the golden store is in use by 1 session\(s\): agentenv-agentenv-test-[a-z0-9]+-[0-9a-f]{8} — end them first\n$/);
    writeFileSync(join(project, "go"), "");
    expect((await session).code).toBe(0);
    expect((await status()).paths).toBeGreaterThan(0);
    const reset = await agentenv(["store", "reset", "--yes"], { env });
    expect(reset.code).toBe(0);
    expect(reset.stderr).toContain(`golden store ${volume} seeded from localhost/agentenv:latest`);
    const s = await status();
    expect(s).toMatchObject({ layers: 1, paths: 0 });
    expect(s.lastPromotion).toBeUndefined();
  });

  test("a session's removal killed midway is never taken for a session: the next session's end finishes it, and reset is not blocked", async () => {
    // the store exists (a session seeds it), so its directory is known
    expect((await run(tempTree(), ["true"])).code).toBe(0);
    const root = (await status()).root as string;
    expect(root).toStartWith("/");
    // what a kill during removeSession's delete leaves: the moved directory, its record saying detached
    const record = JSON.stringify({ container: "agentenv-gone", stack: ["0"], detached: true });
    const legacy = join(root, "sessions", ".gone-agentenv-gone-2147483646");
    const trashed = join(root, "trash", "agentenv-gone2-2147483646");
    const leave = () => {
      for (const dir of [legacy, trashed]) {
        mkdirSync(join(dir, "upper"), { recursive: true });
        writeFileSync(join(dir, "session.json"), record);
      }
    };
    leave();
    const reset = await agentenv(["store", "reset", "--yes"], { env });
    expect(reset.stderr).not.toContain("in use");
    expect(reset.code).toBe(0);
    leave();
    expect((await run(tempTree(), ["true"])).code).toBe(0);
    expect(existsSync(legacy)).toBe(false);
    expect(existsSync(trashed)).toBe(false);
  });
});
