import { describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { loadConfig } from "../../core/config.ts";
import { addHost, getHost, hostsFile, parseRemoteDir, parseSshUrl, readHosts, removeHost, sshUrl, type HostRecord } from "../../core/hosts.ts";
import { factsToChecks, parseFacts } from "../../core/runtime/remote-checks.ts";
import { RemoteRuntime } from "../../core/runtime/remote.ts";
import { controlPath, remoteCommand, sshArgv, sshProblem } from "../../core/runtime/ssh.ts";
import { remoteShareScript, shareMountPoint } from "../../plugins/remote/share.ts";
import { basePlan } from "../../core/plan.ts";
import { projectTrust, readRemoteTrust, readTrust, remoteTrust, trustFile, trustProject, trustRemote, untrustRemote } from "../../core/trust.ts";
import { tempTree } from "../helpers/cli.ts";

const box: HostRecord = { name: "box", host: "build.example.com", user: "me", port: 2222, identity: "/keys/id", knownHosts: "/keys/known", added: "" };

describe("ssh addresses", () => {
  test("ssh://[USER@]HOST[:PORT], IPv6 in brackets", () => {
    expect(parseSshUrl("ssh://box.example.com")).toEqual({ host: "box.example.com" });
    expect(parseSshUrl("ssh://me@10.0.0.2:2222")).toEqual({ host: "10.0.0.2", user: "me", port: 2222 });
    expect(parseSshUrl("ssh://[::1]:22")).toEqual({ host: "::1", port: 22 });
    expect(sshUrl({ host: "::1", port: 22 })).toBe("ssh://[::1]:22");
    expect(sshUrl({ host: "h", user: "u" })).toBe("ssh://u@h");
  });

  test("nothing that ssh would read as an option or a shell would split", () => {
    for (const bad of ["ssh://-oProxyCommand=x", "ssh://-x@h", "ssh://me@-h", "ssh://h:0", "ssh://h:99999", "ssh://h:2x", "ssh://a b", "ssh://h;id", "ssh://h/path", "ssh://$(id)", "ssh://", "http://h", "h", "ssh://[h]"]) {
      expect(() => parseSshUrl(bad)).toThrow(/invalid SSH address/);
    }
  });
});

describe("host records", () => {
  test("added, read back checked, removed; files 0600, written atomically", () => {
    const env = { XDG_CONFIG_HOME: tempTree(), HOME: tempTree() };
    addHost({ name: "box", host: "h", port: 2200 }, {}, env);
    expect(() => addHost({ name: "box", host: "h2" }, {}, env)).toThrow(/already exists/);
    addHost({ name: "box", host: "h2" }, { replace: true }, env);
    expect(readHosts(env).map((h) => [h.name, h.host, h.port])).toEqual([["box", "h2", undefined]]);
    expect((Bun.spawnSync(["stat", "-c", "%a", hostsFile(env)]).stdout.toString().trim())).toBe("600");
    expect(() => getHost("nope", env)).toThrow(/no host named nope/);
    expect(() => getHost("-oX", env)).toThrow(/invalid host name/);
    expect(removeHost("box", env)).toBe(true);
    expect(removeHost("box", env)).toBe(false);
  });

  test("a hand-edited file with an option in it is refused, not passed to ssh", async () => {
    const env = { XDG_CONFIG_HOME: tempTree(), HOME: tempTree() };
    mkdirSync(join(env.XDG_CONFIG_HOME, "agentenv"), { recursive: true });
    await Bun.write(hostsFile(env), JSON.stringify({ hosts: [{ name: "box", host: "-oProxyCommand=touch /tmp/x" }] }));
    expect(() => readHosts(env)).toThrow(/invalid SSH address/);
    await Bun.write(hostsFile(env), JSON.stringify({ hosts: [{ name: "box", host: "h", identity: "-key" }] }));
    expect(() => readHosts(env)).toThrow(/identity must be an absolute path/);
  });

  test("HOST:PATH names a known host's absolute directory; anything else is a local path", () => {
    const known = (n: string) => n === "box";
    expect(parseRemoteDir("box:/srv/app/", known)).toEqual({ host: "box", path: "/srv/app" });
    expect(parseRemoteDir("box:/", known)).toEqual({ host: "box", path: "/" });
    expect(parseRemoteDir("other:/srv", known)).toBeUndefined();
    expect(parseRemoteDir("./box:/srv", known)).toBeUndefined();
    expect(parseRemoteDir("/srv/app", known)).toBeUndefined();
    expect(() => parseRemoteDir("box:srv", known)).toThrow(/absolute path/);
    expect(() => parseRemoteDir("box:/srv/../etc", known)).toThrow(/absolute path/);
  });

  test("config host, AGENTENV_HOST and --host, checked", async () => {
    const home = tempTree();
    const env = { HOME: home, XDG_CONFIG_HOME: join(home, ".config"), AGENTENV_HOST: "box" };
    expect((await loadConfig({ env })).host).toBe("box");
    expect((await loadConfig({ env, flags: { host: "other" } })).host).toBe("other");
    await expect(loadConfig({ env: { ...env, AGENTENV_HOST: "-x" } })).rejects.toThrow(/invalid host name/);
  });
});

describe("the remote command line", () => {
  /** What the remote login shell makes of it: run through real shells here. */
  function through(shell: string, argv: string[]): string[] {
    const line = remoteCommand(["printf", "%s\\0", ...argv]);
    const out = Bun.spawnSync([shell, "-c", line]);
    expect(out.exitCode).toBe(0);
    return out.stdout.toString().split("\0").slice(0, -1);
  }

  const words = ["plain", "with space", "it's", '"dq"', "$HOME", "`id`", "a\\b", "line\nbreak", "!bang", "*", "~", "=eq", "%pct", "", "--flag=x:y,z", "é ü"];

  test("every word arrives as it was, whichever POSIX shell reads it", () => {
    for (const shell of ["sh", "bash"]) {
      if (!Bun.which(shell)) continue;
      expect(through(shell, words)).toEqual(words);
    }
  });

  test("readable when it can be: plain words bare, single quotes only where every shell agrees on them", () => {
    expect(remoteCommand(["podman", "run", "--rm", "-v", "/a:/b", "img", "sh", "-c", "echo hi"])).toBe("exec podman run --rm -v /a:/b img sh -c 'echo hi'");
    // a backslash or a newline means something else in fish or csh: the command goes encoded
    expect(remoteCommand(["echo", "a\\b"])).toMatch(/^exec sh -c 'eval "\$\(echo [A-Za-z0-9+/=]+ \| base64 -d\)"'$/);
  });

  test("ssh: batch mode, strict host keys, one shared connection, the host after --", () => {
    const argv = sshArgv(box, "exec true", { tty: true }, "/run/ctl");
    expect(argv.slice(0, 1)).toEqual(["ssh"]);
    for (const option of ["BatchMode=yes", "StrictHostKeyChecking=yes", "ControlMaster=auto", "ControlPersist=600", "UserKnownHostsFile=/keys/known", "IdentitiesOnly=yes"]) expect(argv).toContain(option);
    expect(argv.slice(-4)).toEqual(["-t", "--", "build.example.com", "exec true"]);
    // one connection per way of reaching the host: another known_hosts file is another connection
    expect(argv).toContain(`ControlPath=${controlPath(box, "/run/ctl")}`);
    expect(controlPath(box, "/run/ctl")).toMatch(/^\/run\/ctl\/[0-9a-f]{20}$/);
    expect(controlPath({ ...box, knownHosts: "/other" }, "/run/ctl")).not.toBe(controlPath(box, "/run/ctl"));
    expect(argv).toContain("-p");
    expect(argv[argv.indexOf("-l") + 1]).toBe("me");
    expect(sshArgv({ name: "b", host: "h", added: "" }, "x", {}, "/c")).toContain("-T");
  });

  test("dry-run shows the ssh command; the project and the handoff are the remote's paths", () => {
    const runtime = new RemoteRuntime(box);
    const plan = basePlan({ project: "/srv/app", mode: "run", command: ["make"], config: { image: "img", extraEnv: {}, mounts: [], extraRunArgs: [], userns: "root" } as never, stdinIsTTY: false, name: "agentenv-app-1" });
    const [argv] = runtime.argv(plan);
    expect(argv![0]).toBe("ssh");
    expect(argv!.at(-1)).toBe("exec podman run --rm -i --init --pull=never --name agentenv-app-1 --hostname app -w /work --label agentenv.session=run --label agentenv.project=/srv/app -v /srv/app:/work img make");
    expect(runtime.sharesHostKernel).toBe(false);
    expect(shareMountPoint("agentenv-app-1")).toBe("/tmp/agentenv-share-agentenv-app-1");
  });
});

describe("ssh errors and host checks", () => {
  test("each ssh failure is one line with its fix", () => {
    expect(sshProblem("Host key verification failed.", box)?.message).toMatch(/host key of box .* is not known/);
    expect(sshProblem("Host key verification failed.", box)?.hint).toMatch(/ssh-keyscan -p 2222 build\.example\.com >> \/keys\/known/);
    expect(sshProblem("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", box)?.message).toMatch(/CHANGED/);
    expect(sshProblem("ssh: connect to host h port 2222: Connection refused", box)?.message).toMatch(/connection refused/);
    expect(sshProblem("me@h: Permission denied (publickey).", box)?.hint).toMatch(/\/keys\/id\.pub/);
    expect(sshProblem("podman: command not found", box)).toBeUndefined();
  });

  test("the probe's facts become checks, each problem with its fix", () => {
    const good = parseFacts("machine=x86_64\nuser=me\npodman=4.3.1\ninfo=true|/home/me/.local/share/containers/storage|overlay|runc\nfree=10737418240\nimage=no\nsshfs=no\nfuse=yes\n");
    const checks = factsToChecks(box, good, { arch: "amd64", image: "localhost/agentenv:latest" });
    expect(checks.map((c) => [c.name, c.status])).toEqual([["podman", "ok"], ["disk", "ok"], ["image", "warn"], ["arch", "ok"], ["sshfs", "warn"]]);
    expect(checks.find((c) => c.name === "podman")!.detail).toMatch(/rootless \(as me\)/);
    expect(checks.find((c) => c.name === "sshfs")!.fix).toMatch(/apt-get install sshfs/);
    const none = factsToChecks(box, parseFacts("machine=aarch64\nuser=me\npodman=\nsshfs=yes\nfuse=yes\n"), { arch: "amd64" });
    expect(none[0]).toMatchObject({ name: "podman", status: "fail", fix: expect.stringMatching(/apt-get install podman/) });
    expect(none.find((c) => c.name === "arch")!.status).toBe("warn");
    const full = factsToChecks(box, parseFacts("machine=x86_64\nuser=root\npodman=4.9\ninfo=false|/var/lib/containers/storage|vfs|crun\nfree=100\n"), { arch: "amd64" });
    expect(full.find((c) => c.name === "disk")!.status).toBe("fail");
    expect(full.find((c) => c.name === "storage")!.status).toBe("warn");
    expect(full.find((c) => c.name === "podman")!.detail).toMatch(/as root/);
  });

  test("the share script makes a new 0700 mount point and mounts in Podman's namespace unless root, open to keep-id containers only there", () => {
    const script = remoteShareScript("/tmp/agentenv-share-x", "/home/me/it's");
    expect(script).toContain("mkdir -m 700 /tmp/agentenv-share-x");
    expect(script).toContain("podman unshare sh -c");
    // allow_other (a keep-id container's user namespace) only inside Podman's namespace, never in root's host-wide one
    const asRoot = script.slice(script.indexOf("\nasroot="), script.indexOf("\ninpodman="));
    const inPodman = script.slice(script.indexOf("\ninpodman="), script.indexOf("\nif ["));
    expect(inPodman).toContain("sshfs -f -o passive,idmap=none,allow_other :");
    expect(asRoot).toContain("sshfs -f -o passive,idmap=none :");
    expect(asRoot).not.toContain("allow_other");
    expect(Bun.spawnSync(["sh", "-n", "-c", script]).exitCode).toBe(0);
  });
});

describe("trust for a project on a remote host (core/trust.ts)", () => {
  const url = "ssh://me@build.example.com:2222";
  const at = "2026-01-01T00:00:00.000Z";

  test("trusted: that host, reached at the same address, the path or a directory under it — nothing else", () => {
    const records = [{ host: "box", url, path: "/srv/app", trustedAt: at }];
    expect(remoteTrust("box", url, "/srv/app", records).trust).toEqual({ project: "box:/srv/app", trusted: true, via: "record" });
    expect(remoteTrust("box", url, "/srv//app/./sub/", records).trust).toMatchObject({ project: "box:/srv/app", trusted: true });
    for (const [host, path] of [["box", "/srv/application"], ["box", "/srv"], ["other", "/srv/app"], ["box", "/srv/app/../etc"]]) {
      expect(remoteTrust(host!, url, path!, records).trust.trusted).toBe(false);
    }
    // the name now reaches another address: not trusted, and the old address is said
    expect(remoteTrust("box", "ssh://me@elsewhere.example.com", "/srv/app", records)).toEqual({ trust: { project: "box:/srv/app", trusted: false }, was: url });
  });

  test("records kept apart from this machine's projects: both survive each other's writes; a hand-edited bad entry is no trust; / and .. are refused", () => {
    const home = tempTree();
    const env = { HOME: home, XDG_DATA_HOME: join(home, "data") };
    const local = tempTree();
    trustRemote("box", url, "/srv/app/", env);
    trustProject(local, env);
    trustRemote("box", url, "/srv/other", env);
    expect(readRemoteTrust(env).map((r) => r.path)).toEqual(["/srv/app", "/srv/other"]);
    expect(readTrust(env).map((r) => r.dir)).toEqual([realpathSync(local)]);
    // the same path as a directory here is not trusted by the remote record
    expect(projectTrust("/srv/app", undefined, [], readTrust(env)).trusted).toBe(false);
    expect(untrustRemote("box", "/srv/app/sub", env)).toEqual({ project: "box:/srv/app/sub", removed: false, coveredBy: "box:/srv/app" });
    expect(untrustRemote("box", "/srv/app", env).removed).toBe(true);
    expect(readTrust(env)).toHaveLength(1);
    // an older agentenv's file (projects only) reads as no remote trust; a hand-edited entry for / or a relative path counts for nothing
    const file = trustFile(env);
    const data = JSON.parse(readFileSync(file, "utf8"));
    data.remote.push({ host: "box", url, path: "/", trustedAt: at }, { host: "box", url, path: "srv", trustedAt: at }, { host: "-oProxy", url, path: "/x", trustedAt: at });
    writeFileSync(file, JSON.stringify(data));
    expect(readRemoteTrust(env).map((r) => r.path)).toEqual(["/srv/other"]);
    expect(() => trustRemote("box", url, "/", env)).toThrow(/refusing to trust box:\//);
    expect(() => trustRemote("box", url, "/srv/../etc", env)).toThrow(/absolute path with no "\.\." part/);
    expect(() => trustRemote("box", url, "srv", env)).toThrow(/absolute path/);
  });
});
