import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readFileSync, readdirSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, entry, isolatedEnv, repoRoot, tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace, requireImage } from "../helpers/engine.ts";
import { getHost } from "../../core/hosts.ts";
import { controlPath } from "../../core/runtime/ssh.ts";
import { startRemoteHost, type RemoteHost } from "../helpers/remote-host.ts";
import { terminal } from "../helpers/terminal.ts";

/**
 * `up`/`exec`/`down`/`ps --host`: the environment container on a remote host's Podman,
 * its roots directories there. The remote is test/helpers/remote-host.ts's: sshd on a free
 * loopback port logging in as a dedicated user with their own rootless Podman.
 */

const host = "ru-box";
const env = isolatedEnv();
const name = `ru${process.pid}`;
const container = `agentenv-up-${name}`;
let remote: RemoteHost;
let dir = "";

const run = (args: string[], options: { cwd?: string; stdin?: string } = {}) => agentenv(args, { env, ...options });
const onRemote = (script: string) => remote.onRemote(script);
/** This machine's records of running sessions (core/record.ts, or the older up/ state files) that name NAME. */
function localRecords(of: string): string[] {
  const state = join(env.HOME!, ".local/state/agentenv");
  return ["running", "up"].flatMap((sub) => (existsSync(join(state, sub)) ? readdirSync(join(state, sub)).filter((f) => f.includes(of) && f.endsWith(".json")).map((f) => `${sub}/${f}`) : []));
}

beforeAll(async () => {
  await requireImage();
  remote = await startRemoteHost(repoRoot);
  const added = await run(["host", "add", host, ...remote.addArgs, "--force"]);
  if (added.code !== 0) throw new Error(added.stderr);
  dir = onRemote("d=$(mktemp -d /tmp/agentenv-remote-up-XXXXXX) && echo remote-content > $d/there.txt && echo $d").stdout.trim();
  if (!dir.startsWith("/tmp/agentenv-remote-up-")) throw new Error(`no directory on the remote: ${dir}`);
  const created = await run(["env", "create", name, tempTree({ "notes.txt": "home\n" })]);
  if (created.code !== 0) throw new Error(created.stderr);
}, 300_000);

afterAll(async () => {
  if (!remote) return;
  await run(["down", "--host", host, "--env", name]);
  await run(["down", "--env", name]);
  onRemote(`podman ps -a --filter label=agentenv.host=${host} --format '{{.Names}}' | xargs -r podman rm --force >/dev/null 2>&1; podman volume rm --force agentenv-env-${name} >/dev/null 2>&1; rm -rf ${dir}; true`);
  await run(["env", "rm", name, "--force"]);
  Bun.spawnSync([process.execPath, entry, "host", "rm", host], { env: { ...process.env, ...env } });
  remote.stop();
});

describe("up / exec / ps / down --host", () => {
  test("the container runs on the host with its roots there; exec's exit code and stdin; ps --host; a local one of the same name apart; down --host leaves nothing on either side", async () => {
    const up = await run(["up", "--host", host, "--env", name, "--roots", `${host}:${dir}`]);
    expect(up.stderr).toContain(`${container} is up on ${host} — roots ${dir}`);
    expect(up.code).toBe(0);
    expectNoStackTrace(up.stderr);
    // there, not here; its root mounted as it is
    const mounts = onRemote(`podman inspect --format '{{range .Mounts}}{{.Source}}={{.Destination}} {{end}}{{index .Config.Labels "agentenv.host"}}' ${container}`).stdout;
    expect(mounts).toContain(`${dir}=${dir} `);
    expect(mounts.trim().endsWith(host)).toBe(true);
    expect(Bun.spawnSync(["podman", "container", "exists", container]).exitCode).not.toBe(0);
    // a project there is not trusted, said in one line
    expect(up.stderr).toContain(`${host}:${dir} is a project on another machine: no secrets`);
    const again = await run(["up", "--host", host, "--env", name, "--roots", `${host}:${dir}`]);
    expect(again.stderr).toContain("already up on ru-box");

    // exec: in its first root, the command's exit code, the home there, stdin when piped
    const exec = await run(["exec", "--host", host, "--env", name, "--", "sh", "-c", "pwd; cat there.txt; cat ~/notes.txt; [ -t 0 ] || echo no-tty; echo made > made.txt; exit 7"], { cwd: tempTree() });
    expect(exec.stdout).toBe(`${dir}\nremote-content\nhome\nno-tty\n`);
    expect(exec.code).toBe(7);
    expect(onRemote(`cat ${dir}/made.txt`).stdout).toBe("made\n");
    const piped = await run(["exec", "--host", host, "--env", name, "--", "sh", "-c", "read line; echo got $line"], { stdin: "hello\n" });
    expect(piped.stdout).toBe("got hello\n");
    expect(piped.code).toBe(0);

    // a local container of the same environment: its own record, its own roots
    const local = realpathSync(tempTree({ ".git/HEAD": "" }, "agentenv-remote-up-local-"));
    const localUp = await run(["up", "--env", name, "--no-store", "--roots", local]);
    expect(localUp.code).toBe(0);
    const psThere = JSON.parse((await run(["ps", "--host", host, "--json"])).stdout) as Array<Record<string, unknown>>;
    expect(psThere).toEqual([expect.objectContaining({ name: container, env: name, status: "running", roots: [dir] })]);
    const psHere = JSON.parse((await run(["ps", "--json"])).stdout) as Array<Record<string, unknown>>;
    expect(psHere.find((row) => row.name === container)).toMatchObject({ status: "running", roots: [local] });
    expect(localRecords(container).length).toBe(2);
    expect((await run(["down", "--env", name])).code).toBe(0);
    expect(Bun.spawnSync(["podman", "container", "exists", container]).exitCode).not.toBe(0);
    // the one there runs on, and its record here is still there
    expect((await run(["exec", "--host", host, "--env", name, "--", "true"])).code).toBe(0);
    expect(localRecords(container).length).toBe(1);

    const down = await run(["down", "--host", host, "--env", name]);
    expect(down.stderr).toContain(`${container} is down on ${host}`);
    expect(down.code).toBe(0);
    // nothing left: no container and no handoff there, no record or share here; the root's files stay
    expect(onRemote(`podman ps -a --filter label=agentenv.host=${host} --format '{{.Names}}'; ls -d /dev/shm/agentenv-handoff-* /tmp/agentenv-share-* 2>/dev/null; true`).stdout.trim()).toBe("");
    expect(onRemote(`cat ${dir}/there.txt`).stdout).toBe("remote-content\n");
    expect(localRecords(container)).toEqual([]);
    expect((await run(["ps", "--host", host, "--json"])).stdout.trim()).toBe("[]");
    const gone = await run(["exec", "--host", host, "--env", name, "--", "true"]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(new RegExp(`^agentenv: ${container} is not running on ${host} — agentenv up --host ${host} --env ${name} --roots ${host}:/path`, "m"));
    expect((await run(["down", "--host", host, "--env", name])).stderr).toContain(`${container} is not up on ${host}`);
  }, 300_000);

  test("an up container there is trusted only when every one of its roots is: a secret reaches exec then, never otherwise, and is gone there after down", async () => {
    const value = `s3cret-${crypto.randomUUID()}`;
    const hash = new Bun.CryptoHasher("sha256").update(value).digest("hex");
    const second = onRemote("mktemp -d /tmp/agentenv-remote-up2-XXXXXX").stdout.trim();
    expect((await run(["secret", "set", "RU_TOKEN"], { stdin: `${value}\n` })).code).toBe(0);
    const token = ["exec", "--host", host, "--no-env", "--", "sh", "-c", 'printf %s "${RU_TOKEN:-none}" | sha256sum | cut -c1-64'];
    const none = new Bun.CryptoHasher("sha256").update("none").digest("hex");
    try {
      expect((await run(["trust", `${host}:${dir}`])).code).toBe(0);
      const half = await run(["up", "--host", host, "--no-env", "--roots", `${host}:${dir},${host}:${second}`]);
      expect(half.code).toBe(0);
      expect(half.stderr).toContain(`${host}:${second} is a project on another machine: no secrets`);
      expect((await run(token)).stdout).toBe(`${none}\n`);
      expect((await run(["down", "--host", host, "--no-env"])).code).toBe(0);
      expect((await run(["trust", `${host}:${second}`])).code).toBe(0);
      const whole = await run(["up", "--host", host, "--no-env", "--roots", `${host}:${dir},${host}:${second}`]);
      expect(whole.code).toBe(0);
      expect(whole.stderr).not.toContain("is a project on another machine");
      expect((await run(token)).stdout).toBe(`${hash}\n`);
      expect((await run(["down", "--host", host, "--no-env"])).code).toBe(0);
      expect(onRemote(`grep -rlsF -- ${value} ~ /tmp /dev/shm /var/tmp 2>/dev/null; ls -d /dev/shm/agentenv-handoff-* 2>/dev/null; true`).stdout).toBe("");
    } finally {
      await run(["down", "--host", host, "--no-env"]);
      for (const path of [dir, second]) await run(["untrust", `${host}:${path}`]);
      await run(["secret", "rm", "RU_TOKEN"]);
      onRemote(`rm -rf ${second}`);
    }
  }, 180_000);

  test("exec --host on a terminal: a TTY there, Ctrl-C reaching the command, exit N returning N", async () => {
    if (!Bun.which("tmux")) throw new Error("tmux is missing: bin/setup installs it");
    expect((await run(["up", "--host", host, "--no-env", "--roots", `${host}:${dir}`])).code).toBe(0);
    const session = `agentenv-remote-up-tty-${process.pid}`;
    const { tmux, waitFor } = terminal(session);
    const resultFile = join(tempTree(), "code");
    const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
    const command = `${vars} ${process.execPath} ${entry} exec --host ${host} --no-env; echo $? > ${resultFile}; echo AGENTENV-DONE; sleep 600`;
    expect(tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", command).exitCode).toBe(0);
    try {
      tmux("send-keys", "-t", session, "echo tty=$(tty | cut -c1-8) in=$(pwd)", "Enter");
      await waitFor(new RegExp(`tty=/dev/pts in=${dir}`));
      tmux("send-keys", "-t", session, "sleep 30; echo not-interrupted", "Enter");
      await Bun.sleep(700);
      tmux("send-keys", "-t", session, "C-c", "");
      tmux("send-keys", "-t", session, "echo after-ctrl-c", "Enter");
      expect(await waitFor(/^after-ctrl-c/m)).not.toMatch(/^not-interrupted/m);
      tmux("send-keys", "-t", session, "exit 6", "Enter");
      await waitFor(/AGENTENV-DONE/);
      expect(readFileSync(resultFile, "utf8").trim()).toBe("6");
    } finally {
      tmux("kill-session", "-t", session);
      expect((await run(["down", "--host", host, "--no-env"])).code).toBe(0);
    }
  }, 120_000);

  test("a root on this machine is live-shared for the container's life: each side sees the other's writes across commands; down ends the share, nothing left on either side", async () => {
    const local = realpathSync(tempTree({ "l.txt": "local\n" }, "agentenv-remote-up-shared-"));
    const up = await run(["up", "--host", host, "--no-env", "--roots", `${local},${host}:${dir}`]);
    expect(up.stderr).toContain(`agentenv-up is up on ${host} — roots ${[dir, local].sort().join(", ")}`);
    expect(up.code).toBe(0);
    // the root here keeps its own trust (this suite trusts the temp dir); the one there is not trusted: it decides
    expect(up.stderr).toContain(`${host}:${dir} is a project on another machine: no secrets`);
    const mountPoint = "/tmp/agentenv-share-agentenv-up-0";
    const sftp = () => Bun.spawnSync(["pgrep", "-f", `sftp-server -e -d ${local}`]).stdout.toString().trim();
    try {
      // `up` has returned: the share runs on without it
      expect(sftp()).not.toBe("");
      writeFileSync(join(local, "after-up.txt"), "written here after up\n");
      // exec in the current directory when it is inside a shared root; written there, seen here
      const exec = await run(["exec", "--host", host, "--no-env", "--", "sh", "-c", "pwd; cat l.txt after-up.txt; echo from-there > there.txt; exit 3"], { cwd: local });
      expect(exec.stdout).toBe(`${local}\nlocal\nwritten here after up\n`);
      expect(exec.code).toBe(3);
      expect(readFileSync(join(local, "there.txt"), "utf8")).toBe("from-there\n");
      // elsewhere here: its first root
      expect((await run(["exec", "--host", host, "--no-env", "--", "pwd"], { cwd: tempTree() })).stdout).toBe(`${[dir, local].sort()[0]}\n`);
    } finally {
      const down = await run(["down", "--host", host, "--no-env"]);
      expect(down.code).toBe(0);
    }
    // the share ended with the container: no sftp-server here, no mount, mount point or sshfs there
    expect(sftp()).toBe("");
    const left = onRemote(`podman unshare sh -c 'grep -c ${mountPoint} /proc/self/mountinfo'; ls -d ${mountPoint} 2>/dev/null; pgrep -u agentenv-remote -f 'sshfs.*${mountPoint}'; true`);
    expect(left.stdout.trim()).toBe("0");
    expect(readFileSync(join(local, "there.txt"), "utf8")).toBe("from-there\n");
  }, 120_000);

  test("a shared root whose connection was lost: down still leaves nothing on either side, and up shares it again", async () => {
    const local = realpathSync(tempTree({ "l.txt": "local\n" }, "agentenv-remote-up-lost-"));
    const roots = ["--roots", `${local},${host}:${dir}`];
    expect((await run(["up", "--host", host, "--no-env", ...roots])).code).toBe(0);
    const mountPoint = "/tmp/agentenv-share-agentenv-up-0";
    const sftp = () => Bun.spawnSync(["pgrep", "-f", `sftp-server -e -d ${local}`]).stdout.toString().trim();
    try {
      const master = Number(/pid=(\d+)/.exec(Bun.spawnSync(["ssh", "-S", controlPath(getHost(host, env)), "-O", "check", "x"]).stderr.toString())?.[1]);
      expect(master).toBeGreaterThan(0);
      process.kill(master, "SIGKILL");
      for (let i = 0; i < 100 && sftp(); i++) await Bun.sleep(50);
      expect(sftp()).toBe("");
      expect((await run(["down", "--host", host, "--no-env"])).code).toBe(0);
      const left = onRemote(`podman unshare sh -c 'grep -c ${mountPoint} /proc/self/mountinfo'; ls -d ${mountPoint} 2>/dev/null; podman ps -a --filter label=agentenv.host=${host} --format '{{.Names}}'; true`);
      expect(left.stdout.trim()).toBe("0");
      // a new connection, a new share
      expect((await run(["up", "--host", host, "--no-env", ...roots])).code).toBe(0);
      expect((await run(["exec", "--host", host, "--no-env", "--", "cat", "l.txt"], { cwd: local })).stdout).toBe("local\n");
    } finally {
      expect((await run(["down", "--host", host, "--no-env"])).code).toBe(0);
    }
    expect(sftp()).toBe("");
  }, 120_000);

  test("exec --host goes straight in while this machine's record says it is up; a container removed there by hand: one line, nothing run", async () => {
    expect((await run(["up", "--host", host, "--env", name, "--roots", `${host}:${dir}`])).code).toBe(0);
    try {
      // a wrapper around the real ssh (named as such) counts the calls
      const bin = tempTree({ ssh: `#!/bin/sh\necho call >> "$(dirname "$0")/calls"\nexec ${Bun.which("ssh")} "$@"\n` });
      chmodSync(join(bin, "ssh"), 0o755);
      const warm = await agentenv(["exec", "--host", host, "--env", name, "--", "sh", "-c", "echo warm; exit 4"], { env: { ...env, PATH: `${bin}:${process.env.PATH}` } });
      expect(warm.stdout).toBe("warm\n");
      expect(warm.code).toBe(4);
      // one round trip on the hot path: the exec itself
      expect(readFileSync(join(bin, "calls"), "utf8")).toBe("call\n");
      onRemote(`podman rm --force ${container} >/dev/null 2>&1; rm -f ${dir}/ran.txt`);
      const gone = await run(["exec", "--host", host, "--env", name, "--", "sh", "-c", `echo ran > ${dir}/ran.txt`]);
      expectNoStackTrace(gone.stderr);
      expect(gone.stderr).toContain(`agentenv: ${container} is not running on ${host} — agentenv up --host ${host} --env ${name} --roots ${host}:/path\n`);
      expect(gone.code).toBe(1);
      expect(onRemote(`test -e ${dir}/ran.txt && echo ran || echo not-run`).stdout).toBe("not-run\n");
    } finally {
      await run(["down", "--host", host, "--env", name]);
    }
  });

  test("wrap --host: a host command that runs in the container there (its first root), exit codes back; --roots refused; listed with its host", async () => {
    const bin = tempTree();
    const refused = await run(["wrap", "sh", "--host", host, "--env", name, "--roots", `${host}:${dir}`, "--bin-dir", bin]);
    expect(refused.stderr).toBe(`agentenv: a wrapper for ${host} runs in the roots its container was started with — give them to agentenv up --host ${host} --roots …, and wrap without --roots\n`);
    expect(refused.code).toBe(1);
    expect(existsSync(join(bin, "sh"))).toBe(false);
    const wrote = await run(["wrap", "sh", "--host", host, "--env", name, "--bin-dir", bin]);
    expect(wrote.code).toBe(0);
    expect(wrote.stderr).toContain(`runs in environment ${name}, on ${host}`);
    expect(JSON.parse((await run(["wrap", "--list", "--json"])).stdout)).toContainEqual(expect.objectContaining({ name: "sh", host, env: name, path: join(bin, "sh") }));
    expect((await run(["up", "--host", host, "--env", name, "--roots", `${host}:${dir}`])).code).toBe(0);
    try {
      const called = await agentenv([], { env, bin: [join(bin, "sh"), "-c", "pwd; cat there.txt; exit 5"], cwd: tempTree() });
      expect(called.stdout).toBe(`${dir}\nremote-content\n`);
      expect(called.code).toBe(5);
    } finally {
      await run(["down", "--host", host, "--env", name]);
      await run(["unwrap", "sh", "--bin-dir", bin]);
    }
  });

  test("roots refused in one line before anything is made: none named, a system path there, another host's", async () => {
    const none = await run(["up", "--host", host, "--no-env"], { cwd: tempTree() });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^agentenv: an up container on ru-box needs its roots named with --roots: directories there \(ru-box:\/path\) or here \(live-shared\)/m);
    expectNoStackTrace(none.stderr);
    const system = await run(["up", "--host", host, "--no-env", "--roots", `${host}:/etc`]);
    expect(system.stderr).toMatch(/root ru-box:\/etc: the container needs that path for itself/);
    const other = await run(["up", "--host", host, "--no-env", "--roots", "otherbox:/srv"]);
    expect(other.stderr).toMatch(/^agentenv: root otherbox:\/srv is on host otherbox, but the container runs on ru-box/m);
    expect(onRemote(`podman ps -a --filter label=agentenv.host=${host} --format '{{.Names}}'`).stdout.trim()).toBe("");
  }, 60_000);

  test("Ctrl-C (SIGINT) to exec without a terminal ends the exec, 130, and never the container; --roots HOST:PATH implies --host", async () => {
    // no --host: the root names it
    const up = await run(["up", "--no-env", "--roots", `${host}:${dir}`]);
    expect(up.stderr).toContain(`agentenv-up is up on ${host}`);
    expect(up.code).toBe(0);
    try {
      const child = Bun.spawn([process.execPath, entry, "exec", "--host", host, "--no-env", "--", "sh", "-c", "echo ready; sleep 30"], { env: { ...process.env, ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toBe("ready\n");
      child.kill("SIGINT");
      expect(await child.exited).toBe(130);
      const ps = JSON.parse((await run(["ps", "--host", host, "--json"])).stdout) as Array<Record<string, unknown>>;
      expect(ps).toEqual([expect.objectContaining({ name: "agentenv-up", env: null, status: "running" })]);
      expect((await run(["exec", "--host", host, "--no-env", "--", "sh", "-c", "exit 4"])).code).toBe(4);
    } finally {
      expect((await run(["down", "--host", host, "--no-env"])).code).toBe(0);
    }
    expect(onRemote(`podman ps -a --filter label=agentenv.host=${host} --format '{{.Names}}'`).stdout.trim()).toBe("");
  }, 180_000);
});
