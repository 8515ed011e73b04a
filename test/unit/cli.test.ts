import { describe, expect, test } from "bun:test";
import { agentenv, tempTree } from "../helpers/cli.ts";

/** The command line as a user types it; --dry-run keeps every case off the engine. */
describe("command line", () => {
  const project = tempTree({ "sub/x": "" });
  const image = "localhost/agentenv:latest";
  const commandOf = (stdout: string) => stdout.trim().split(`${image} `)[1];

  test.each([
    [["run", "--dry-run", ".", "ls", "-la"], "ls -la"],
    [["run", "--dry-run", "git", "log", "--", "f"], "git log -- f"],
    [["run", "--dry-run", "make", "--", "-j4"], "make -- -j4"],
    [["run", "--dry-run", "sub", "--", "ls"], "ls"],
    [["--dry-run", "run", "echo", "--json"], "echo --json"],
  ])("run %p → %p", async (args, expected) => {
    const result = await agentenv(args, { cwd: project });
    expect(result.code).toBe(0);
    expect(commandOf(result.stdout)).toBe(expected);
  });

  test.each([
    [["run", "--image", "--", "true"], "agentenv: --image needs a value"],
    [["run", "--dry-run"], "agentenv: run needs a command: agentenv run [DIR] [--] CMD…"],
    [["--dry-run", ".", "ls"], "agentenv: unexpected argument ls"],
    [["doctor", "extra"], "agentenv: unexpected argument extra"],
    [["image"], "agentenv: image needs a command"],
    [["image", "bake"], "agentenv: unknown command image bake"],
    [["--bogus"], "agentenv: unknown option --bogus"],
  ])("%p is a usage error: help, then one line, exit 2", async (args, message) => {
    const result = await agentenv(args, { cwd: project });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("USAGE");
    expect(result.stderr.trim().split("\n").at(-1)).toBe(message);
    expect(result.stdout).toBe("");
  });

  test("--help of a nested command names the whole command", async () => {
    const result = await agentenv(["image", "build", "--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("agentenv image build");
    expect(result.stdout).toContain("--base");
  });

  test("a plugin's commands become agentenv commands, listed by `agentenv plugins`", async () => {
    const withPlugin = tempTree({
      "agentenv.config.ts": `
        import { definePlugin } from "agentenv";
        export default {
          plugins: [definePlugin({
            name: "greeter",
            commands: { greet: async () => ({ meta: { name: "greet" }, args: { who: { type: "positional" } }, run: ({ args }) => { console.log("hello " + args.who); return 3; } }) },
          })],
        };`,
    });
    const result = await agentenv(["greet", "world"], { cwd: withPlugin });
    expect(result.stdout).toBe("hello world\n");
    expect(result.code).toBe(3);
    const listed = await agentenv(["plugins", "--json"], { cwd: withPlugin });
    expect(JSON.parse(listed.stdout)).toContainEqual({ name: "greeter", source: `${withPlugin}/agentenv.config.ts`, hooks: [], commands: ["greet"] });
  });

  test("--runtime container without Apple's CLI on PATH says how to get it, in one line", async () => {
    const result = await agentenv(["run", "--runtime", "container", "--dry-run", project, "--", "true"]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe("agentenv: container is not installed (not found on PATH) — install Apple's container CLI (github.com/apple/container) on macOS");
  });
});
