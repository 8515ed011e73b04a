import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { findProjectConfig, loadConfig, mergeLayers } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { tempTree, trustIn } from "../helpers/cli.ts";

describe("config merge order: defaults < user < project < environment < flags", () => {
  test("scalars: the later layer wins; records merge by key; lists concatenate", () => {
    const merged = mergeLayers([
      { name: "defaults", config: {} },
      { name: "user", file: "/u", config: { image: "user-img", runtime: "docker", extraEnv: { A: "user", B: "user" }, extraRunArgs: ["--u"] } },
      { name: "project", file: "/p", config: { image: "project-img", extraEnv: { B: "project" }, extraRunArgs: ["--p"] } },
      { name: "environment", config: { runtime: "podman" } },
      { name: "flags", config: { image: "flag-img" } },
    ]);
    expect(merged.image).toBe("flag-img");
    expect(merged.runtime).toBe("podman");
    expect(merged.extraEnv).toEqual({ A: "user", B: "project" });
    expect(merged.extraRunArgs).toEqual(["--u", "--p"]);
  });

  test("loadConfig reads user and project files, then AGENTENV_*, then flags", async () => {
    const home = tempTree({
      ".config/agentenv/config.ts": `export default { image: "from-user", extraEnv: { WHO: "user", KEEP: "user" } };`,
    });
    const project = tempTree({
      "agentenv.config.ts": `import { defineConfig } from "agentenv";\nexport default defineConfig({ image: "from-project", extraEnv: { WHO: "project" } });`,
    });
    const env = trustIn({ HOME: home, XDG_CONFIG_HOME: join(home, ".config") }, project);
    const base = await loadConfig({ project, env });
    expect(base.image).toBe("from-project");
    expect(base.extraEnv).toEqual({ WHO: "project", KEEP: "user" });
    expect(base.layers.map((l) => l.name)).toEqual(["defaults", "user", "project", "environment", "flags"]);
    const fromEnv = await loadConfig({ project, env: { ...env, AGENTENV_IMAGE: "from-env", AGENTENV_RUNTIME: "docker" } });
    expect([fromEnv.image, fromEnv.runtime]).toEqual(["from-env", "docker"]);
    const fromFlags = await loadConfig({ project, env: { ...env, AGENTENV_IMAGE: "from-env" }, flags: { image: "from-flag", runtime: "podman" } });
    expect([fromFlags.image, fromFlags.runtime]).toEqual(["from-flag", "podman"]);
  });

  test("an unknown runtime name is one clear error naming its source", async () => {
    const project = tempTree();
    const attempt = loadConfig({ project, env: { HOME: project, AGENTENV_RUNTIME: "lxc" } });
    await expect(attempt).rejects.toThrow('unknown runtime "lxc" (from AGENTENV_RUNTIME)');
  });
});

describe("project config discovery", () => {
  test("found in DIR or a parent, but not past the repository root (.git)", () => {
    const root = tempTree({
      "agentenv.config.ts": "export default {}",
      "repo/.git/HEAD": "ref: refs/heads/main",
      "repo/src/deep/x": "",
      "plain/sub/x": "",
    });
    expect(findProjectConfig(join(root, "plain/sub"))).toBe(join(root, "agentenv.config.ts"));
    expect(findProjectConfig(join(root, "repo/src/deep"))).toBeUndefined();
  });

  test("not past HOME; a file others may write, or that is not a file, is passed over", () => {
    const root = tempTree({ "agentenv.config.ts": "export default {}", "home/work/x/.keep": "", "up/agentenv.config.ts/.keep": "", "open/agentenv.config.ts": "export default {}", "open/in/.keep": "" });
    expect(findProjectConfig(join(root, "home/work/x"), join(root, "home"))).toBeUndefined();
    expect(findProjectConfig(join(root, "home/work/x"), join(root, "elsewhere"))).toBe(join(root, "agentenv.config.ts"));
    // a directory named like the config is no config; the search goes on upward
    expect(findProjectConfig(join(root, "up"))).toBe(join(root, "agentenv.config.ts"));
    chmodSync(join(root, "open/agentenv.config.ts"), 0o646);
    expect(findProjectConfig(join(root, "open/in"))).toBe(join(root, "agentenv.config.ts"));
    chmodSync(join(root, "open/agentenv.config.ts"), 0o664);
    expect(findProjectConfig(join(root, "open/in"))).toBe(join(root, "agentenv.config.ts"));
    chmodSync(join(root, "open/agentenv.config.ts"), 0o644);
    expect(findProjectConfig(join(root, "open/in"))).toBe(join(root, "open/agentenv.config.ts"));
  });

  test("an untrusted or changed config is not imported; trust is recorded by real path and hash", async () => {
    const project = tempTree({ "agentenv.config.ts": `export default { image: "from-project" };\n` });
    const env = { HOME: tempTree() };
    const untrusted = await loadConfig({ project, env });
    expect(untrusted.image).toBe("localhost/agentenv:latest");
    expect(untrusted.trust).toMatchObject({ project, trusted: false, config: { file: join(project, "agentenv.config.ts"), status: "untrusted" } });
    expect(untrusted.store).toBe("ephemeral");
    trustIn(env, project);
    const trusted = await loadConfig({ project, env });
    expect([trusted.image, trusted.store, trusted.trust?.trusted, trusted.trust?.config?.status]).toEqual(["from-project", "golden", true, "trusted"]);
    writeFileSync(join(project, "agentenv.config.ts"), `export default { image: "edited" };\n`);
    const changed = await loadConfig({ project, env });
    expect([changed.image, changed.trust?.trusted, changed.trust?.config?.status]).toEqual(["localhost/agentenv:latest", true, "changed"]);
    // commands that are no project's look for no project config at all
    expect((await loadConfig({ env })).trust).toBeUndefined();
  });
});

describe("config errors name the file and line", () => {
  test("syntax error", async () => {
    const project = tempTree({ "agentenv.config.ts": `export default {\n  image: "x",\n  extraEnv: { A: 1 +* },\n};\n` });
    const error = await loadConfig({ project, env: trustIn({ HOME: project }, project) }).catch((e) => e);
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toStartWith(`config ${join(project, "agentenv.config.ts")}:3: `);
  });

  test("thrown error", async () => {
    const project = tempTree({ "agentenv.config.ts": `const x = 1;\nthrow new Error("no token configured");\nexport default {};\n` });
    const error = await loadConfig({ project, env: trustIn({ HOME: project }, project) }).catch((e) => e);
    expect(error.message).toBe(`config ${join(project, "agentenv.config.ts")}:2: no token configured`);
  });

  test("a config function that throws", async () => {
    const project = tempTree({ "agentenv.config.ts": `export default () => {\n  throw new Error("no token");\n};\n` });
    const error = await loadConfig({ project, env: trustIn({ HOME: project }, project) }).catch((e) => e);
    expect(error.message).toBe(`config ${join(project, "agentenv.config.ts")}:2: no token`);
  });

  test("wrong types are refused before they reach the engine's argv", async () => {
    const cases: Array<[string, string]> = [
      [`{ extraRunArgs: "--privileged" }`, "extraRunArgs must be a list of strings"],
      [`{ extraEnv: { A: 1 } }`, "extraEnv.A must be a string"],
      [`{ mounts: [{ source: "x" }] }`, "each mount needs a string source and target"],
      [`{ image: 42 }`, "image must be a string"],
    ];
    for (const [body, message] of cases) {
      const project = tempTree({ "agentenv.config.ts": `export default ${body};\n` });
      await expect(loadConfig({ project, env: trustIn({ HOME: project }, project) })).rejects.toThrow(message);
    }
    const dropped = tempTree({ "agentenv.config.ts": `export default { extraEnv: { A: undefined, B: "b" } };\n` });
    expect((await loadConfig({ project: dropped, env: trustIn({ HOME: dropped }, dropped) })).extraEnv).toEqual({ B: "b" });
  });

  test("a default export that is not an object", async () => {
    const project = tempTree({ "agentenv.config.ts": `export default 42;\n` });
    await expect(loadConfig({ project, env: trustIn({ HOME: project }, project) })).rejects.toThrow("must be an object");
  });
});
