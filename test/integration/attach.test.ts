import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { dirname, join } from "pathe";
import { defaultImage } from "../../core/config.ts";
import { agentenv, entry, isolatedEnv, repoRoot, rootless, sh, tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace, removeStoreVolume, requireImage } from "../helpers/engine.ts";
import { terminal } from "../helpers/terminal.ts";

/**
 * `agentenv attach` against real running containers (rootful Podman as root, rootless
 * Podman as the user scripts/rootless-tests.sh makes, and the real docker CLI against
 * Podman's API). Every target is built here from what this machine has (no registry).
 * After each attach, the target is compared with what it was before ("no trace").
 */
const image = process.env.AGENTENV_IMAGE || defaultImage;
const prefix = `aeattach-${process.pid}`;
const storeVolume = `agentenv-test-attach-${process.pid}`;
const env = { AGENTENV_IMAGE: image, AGENTENV_STORE_VOLUME: storeVolume };
const scratchImage = "localhost/agentenv-test-attach-scratch:latest";
const nixImage = "localhost/agentenv-test-attach-nix:latest";
const made: string[] = [];
/** a path the golden store has and no target does (added in beforeAll) */
let ourPath = "";
const madeVolumes: string[] = [];

/** The engine CLI as agentenv runs it in tests (rootless: the same storage config). */
function podman(args: string[]): { code: number; stdout: string; stderr: string } {
  return sh(["podman", ...args]);
}

function ok(args: string[]): string {
  const result = podman(args);
  if (result.code !== 0) throw new Error(`podman ${args.join(" ")}: ${result.stderr}`);
  return result.stdout.trim();
}

/** A command on this host in Podman's user namespace (rootless: `podman unshare`), output captured. */
function inNamespace(script: string): string {
  const argv = rootless ? ["podman", "unshare", "sh", "-c", script] : ["sh", "-c", script];
  const result = sh(argv);
  if (result.code !== 0) throw new Error(`${script}: ${result.stderr}`);
  return result.stdout;
}

/** Builds IMAGE from a Containerfile (text) in a context of its own. */
function build(tag: string, containerfile: string): void {
  const context = mkdtempSync(join(tmpdir(), "agentenv-attach-ctx-"));
  writeFileSync(join(context, "Containerfile"), containerfile);
  ok(["build", "-q", "-t", tag, "-f", join(context, "Containerfile"), context]);
}

/** A Debian base: the one the image was built from when it is here, else the image itself. */
function debianImage(): string {
  for (const ref of ["localhost/agentenv-base:bookworm", "docker.io/library/debian:bookworm-slim"]) {
    if (podman(["image", "exists", ref]).code === 0) return ref;
  }
  return image;
}

function startTarget(name: string, args: string[]): string {
  const full = `${prefix}-${name}`;
  made.push(full);
  ok(["run", "-d", "--name", full, ...args]);
  return full;
}

const busybox = "/usr/local/lib/agentenv/attach/bin/busybox";

/**
 * Everything "no trace" compares, with the target's PID (host view): the engine's records
 * (inspect in full, diff, top), the mount table of its PID 1 (mount ids aside: they are
 * the kernel's counters), the processes in its PID namespace with their states (a zombie
 * would show), and every file it sees — root, volumes and tmpfs alike — with type, mode,
 * owner, size, mtime and ctime.
 */
function snapshot(target: string): Record<string, string> {
  const inspect = ok(["inspect", target]);
  const pid = ok(["inspect", "--format", "{{.State.Pid}}", target]);
  const script = `
    set -e
    sed -E 's/^[0-9]+ [0-9]+ //' /proc/${pid}/mountinfo
    echo ---
    ns=$(readlink /proc/${pid}/ns/pid)
    for p in /proc/[0-9]*; do
      [ "$(readlink $p/ns/pid 2>/dev/null)" = "$ns" ] || continue
      printf '%s %s %s\\n' "\${p#/proc/}" "$(cut -d' ' -f3 $p/stat 2>/dev/null)" "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)"
    done
    echo ---
    cd /proc/${pid}/root && find . \\( -path ./proc -o -path ./sys -o -path ./dev \\) -prune -o -printf '%p %y %m %U:%G %s %T@ %C@\\n' | sort
  `;
  const [mountinfo, processes, files] = inNamespace(script).split("---\n");
  return {
    inspect,
    diff: ok(["diff", "--format", "json", target]),
    top: ok(["top", target, "pid", "ppid", "user", "args"]),
    mountinfo: mountinfo!,
    processes: processes!,
    files: files!,
    // volumes an attach could leave: anonymous ones and ours (others' tests make volumes meanwhile)
    volumes: ok(["volume", "ls", "--format", "{{.Name}}"]).split("\n").filter((v) => /^[0-9a-f]{64}$|attach/.test(v)).join("\n"),
    sidecars: ok(["ps", "-a", "--filter", `label=agentenv.attach=${target}`, "--format", "{{.Names}}"]),
  };
}

function expectSame(before: Record<string, string>, after: Record<string, string>): void {
  for (const key of Object.keys(before)) expect({ [key]: after[key] }).toEqual({ [key]: before[key] });
}

/** What each attach below does inside: reads, a deliberate orphan, writes only to our own places. */
const busyWork = [
  "ls / >/dev/null; ps >/dev/null; mount >/dev/null; df >/dev/null",
  'echo scratch > "$TMPDIR/ours"; echo kept >> "$HOME/attach-note"',
  // an orphan the subreaper must end: the target never inherits it
  "sleep 1000 & sleep 1000 & exit 3",
].join("; ");

async function attach(target: string, command: string[], extra: string[] = [], extraEnv: Record<string, string> = {}) {
  return agentenv(["attach", target, ...extra, "--", ...command], { env: { ...env, ...extraEnv } });
}

beforeAll(async () => {
  await requireImage("podman", image);
  // the golden store, seeded, with one path of ours (a trusted project's session keeps it)
  const added = await agentenv(["run", tempTree({ "marker.txt": "attach-marker\n" }), "--", "nix-store", "--add", "/work/marker.txt"], { env });
  if (added.code !== 0) throw new Error(`adding a path to the golden store failed: ${added.stderr}`);
  ourPath = added.stdout.trim().split("\n").pop()!;
  if (!/^\/nix\/store\/[a-z0-9]{32}-marker.txt$/.test(ourPath)) throw new Error(`unexpected store path: ${ourPath}`);
  // FROM scratch: one static binary and nothing else (no shell, no /bin, no /nix)
  build(scratchImage, `FROM ${image} AS tools\nFROM scratch\nCOPY --from=tools ${busybox} /busybox\nENTRYPOINT ["/busybox", "sleep", "infinity"]\n`);
  // a Nix-built image's shape: /bin entries are links into its own /nix/store, /nix/var its own
  const hash = "0123456789abcdfghijklmnpqrsvwxyz";
  build(
    nixImage,
    [
      `FROM ${image} AS tools`,
      `RUN mkdir -p /out/nix/store/${hash}-busybox/bin /out/nix/var/nix/profiles /out/bin \\`,
      ` && cp ${busybox} /out/nix/store/${hash}-busybox/bin/busybox \\`,
      ` && for a in sh ls cat sleep echo; do ln -s /nix/store/${hash}-busybox/bin/busybox /out/bin/$a; done \\`,
      " && echo theirs > /out/nix/var/nix/profiles/marker \\",
      // a name of ours taken: the graft moves to the next free one
      " && mkdir /out/.agentenv && echo theirs > /out/.agentenv/mine",
      "FROM scratch",
      "COPY --from=tools /out/ /",
      'ENTRYPOINT ["/bin/sleep", "infinity"]',
      "",
    ].join("\n"),
  );
}, 180_000);

afterAll(async () => {
  // --ignore: a target that never started must not keep the others
  if (made.length) podman(["rm", "--force", "--ignore", "--time", "0", ...made]);
  for (const volume of madeVolumes) podman(["volume", "rm", "--force", volume]);
  await removeStoreVolume(storeVolume);
});

describe("agentenv attach (Podman)", () => {
  test("a Debian target: its root, processes, network, ipc, hostname and mounts; CMD's exit code; no trace", async () => {
    const target = startTarget("debian", ["--hostname", "debian-target", debianImage(), "sleep", "infinity"]);
    const pid = ok(["inspect", "--format", "{{.State.Pid}}", target]);
    const ns = inNamespace(["pid", "net", "ipc", "uts"].map((n) => `readlink /proc/${pid}/ns/${n}`).join("; ")).trim().split("\n");
    const before = snapshot(target);

    const result = await attach(target, ["sh", "-c", `hostname; head -1 /proc/1/cmdline | tr '\\0' ' '; echo; for n in pid net ipc uts; do readlink /proc/self/ns/$n; done; grep -c . /etc/debian_version; grep -E ' /etc/(hosts|resolv.conf) ' /proc/self/mountinfo | wc -l; echo HOME=$HOME; cat ${ourPath}; ${busyWork}`]);
    expectNoStackTrace(result.stderr);
    expect(result.stderr).toBe("");
    const lines = result.stdout.trim().split("\n");
    expect(lines[0]).toBe("debian-target");
    expect(lines[1]).toBe("sleep infinity ");
    // the same namespaces as the target's PID 1, as the host sees them
    expect(lines.slice(2, 6)).toEqual(ns);
    expect(lines[6]).toBe("1");
    expect(lines[7]).toBe("2");
    expect(lines[8]).toBe("HOME=/.agentenv/home");
    // our store at /nix: the target has none
    expect(lines[9]).toBe("attach-marker");
    expect(result.code).toBe(3);

    expectSame(before, snapshot(target));
  });

  test("a FROM scratch target: a shell and utilities from our side, the target's one binary at /", async () => {
    const target = startTarget("scratch", [scratchImage]);
    const before = snapshot(target);
    const result = await attach(target, ["sh", "-c", `ls /; echo $PATH; which sh; cat /proc/1/cmdline | tr '\\0' ' '; echo; ${busyWork}`]);
    expect(result.stderr).toBe("");
    const lines = result.stdout.trim().split("\n");
    // the target's root as it is: no /bin, no /nix, only its binary and the runtime's mount points
    expect(lines).toContain("busybox");
    expect(lines).not.toContain("bin");
    // /nix is ours: the target has none (the target itself never sees it)
    expect(lines).toContain("nix");
    expect(result.stdout).toContain("/.agentenv/bin/sh\n");
    expect(result.stdout).toContain("/busybox sleep infinity \n");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
  });

  test("a --read-only target: its tmpfs (/tmp, /run, /var/tmp) untouched; agentenv writes nothing there", async () => {
    const target = startTarget("readonly", ["--read-only", debianImage(), "sleep", "infinity"]);
    const before = snapshot(target);
    const result = await attach(target, ["sh", "-c", `touch /etc/x 2>/dev/null && echo wrote; grep -E ' /(tmp|run|var/tmp) ' /proc/self/mountinfo | grep -c tmpfs; ${busyWork}`]);
    expect(result.stderr).toBe("");
    expect(result.stdout.trim()).toBe("3");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
  });

  test("a target running as --user 1000 with a 0700 home: its processes and its private files are readable", async () => {
    const target = startTarget("user", [
      "--user", "1000:1000",
      "--tmpfs", "/home/app:rw,mode=0700,U",
      debianImage(), "sh", "-c", "echo secret > /home/app/private; exec sleep infinity",
    ]);
    for (let i = 0; i < 50 && podman(["top", target, "args"]).stdout.indexOf("sleep") < 0; i++) await Bun.sleep(100);
    const before = snapshot(target);
    const result = await attach(target, ["sh", "-c", `stat -c '%a %u' /home/app; cat /home/app/private; ps -o user,args | grep -c '^1000 *sleep'; ${busyWork}`]);
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("700 1000\nsecret\n1\n");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
  });

  test("a target with its own /nix: its links keep working, both stores at /nix/store, its /nix/var its own", async () => {
    const target = startTarget("nix", [nixImage]);
    const before = snapshot(target);
    const script = [
      // the target's /bin/sh: a link into its own store
      "/bin/sh -c 'echo their-sh-works'",
      "cat /nix/var/nix/profiles/marker",
      'echo "$AGENTENV_ATTACH $HOME $(cat /.agentenv/mine)"',
      "ls /nix/store | grep -c -- -busybox$",
      // our store is there too (a read-only overlay of both)
      `cat ${ourPath}`,
      "grep ' /nix/store ' /proc/self/mountinfo | grep -c overlay",
      "touch /nix/store/x 2>/dev/null || echo store-read-only",
      busyWork,
    ].join("; ");
    const result = await attach(target, ["sh", "-c", script]);
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("their-sh-works\ntheirs\n/.agentenv-1 /.agentenv-1/home theirs\n1\nattach-marker\n1\nstore-read-only\n");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
  });

  test.skipIf(!rootless)("rootless: a --userns=keep-id target (a user namespace of its own) running as the user", async () => {
    const target = startTarget("keepid", ["--userns=keep-id", debianImage(), "sleep", "infinity"]);
    const before = snapshot(target);
    // the helper stays in the sidecar's user namespace: the target's processes show by the uids they have there
    const user = userInfo().username;
    const result = await attach(target, ["sh", "-c", `cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -c '^${user}:' /etc/passwd; ${busyWork}`]);
    expect(result.stderr).toBe("");
    // keep-id wrote the user into the target's /etc/passwd: the view's /etc is the target's
    expect(result.stdout).toBe("sleep infinity \n1\n");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
  });

  test("a target with a named volume and a tmpfs: both seen, both unchanged", async () => {
    const volume = `${prefix}-data`;
    madeVolumes.push(volume);
    const target = startTarget("volume", [
      "-v", `${volume}:/data`, "--tmpfs", "/scratch", "-w", "/data",
      debianImage(), "sh", "-c", "echo v > /data/f; echo t > /scratch/f; exec sleep infinity",
    ]);
    for (let i = 0; i < 50 && podman(["top", target, "args"]).stdout.indexOf("sleep") < 0; i++) await Bun.sleep(100);
    const before = snapshot(target);
    const result = await attach(target, ["sh", "-c", `pwd; cat /data/f /scratch/f; df /data /scratch | tail -n +2 | wc -l; ${busyWork}`]);
    expect(result.stderr).toBe("");
    // CMD starts where the target's PID 1 works
    expect(result.stdout).toBe("/data\nv\nt\n2\n");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
  });

  test("the environment's home is HOME, outside the target's tree, and keeps what the session wrote", async () => {
    const name = `t${process.pid}-attach`;
    const tools = readFileSync(join(repoRoot, "test/fixtures/env/flake.nix"), "utf8");
    const created = await agentenv(["env", "create", name, tempTree({ ".attach-rc": "from-template\n", "flake.nix": tools })], { env });
    expect(created.code).toBe(0);
    try {
      // a session installs the environment's ~/flake.nix tools (and keeps them in the golden store)
      expect((await agentenv(["run", "--env", name, tempTree(), "--", "hello-env"], { env })).stdout).toContain("hello-env v1");
      const target = startTarget("env", [debianImage(), "sleep", "infinity"]);
      const first = await attach(target, ["sh", "-c", 'cat "$HOME/.attach-rc"; echo written > "$HOME/from-attach"; ls /root; hello-env'], ["--env", name]);
      expect(first.stderr).toBe("");
      // the tools are on PATH from our /nix; the target's /root is its own (empty)
      expect(first.stdout).toBe("from-template\nhello-env v1\n");
      expect(first.code).toBe(0);
      const again = await agentenv(["run", "--env", name, tempTree(), "--", "cat", "/root/from-attach"], { env });
      expect(again.stdout.trim().split("\n").pop()).toBe("written");
    } finally {
      await agentenv(["env", "rm", name, "--force"], { env });
    }
  });

  test("Ctrl-C (SIGINT to agentenv) reaches CMD, not the target", async () => {
    const target = startTarget("signal", [debianImage(), "sleep", "infinity"]);
    const child = Bun.spawn([process.execPath, entry, "attach", target, "--", "sh", "-c", 'trap "echo got-int; exit 42" INT; echo ready; while :; do sleep 0.1; done'], {
      env: { ...process.env, ...isolatedEnv(), ...env },
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const reader = child.stdout.getReader();
    let out = "";
    while (!out.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    child.kill("SIGINT");
    expect(await child.exited).toBe(42);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    expect(out).toContain("got-int");
    expect(ok(["inspect", "--format", "{{.State.Running}}", target])).toBe("true");
  });

  test("in a terminal: a shell with a TTY, Ctrl-C interrupts the command in it (not the target), exit returns its code", async () => {
    const target = startTarget("tty", [debianImage(), "sleep", "infinity"]);
    const before = snapshot(target);
    const session = `${prefix}-tty`;
    const { tmux, waitFor } = terminal(session);
    const resultFile = join(mkdtempSync(join(tmpdir(), "agentenv-attach-tty-")), "code");
    const vars = Object.entries({ ...isolatedEnv(), ...env }).map(([k, v]) => `${k}=${v}`).join(" ");
    const started = tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", `${vars} ${process.execPath} ${entry} attach ${target}; echo $? > ${resultFile}; echo AGENTENV-DONE; sleep 600`);
    expect(started.exitCode).toBe(0);
    try {
      await waitFor(/attach [0-9a-f]{12}:\/ # $/m);
      tmux("send-keys", "-t", session, "echo tty=$(tty | cut -c1-8) pid1=$(cat /proc/1/comm) sum=$((6*7))", "Enter");
      // the terminal is named (ttyname works: our devpts is in the view) and the target's PID 1 is there
      await waitFor(/tty=\/dev\/pts pid1=sleep sum=42/);
      tmux("send-keys", "-t", session, "sleep 30; echo not-interrupted", "Enter");
      await Bun.sleep(700);
      tmux("send-keys", "-t", session, "C-c", "");
      tmux("send-keys", "-t", session, "echo after-ctrl-c", "Enter");
      const screen = await waitFor(/^after-ctrl-c/m);
      expect(screen).not.toMatch(/^not-interrupted/m);
      expect(ok(["inspect", "--format", "{{.State.Running}}", target])).toBe("true");
      tmux("send-keys", "-t", session, "exit 5", "Enter");
      await waitFor(/AGENTENV-DONE/);
      expect(readFileSync(resultFile, "utf8").trim()).toBe("5");
      expectSame(before, snapshot(target));
    } finally {
      tmux("kill-session", "-t", session);
    }
  });

  test("--dry-run prints the engine command: the target's namespaces, the helper, no project mount", async () => {
    const target = startTarget("dry", [debianImage(), "sleep", "infinity"]);
    const result = await attach(target, ["true"], ["--dry-run"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toStartWith("podman run --rm ");
    for (const part of [`--pid container:${target}`, "--network none", "--cap-add SYS_ADMIN", "--entrypoint /usr/local/lib/agentenv/attach/agentenv-attach", " -- true\n"]) {
      expect(result.stdout).toContain(part);
    }
    expect(result.stdout).not.toContain(":/work");
    expect(result.stdout).not.toContain("--init");
  });

  test("errors are one line: no such container, a stopped one, one in the host's PID namespace, Apple container, a bad name", async () => {
    const missing = await attach(`${prefix}-nonexistent`, ["true"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`agentenv: no container named ${prefix}-nonexistent in podman — see \`podman ps\`\n`);

    const stopped = startTarget("stopped", [debianImage(), "true"]);
    ok(["wait", stopped]);
    const notRunning = await attach(stopped, ["true"]);
    expect(notRunning.code).toBe(1);
    expect(notRunning.stderr).toBe(`agentenv: container ${stopped} is not running — start it first (podman start ${stopped})\n`);

    // the helper refuses it (our /proc/1 would be the host's), agentenv says why in one line.
    // It knows the machine's own PID namespace by its fixed inode: an engine that itself runs
    // in a container (the fresh-machine check) has another "host" namespace, which it cannot tell
    if (statSync("/proc/self/ns/pid").ino === 0xeffffffc) {
      const hostPid = startTarget("hostpid", ["--pid", "host", debianImage(), "sleep", "infinity"]);
      const host = await attach(hostPid, ["true"]);
      expect(host.code).toBe(1);
      expect(host.stderr).toBe(`agentenv: container ${hostPid} shares the host's PID namespace (--pid host): attach would see the host, not the container\n`);
    }

    const apple = await attach("anything", ["true"], ["--runtime", "container"]);
    expect(apple.code).toBe(1);
    expect(apple.stderr).toStartWith("agentenv: agentenv attach is not supported on Apple container: each container is its own VM");
    expect(apple.stderr.trim().split("\n")).toHaveLength(1);

    // chosen by config, not a flag: refused after the plan, before the engine runs anything
    const fakeDir = join(repoRoot, "test", "fixtures", "fake-container");
    const fakeLog = join(mkdtempSync(join(tmpdir(), "agentenv-attach-fake-")), "log");
    const configHome = tempTree({ "agentenv/config.ts": 'export default { runtime: "container" };\n' });
    // a config home of its own, so a data home of its own too: secrets another test set there would need the other key
    const fakeEnv = { PATH: `${fakeDir}:${dirname(process.execPath)}:${process.env.PATH}`, FAKE_CONTAINER_LOG: fakeLog, FAKE_CONTAINER_STATE: tempTree(), XDG_CONFIG_HOME: configHome, XDG_DATA_HOME: tempTree() };
    const configured = await attach("anything", ["true"], [], fakeEnv);
    expect(configured.code).toBe(1);
    expect(configured.stderr).toStartWith("agentenv: agentenv attach is not supported on Apple container");
    expect(configured.stderr.trim().split("\n")).toHaveLength(1);
    // the fake answered (agentenv asked its version), and was never asked to run anything
    const calls = readFileSync(fakeLog, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as string[]).slice(1).join(" "));
    expect(calls).toContain("--version");
    expect(calls.filter((c) => /^(run|create|start|exec)\b/.test(c))).toEqual([]);

    const bad = await agentenv(["attach", "--", "-x"], { env });
    expect(bad.code).toBe(2);
    expectNoStackTrace(bad.stderr);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
  });
});

/**
 * The real docker CLI against Podman's Docker-compatible API, as test/integration/docker.test.ts
 * does: the sidecar's flags in Docker's spelling (no --uts container:, each capability its
 * own --cap-add), removed by a second call (`rm --force`) so the exit code survives.
 */
describe.skipIf(rootless)("agentenv attach through the docker CLI", () => {
  const socket = join(tmpdir(), `agentenv-attach-docker-${process.pid}.sock`);
  const dockerEnv = { DOCKER_HOST: `unix://${socket}` };
  let service: ReturnType<typeof Bun.spawn> | undefined;

  beforeAll(async () => {
    if (!Bun.which("docker")) throw new Error("the docker CLI is missing: .ci/run installs it (apt-get install docker.io)");
    service = Bun.spawn(["podman", "system", "service", "--time=0", `unix://${socket}`], { stdout: "ignore", stderr: "ignore" });
    for (let i = 0; i < 100; i++) {
      if (Bun.spawnSync(["docker", "version"], { env: { ...process.env, ...dockerEnv } }).exitCode === 0) return;
      await Bun.sleep(100);
    }
    throw new Error("podman's Docker API socket did not come up");
  });
  afterAll(() => service?.kill());

  test("a target started with docker: its PID 1 and hostname, CMD's exit code, no sidecar left, no trace", async () => {
    const target = `${prefix}-docker`;
    made.push(target);
    const run = sh(["docker", "run", "-d", "--name", target, "--hostname", "docker-target", debianImage(), "sleep", "infinity"], { env: dockerEnv });
    expect(run.code).toBe(0);
    const before = snapshot(target);
    const result = await attach(target, ["sh", "-c", `hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ${busyWork}`], ["--runtime", "docker"], dockerEnv);
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("docker-target\nsleep infinity \n");
    expect(result.code).toBe(3);
    expectSame(before, snapshot(target));
    const dry = await attach(target, ["true"], ["--runtime", "docker", "--dry-run"], dockerEnv);
    expect(dry.stdout).toStartWith("docker run -i --pull=never");
    expect(dry.stdout).not.toContain("--hostname");
    expect(dry.stdout).toContain("\ndocker rm --force agentenv-attach-");
  });
});
