import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { splitRunArgs } from "../../core/cli.ts";
import { lockFile } from "../../core/linux.ts";
import { OciRuntime, dockerDialect, podmanDialect } from "../../core/runtime/oci.ts";
import { missingRoots, rootMarker, type EnvContainer } from "../../plugins/wrap/container.ts";
import { checkBranch, checkNixDevelop, execOptions, inContainer, parseSets, type ExecRequest } from "../../plugins/wrap/exec.ts";
import { isUnder, projectOf } from "../../core/trust.ts";
import { checkRoots, hostRoots } from "../../plugins/wrap/roots.ts";
import { agentenvCommand } from "../../core/paths.ts";
import { readSpec, renderWrapper, type WrapperSpec } from "../../plugins/wrap/wrapper.ts";
import { agentenv, tempTree } from "../helpers/cli.ts";

const request: ExecRequest = { nixDevelop: "auto", set: { GREETING: "hi there" }, runArgs: ["--user=0"] };

describe("exec argv", () => {
  test("podman and docker: -i, -t only with a terminal, -w, plain -e settings, extra args, then agentenv-exec", () => {
    for (const [bin, dialect] of [["podman", podmanDialect], ["docker", dockerDialect]] as const) {
      const runtime = new OciRuntime(bin, dialect);
      expect(runtime.execArgv("agentenv-up-dev", execOptions(request, "/src/app", true), inContainer(["claude", "-p", "x"]))).toEqual([
        bin, "exec", "-i", "-t", "-w", "/src/app", "-e", "AGENTENV_NIX_DEVELOP=auto", "-e", "GREETING=hi there", "--user=0", "agentenv-up-dev", "agentenv-exec", "claude", "-p", "x",
      ]);
      const worktree = execOptions({ ...request, worktree: "feat/x", set: {}, runArgs: [] }, "/src/app", false);
      expect(runtime.execArgv("c", worktree, inContainer([]))).toEqual([bin, "exec", "-i", "-w", "/src/app", "-e", "AGENTENV_NIX_DEVELOP=auto", "-e", "AGENTENV_WORKTREE=feat/x", "c", "agentenv-exec"]);
    }
  });

  test("a detached plan is `run -d`, removed by `down`, not after run", () => {
    const runtime = new OciRuntime("docker", dockerDialect);
    const plan = { image: "img", name: "n", hostname: "h", workdir: "/w", mounts: [], env: {}, labels: {}, command: ["agentenv-keepalive"], interactive: false, tty: false, remove: false, detach: true, init: true, extraArgs: [] };
    expect(runtime.argv(plan)).toEqual([["docker", "run", "-d", "--init", "--pull=never", "--name", "n", "--hostname", "h", "-w", "/w", "img", "agentenv-keepalive"]]);
  });

  test("exec's words: flags up to the first word, then all of it is the command (no DIR)", () => {
    const values = new Set(["--env"]);
    expect(splitRunArgs(["--env", "dev", "ls", "-la", "--env", "x"], values, false)).toEqual({ flags: ["--env", "dev"], command: ["ls", "-la", "--env", "x"], dir: undefined });
    expect(splitRunArgs([".", "ls"], values, false)).toEqual({ flags: [], command: [".", "ls"], dir: undefined });
    expect(splitRunArgs(["--", "-x"], values, false)).toEqual({ flags: [], command: ["-x"], dir: undefined });
  });

  test("--set, --worktree and --nix-develop are checked", () => {
    expect(parseSets(["A=1", "B=x=y", "C="])).toEqual({ A: "1", B: "x=y", C: "" });
    expect(() => parseSets(["=1"])).toThrow("--set =1: expected NAME=VALUE");
    expect(() => parseSets(["1A=x"])).toThrow("expected NAME=VALUE");
    for (const ok of ["main", "feat/x", "fix-1.2", "user/a+b"]) expect(checkBranch(ok)).toBe(ok);
    for (const bad of ["../x", "-x", "a..b", "a//b", "a/", "x.lock", "a/.b", "a b", "a:b", "a~1", ""]) expect(() => checkBranch(bad)).toThrow("not a branch name git accepts");
    expect(checkNixDevelop(undefined, "never")).toBe("never");
    expect(checkNixDevelop("always", "never")).toBe("always");
    expect(() => checkNixDevelop("sometimes", "never")).toThrow("--nix-develop sometimes: use auto, always or never");
  });
});

describe("roots", () => {
  test("real paths, no system paths, nested roots dropped, prefixes are not nesting", () => {
    const base = realpathSync(tempTree({ "a/x/.keep": "", "ab/.keep": "" }));
    expect(checkRoots([join(base, "a"), join(base, "a/x"), join(base, "ab")])).toEqual([join(base, "a"), join(base, "ab")]);
    expect(isUnder(join(base, "ab"), join(base, "a"))).toBe(false);
    expect(isUnder(join(base, "a/x"), join(base, "a"))).toBe(true);
    expect(missingRoots([join(base, "a")], [join(base, "a/x"), join(base, "ab")])).toEqual([join(base, "ab")]);
    for (const bad of ["/", "/usr", "/usr/share", "/nix", "/etc", "/proc"]) expect(() => checkRoots([bad])).toThrow("the container needs that path for itself");
    expect(() => checkRoots(["/root"])).toThrow("root /root: inside /root, which is the environment's home in the container");
    expect(() => checkRoots([join(base, "missing")])).toThrow("no such directory");
    expect(() => checkRoots([join(base, "a/x/.keep")])).toThrow("not a directory");
  });

  test("roots of a container on a host (--host box): box:/path there, any other here (shared); checked, nested ones dropped, none across sides", () => {
    const base = realpathSync(tempTree({ "a/.keep": "", "b/.keep": "" }));
    expect(hostRoots(undefined, "box")).toBeUndefined();
    expect(hostRoots("box:/srv/app/,box:/srv/app/sub,box:/srv/lib", "box")).toEqual({ roots: ["/srv/app", "/srv/lib"], shared: [] });
    expect(hostRoots(`${join(base, "b")},box:/srv/app,${join(base, "a")}`, "box")).toEqual({ roots: ["/srv/app", join(base, "a"), join(base, "b")].sort(), shared: [join(base, "a"), join(base, "b")] });
    expect(() => hostRoots(",", "box")).toThrow("--roots needs at least one directory");
    expect(() => hostRoots("other:/srv", "box")).toThrow("root other:/srv is on host other, but the container runs on box");
    for (const bad of ["box:srv", "box:/srv/../etc", "box:/a:b", "box:/srv/x\ny"]) expect(() => hostRoots(bad, "box")).toThrow("must be an absolute path with no");
    for (const bad of ["box:/", "box:/etc", "box:/nix/store", "box:/usr/"]) expect(() => hostRoots(bad, "box")).toThrow("the container needs that path for itself");
    expect(() => hostRoots("box:/root/code", "box")).toThrow("inside /root");
    expect(() => hostRoots(`${join(base, "a")},box:${base}`, "box")).toThrow(`root ${join(base, "a")} (on this machine) and a root on box contain one another`);
    expect(() => hostRoots(join(base, "missing"), "box")).toThrow("no such directory");
  });

  test("system paths are refused whether or not this host has them, and through a symlink", () => {
    const base = realpathSync(tempTree({}));
    for (const bad of ["/nix/store/x-agentenv-missing", "/lib32/agentenv-missing", "/usr/agentenv/missing"]) {
      expect(existsSync(bad)).toBe(false);
      expect(() => checkRoots([bad])).toThrow(`root ${bad}: the container needs that path for itself`);
    }
    symlinkSync("/etc", join(base, "etc-link"));
    expect(() => checkRoots([join(base, "etc-link")])).toThrow("root /etc: the container needs that path for itself");
  });

  test("the current project: the nearest .git or agentenv config up, not above HOME", () => {
    const home = realpathSync(tempTree({ ".git/HEAD": "", "code/app/.git/HEAD": "", "code/app/src/.keep": "", "notes/deep/.keep": "", "code/cfg/agentenv.config.ts": "", "code/cfg/x/.keep": "" }));
    expect(projectOf(join(home, "code/app/src"), home)).toBe(join(home, "code/app"));
    expect(projectOf(join(home, "code/cfg/x"), home)).toBe(join(home, "code/cfg"));
    // HOME's own .git (a dotfiles repo) does not make HOME the project
    expect(projectOf(join(home, "notes/deep"), home)).toBe(join(home, "notes/deep"));
  });
});

describe("wrapper script", () => {
  /** Runs the generated script with a fake engine and a fake agentenv (both print their argv): the script's own logic, for real. */
  function setup(root: string) {
    const dir = realpathSync(tempTree());
    const handoff = join(dir, "handoff");
    mkdirSync(join(handoff, "roots"), { recursive: true });
    const fake = (name: string) => {
      const path = join(dir, name);
      writeFileSync(path, `#!/bin/sh\nprintf '${name}:'; printf ' [%s]' "$@"; echo\n`);
      chmodSync(path, 0o755);
      return path;
    };
    const spec: WrapperSpec = { name: "claude", env: "dev", roots: [root], runtime: "podman", path: join(dir, "bin", "claude"), ...request };
    const container: EnvContainer = { name: "agentenv-up-dev", env: "dev", runtime: "podman", hostLocks: true, handoff, stateFile: join(dir, "state.json") };
    const script = renderWrapper({ spec, container, runtime: new OciRuntime("podman", podmanDialect), engine: fake("fake-podman"), agentenv: [fake("fake-agentenv")], flock: Bun.which("flock")! });
    const wrapper = join(dir, "claude");
    writeFileSync(wrapper, script);
    chmodSync(wrapper, 0o755);
    const call = (cwd: string) => {
      const out = Bun.spawnSync([wrapper, "-p", "it's"], { cwd, stdin: "ignore" });
      return { code: out.exitCode, stdout: out.stdout.toString(), stderr: out.stderr.toString() };
    };
    return { dir, handoff, wrapper, call, spec };
  }

  test("outside its roots: one line naming them, exit 126; a sibling with the root as prefix is outside", () => {
    const base = realpathSync(tempTree({ "proj/.keep": "", "projx/.keep": "" }));
    const { call } = setup(join(base, "proj"));
    const out = call(join(base, "projx"));
    expect(out.stderr).toBe(`claude: ${base}/projx is outside the roots of this wrapper: ${base}/proj (agentenv wrap claude --roots … changes them)\n`);
    expect(out.code).toBe(126);
  });

  test("not alive → agentenv exec with the same settings; alive and serving the root → the engine directly", () => {
    const base = realpathSync(tempTree({ "my proj's/sub/.keep": "" }));
    const root = join(base, "my proj's");
    const { handoff, call, wrapper, spec } = setup(root);
    expect(Bun.spawnSync(["sh", "-n", wrapper]).exitCode).toBe(0);
    expect(readSpec(wrapper)).toEqual(spec);
    const slow = `fake-agentenv: [exec] [--env] [dev] [--runtime] [podman] [--roots] [${root}] [--nix-develop] [auto] [--set] [GREETING=hi there] [--run-arg=--user=0] [--] [claude] [-p] [it's]\n`;
    expect(call(join(root, "sub")).stdout).toBe(slow);

    // a ready file nobody holds a lock on: a container that died without a stop
    writeFileSync(join(handoff, "up"), "");
    writeFileSync(rootMarker(handoff, root), "");
    expect(call(join(root, "sub")).stdout).toBe(slow);

    const held = lockFile(join(handoff, "up"), "exclusive")!;
    try {
      const fast = call(join(root, "sub")).stdout;
      expect(fast).toBe(`fake-podman: [exec] [-i] [-w] [${root}/sub] [-e] [AGENTENV_NIX_DEVELOP=auto] [-e] [GREETING=hi there] [--user=0] [agentenv-up-dev] [agentenv-exec] [claude] [-p] [it's]\n`);
    } finally {
      held.release();
    }
  });

  test("a container serving a parent directory of the wrapper's root serves it too", () => {
    const base = realpathSync(tempTree({ "code/app/.keep": "" }));
    const { handoff, call } = setup(join(base, "code/app"));
    writeFileSync(join(handoff, "up"), "");
    writeFileSync(rootMarker(handoff, join(base, "code")), "");
    const held = lockFile(join(handoff, "up"), "exclusive")!;
    try {
      expect(call(join(base, "code/app")).stdout).toStartWith("fake-podman: [exec]");
    } finally {
      held.release();
    }
  });

  test("agentenv's own command line: bun and the script, or the compiled binary alone", () => {
    expect(agentenvCommand("/usr/bin/bun", import.meta.path)).toEqual(["/usr/bin/bun", import.meta.path]);
    expect(agentenvCommand("/usr/local/bin/agentenv", "/$bunfs/root/agentenv")).toEqual(["/usr/local/bin/agentenv"]);
  });
});

describe("command line", () => {
  test("wrap and exec refuse bad input with one line", async () => {
    const dir = tempTree();
    expect((await agentenv(["wrap", "../evil", "--no-env", "--bin-dir", dir])).stderr).toBe("agentenv: ../evil: not a command name\n");
    expect((await agentenv(["wrap", "--no-env"])).stderr).toBe("agentenv: wrap needs the NAME of a command — agentenv wrap claude, or agentenv wrap --list\n");
    expect((await agentenv(["exec", "--no-env", "--roots", "/usr", "--", "true"], { cwd: dir })).stderr).toBe("agentenv: root /usr: the container needs that path for itself — use a project directory, e.g. ~/Code\n");
    expect((await agentenv(["exec", "--no-env", "--set", "x", "--", "true"], { cwd: dir })).stderr).toBe("agentenv: --set x: expected NAME=VALUE — secrets belong in `agentenv secret set`, not on a command line\n");
  });

  test("exec --dry-run prints the engine command", async () => {
    const dir = realpathSync(tempTree());
    const result = await agentenv(["exec", "--no-env", "--runtime", "podman", "--dry-run", "--", "ls", "-la"], { cwd: dir });
    expect(result.stdout).toBe(`podman exec -i -w ${dir} -e AGENTENV_NIX_DEVELOP=never agentenv-up agentenv-exec ls -la\n`);
    expect(result.code).toBe(0);
  });
});
