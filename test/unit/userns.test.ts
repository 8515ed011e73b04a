import { describe, expect, test } from "bun:test";
import { join } from "pathe";
import { loadConfig, mergeLayers } from "../../core/config.ts";
import { basePlan, containerHome, type Plan } from "../../core/plan.ts";
import { AppleContainerRuntime } from "../../core/runtime/apple.ts";
import { OciRuntime, dockerDialect, keepIdRefusal, podmanDialect } from "../../core/runtime/oci.ts";
import { tempTree, trustIn } from "../helpers/cli.ts";

const keepId = mergeLayers([{ name: "defaults", config: {} }, { name: "flags", config: { userns: "keep-id" } }]);
const podman = new OciRuntime("podman", podmanDialect);

function plan(overrides: Partial<Plan> = {}, config = keepId): Plan {
  return { ...basePlan({ project: "/home/me/proj", mode: "run", command: ["id"], config, stdinIsTTY: true }), name: "agentenv-proj-0000", ...overrides };
}

describe("userns config", () => {
  test("default root; config, AGENTENV_USERNS and --userns in the usual order", async () => {
    const project = tempTree({ "agentenv.config.ts": `export default { userns: "keep-id" };` });
    const env = trustIn({ HOME: project, XDG_CONFIG_HOME: join(project, ".config") }, project);
    expect((await loadConfig({ project: tempTree(), env })).userns).toBe("root");
    expect((await loadConfig({ project, env })).userns).toBe("keep-id");
    expect((await loadConfig({ project, env: { ...env, AGENTENV_USERNS: "root" } })).userns).toBe("root");
    expect((await loadConfig({ project, env: { ...env, AGENTENV_USERNS: "root" }, flags: { userns: "keep-id" } })).userns).toBe("keep-id");
  });

  test("an unknown mode is one error naming its source", async () => {
    const project = tempTree();
    await expect(loadConfig({ project, env: { HOME: project, AGENTENV_USERNS: "auto" } })).rejects.toThrow('unknown userns mode "auto" (from AGENTENV_USERNS)');
    await expect(loadConfig({ project, env: { HOME: project }, flags: { userns: "nomap" } })).rejects.toThrow('unknown userns mode "nomap" (from --userns)');
  });
});

describe("userns keep-id in the plan and the argv", () => {
  test("the default plan and argv are unchanged", () => {
    const root = plan({}, mergeLayers([{ name: "defaults", config: {} }]));
    expect(root.userns).toBeUndefined();
    expect(root.env.HOME).toBeUndefined();
    expect(podman.argv(root)[0]!.join(" ")).not.toContain("userns");
  });

  test("HOME stays /root, unless config's extraEnv says otherwise", () => {
    expect(plan().env.HOME).toBe(containerHome);
    const own = mergeLayers([{ name: "defaults", config: {} }, { name: "user", file: "/u", config: { userns: "keep-id", extraEnv: { HOME: "/home/me" } } }]);
    expect(plan({}, own).env.HOME).toBe("/home/me");
  });

  test("Podman: keep-id, a passwd line with HOME, a tmpfs HOME and a /nix of the user's when nothing is mounted there", () => {
    const args = podman.runArgs(plan());
    expect(args).toContain("--userns=keep-id");
    expect(args).toContain(`--passwd-entry=$USERNAME:*:$UID:$GID:$NAME:${containerHome}:/bin/sh`);
    expect(args.join(" ")).toContain(`--tmpfs ${containerHome}:rw,exec,U`);
    expect(args.join(" ")).toContain("-v /nix ");
    // everything before the image: the command is the user's
    expect(args.indexOf("--userns=keep-id")).toBeLessThan(args.indexOf("localhost/agentenv:latest"));
  });

  test("an environment's volume at /root and the golden store at /nix are left as they are", () => {
    const mounted = plan();
    mounted.mounts.push({ type: "volume", source: "agentenv-env-dev", target: containerHome }, { type: "bind", source: "/s/merged", target: "/nix" });
    const line = podman.runArgs(mounted).join(" ");
    expect(line).not.toContain("--tmpfs");
    expect(line).not.toContain("-v /nix ");
  });

  test("a container kept after it stops (up) gets a tmpfs /nix, not a volume `rm` would leave behind", () => {
    const line = podman.runArgs(plan({ remove: false, detach: true })).join(" ");
    expect(line).toContain("--tmpfs /nix:rw,exec,U");
  });

  test("Docker and Apple container refuse it in one line", () => {
    const docker = new OciRuntime("docker", dockerDialect);
    expect(() => docker.argv(plan())).toThrow("--userns keep-id needs rootless Podman: Docker cannot map your uid");
    const apple = new AppleContainerRuntime("container", { version: "1.2.0", platform: "darwin" });
    expect(() => apple.argv(plan())).toThrow("--userns keep-id needs rootless Podman: Apple container cannot map your uid");
  });

  test("local Podman as root refuses it (known without an engine call); rootless and remote Podman may try", () => {
    expect(keepIdRefusal("podman", {}, 0)?.message).toBe("--userns keep-id needs rootless Podman: Podman running as root refuses it");
    expect(keepIdRefusal("podman", {}, 1000)).toBeUndefined();
    // agentenv inside rootless Podman's user namespace is uid 0 there
    expect(keepIdRefusal("podman", { _CONTAINERS_USERNS_CONFIGURED: "done" }, 0)).toBeUndefined();
    expect(keepIdRefusal("podman", { CONTAINER_HOST: "ssh://me@host/run/podman.sock" }, 0)).toBeUndefined();
    expect(keepIdRefusal("docker", {}, 1000)?.hint).toContain("--userns root");
  });
});
