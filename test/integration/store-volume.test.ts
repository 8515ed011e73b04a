import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, entry, isolatedEnv, tempTree } from "../helpers/cli.ts";
import { derivationExpr, expectNoStackTrace, leftoverContainers, requireImage } from "../helpers/engine.ts";

/**
 * The "volume" clone strategy (plugins/golden/volume.ts), forced on Podman: the golden
 * store is a plain /nix tree in an engine volume, each session gets its own volume
 * cloned through a helper container, and Nix itself promotes new paths back.
 */
const volume = `agentenv-test-vstore-${process.pid}`;
const env = { AGENTENV_STORE_VOLUME: volume, AGENTENV_STORE_CLONE: "volume" };
const nonce = Date.now().toString(36);

const run = (project: string, command: string[], extra: string[] = []) => agentenv(["run", ...extra, project, "--", ...command], { env });
const build = (name: string) => ["nix-build", "--no-out-link", "-E", derivationExpr(`${name}-${nonce}`)];
const quoted = (argv: string[]) => argv.map((w) => `'${w}'`).join(" ");

/** Built path (last line of nix-build's output). */
function outPath(stdout: string): string {
  const path = stdout.trim().split("\n").pop()!;
  expect(path).toMatch(/^\/nix\/store\/[a-z0-9]{32}-/);
  return path;
}

/** The session volumes cloned from this test's golden volume that exist now. */
function sessionVolumes(): string[] {
  const out = Bun.spawnSync(["podman", "volume", "ls", "--filter", `label=agentenv.store-of=${volume}`, "--format", "{{.Name}}"]);
  return out.stdout.toString().split("\n").filter(Boolean);
}

async function status(): Promise<Record<string, any>> {
  const result = await agentenv(["store", "status", "--json"], { env });
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout);
}

async function waitFor(file: string, seconds = 60): Promise<void> {
  for (let i = 0; i < seconds * 10; i++) {
    if (existsSync(file)) return;
    await Bun.sleep(100);
  }
  throw new Error(`timed out waiting for ${file}`);
}

beforeAll(() => requireImage());
afterAll(() => {
  for (const name of [...sessionVolumes(), volume]) Bun.spawnSync(["podman", "volume", "rm", "--force", name]);
});

describe("the golden store as an engine volume (AGENTENV_STORE_CLONE=volume)", () => {
  let sharedPath = "";

  test("is seeded on first use; a path one session builds is promoted and valid, unbuilt, in another project's session", async () => {
    const first = await run(tempTree(), build("shared"));
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(`seeding the golden Nix store (volume ${volume})`);
    expect(first.stderr).toContain("golden store: promoted 2 new store paths");
    sharedPath = outPath(first.stdout);
    expect(sessionVolumes()).toEqual([]);

    // the same build again is a no-op: nix-build finds the path valid and prints it
    const second = await run(tempTree(), [
      "sh",
      "-c",
      `grep ' /nix ' /proc/mounts | cut -d' ' -f3; nix-store --check-validity ${sharedPath} && cat ${sharedPath} && ${quoted(build("shared"))} 2>&1 && nix-store --verify --check-contents 2>&1 | tail -1`,
    ]);
    expect(second.code).toBe(0);
    expect(second.stdout).not.toContain("overlay"); // a volume of its own, not an overlay of the host's
    expect(second.stdout).toContain(`shared-${nonce}\n`);
    expect(second.stdout).not.toContain("building");
    expect(second.stdout).toContain(`${sharedPath}\n`);
    expect(second.stderr).not.toContain("seeding");
    expect(second.stderr).not.toContain("promoted");
    expect(sessionVolumes()).toEqual([]);

    const dry = await agentenv(["run", "--dry-run", tempTree(), "--", "true"], { env });
    expect(dry.stdout).toMatch(new RegExp(`-v ${volume}-agentenv-agentenv-test-[a-z0-9]+-[0-9a-f]{8}:/nix `));
  });

  test("two concurrent sessions each add a path: both are promoted", async () => {
    const [a, b] = [tempTree(), tempTree()];
    const script = (name: string) => `${quoted(build(name))} > /work/out && touch /work/built && while [ ! -e /work/go ]; do sleep 0.1; done`;
    const sessions = [run(a, ["sh", "-c", script("concurrent-a")]), run(b, ["sh", "-c", script("concurrent-b")])];
    await Promise.all([waitFor(join(a, "built")), waitFor(join(b, "built"))]);
    expect((await status()).sessions).toHaveLength(2);
    writeFileSync(join(a, "go"), "");
    writeFileSync(join(b, "go"), "");
    const results = await Promise.all(sessions);
    expect(results.map((r) => r.code)).toEqual([0, 0]);
    for (const r of results) expect(r.stderr).toContain("golden store: promoted 2 new store paths");
    const paths = [a, b].map((p) => readFileSync(join(p, "out"), "utf8").trim());
    const check = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${paths.join(" ")} && nix-store --verify --check-contents`]);
    expect(check.code).toBe(0);
    expect(check.stderr).not.toContain("error");
    expect(sessionVolumes()).toEqual([]);
  });

  test("SIGKILL mid-session leaves a session volume that the next session reaps, unpromoted; --store ephemeral promotes nothing", async () => {
    const project = tempTree();
    const child = Bun.spawn([process.execPath, entry, "run", project, "--", "sh", "-c", `${quoted(build("killed"))} > /work/out && touch /work/built && sleep 300`], {
      env: { ...process.env, ...isolatedEnv(), ...env },
      stdout: "ignore",
      stderr: "ignore",
    });
    await waitFor(join(project, "built"));
    child.kill("SIGKILL");
    await child.exited;
    for (const name of leftoverContainers(project)) Bun.spawnSync(["podman", "kill", name]);
    for (let i = 0; i < 100 && leftoverContainers(project).length; i++) await Bun.sleep(100);
    expect(sessionVolumes()).toHaveLength(1); // its volume, left behind
    const killed = readFileSync(join(project, "out"), "utf8").trim();

    // the next session (ephemeral) reaps it first, and promotes nothing of its own
    const before = (await status()).lastPromotion;
    const ephemeral = await run(tempTree(), ["sh", "-c", `${quoted(build("ephemeral"))} && nix-store --check-validity ${killed}; echo killed-valid=$?`], ["--store", "ephemeral"]);
    expect(ephemeral.code).toBe(0);
    expect(ephemeral.stdout).toContain("killed-valid=1");
    expect(ephemeral.stderr).not.toContain("promoted");
    expect(sessionVolumes()).toEqual([]);
    expect((await status()).lastPromotion).toEqual(before);
    const built = outPath(ephemeral.stdout.replace(/killed-valid=\d+\n$/, ""));

    const later = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${built}; echo ephemeral-valid=$?; nix-store --check-validity ${sharedPath} && echo shared-valid`]);
    expect(later.stdout).toContain("ephemeral-valid=1");
    expect(later.stdout).toContain("shared-valid");
    expect(later.stderr).not.toContain("promoted");
  });

  test("an `up` container keeps its volume while it runs, past its agentenv and other sessions' reaping; `down` promotes and removes it", async () => {
    const name = `t${process.pid}-vup`;
    const container = `agentenv-up-${name}`;
    const roots = tempTree();
    expect((await agentenv(["env", "create", name, tempTree()], { env })).code).toBe(0);
    try {
      const up = await agentenv(["up", "--env", name, "--roots", roots], { env });
      expect(up.code).toBe(0);
      expect(sessionVolumes()).toEqual([`${volume}-${container}`]);
      const built = await agentenv(["exec", "--env", name, "--", ...build("up")], { env, cwd: roots });
      expect(built.code).toBe(0);
      const path = outPath(built.stdout);
      // another session reaps dead sessions first: the detached one is not dead
      expect((await run(tempTree(), ["true"])).code).toBe(0);
      expect(sessionVolumes()).toEqual([`${volume}-${container}`]);
      expect((await status()).sessions).toEqual([container]);

      const down = await agentenv(["down", "--env", name], { env });
      expect(down.code).toBe(0);
      expect(down.stderr).toContain("golden store: promoted 2 new store paths");
      expect(sessionVolumes()).toEqual([]);
      const check = await run(tempTree(), ["nix-store", "--check-validity", path]);
      expect(check.code).toBe(0);
    } finally {
      await agentenv(["down", "--env", name], { env });
      await agentenv(["env", "rm", name, "--force"], { env });
    }
  });

  test("store status shows the volume strategy; gc collects in a helper container; reset seeds it again", async () => {
    const s = await status();
    expect(s).toMatchObject({ engine: "podman", volume, exists: true, strategy: "volume", reason: "AGENTENV_STORE_CLONE=volume", sessions: [] });
    expect(s.strategyNote).toStartWith("each session clones the store volume");
    expect(s.seeded).toMatchObject({ volume, image: "localhost/agentenv:latest" });
    expect(s.lastPromotion).toMatchObject({ paths: 2 });

    // the paths built above are no root's: a dry run counts them, a gc deletes them in a helper container
    const dry = await agentenv(["store", "gc", "--dry-run", "--json"], { env });
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ deleted: 0, freedBytes: 0 });
    expect(JSON.parse(dry.stdout).wouldDelete).toBeGreaterThan(0);
    const gc = await agentenv(["store", "gc", "--json"], { env });
    expect(gc.code).toBe(0);
    expect(JSON.parse(gc.stdout).deleted).toBeGreaterThan(0);
    expectNoStackTrace(gc.stderr);
    const collected = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${sharedPath} 2>/dev/null; echo valid=$?`]);
    expect(collected.stdout).toContain("valid=1");
    expect((await agentenv(["store", "gc"], { env })).stdout).toMatch(/^nothing to collect \(\d+ live paths\)$/m);

    const refused = await agentenv(["store", "reset"], { env });
    expect(refused.stderr.trim()).toBe("agentenv: store reset deletes every path in the golden store: pass --yes to confirm");
    const reset = await agentenv(["store", "reset", "--yes"], { env });
    expect(reset.code).toBe(0);
    expect(reset.stderr).toContain(`seeding the golden Nix store (volume ${volume})`);
    expect(reset.stderr).toContain(`golden store ${volume} seeded from localhost/agentenv:latest`);
    const after = await status();
    expect(after.lastPromotion).toBeUndefined();
    const gone = await run(tempTree(), ["sh", "-c", `nix-store --check-validity ${sharedPath}; echo valid=$?`]);
    expect(gone.stdout).toContain("valid=1");
    expect(gone.stderr).not.toContain("seeding");
  });
});
