import { describe, expect, test } from "bun:test";
import { symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "pathe";
import { repeatedFlag } from "../../core/commands/_shared.ts";
import { checkEnvName, loadConfig } from "../../core/config.ts";
import { checkKeepPath, keepPaths } from "../../plugins/env/lifecycle.ts";
import { guessShell, scanTemplate } from "../../plugins/env/template.ts";
import { profileTarget } from "../../plugins/profile/index.ts";
import { tempTree, trustIn } from "../helpers/cli.ts";

describe("environment names", () => {
  test("a-z 0-9 . _ -, starting with a letter or digit, at most 63", () => {
    for (const good of ["dev", "a", "work.2", "my_env-1", "x".repeat(63)]) expect(checkEnvName(good, "test")).toBe(good);
    for (const bad of ["Dev", "-x", ".x", "a/b", "a b", "x".repeat(64), "é"]) expect(() => checkEnvName(bad, "test")).toThrow(/invalid environment name/);
    expect(checkEnvName("", "test")).toBeUndefined();
  });
});

describe("env config", () => {
  const project = tempTree({ "agentenv.config.ts": `export default { env: { default: "dev", autoCreate: true, template: "./home" } };\n` });
  const env = trustIn({ HOME: tempTree() }, project);

  test("config's default, with a template relative to the config file", async () => {
    const config = await loadConfig({ project, env });
    expect(config.env).toEqual({ name: "dev", autoCreate: true, template: join(project, "home"), strict: false });
  });

  test("AGENTENV_ENV and --env override it; --no-env (and AGENTENV_ENV=) clear it", async () => {
    expect((await loadConfig({ project, env: { ...env, AGENTENV_ENV: "other" } })).env.name).toBe("other");
    expect((await loadConfig({ project, env, flags: { env: "flag" } })).env.name).toBe("flag");
    expect((await loadConfig({ project, env, flags: { env: "" } })).env.name).toBeUndefined();
    expect((await loadConfig({ project, env: { ...env, AGENTENV_ENV: "" } })).env.name).toBeUndefined();
    await expect(loadConfig({ project, env, flags: { env: "Bad" } })).rejects.toThrow('invalid environment name "Bad" (from --env)');
  });

  test("a wrongly typed env block is named", async () => {
    const bad = tempTree({ "agentenv.config.ts": `export default { env: { autoCreate: "yes" } };\n` });
    await expect(loadConfig({ project: bad, env: trustIn(env, bad) })).rejects.toThrow("env.autoCreate must be true or false");
  });
});

describe("templates", () => {
  test("the hash follows content, modes and links, not the directory's place or timestamps", () => {
    const files = { ".zshrc": "a\n", "dir/file": "b\n" };
    const one = tempTree(files);
    const two = tempTree(files);
    expect(scanTemplate(one).hash).toBe(scanTemplate(two).hash);
    expect(scanTemplate(one)).toMatchObject({ files: 2, bytes: 4, shell: "zsh" });
    chmodSync(join(two, "dir/file"), 0o755);
    expect(scanTemplate(two).hash).not.toBe(scanTemplate(one).hash);
    writeFileSync(join(one, "dir/file"), "c\n");
    const changed = scanTemplate(one).hash;
    symlinkSync("dir/file", join(one, "link"));
    expect(scanTemplate(one).hash).not.toBe(changed);
  });

  test("the shell follows the template's config files", () => {
    expect(guessShell(tempTree({ ".config/zsh/.zshrc": "" }))).toBe("zsh");
    expect(guessShell(tempTree({ ".bashrc": "" }))).toBe("bash");
    expect(guessShell(tempTree({ ".bashrc": "", ".zshenv": "" }))).toBe("zsh");
    expect(guessShell(tempTree({ "notes.txt": "" }))).toBeUndefined();
  });
});

describe("paths", () => {
  test("--keep takes paths inside HOME, never agentenv's own state", () => {
    expect(checkKeepPath(".zsh_history")).toBe(".zsh_history");
    expect(checkKeepPath("~/.claude/")).toBe(".claude");
    for (const bad of ["/etc", "../x", "a/../../b", "", "~", "./x"]) expect(() => checkKeepPath(bad)).toThrow(/give a path inside HOME/);
    for (const state of [".local/state/agentenv", ".local/state/agentenv/env.json", ".local"]) expect(() => checkKeepPath(state)).toThrow(/agentenv's own record/);
  });

  test("a kept path inside another kept path goes with it (keeping both would lose the inner one)", () => {
    expect(keepPaths([".claude/projects", ".claude", ".zsh_history", ".zsh_history", ".claude-other"])).toEqual([".claude", ".claude-other", ".zsh_history"]);
  });

  test("a profile appears at its place under HOME, else under its own name", () => {
    expect(profileTarget("/home/me/config", "/home/me")).toBe("config");
    expect(profileTarget("/home/me/src/dots", "/home/me")).toBe("src/dots");
    expect(profileTarget("/srv/profiles/work", "/home/me")).toBe("work");
  });

  test("repeated flags keep every value, up to --", () => {
    expect(repeatedFlag(["x", "--keep", "a", "--keep=b", "--other", "c", "--keep", "d", "--", "--keep", "e"], "--keep")).toEqual(["a", "b", "d"]);
  });
});
