import { describe, expect, test } from "bun:test";
import { parseWords } from "../../plugins/attach/command.ts";
import { checkTarget, sidecarPlan } from "../../plugins/attach/plan.ts";
import type { Plan } from "../../core/plan.ts";
import { OciRuntime, dockerDialect, podmanDialect } from "../../core/runtime/oci.ts";

const session: Plan = {
  image: "localhost/agentenv:latest",
  name: "agentenv-attach-web-0011aabb",
  hostname: "project",
  workdir: "/work",
  mounts: [
    { type: "bind", source: "/", target: "/work" },
    { type: "bind", source: "/store/sessions/x/merged", target: "/nix" },
    { type: "volume", source: "agentenv-env-me", target: "/root" },
  ],
  env: { AGENTENV_ENV: "me" },
  labels: { "agentenv.session": "run", "agentenv.project": "/", "agentenv.env": "me" },
  command: [],
  interactive: true,
  tty: false,
  remove: true,
  init: true,
  extraArgs: ["--dns", "1.1.1.1"],
  userns: "keep-id",
};

describe("attach: the words after the command", () => {
  test("TARGET, then its flags, then CMD after -- or from the first other word", () => {
    expect(parseWords(["web", "--env", "me", "--", "ls", "-la"], {})).toEqual({ target: "web", command: ["ls", "-la"], flags: { env: "me" } });
    expect(parseWords(["web", "ls", "--env", "x"], { runtime: "docker" })).toEqual({ target: "web", command: ["ls", "--env", "x"], flags: { runtime: "docker" } });
    expect(parseWords(["web", "--dry-run", "--store=none"], {})).toEqual({ target: "web", command: [], flags: { "dry-run": true, store: "none" } });
    expect(parseWords(["web", "-v", "--no-env", "--", "--"], {}).command).toEqual(["--"]);
  });

  test("mistakes are one line with exit code 2", () => {
    for (const words of [[], ["--"], ["web", "--bogus"], ["web", "--env"], ["web", "--env", "--"], ["-x"], ["web;rm"], ["../x"]]) {
      let error: unknown;
      try {
        parseWords(words, {});
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({ name: "UserError", exitCode: 2 });
    }
    expect(checkTarget("0123abcd")).toBe("0123abcd");
    expect(checkTarget("my_app.web-1")).toBe("my_app.web-1");
  });
});

describe("attach: the sidecar", () => {
  test("Podman: only the pid namespace shared, the helper as entrypoint, no project, no init, no keep-id, no --hostname", () => {
    const plan = sidecarPlan(session, "web", ["ps"], false);
    const argv = new OciRuntime("podman", podmanDialect).argv(plan);
    expect(argv).toEqual([
      [
        "podman", "run", "--rm", "-i", "--pull=never", "--name", "agentenv-attach-web-0011aabb", "-w", "/",
        "--entrypoint", "/usr/local/lib/agentenv/attach/agentenv-attach",
        "--label", "agentenv.session=attach", "--label", "agentenv.env=me", "--label", "agentenv.attach=web",
        "-v", "/store/sessions/x/merged:/nix", "-v", "agentenv-env-me:/root",
        "-e", "AGENTENV_ENV=me",
        "--pid", "container:web", "--network", "none",
        "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "SYS_CHROOT", "--security-opt", "apparmor=unconfined",
        "localhost/agentenv:latest", "--announce", "1", "--", "ps",
      ],
    ]);
  });

  test("Docker: the same, removed by a second call; a shell on a terminal gets -t", () => {
    const plan = sidecarPlan(session, "web", [], true);
    const [run, remove] = new OciRuntime("docker", dockerDialect).argv(plan);
    expect(run!.slice(0, 5)).toEqual(["docker", "run", "-i", "-t", "--pull=never"]);
    expect(run).not.toContain("--rm");
    expect(run!.slice(-4)).toEqual(["localhost/agentenv:latest", "--announce", "1", "--"]);
    expect(remove).toEqual(["docker", "rm", "--force", "agentenv-attach-web-0011aabb"]);
  });
});
