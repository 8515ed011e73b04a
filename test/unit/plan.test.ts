import { describe, expect, test } from "bun:test";
import { mergeLayers } from "../../core/config.ts";
import { basePlan, shellJoin, shellQuote } from "../../core/plan.ts";
import { OciRuntime, dockerDialect, podmanDialect } from "../../core/runtime/oci.ts";
import { splitRunArgs } from "../../core/cli.ts";
import { tempTree } from "../helpers/cli.ts";

const config = mergeLayers([{ name: "defaults", config: {} }]);

function fixedPlan(overrides = {}) {
  const plan = basePlan({ project: "/home/me/proj", mode: "run", command: ["echo", "hi there"], config, stdinIsTTY: true });
  return { ...plan, name: "agentenv-proj-0000", ...overrides };
}

describe("plan", () => {
  test("mounts the project at /work and runs there", () => {
    const plan = fixedPlan();
    expect(plan.mounts[0]).toEqual({ type: "bind", source: "/home/me/proj", target: "/work" });
    expect(plan.workdir).toBe("/work");
    expect(plan.remove).toBe(true);
  });

  test("a shell on a terminal gets -i and -t; run on a terminal gets neither; piped run gets -i", () => {
    const shell = basePlan({ project: "/p", mode: "shell", command: [], config, stdinIsTTY: true });
    expect([shell.interactive, shell.tty]).toEqual([true, true]);
    const shellPiped = basePlan({ project: "/p", mode: "shell", command: [], config, stdinIsTTY: false });
    expect([shellPiped.interactive, shellPiped.tty]).toEqual([true, false]);
    const run = basePlan({ project: "/p", mode: "run", command: ["true"], config, stdinIsTTY: true });
    expect([run.interactive, run.tty]).toEqual([false, false]);
    const piped = basePlan({ project: "/p", mode: "run", command: ["cat"], config, stdinIsTTY: false });
    expect([piped.interactive, piped.tty]).toEqual([true, false]);
  });

  test("config mounts resolve relative to the project and ~ to HOME", () => {
    const withMounts = mergeLayers([
      { name: "defaults", config: {} },
      { name: "project", file: "/x/agentenv.config.ts", config: { mounts: [{ source: "data", target: "/data", readonly: true }, { source: "~/cache", target: "/cache" }, { type: "volume", source: "vol", target: "/vol" }] } },
    ]);
    const plan = basePlan({ project: "/p", mode: "run", command: [], config: withMounts, stdinIsTTY: true });
    expect(plan.mounts.slice(1)).toEqual([
      { type: "bind", source: "/p/data", target: "/data", readonly: true },
      { type: "bind", source: `${process.env.HOME}/cache`, target: "/cache", readonly: undefined },
      { type: "volume", source: "vol", target: "/vol", readonly: undefined },
    ]);
  });

  test("container names are unique and engine-safe", () => {
    const a = basePlan({ project: "/p/My Project!", mode: "run", command: [], config, stdinIsTTY: true });
    const b = basePlan({ project: "/p/My Project!", mode: "run", command: [], config, stdinIsTTY: true });
    expect(a.name).toMatch(/^agentenv-my-project-[0-9a-f]{8}$/);
    expect(a.name).not.toBe(b.name);
  });
});

describe("shell quoting", () => {
  test("safe words stay bare; the rest is single-quoted", () => {
    expect(shellQuote("/work")).toBe("/work");
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote("")).toBe("''");
    expect(shellQuote("$HOME")).toBe("'$HOME'");
  });
});

describe("runtime argv (golden)", () => {
  const plan = fixedPlan({ env: { A: "1", SPACED: "x y" }, extraArgs: ["--cap-add", "SYS_PTRACE"] });

  test("podman", () => {
    const podman = new OciRuntime("podman", podmanDialect);
    expect(podman.argv(plan).map(shellJoin)).toEqual([
      "podman run --rm --init --pull=never --name agentenv-proj-0000 --hostname proj -w /work --label agentenv.session=run --label agentenv.project=/home/me/proj -v /home/me/proj:/work -e A=1 -e 'SPACED=x y' --cap-add SYS_PTRACE localhost/agentenv:latest echo 'hi there'",
    ]);
  });

  test("docker drives the same CLI shape, removing the container with a second call", () => {
    const docker = new OciRuntime("docker", dockerDialect);
    expect(docker.argv({ ...plan, interactive: true, tty: true, command: [] }).map(shellJoin)).toEqual([
      "docker run -i -t --init --pull=never --name agentenv-proj-0000 --hostname proj -w /work --label agentenv.session=run --label agentenv.project=/home/me/proj -v /home/me/proj:/work -e A=1 -e 'SPACED=x y' --cap-add SYS_PTRACE localhost/agentenv:latest",
      "docker rm --force agentenv-proj-0000",
    ]);
  });

  test("read-only mounts and volumes", () => {
    const podman = new OciRuntime("podman", podmanDialect);
    const argv = podman.argv({ ...plan, mounts: [{ type: "volume", source: "v", target: "/v", readonly: true }] })[0]!;
    expect(argv).toContain("v:/v:ro");
  });

  test("a ':' in a mount path is refused with a clear error", () => {
    const podman = new OciRuntime("podman", podmanDialect);
    expect(() => podman.argv({ ...plan, mounts: [{ type: "bind", source: "/a:b", target: "/w" }] })).toThrow(/does not allow ":"/);
  });
});

describe("run [DIR] [--] CMD", () => {
  const dir = tempTree({ "sub/file": "", "script.sh": "" });
  const values = new Set(["--runtime", "--image"]);
  const split = (argv: string[]) => splitRunArgs(argv.map((a) => a.replace("DIR", dir)), values);

  test("with --", () => {
    expect(split(["DIR", "--", "ls", "-la"])).toEqual({ flags: [], dir, command: ["ls", "-la"] });
    expect(split(["--", "ls"])).toEqual({ flags: [], dir: undefined, command: ["ls"] });
    expect(split(["--runtime", "docker", "DIR", "--dry-run", "--", "ls"])).toEqual({ flags: ["--runtime", "docker", "--dry-run"], dir, command: ["ls"] });
  });

  test("without --: a path is DIR; CMD keeps its own flags and its own --", () => {
    expect(split(["DIR", "ls", "--json"])).toEqual({ flags: [], dir, command: ["ls", "--json"] });
    expect(split(["echo", "hi"])).toEqual({ flags: [], dir: undefined, command: ["echo", "hi"] });
    expect(split(["-v", "true"])).toEqual({ flags: ["-v"], dir: undefined, command: ["true"] });
    expect(split(["git", "log", "--", "f"])).toEqual({ flags: [], dir: undefined, command: ["git", "log", "--", "f"] });
    expect(split(["make", "--", "-j4"])).toEqual({ flags: [], dir: undefined, command: ["make", "--", "-j4"] });
    expect(split(["DIR/script.sh", "--", "x"])).toEqual({ flags: [], dir: undefined, command: [`${dir}/script.sh`, "--", "x"] });
  });

  test("a bare word is DIR only when it is a directory and -- follows", () => {
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      expect(splitRunArgs(["sub", "--", "ls"], values)).toEqual({ flags: [], dir: "sub", command: ["ls"] });
      expect(splitRunArgs(["sub", "ls"], values)).toEqual({ flags: [], dir: undefined, command: ["sub", "ls"] });
    } finally {
      process.chdir(cwd);
    }
  });

  test("a missing path is DIR, so the user hears that it is missing", () => {
    expect(split(["./missing", "ls"])).toEqual({ flags: [], dir: "./missing", command: ["ls"] });
  });

  test("a value flag without its value is an error", () => {
    expect(() => split(["--image", "--", "true"])).toThrow("--image needs a value");
    expect(() => split(["--runtime"])).toThrow("--runtime needs a value");
  });
});
