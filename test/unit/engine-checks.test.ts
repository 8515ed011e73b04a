import { describe, expect, test } from "bun:test";
import { join } from "pathe";
import { dockerDaemonAddress, podmanConfFile, rlimitAdvice } from "../../core/runtime/oci.ts";
import { agentenv } from "../helpers/cli.ts";

/** What `doctor` and `bin/setup` say about engines that do not answer and limits not granted. */
describe("an engine counts only when it answers", () => {
  test("the docker CLI's daemon address: from its own error, else DOCKER_HOST, else the default socket", () => {
    const stderr = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";
    expect(dockerDaemonAddress(stderr, {})).toBe("unix:///var/run/docker.sock");
    expect(dockerDaemonAddress("error during connect", { DOCKER_HOST: "tcp://10.0.0.5:2375" })).toBe("tcp://10.0.0.5:2375");
    expect(dockerDaemonAddress("", {})).toBe("unix:///var/run/docker.sock");
  });

  test.skipIf(!Bun.which("docker"))("doctor --runtime docker with no daemon behind the CLI: one line naming where it looked, and bin/setup as the fix", async () => {
    const result = await agentenv(["doctor", "--runtime", "docker", "--json"], { env: { DOCKER_HOST: "unix:///nonexistent/agentenv-docker.sock" } });
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toContainEqual({
      name: "engine",
      status: "fail",
      detail: "docker is installed but no daemon answers at unix:///nonexistent/agentenv-docker.sock",
      fix: "bin/setup (installs Podman, which agentenv then uses), or start the Docker daemon, or point DOCKER_HOST at one",
    });
  });

  test.skipIf(!Bun.which("docker") || !Bun.which("podman"))("doctor with Podman says an idle docker CLI is there and not used", async () => {
    const result = await agentenv(["doctor", "--json"], { env: { DOCKER_HOST: "unix:///nonexistent/agentenv-docker.sock" } });
    expect(JSON.parse(result.stdout)).toContainEqual({ name: "docker", status: "ok", detail: "docker is installed but no daemon answers at unix:///nonexistent/agentenv-docker.sock; agentenv uses podman" });
  });
});

describe("container limits the host does not grant", () => {
  const error = "Error: runc: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 6: operation not permitted: OCI permission denied";

  test("another error is not a limits problem", () => {
    expect(rlimitAdvice("Error: image not known", "/etc/containers/containers.conf", "")).toBeUndefined();
  });

  test("a containers.conf of bin/setup's is repaired by bin/setup; another is left to the user, with the fix", () => {
    const ours = rlimitAdvice(error, "/c.conf", '# written by agentenv bin/setup\n[containers]\ndefault_ulimits = ["nproc=96367:96367"]\n');
    expect(ours).toEqual({ detail: `containers cannot get the ulimits they ask for (${error})`, fix: "bin/setup (checks /c.conf's limits with a real container and lowers them)" });
    const theirs = rlimitAdvice(error, "/c.conf", '[containers]\ndefault_ulimits = ["nproc=96367:96367"]\n');
    expect(theirs?.fix).toBe('lower default_ulimits in /c.conf (e.g. "nproc=32768:32768"; try them with podman run --ulimit), or remove that line');
    const none = rlimitAdvice(error, "/c.conf", "");
    expect(none?.fix).toBe('set [containers] default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"] in /c.conf, or run bin/setup (it writes that file, checked with a real container)');
  });

  test("the containers.conf Podman reads: CONTAINERS_CONF, else root's system file, else the user's", () => {
    expect(podmanConfFile({ CONTAINERS_CONF: "/x.conf" }, 1000)).toBe("/x.conf");
    expect(podmanConfFile({}, 0)).toBe("/etc/containers/containers.conf");
    expect(podmanConfFile({ HOME: "/home/u" }, 1000)).toBe(join("/home/u", ".config/containers/containers.conf"));
    expect(podmanConfFile({ HOME: "/home/u", XDG_CONFIG_HOME: "/cfg" }, 1000)).toBe("/cfg/containers/containers.conf");
  });
});
