import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, entry, isolatedEnv, tempTree } from "../helpers/cli.ts";
import { devShellFlake, expectNoStackTrace, leftoverContainers, requireImage } from "../helpers/engine.ts";

beforeAll(() => requireImage());

describe("agentenv run on Podman", () => {
  test("runs in a container at /work, passes stdout and stderr through, and exits with the command's code", async () => {
    const project = tempTree({ "hello.txt": "from the host\n" });
    const result = await agentenv(["run", project, "--", "sh", "-c", 'pwd; cat hello.txt; echo oops >&2; echo made-inside > inside.txt; exit 7']);
    expect(result.stdout).toBe("/work\nfrom the host\n");
    expect(result.stderr).toContain("oops");
    expect(result.code).toBe(7);
    expect(readFileSync(join(project, "inside.txt"), "utf8")).toBe("made-inside\n");
    expect(leftoverContainers(project)).toEqual([]);
  });

  test("a command killed by a signal exits 128+N", async () => {
    const project = tempTree();
    const result = await agentenv(["run", project, "sh", "-c", "kill -9 $$"]);
    expect(result.code).toBe(137);
  });

  test("SIGTERM or SIGINT sent to agentenv alone stops the command, and the container is gone", async () => {
    // as with a local process, the signal reaches the command itself (a shell script
    // that is waiting for a child acts on SIGINT only when the child ends: hence exec)
    for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
      const project = tempTree();
      const child = Bun.spawn([process.execPath, entry, "run", project, "--", "sh", "-c", "touch /work/started; exec sleep 60"], {
        env: { ...process.env, ...isolatedEnv() },
        stdio: ["ignore", "ignore", "pipe"],
      });
      for (let i = 0; i < 200 && !existsSync(join(project, "started")); i++) await Bun.sleep(50);
      expect(existsSync(join(project, "started"))).toBe(true);
      child.kill(signal);
      const started = performance.now();
      expect(await child.exited).toBe(code);
      expect(performance.now() - started).toBeLessThan(30_000); // not the 60 s of the sleep
      expect(leftoverContainers(project)).toEqual([]);
    }
  });

  test("-- is optional when unambiguous, and CMD keeps its own flags", async () => {
    const project = tempTree();
    const result = await agentenv(["run", "--", "ls", "-d", "/work"], { cwd: project });
    expect(result.stdout.trim()).toBe("/work");
    const bare = await agentenv(["run", "echo", "--json"], { cwd: project });
    expect(bare.stdout.trim()).toBe("--json");
  });

  test("stdin is passed to a run command when piped", async () => {
    const result = await agentenv(["run", tempTree(), "--", "tr", "a-z", "A-Z"], { stdin: "piped text\n" });
    expect(result.stdout).toBe("PIPED TEXT\n");
  });

  test("a project with a flake.nix gets its dev shell", async () => {
    const project = tempTree({ "flake.nix": devShellFlake });
    const result = await agentenv(["run", project, "--", "sh", "-c", "echo dev=$HELLO_FROM_SHELL"]);
    expect(result.stdout).toContain("dev=yes");
    expect(result.code).toBe(0);
  });

  test("without a flake the shell is a plain login shell (zsh in the default image)", async () => {
    const project = tempTree();
    const result = await agentenv([project], { stdin: 'echo "shell=$0"; [[ -o login ]] && echo login=yes; echo "dev=${HELLO_FROM_SHELL:-none}"; exit 3\n' });
    expect(result.stdout).toBe("shell=/usr/bin/zsh\nlogin=yes\ndev=none\n");
    expect(result.code).toBe(3);
  });

  test("an agentenv.config.ts hook changes the plan, and the container sees it", async () => {
    const project = tempTree({
      "agentenv.config.ts": `
        import { defineConfig } from "agentenv";
        export default defineConfig({
          extraEnv: { FROM_CONFIG: "config" },
          mounts: [{ source: "./data", target: "/data", readonly: true }],
          hooks: { "session:boot"(ctx) { ctx.plan.env.FROM_HOOK = "hook-" + ctx.mode; } },
        });`,
      "data/item": "mounted\n",
    });
    const result = await agentenv(["run", project, "--", "sh", "-c", "echo $FROM_CONFIG $FROM_HOOK; cat /data/item; touch /data/x 2>/dev/null || echo read-only"]);
    expect(result.stdout).toBe("config hook-run\nmounted\nread-only\n");
  });
});

describe("bad input: one clear line, non-zero, nothing left behind", () => {
  test("DIR missing or not a directory", async () => {
    const missing = await agentenv(["run", "/nonexistent/project", "--", "true"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe("agentenv: /nonexistent/project: no such directory — pass an existing project directory");
    const file = tempTree({ f: "" });
    const notDir = await agentenv([join(file, "f")]);
    expect(notDir.stderr.trim()).toEndWith("not a directory — pass a project directory, not a file");
  });

  test("unknown runtime", async () => {
    const result = await agentenv(["run", "--runtime", "lxc", tempTree(), "--", "true"]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe('agentenv: unknown runtime "lxc" (from --runtime) — use one of: podman, docker, container');
  });

  test("engine not installed", async () => {
    const result = await agentenv(["run", "--runtime", "docker", tempTree(), "--", "true"], { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
    expect(result.stderr.trim()).toBe("agentenv: docker is not installed (not found on PATH) — install Docker, or use --runtime podman");
  });

  test("image missing", async () => {
    const project = tempTree();
    const result = await agentenv(["run", "--image", "localhost/agentenv-missing:none", project, "--", "true"]);
    expect(result.code).toBe(125);
    expect(result.stderr).toContain("agentenv: image localhost/agentenv-missing:none not found in podman — run `agentenv image build` (or `agentenv image pull REF` for one pushed from another machine)\n");
    expect(leftoverContainers(project)).toEqual([]);
  });

  test("config syntax error and thrown error name the file and line", async () => {
    const project = tempTree({ "agentenv.config.ts": `export default {\n  image: "x"\n  extraEnv: {},\n};\n` });
    const result = await agentenv(["run", project, "--", "true"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toStartWith(`agentenv: config ${join(project, "agentenv.config.ts")}:3: `);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  test("unknown flag or command shows help and the error", async () => {
    const flag = await agentenv(["run", "--frobnicate", "--", "true"]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("USAGE");
    expect(flag.stderr.trim()).toEndWith("agentenv: unknown option --frobnicate");
    const command = await agentenv(["frobnicate"]);
    expect(command.code).toBe(2);
    expect(command.stderr.trim()).toEndWith("agentenv: unknown command or directory: frobnicate");
  });

  test("a failing user hook names plugin and hook, and no container is created", async () => {
    const project = tempTree({
      "agentenv.config.ts": `export default { plugins: [{ name: "vault", hooks: { "session:mount"() { throw new Error("token expired"); } } }] };`,
    });
    const result = await agentenv(["run", project, "--", "touch", "/work/should-not-exist"]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe("agentenv: plugin vault failed in hook session:mount: token expired");
    expectNoStackTrace(result.stderr);
    expect(existsSync(join(project, "should-not-exist"))).toBe(false);
    expect(leftoverContainers(project)).toEqual([]);
  });
});

describe("--dry-run and --json run nothing", () => {
  test("--dry-run prints the exact, shell-quoted engine command, which runs as printed", async () => {
    const project = tempTree({ "flake.nix": devShellFlake });
    // the golden store's per-session clone is made when a session starts, which a dry
    // run never does: replaying needs a plan without it
    const result = await agentenv(["run", "--dry-run", "--no-store", project, "--", "sh", "-c", "echo $HELLO_FROM_SHELL > out.txt"]);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith("podman run --rm ");
    expect(lines[0]).toContain(`-v ${project}:/work`);
    expect(lines[0]).toContain("-e AGENTENV_NIX_DEVELOP=/work");
    expect(lines[0]).toEndWith(`localhost/agentenv:latest sh -c 'echo $HELLO_FROM_SHELL > out.txt'`);
    expect(existsSync(join(project, "out.txt"))).toBe(false);
    // the printed line is the real thing: running it does what the session would
    const replay = Bun.spawnSync(["sh", "-c", lines[0]!]);
    expect(replay.exitCode).toBe(0);
    expect(readFileSync(join(project, "out.txt"), "utf8")).toBe("yes\n");
  });

  test("--json prints the resolved plan", async () => {
    const project = tempTree();
    const result = await agentenv(["--json", project]);
    const parsed = JSON.parse(result.stdout);
    expect(parsed.runtime).toBe("podman");
    expect(parsed.plan.mounts[0]).toEqual({ type: "bind", source: project, target: "/work" });
    expect(parsed.plan.command).toEqual([]);
    expect(parsed.plugins).toContain("nix");
    expect(parsed.argv[0].slice(0, 3)).toEqual(["podman", "run", "--rm"]);
  });
});
