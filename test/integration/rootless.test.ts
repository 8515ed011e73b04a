import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstatSync, mkdtempSync, readdirSync, realpathSync, rmSync } from "node:fs";
import { join } from "pathe";
import { agentenv, repoRoot, rootless, sh, tempTree } from "../helpers/cli.ts";
import { derivationExpr, devShellFlake, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/**
 * Rootless Podman end to end, as a normal user: `.ci/run` runs this file as the user
 * `agentenv-test` it creates (scripts/rootless-tests.sh). As root it is skipped; the
 * rest of the suite covers rootful Podman, and most of it passes as the user too.
 */
const uid = process.getuid?.() ?? 0;
const volume = `agentenv-test-rootless-${process.pid}`;
const env = `t${process.pid}-rl`;
const storeEnv = { AGENTENV_STORE_VOLUME: volume };
const fixture = join(repoRoot, "test", "fixtures", "env");

const run = (project: string, command: string[], extra: string[] = []) => agentenv(["run", ...extra, project, "--", ...command], { env: storeEnv });

/** Every entry under DIR (DIR included) whose owner is not the user running the tests. */
function notMine(dir: string): string[] {
  const found: string[] = [];
  const visit = (path: string) => {
    const stat = lstatSync(path);
    if (stat.uid !== uid) found.push(`${path} (uid ${stat.uid})`);
    if (stat.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(dir);
  return found;
}

describe.skipIf(!rootless)("rootless Podman, as a normal user", () => {
  beforeAll(() => requireImage());
  afterAll(async () => {
    await agentenv(["down", "--env", env]);
    await agentenv(["env", "rm", env]);
    await removeStoreVolume(volume);
  });

  test("run: root inside, exit codes passed back, and everything the session made in the project is the user's", async () => {
    const dir = tempTree({ "README": "hi\n" });
    const script = "id -u; mkdir -p made/ro && echo x > made/ro/file && chmod 555 made/ro && ln -s ro made/link; exit 7";
    const result = await run(dir, ["sh", "-c", script]);
    expect(result.stderr).not.toContain("agentenv: ");
    expect(result.stdout).toBe("0\n");
    expect(result.code).toBe(7);
    // `find DIR -user root` finds nothing: the files are the user's, not root's nor a subordinate id's
    expect(notMine(dir)).toEqual([]);
    expect((await run(dir, ["sh", "-c", "kill -TERM $$"])).code).toBe(143);
  });

  test("a project with a flake.nix gets its dev shell", async () => {
    const dir = tempTree({ "flake.nix": devShellFlake });
    const result = await run(dir, ["sh", "-c", "echo $HELLO_FROM_SHELL"]);
    expect(result.stdout.trim().split("\n").pop()).toBe("yes");
    expect(result.code).toBe(0);
    expect(notMine(dir)).toEqual([]);
  });

  test("the golden store: overlay clones inside Podman's namespace; a built path is promoted, there in the next session, and gc collects it", async () => {
    const name = `rootless-${Date.now().toString(36)}`;
    const built = await run(tempTree(), ["nix-build", "--no-out-link", "-E", derivationExpr(name)]);
    expect(built.code).toBe(0);
    expect(built.stderr).toMatch(/golden store: promoted \d+ new store paths?/);
    const path = built.stdout.trim().split("\n").pop()!;
    expect(path).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-${name}$`));

    const status = JSON.parse((await agentenv(["store", "status", "--json"], { env: storeEnv })).stdout);
    // not the engine-volume fallback: the layered store, mounted in the user namespace
    expect(status).toMatchObject({ strategy: "overlay", sessions: [] });
    expect(status.strategyReason).toContain("rootless Podman's namespace");
    expect(notMine(status.root)).toEqual([]);

    const again = await run(tempTree(), ["nix-store", "--check-validity", path]);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toContain("promoted");

    const gc = await agentenv(["store", "gc"], { env: storeEnv });
    expect(gc.code).toBe(0);
    expect(gc.stdout + gc.stderr).toMatch(/deleted [1-9]\d* store paths?/);
    expect((await run(tempTree(), ["nix-store", "--check-validity", path])).code).not.toBe(0);
  });

  test("an untrusted project's session: the environment's tools come from a promoted step inside Podman's namespace, then from the golden store", async () => {
    // first in the file to use the fixture's tools: the golden store does not have them yet
    const name = `t${process.pid}-rlt`;
    expect((await agentenv(["env", "create", name, fixture])).code).toBe(0);
    // outside the temp dir, which this suite's user trusts
    const untrusted = realpathSync(mkdtempSync(join(repoRoot, ".untrusted-")));
    try {
      const first = await run(untrusted, ["hello-env"], ["--env", name]);
      expect(first.stdout).toBe("hello-env v1\n");
      expect(first.code).toBe(0);
      expect(first.stderr).toContain(`environment ${name}: installing its ~/flake.nix tools into the golden store, before the project's code runs`);
      const next = await run(untrusted, ["hello-env"], ["--env", name]);
      expect(next.stdout).toBe("hello-env v1\n");
      expect(next.stderr).not.toContain("installing");
      expect(notMine(untrusted)).toEqual([]);
    } finally {
      rmSync(untrusted, { recursive: true, force: true });
      await agentenv(["env", "rm", name]);
    }
  });

  test("an environment's home persists across sessions, is measured, and serves a wrapper", async () => {
    const created = await agentenv(["env", "create", env, fixture]);
    expect(created.code).toBe(0);
    const dir = realpathSync(tempTree());
    expect((await run(dir, ["sh", "-c", "echo kept > ~/note"], ["--env", env])).code).toBe(0);
    const read = await run(dir, ["cat", "/root/note"], ["--env", env]);
    expect(read.stdout).toBe("kept\n");

    // the home holds files of several in-container users: measured inside the namespace
    const shown = JSON.parse((await agentenv(["env", "show", env, "--json"])).stdout);
    expect(shown.size).toBeGreaterThan(0);

    const bin = tempTree();
    const wrote = await agentenv(["wrap", "hello-env", "--env", env, "--roots", dir, "--bin-dir", bin]);
    expect(wrote.code).toBe(0);
    const called = sh(["sh", "-c", "hello-env; echo code=$?"], { cwd: dir, env: { PATH: `${bin}:${process.env.PATH}` } });
    expect(called.stdout).toBe("hello-env v1\ncode=0\n");
    expect((await agentenv(["down", "--env", env])).code).toBe(0);
    expect(notMine(dir)).toEqual([]);
  });
});
