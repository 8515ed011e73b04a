import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "pathe";
import { agentenv, tempTree } from "../helpers/cli.ts";
import { derivationExpr, expectNoStackTrace, leftoverContainers, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/**
 * The hook contract on real Podman: `session:exit` runs for every plugin whose
 * `session:start` ran, whatever another plugin's hook threw; failures are reported one
 * line each and the command's exit code survives.
 */
const volume = `agentenv-test-hooks-${process.pid}`;
const env = { AGENTENV_STORE_VOLUME: volume };
const nonce = Date.now().toString(36);

/** A project (trusted: the tests' user trusts the temp dir) whose config adds a plugin with HOOKS. */
const projectWith = (hooks: string) => tempTree({ "agentenv.config.ts": `export default { plugins: [{ name: "boom", hooks: { ${hooks} } }] };\n` });

async function storeSessions(): Promise<string[]> {
  const status = await agentenv(["store", "status", "--json"], { env });
  expect(status.code).toBe(0);
  return JSON.parse(status.stdout).sessions ?? [];
}

beforeAll(() => requireImage());
afterAll(() => removeStoreVolume(volume));

describe("hooks always clean up", () => {
  test("a session:exit that throws: reported, the golden store still promotes, the command's exit code survives", async () => {
    const project = projectWith(`"session:exit"() { throw new Error("cleanup exploded"); }`);
    const result = await agentenv(["run", project, "--", "sh", "-c", `nix-build --no-out-link -E '${derivationExpr(`hooks-${nonce}`)}'; exit 7`], { env });
    expect(result.code).toBe(7);
    expect(result.stderr).toContain("✖ plugin boom failed in hook session:exit: cleanup exploded\n");
    expectNoStackTrace(result.stderr);
    const built = result.stdout.trim().split("\n").pop()!;
    expect(built).toMatch(/^\/nix\/store\/[a-z0-9]{32}-hooks-/);
    // promoted: another project's session has it, unbuilt
    const later = await agentenv(["run", tempTree(), "--", "sh", "-c", `test -e ${built} && echo promoted`], { env });
    expect(later.stdout).toBe("promoted\n");
    expect(leftoverContainers(project)).toEqual([]);
    expect(await storeSessions()).toEqual([]);
  });

  test("a session:start that throws: the session does not run, and the plugins that started before it clean up", async () => {
    const project = projectWith(`"session:start"() { throw new Error("no vault"); }`);
    const result = await agentenv(["run", project, "--", "sh", "-c", "touch /work/ran"], { env });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("agentenv: plugin boom failed in hook session:start: no vault\n");
    expect(existsSync(join(project, "ran"))).toBe(false);
    expect(leftoverContainers(project)).toEqual([]);
    // the golden plugin's session clone is gone with it
    expect(await storeSessions()).toEqual([]);
  });
});
