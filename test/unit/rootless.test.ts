import { describe, expect, test } from "bun:test";
import { hostUid } from "../../core/paths.ts";
import { rootlessChecks, type RootlessHost } from "../../core/runtime/rootless.ts";
import { pausePidFiles, reasonToStay } from "../../core/runtime/userns.ts";

const healthy: RootlessHost = {
  uid: 1001,
  user: "dev",
  subuid: "root:100000:65536\ndev:165536:65536\n",
  subgid: "1001:165536:65536\n",
  newuidmap: true,
  xdgRuntimeDir: "/run/user/1001",
  xdgOwner: 1001,
  tun: "ok",
  joined: true,
};

const failing = (host: Partial<RootlessHost>) => rootlessChecks({ ...healthy, ...host }).filter((c) => c.status !== "ok");

describe("doctor's rootless checks", () => {
  test("a healthy host: ranges by name or by uid, nothing to fix", () => {
    expect(failing({})).toEqual([]);
    expect(rootlessChecks(healthy)[0]).toMatchObject({ name: "rootless ids", status: "ok" });
  });

  test("no subordinate range (or a zero-sized one) names the file and the usermod that fixes it", () => {
    const [check] = failing({ subuid: "other:100000:65536\n", subgid: "dev:100000:0\n" });
    expect(check).toMatchObject({ name: "rootless ids", status: "fail" });
    expect(check!.detail).toContain("/etc/subuid and /etc/subgid");
    expect(check!.fix).toBe("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 dev && podman system migrate");
  });

  test("missing newuidmap, an unset or foreign XDG_RUNTIME_DIR, and /dev/net/tun each say how to fix them", () => {
    expect(failing({ newuidmap: false })).toEqual([expect.objectContaining({ name: "newuidmap", status: "fail", fix: "sudo apt-get install uidmap" })]);
    expect(failing({ xdgRuntimeDir: undefined, xdgOwner: undefined })).toEqual([expect.objectContaining({ name: "runtime dir", status: "warn" })]);
    expect(failing({ xdgOwner: 0 })[0]!.detail).toBe("XDG_RUNTIME_DIR=/run/user/1001 is owned by uid 0, not by you");
    expect(failing({ xdgOwner: undefined })[0]!.detail).toContain("is not a directory");
    expect(failing({ tun: "denied" })).toEqual([expect.objectContaining({ name: "network", status: "fail", fix: "sudo chmod 666 /dev/net/tun (udev does this on most distributions)" })]);
    expect(failing({ tun: "missing" })).toEqual([expect.objectContaining({ name: "network", status: "warn" })]);
    expect(failing({ joined: false })).toEqual([expect.objectContaining({ name: "user namespace", status: "warn", fix: expect.stringContaining("nsenter") })]);
  });
});

describe("joining rootless Podman's namespace", () => {
  const user = { platform: "linux", uid: 1001, env: {} };
  test("a normal user on Linux joins; root, other systems, a remote Podman and a process already inside stay", () => {
    expect(reasonToStay(user)).toBeUndefined();
    expect(reasonToStay({ ...user, uid: 0 })).toContain("root");
    expect(reasonToStay({ ...user, platform: "darwin" })).toContain("not Linux");
    expect(reasonToStay({ ...user, env: { CONTAINER_HOST: "ssh://x" } })).toContain("remote");
    // what agentenv's own re-exec (and `podman unshare`) sets: no second join
    expect(reasonToStay({ ...user, env: { _CONTAINERS_USERNS_CONFIGURED: "done" } })).toContain("already inside");
  });

  test("the pause process's pid file is looked for where Podman keeps it, XDG_RUNTIME_DIR first", () => {
    expect(pausePidFiles(1001, { XDG_RUNTIME_DIR: "/run/user/1001", TMPDIR: "/var/tmp" })).toEqual([
      "/run/user/1001/libpod/tmp/pause.pid",
      "/var/tmp/podman-run-1001/libpod/tmp/pause.pid",
    ]);
    expect(pausePidFiles(1001, { TMPDIR: "/tmp" })).toEqual(["/run/user/1001/libpod/tmp/pause.pid", "/tmp/podman-run-1001/libpod/tmp/pause.pid"]);
  });

  test("inside, the host uid is the one Podman passes along, not getuid()'s 0", () => {
    expect(hostUid({ _CONTAINERS_USERNS_CONFIGURED: "done", _CONTAINERS_ROOTLESS_UID: "1001" })).toBe(1001);
    expect(hostUid({})).toBe(process.getuid!());
  });
});
