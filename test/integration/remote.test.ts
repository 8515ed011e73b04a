import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { getHost } from "../../core/hosts.ts";
import { controlPath } from "../../core/runtime/ssh.ts";
import { agentenv, entry, isolatedEnv, repoRoot, tempTree } from "../helpers/cli.ts";
import { derivationExpr, devShellFlake, expectNoStackTrace, removeStoreVolume, requireImage } from "../helpers/engine.ts";
import { terminal } from "../helpers/terminal.ts";
import { confinedServer, localSftpServer } from "../../plugins/remote/share.ts";
import { shellJoin } from "../../core/plan.ts";
import { freePort, remoteUser, startRemoteHost, type RemoteHost } from "../helpers/remote-host.ts";

/**
 * A remote host as separate as this box allows: sshd on a free loopback port with a host
 * key made here, logging in as a dedicated user (scripts/remote-test-host.sh) who has
 * their own rootless Podman, storage and home and cannot read root's files. agentenv
 * reaches it only through `host add` and ssh: real SSH, real Podman on both sides.
 */


const host = "rt-box";
const tinyImage = "localhost/agentenv-remote-test-tiny:latest";
const env = isolatedEnv();
let remote: RemoteHost;
let port = 0;
let keys = "";

/** A plain ssh to the remote user: no shared connection (the test's own view of the remote). */
const onRemote = (script: string) => remote.onRemote(script);

function run(args: string[], options: { cwd?: string; stdin?: string } = {}) {
  return agentenv(args, { env, ...options });
}

/** A tiny image (dash and the C library): what the first-use shipping test moves. */
function makeTinyImage(): void {
  if (Bun.spawnSync(["podman", "image", "exists", tinyImage]).exitCode === 0) return;
  const root = tempTree({}, "agentenv-remote-tiny-");
  const files = ["/bin/dash", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"];
  const tar = Bun.spawnSync(["sh", "-c", `mkdir -p ${root}/bin && ln -s dash ${root}/bin/sh && tar -C / -chf ${root}/rootfs.tar ${files.map((f) => f.slice(1)).join(" ")} && tar -C ${root} -rf ${root}/rootfs.tar bin/sh`]);
  if (tar.exitCode !== 0) throw new Error(`tiny image: ${tar.stderr}`);
  const imported = Bun.spawnSync(["podman", "import", "--change", "CMD /bin/sh", `${root}/rootfs.tar`, tinyImage]);
  if (imported.exitCode !== 0) throw new Error(`tiny image: ${imported.stderr}`);
}

beforeAll(async () => {
  await requireImage();
  remote = await startRemoteHost(repoRoot);
  ({ port, keys } = remote);
  writeFileSync(join(keys, "empty_known_hosts"), "");
  makeTinyImage();
  // first use of the tiny image is this run's
  onRemote(`podman rmi --force ${tinyImage} >/dev/null 2>&1; true`);
  const added = await run(["host", "add", host, ...remote.addArgs, "--force"]);
  if (added.code !== 0) throw new Error(added.stderr);
}, 300_000);

afterAll(() => {
  if (port) onRemote("podman ps -a --filter label=agentenv.host=rt-box --format '{{.Names}}' | xargs -r podman rm --force >/dev/null 2>&1; podman rmi --force localhost/agentenv-remote-test-tiny:latest >/dev/null 2>&1; true");
  // its shared connection goes with it
  if (port) Bun.spawnSync([process.execPath, entry, "host", "rm", host], { env: { ...process.env, ...env } });
  remote?.stop();
  Bun.spawnSync(["podman", "rmi", "--force", tinyImage], { stderr: "ignore" });
});

/** The shared connection's master: its pid, from ssh itself. */
function masterPid(): number | undefined {
  const out = Bun.spawnSync(["ssh", "-S", controlPath(getHost(host, env)), "-O", "check", "box"]);
  return Number(/pid=(\d+)/.exec(out.stderr.toString())?.[1]) || undefined;
}

describe("host add / list / check / rm", () => {
  test("a good host: every check passes, as text and JSON", async () => {
    const list = await run(["host", "list", "--json"]);
    expect(JSON.parse(list.stdout).find((h: { name: string }) => h.name === host)).toMatchObject({ host: "127.0.0.1", port, user: remoteUser });
    const check = await run(["host", "check", host, "--json"]);
    expect(check.code).toBe(0);
    const checks = JSON.parse(check.stdout) as Array<{ name: string; status: string; detail: string }>;
    expect(checks.map((c) => c.name)).toEqual(["ssh", "podman", "disk", "image", "arch", "sshfs"]);
    expect(checks.find((c) => c.name === "podman")!.detail).toMatch(/rootless \(as agentenv-remote\)/);
    expect(checks.find((c) => c.name === "ssh")!.detail).toMatch(/host key checked/);
  }, 60_000);

  test("broken hosts: wrong port, unknown host key, no Podman — each one line with its fix", async () => {
    const dead = await freePort();
    await run(["host", "add", "rt-dead", `ssh://${remoteUser}@127.0.0.1:${dead}`, "--identity", join(keys, "id"), "--known-hosts", join(keys, "known_hosts"), "--force"]);
    const refused = await run(["host", "check", "rt-dead"]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/✖ ssh: cannot connect to rt-dead .*connection refused\n    fix: /);
    await run(["host", "add", "rt-stranger", `ssh://${remoteUser}@127.0.0.1:${port}`, "--identity", join(keys, "id"), "--known-hosts", join(keys, "empty_known_hosts"), "--force"]);
    const stranger = await run(["host", "check", "rt-stranger"]);
    expect(stranger.code).toBe(1);
    expect(stranger.stdout).toMatch(/host key of rt-stranger .* is not known/);
    expect(stranger.stdout).toContain(`fix: check it and add it: ssh-keyscan -p ${port} 127.0.0.1 >> ${join(keys, "empty_known_hosts")}`);
    // a session there fails the same way, before anything is made
    const session = await run(["run", "--host", "rt-stranger", "--", "true"], { cwd: tempTree() });
    expect(session.code).toBe(1);
    expect(session.stderr).toMatch(/^agentenv: the host key of rt-stranger .* is not known/m);
    expectNoStackTrace(session.stderr);
    // a remote whose PATH has no podman: sshd's own SetEnv, on a second sshd of this test
    const bare = tempTree({}, "agentenv-remote-bare-");
    chmodSync(bare, 0o755);
    for (const tool of ["sh", "uname", "id", "df", "awk", "cut", "tail"]) Bun.spawnSync(["ln", "-s", Bun.which(tool)!, join(bare, tool)]);
    const bareServer = await remote.extraServer([`SetEnv=PATH=${bare}`]);
    try {
      await run(["host", "add", "rt-bare", `ssh://${remoteUser}@127.0.0.1:${bareServer.port}`, "--identity", join(keys, "id"), "--known-hosts", bareServer.knownHosts, "--force"]);
      const bareCheck = await run(["host", "check", "rt-bare"]);
      expect(bareCheck.code).toBe(1);
      expect(bareCheck.stdout).toMatch(/✖ podman: Podman is not installed on rt-bare.*\n    fix: on rt-bare: sudo apt-get install podman/);
    } finally {
      bareServer.stop();
    }
    // host rm closes the shared connection a host had (rt-bare's, from its check)
    const bareSocket = controlPath(getHost("rt-bare", env));
    expect(existsSync(bareSocket)).toBe(true);
    for (const name of ["rt-dead", "rt-stranger", "rt-bare"]) expect((await run(["host", "rm", name])).code).toBe(0);
    expect(existsSync(bareSocket)).toBe(false);
    expect((await run(["host", "rm", "rt-dead"])).stderr).toMatch(/no host named rt-dead/);
    // hostile input never reaches ssh
    const hostile = await run(["host", "add", "rt-x", "ssh://-oProxyCommand=touch@x"]);
    expect(hostile.code).toBe(1);
    expect(hostile.stderr).toMatch(/^agentenv: invalid SSH address/);
  }, 60_000);
});

describe("the environment's home on the remote", () => {
  const name = `rt-env-${crypto.randomUUID().slice(0, 6)}`;
  const volume = `agentenv-env-${name}`;
  /** A shell script on one side's copy of the home (at /h), through that side's own Podman. */
  const local = (script: string) => Bun.spawnSync(["podman", "run", "--rm", "-v", `${volume}:/h`, "--entrypoint", "sh", "localhost/agentenv:latest", "-c", script]).stdout.toString();
  const remote = (script: string) => onRemote(`podman run --rm -v ${volume}:/h --entrypoint sh localhost/agentenv:latest -c ${JSON.stringify(script)}`).stdout;

  afterAll(async () => {
    await run(["env", "rm", name, "--force"]);
    onRemote(`podman volume rm --force ${volume} >/dev/null 2>&1; true`);
  });

  test("made from this machine's on first use; env sync: one side's changes, both sides' (a conflict keeps both), nothing", async () => {
    const template = tempTree({ "notes.txt": "v1\n", "keep.txt": "same\n" });
    expect((await run(["env", "create", name, template])).code).toBe(0);
    const first = await run(["run", "--host", host, "--env", name, tempTree(), "--", "sh", "-c", "cat ~/notes.txt; echo remote-only > ~/from-remote.txt"]);
    expect(first.stdout).toBe("v1\n");
    expect(first.code).toBe(0);
    expect(first.stderr).toMatch(new RegExp(`environment ${name} has no copy on rt-box: making one from this machine's`));
    // the session wrote only the remote's copy
    expect(local("ls /h")).not.toContain("from-remote.txt");
    // one side's change goes to the other
    const one = await run(["env", "sync", name, "--host", host, "--json"]);
    expect(one.code).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ toOther: 0, conflicts: [], created: false });
    expect(local("cat /h/from-remote.txt")).toBe("remote-only\n");
    // both sides changed one file: a conflict, both versions kept on both sides; a deletion on one side only goes over
    local("echo local-edit > /h/notes.txt; rm /h/keep.txt");
    remote("echo remote-edit > /h/notes.txt");
    const both = await run(["env", "sync", name, "--host", host]);
    expect(both.code).toBe(0);
    expect(both.stderr).toMatch(/conflict: notes\.txt changed on both sides — this machine's kept at notes\.txt, rt-box's at notes\.txt\.agentenv-conflict-rt-box-\d{8}-\d{6}Z/);
    for (const side of [local, remote]) {
      expect(side("cat /h/notes.txt")).toBe("local-edit\n");
      expect(side("cat /h/notes.txt.agentenv-conflict-rt-box-*")).toBe("remote-edit\n");
      expect(side("ls /h/keep.txt 2>&1")).toMatch(/No such file/);
    }
    // nothing changed: nothing moves
    const none = await run(["env", "sync", name, "--host", host, "--json"]);
    expect(JSON.parse(none.stdout)).toMatchObject({ toOther: 0, toLocal: 0, conflicts: [] });
    // env list --host: the copies there, and when each was last synced from here
    const copies = JSON.parse((await run(["env", "list", "--host", host, "--json"])).stdout) as Array<{ name: string; lastSync: string | null }>;
    const synced = copies.find((c) => c.name === name)?.lastSync;
    expect(synced).toMatch(/^\d{4}-\d\d-\d\dT/);
    // env show --host: that copy, and the record of their last sync (the files both had then: notes.txt, its conflict copy, from-remote.txt and agentenv's own state)
    const shown = await run(["env", "show", name, "--host", host, "--json"]);
    expect(shown.code).toBe(0);
    const copy = JSON.parse(shown.stdout);
    expect(copy).toMatchObject({ name, host, volume, lastSync: { at: synced }, here: { exists: true, usedSinceSync: false }, sessions: [] });
    expect(copy.lastSync.files).toBe(Number(remote("find /h -type f -o -type l | wc -l").trim()));
    expect(Date.parse(copy.created)).toBeGreaterThan(Date.now() - 600_000);
    // used here since: a session there says its copy is older, and env show --host says so too
    expect((await run(["run", "--no-store", "--env", name, tempTree(), "--", "true"])).code).toBe(0);
    const showOlder = await run(["env", "show", name, "--host", host]);
    expect(showOlder.stdout).toMatch(new RegExp(`^synced +${synced} \\(\\d+ files on both sides then`, "m"));
    expect(showOlder.stdout).toMatch(new RegExp(`^here +used since the last sync: rt-box's copy is older — agentenv env sync ${name} --host rt-box$`, "m"));
    const older = await run(["run", "--host", host, "--env", name, tempTree(), "--", "true"]);
    expect(older.code).toBe(0);
    expect(older.stderr).toMatch(new RegExp(`environment ${name} on rt-box is older than this machine's .* agentenv env sync ${name} --host rt-box`));
    // env rm --host: only the copy there goes
    expect((await run(["env", "rm", name, "--host", host])).code).toBe(0);
    expect(onRemote(`podman volume exists ${volume}`).code).not.toBe(0);
    expect(local("cat /h/notes.txt")).toBe("local-edit\n");
    expect((await run(["env", "rm", name, "--host", host])).stderr).toMatch(/has no copy on rt-box/);
    // env show --host: no copy there, an unknown host — one line each, exit 1
    const gone = await run(["env", "show", name, "--host", host]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(new RegExp(`^agentenv: environment ${name} has no copy on rt-box — agentenv env list --host rt-box shows the copies there`, "m"));
    const nohost = await run(["env", "show", name, "--host", "rt-nope"]);
    expect(nohost.code).toBe(1);
    expect(nohost.stderr).toMatch(/^agentenv: no host named rt-nope — add it: agentenv host add rt-nope/m);
    for (const out of [gone, nohost]) expectNoStackTrace(out.stderr);
  }, 240_000);
});

describe("the remote's own golden store (--store golden)", () => {
  const nonce = crypto.randomUUID().slice(0, 8);
  const storeVolume = `agentenv-remote-test-nix-${nonce}`;
  const storeEnv = () => ({ ...env, AGENTENV_STORE_VOLUME: storeVolume });
  afterAll(async () => {
    onRemote(`podman volume ls -q | grep '^${storeVolume}' | xargs -r podman volume rm --force >/dev/null 2>&1; true`);
    // this machine's golden store of that name (the tools were built here first)
    await removeStoreVolume(storeVolume);
  });

  test("seeded there on first use; a path one session builds is promoted and valid in the next; this machine's store records untouched", async () => {
    const stateDir = join(env.HOME!, ".local/state/agentenv/store");
    const localRecords = () => (existsSync(stateDir) ? Bun.spawnSync(["ls", stateDir]).stdout.toString().split("\n").filter((f) => f.includes(storeVolume) && !f.includes("@")) : []);
    const expr = derivationExpr(`remote-built-${nonce}`);
    const first = await agentenv(["run", "--host", host, "--store", "golden", tempTree(), "--", "nix-build", "--no-out-link", "-E", expr], { env: storeEnv() });
    expect(first.code).toBe(0);
    const path = first.stdout.trim().split("\n").pop()!;
    expect(path).toMatch(/^\/nix\/store\/[a-z0-9]{32}-remote-built-/);
    expect(first.stderr).toMatch(/seeding the golden Nix store \(volume agentenv-remote-test-nix-/);
    expect(first.stderr).toMatch(/golden store: promoted \d+ new store paths?/);
    const second = await agentenv(["run", "--host", host, "--store", "golden", tempTree(), "--", "nix-store", "--check-validity", path], { env: storeEnv() });
    expect(second.code).toBe(0);
    // the store lives there (one golden volume, no session volume left), its records here are the host's own
    expect(onRemote(`podman volume ls -q | grep '^${storeVolume}'`).stdout.trim()).toBe(storeVolume);
    expect(localRecords()).toEqual([]);
    expect(Bun.spawnSync(["podman", "volume", "exists", storeVolume]).exitCode).not.toBe(0);
    // the environment's tools: built here by a session, shipped there (only what it lacks), never built there
    const name = `rt-tools-${nonce}`;
    expect((await agentenv(["env", "create", name, join(repoRoot, "test/fixtures/env")], { env: storeEnv() })).code).toBe(0);
    try {
      const here = await agentenv(["run", "--env", name, tempTree(), "--", "sh", "-c", "hello-env; readlink -f ~/.local/state/agentenv/profile"], { env: storeEnv() });
      expect(here.stdout).toMatch(/^hello-env v1\n\/nix\/store\//);
      const profile = here.stdout.trim().split("\n").pop()!;
      const there = await agentenv(["run", "--host", host, "--store", "golden", "--env", name, tempTree(), "--", "sh", "-c", "hello-env; readlink -f ~/.local/state/agentenv/profile"], { env: storeEnv() });
      expect(there.stdout).toBe(`hello-env v1\n${profile}\n`);
      expect(there.code).toBe(0);
      expect(there.stderr).toMatch(new RegExp(`environment ${name}: shipping \\d+ of the \\d+ store paths of its tools to rt-box`));
      expect(there.stderr).not.toContain("installing your tools");
      // a second session there: nothing to ship
      const again = await agentenv(["run", "--host", host, "--store", "golden", "--env", name, tempTree(), "--", "hello-env"], { env: storeEnv() });
      expect(again.stdout).toBe("hello-env v1\n");
      expect(again.stderr).not.toContain("shipping");
      // store gc --host: that host's store, collected there; the path built there is no root's, the tools are (its copy of the home's profile)
      const valid = async (p: string) => (await agentenv(["run", "--host", host, "--store", "ephemeral", tempTree(), "--", "sh", "-c", `nix-store --check-validity ${p} 2>/dev/null && echo valid || echo gone`], { env: storeEnv() })).stdout.trim();
      const dry = await agentenv(["store", "gc", "--host", host, "--dry-run", "--json"], { env: storeEnv() });
      expect(dry.code).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ deleted: 0, freedBytes: 0 });
      expect(JSON.parse(dry.stdout).wouldDelete).toBeGreaterThan(0);
      expect(await valid(path)).toBe("valid");
      const gc = await agentenv(["store", "gc", "--host", host, "--json"], { env: storeEnv() });
      expect(gc.code).toBe(0);
      const report = JSON.parse(gc.stdout);
      expect(report.deleted).toBeGreaterThan(0);
      expect(report.live).toBeGreaterThan(0);
      expect(await valid(path)).toBe("gone");
      expect(await valid(profile)).toBe("valid");
      const hello = await agentenv(["run", "--host", host, "--store", "golden", "--env", name, tempTree(), "--", "hello-env"], { env: storeEnv() });
      expect(hello.stdout).toBe("hello-env v1\n");
      expect(hello.stderr).not.toContain("shipping");
      expect((await agentenv(["store", "gc", "--host", host], { env: storeEnv() })).stdout).toMatch(/^nothing to collect \(\d+ live paths\)$/m);
      // nothing of the helper's left among the store's roots there, nothing of that host's in this machine's store records
      expect(onRemote(`podman run --rm -v ${storeVolume}:/nix --entrypoint sh localhost/agentenv:latest -c 'ls /nix/var/nix/gcroots'`).stdout).not.toContain("agentenv-gc");
      expect(localRecords()).toEqual([]);
    } finally {
      await agentenv(["env", "rm", name, "--force"], { env: storeEnv() });
      onRemote(`podman volume rm --force agentenv-env-${name} >/dev/null 2>&1; true`);
    }
    // store status --host: that host's store, as the volume strategy sees it
    const status = await agentenv(["store", "status", "--host", host, "--json"], { env: storeEnv() });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ volume: storeVolume, strategy: "volume" });
    // without --store a remote session gets the image's /nix
    const plain = await agentenv(["run", "--host", host, tempTree(), "--", "sh", "-c", `nix-store --check-validity ${path} 2>/dev/null && echo has || echo lacks`], { env: storeEnv() });
    expect(plain.stdout).toBe("lacks\n");
  }, 400_000);

  test("store reset --host: asks (--yes off a terminal), refuses while a session uses that store, then seeds it again there; bad hosts are one line", async () => {
    const seeded = async () => JSON.parse((await agentenv(["store", "status", "--host", host, "--json"], { env: storeEnv() })).stdout).seeded?.seeded as string | undefined;
    // a path built there, promoted: the reset throws it away
    const built = await agentenv(["run", "--host", host, "--store", "golden", tempTree(), "--", "nix-build", "--no-out-link", "-E", derivationExpr(`reset-${nonce}`)], { env: storeEnv() });
    expect(built.code).toBe(0);
    const path = built.stdout.trim().split("\n").pop()!;
    const before = await seeded();
    expect(before).toMatch(/^\d{4}-/);
    const here = async () => JSON.parse((await agentenv(["store", "status", "--json"], { env: storeEnv() })).stdout).seeded;
    const hereBefore = await here();
    const refused = await agentenv(["store", "reset", "--host", host], { env: storeEnv() });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe("agentenv: store reset deletes every path in the golden store: pass --yes to confirm");
    // a session there using the store: refused, as locally
    const session = Bun.spawn([process.execPath, entry, "run", "--host", host, "--store", "golden", tempTree(), "--", "sh", "-c", "echo up; sleep 60"], { env: { ...process.env, ...storeEnv() }, stdout: "pipe", stderr: "pipe" });
    try {
      await (session.stdout as ReadableStream<Uint8Array>).getReader().read();
      const busy = await agentenv(["store", "reset", "--host", host, "--yes"], { env: storeEnv() });
      expect(busy.code).toBe(1);
      expect(busy.stderr).toMatch(/^agentenv: the golden store is in use by 1 session\(s\): agentenv-\S+ — end them first$/m);
    } finally {
      session.kill("SIGTERM");
      await session.exited;
    }
    const reset = await agentenv(["store", "reset", "--host", host, "--yes"], { env: storeEnv() });
    expect(reset.code).toBe(0);
    expect(reset.stderr).toContain(`seeding the golden Nix store (volume ${storeVolume})`);
    expect(reset.stderr).toContain(`golden store ${storeVolume} on rt-box seeded from localhost/agentenv:latest`);
    expect(Date.parse((await seeded())!)).toBeGreaterThan(Date.parse(before!));
    const after = await agentenv(["run", "--host", host, "--store", "ephemeral", tempTree(), "--", "sh", "-c", `nix-store --check-validity ${path} 2>/dev/null && echo valid || echo gone`], { env: storeEnv() });
    expect(after.stdout).toBe("gone\n");
    expect(after.stderr).not.toContain("seeding");
    // this machine's store of that name (the test above built the tools in it) is not touched
    expect(await here()).toEqual(hereBefore);
    // a host whose golden store was never seeded: gc says how it gets one
    const unseeded = await agentenv(["store", "gc", "--host", host], { env: { ...env, AGENTENV_STORE_VOLUME: `${storeVolume}-never` } });
    expect(unseeded.code).toBe(1);
    expect(unseeded.stderr.trim()).toBe(`agentenv: the golden store (volume ${storeVolume}-never) on rt-box does not exist yet — the first session with --store golden seeds it: agentenv run --host rt-box --store golden . -- true`);
    for (const args of [["store", "gc", "--host", "rt-nope"], ["store", "reset", "--host", "rt-nope", "--yes"]]) {
      const bad = await agentenv(args, { env: storeEnv() });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^agentenv: no host named rt-nope — add it: agentenv host add rt-nope/);
      expectNoStackTrace(bad.stderr);
    }
  }, 240_000);
});

describe("trust for a project on the remote (HOST:PATH)", () => {
  const sha256 = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest("hex");

  test("trust HOST:PATH: its sessions get secrets and keep store changes there; its config there is never loaded; the same path here stays untrusted; untrust; a host name pointed elsewhere is not trusted", async () => {
    const nonce = crypto.randomUUID().slice(0, 8);
    const storeVolume = `agentenv-remote-test-trust-${nonce}`;
    // a home of its own whose user config trusts no tree (the suite's trusts the temp dir, where this box's "remote" directories are too), with the suite's hosts
    const home = tempTree({ ".config/agentenv/config.ts": 'export default { extraEnv: { NIX_CONFIG: "substituters =" } };\n' });
    copyFileSync(join(env.XDG_CONFIG_HOME!, "agentenv/hosts.json"), join(home, ".config/agentenv/hosts.json"));
    const tenv = { ...env, HOME: home, XDG_CONFIG_HOME: join(home, ".config"), AGENTENV_STORE_VOLUME: storeVolume };
    const run = (args: string[]) => agentenv(args, { env: tenv });
    const dir = onRemote("d=$(mktemp -d /tmp/agentenv-remote-trust-XXXXXX) && mkdir $d/sub && echo $d").stdout.trim();
    // a config that would break every session were it loaded — written by this machine's user, so it would pass the ownership check here
    writeFileSync(join(dir, "agentenv.config.ts"), 'export default { image: "localhost/agentenv-never-loaded:latest" };\n');
    const value = `s3cret-${crypto.randomUUID()}`;
    expect((await agentenv(["secret", "set", "RT_TRUST_TOKEN"], { env: tenv, stdin: `${value}\n` })).code).toBe(0);
    // the secret's hash (never the value itself, in any command line), then a path built in the session's store
    const session = (project: string, n: string) =>
      agentenv(["run", "--store", "golden", project, "--", "sh", "-c", 'printf %s "${RT_TRUST_TOKEN:-none}" | sha256sum | cut -d" " -f1; nix-build --no-out-link -E "$1" 2>/dev/null', "sh", derivationExpr(`trust-${n}-${nonce}`)], { env: tenv });
    const valid = async (p: string) => (await agentenv(["run", "--store", "ephemeral", `${host}:${dir}`, "--", "sh", "-c", `nix-store --check-validity ${p} 2>/dev/null && echo valid || echo gone`], { env: tenv })).stdout.trim();
    let alias: { stop(): void } | undefined;
    try {
      // not trusted: no secret, the store change thrown away, said in one line
      const before = await session(`${host}:${dir}`, "before");
      expect(before.code).toBe(0);
      const [noSecret, unkept] = before.stdout.trim().split("\n");
      expect(noSecret).toBe(sha256("none"));
      expect(before.stderr).toContain(`${host}:${dir} is a project on another machine: no secrets, and its store changes are not kept — agentenv trust ${host}:${dir} trusts it (its config there is never loaded)`);
      expect(before.stderr).not.toContain("promoted");
      expect(await valid(unkept!)).toBe("gone");

      const trusted = await run(["trust", `${host}:${dir}`]);
      expect(trusted.code).toBe(0);
      expect(trusted.stderr).toContain(`trusted ${host}:${dir} on ssh://${remoteUser}@127.0.0.1:${port}, as named`);
      const listed = JSON.parse((await run(["trust", "--list", "--json"])).stdout);
      expect(listed.remote).toContainEqual(expect.objectContaining({ host, path: dir, url: `ssh://${remoteUser}@127.0.0.1:${port}`, hostStatus: "same" }));
      expect((await run(["trust", "--list"])).stdout).toContain(`${host}:${dir}  (on ssh://${remoteUser}@127.0.0.1:${port}, as named; its config there is never loaded)`);

      // trusted (a directory inside it too): the secret, the store change kept in that host's golden store, no config loaded (the session ran on the default image)
      const after = await session(`${host}:${dir}/sub`, "after");
      expect(after.code).toBe(0);
      const [secret, kept] = after.stdout.trim().split("\n");
      expect(secret).toBe(sha256(value));
      expect(after.stderr).not.toContain("another machine");
      expect(after.stderr).toMatch(/golden store: promoted \d+ new store paths?/);
      expect(await valid(kept!)).toBe("valid");
      // the same path as a directory here (this box is both machines) is another project: not trusted, its config not loaded
      const here = await run(["run", "--dry-run", dir, "--", "true"]);
      expect(here.stderr).toContain(`${dir} is not a trusted project: its agentenv.config.ts is not loaded, no secrets`);
      expect(here.stdout).not.toContain("never-loaded");
      // the secret is found nowhere on the remote afterwards
      expect(onRemote(`grep -rlsF -- ${value} ~ /tmp /var/tmp /dev/shm 2>/dev/null; true`).stdout).toBe("");

      // untrust: back to no secrets; a second untrust, or one of the subdirectory, is a one-line error
      expect((await run(["untrust", `${host}:${dir}/sub`])).stderr).toMatch(new RegExp(`^agentenv: ${host}:${dir}/sub is not a trusted project by itself: ${host}:${dir} is, and covers it — agentenv untrust ${host}:${dir}$`, "m"));
      expect((await run(["untrust", `${host}:${dir}`])).code).toBe(0);
      const untrusted = await run(["untrust", `${host}:${dir}`]);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toMatch(/is not a trusted project — agentenv trust --list shows them/);
      const again = await session(`${host}:${dir}`, "again");
      expect(again.stdout.split("\n")[0]).toBe(sha256("none"));
      expect(again.stderr).toContain("is a project on another machine: no secrets");

      // trust is for the host as it was reached: the same name pointed at another address since is not trusted
      const other = await remote.extraServer([]);
      alias = other;
      expect((await run(["host", "add", "rt-alias", ...remote.addArgs, "--force"])).code).toBe(0);
      expect((await run(["trust", `rt-alias:${dir}`])).code).toBe(0);
      await run(["host", "add", "rt-alias", `ssh://${remoteUser}@127.0.0.1:${other.port}`, "--identity", join(keys, "id"), "--known-hosts", other.knownHosts, "--force"]);
      const moved = await agentenv(["run", `rt-alias:${dir}`, "--", "sh", "-c", 'printf %s "${RT_TRUST_TOKEN:-none}" | sha256sum | cut -d" " -f1'], { env: tenv });
      expect(moved.code).toBe(0);
      expect(moved.stdout.trim()).toBe(sha256("none"));
      expect(moved.stderr).toContain(`rt-alias:${dir} was trusted when host rt-alias was ssh://${remoteUser}@127.0.0.1:${port}; it is now ssh://${remoteUser}@127.0.0.1:${other.port}: not trusted`);
      expect(JSON.parse((await run(["trust", "--list", "--json"])).stdout).remote).toContainEqual(expect.objectContaining({ host: "rt-alias", hostStatus: "changed" }));

      // bad input: one line each
      for (const [args, message] of [
        [["trust", `rt-nope:${dir}`], /^agentenv: no host named rt-nope — add it/],
        [["trust", `${host}:relative/dir`], /^agentenv: rt-box:relative\/dir: the remote directory must be an absolute path with no "\.\." part/],
        [["trust", `${host}:/`], /^agentenv: refusing to trust rt-box:\/ \(every directory on rt-box\)/],
      ] as const) {
        const bad = await run([...args]);
        expect(bad.code).toBe(1);
        expect(bad.stderr).toMatch(message);
        expectNoStackTrace(bad.stderr);
      }
    } finally {
      await run(["untrust", `${host}:${dir}`]);
      await run(["untrust", `rt-alias:${dir}`]);
      await run(["host", "rm", "rt-alias"]);
      alias?.stop();
      await agentenv(["secret", "rm", "RT_TRUST_TOKEN"], { env: tenv });
      onRemote(`rm -rf ${dir}; podman volume ls -q | grep '^${storeVolume}' | xargs -r podman volume rm --force >/dev/null 2>&1; true`);
    }
  }, 240_000);
});

describe("sessions on the remote", () => {
  test("run --host: the command's exit code, stdin, the image shipped once on first use", async () => {
    const project = tempTree({ "in.txt": "local\n" });
    const first = await run(["run", "--host", host, "--image", tinyImage, project, "--", "sh", "-c", "read line; echo got $line; exit 3"], { stdin: "hello\n" });
    expect(first.stdout).toBe("got hello\n");
    expect(first.code).toBe(3);
    expect(first.stderr).toMatch(/image localhost\/agentenv-remote-test-tiny:latest is not on rt-box: shipping it from this machine/);
    expect(first.stderr).toMatch(/shipped to rt-box: [\d.]+ (KiB|MiB)/);
    expect(onRemote(`podman image exists ${tinyImage}`).code).toBe(0);
    const again = await run(["run", "--host", host, "--image", tinyImage, project, "--", "sh", "-c", "exit 0"]);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/shipping/);
    // the default image, shipped too when this remote lacks it; a flake's dev shell there
    writeFileSync(join(project, "flake.nix"), devShellFlake);
    const shell = await run(["run", "--host", host, project, "--", "bash", "-c", "echo shell=$HELLO_FROM_SHELL; cat /work/in.txt"]);
    expect(shell.stdout).toContain("shell=yes\nlocal\n");
    expect(shell.code).toBe(0);
    // `agentenv --host H DIR` with a script piped in: the shell reads it, its exit code comes back
    const piped = await run(["--host", host, project], { stdin: "echo via-shell=$HELLO_FROM_SHELL\nexit 4\n" });
    expect(piped.stdout).toContain("via-shell=yes\n");
    expect(piped.code).toBe(4);
    expect(onRemote(`podman ps -a --filter label=agentenv.host=${host} --format '{{.Names}}'`).stdout.trim()).toBe("");
  }, 240_000);

  test("host check: an image rebuilt here since it was shipped is told apart; --ship sends this machine's", async () => {
    // there and the same as here (shipped now, if the run test above did not), then changed here
    expect((await run(["host", "check", host, "--image", tinyImage, "--ship"])).stdout).toContain("(the same as this machine's)");
    const ctr = `agentenv-remote-test-commit-${process.pid}`;
    expect(Bun.spawnSync(["podman", "run", "--name", ctr, tinyImage, "sh", "-c", "echo changed > /changed"]).exitCode).toBe(0);
    expect(Bun.spawnSync(["podman", "commit", "-q", ctr, tinyImage]).exitCode).toBe(0);
    Bun.spawnSync(["podman", "rm", "--force", ctr]);
    const stale = await run(["host", "check", host, "--image", tinyImage]);
    expect(stale.stdout).toMatch(/⚠ image: localhost\/agentenv-remote-test-tiny:latest on rt-box is not this machine's \(\w{12} there, \w{12} here: rebuilt since it was shipped\?\)\n    fix: agentenv host check rt-box --ship/);
    const shipped = await run(["host", "check", host, "--image", tinyImage, "--ship"]);
    expect(shipped.stderr).toMatch(/shipped to rt-box/);
    expect(shipped.stdout).toMatch(/✔ image: localhost\/agentenv-remote-test-tiny:latest is on rt-box \(the same as this machine's\)/);
    expect(onRemote(`podman run --rm ${tinyImage} sh -c 'read line < /changed; echo $line'`).stdout).toBe("changed\n");
  }, 60_000);

  test("AGENTENV_HOST (like config host) sends sessions there; commands that are no session's stay on this machine", async () => {
    const project = tempTree();
    const plan = await agentenv(["run", "--json", project, "--", "true"], { env: { ...env, AGENTENV_HOST: host } });
    expect(JSON.parse(plan.stdout).argv[0][0]).toBe("ssh");
    expect(JSON.parse(plan.stdout).plan.labels["agentenv.host"]).toBe(host);
    const list = await agentenv(["env", "list", "--json", "-v"], { env: { ...env, AGENTENV_HOST: host } });
    expect(list.code).toBe(0);
    expect(list.stderr).toContain(`host ${host} is for sessions (agentenv [DIR], run): this command works on this machine`);
  }, 60_000);

  test("HOST:PATH: a directory on the remote is the project", async () => {
    const dir = onRemote("d=$(mktemp -d /tmp/agentenv-remote-proj-XXXXXX) && echo remote-content > $d/there.txt && echo $d").stdout.trim();
    try {
      const result = await run(["run", `${host}:${dir}`, "--", "sh", "-c", "cat /work/there.txt; echo written > /work/back.txt; exit 5"], { cwd: tempTree() });
      expect(result.stdout).toBe("remote-content\n");
      expect(result.code).toBe(5);
      // a project on the remote not trusted (agentenv trust HOST:PATH) gets no secrets
      expect(result.stderr).toContain(`${host}:${dir} is a project on another machine: no secrets`);
      expect(onRemote(`cat ${dir}/back.txt`).stdout).toBe("written\n");
      const dry = await run(["run", "--dry-run", `${host}:${dir}`, "--", "true"]);
      expect(dry.stdout).toMatch(new RegExp(`^ssh .* -- 127\\.0\\.0\\.1 'exec podman run .* -v ${dir}:/work `));
      const mismatch = await run(["run", "--host", "other", `${host}:${dir}`, "--", "true"]);
      expect(mismatch.stderr).toMatch(/is on host rt-box, but --host says other/);
    } finally {
      onRemote(`rm -rf ${dir}`);
    }
  }, 60_000);

  test("a remote without sshfs: a local project is refused in one line naming what to install there, nothing left", async () => {
    // everything of the remote's PATH but sshfs, on a second sshd of this test
    const bin = tempTree({}, "agentenv-remote-nosshfs-");
    chmodSync(bin, 0o755);
    Bun.spawnSync(["sh", "-c", `for f in /usr/bin/* /usr/sbin/*; do [ "$(basename "$f")" = sshfs ] || ln -sf "$f" ${bin}/; done`]);
    const server = await remote.extraServer([`SetEnv=PATH=${bin}`]);
    try {
      await run(["host", "add", "rt-nosshfs", `ssh://${remoteUser}@127.0.0.1:${server.port}`, "--identity", join(keys, "id"), "--known-hosts", server.knownHosts, "--force"]);
      const check = await run(["host", "check", "rt-nosshfs"]);
      expect(check.stdout).toMatch(/⚠ sshfs: no sshfs on rt-nosshfs: .*\n    fix: on rt-nosshfs: sudo apt-get install sshfs/);
      const result = await run(["run", "--host", "rt-nosshfs", tempTree(), "--", "true"]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^agentenv: rt-nosshfs has no sshfs, which live-shares a local project into its sessions — on rt-nosshfs: sudo apt-get install sshfs/m);
      expectNoStackTrace(result.stderr);
      expect(onRemote("ls -d /tmp/agentenv-share-agentenv-* 2>/dev/null; podman ps -a --filter label=agentenv.host=rt-nosshfs --format '{{.Names}}'").stdout.trim()).toBe("");
    } finally {
      await run(["host", "rm", "rt-nosshfs"]);
      server.stop();
    }
  }, 60_000);

  test("the local sftp-server serving a shared project is confined to it: nothing else of this machine is reachable over SFTP", () => {
    const project = tempTree({ "in.txt": "inside\n" });
    const outside = tempTree({ "secret.txt": "outside\n" });
    const work = tempTree();
    const server = confinedServer(localSftpServer(), project, join(work, "root"));
    expect(server?.[0]).toMatch(/unshare$/);
    // a client speaking SFTP straight to it, as a hostile remote could
    const batch = join(work, "batch");
    writeFileSync(batch, [`-get ${outside}/secret.txt ${work}/stolen`, "-get /etc/hostname " + `${work}/hostname`, `-put ${batch} /usr/planted`, `get ${project}/in.txt ${work}/got`, `put ${batch} ${project}/written`].join("\n") + "\n");
    const out = Bun.spawnSync(["sftp", "-b", batch, "-D", shellJoin(server!)], { stderr: "pipe" });
    expect(out.exitCode).toBe(0);
    expect(readFileSync(join(work, "got"), "utf8")).toBe("inside\n");
    expect(existsSync(join(project, "written"))).toBe(true);
    for (const leaked of ["stolen", "hostname"]) expect(existsSync(join(work, leaked))).toBe(false);
    expect(existsSync("/usr/planted")).toBe(false);
    expect(out.stderr.toString()).toMatch(/not found/);
  });

  test("a local project is live-shared: each side sees the other's writes during the session; unmounted after", async () => {
    const project = tempTree({ "from-local-before.txt": "before\n" });
    const script = [
      "cat /work/from-local-before.txt",
      "echo remote-wrote > /work/from-remote.txt",
      "i=0; while [ ! -e /work/from-local-during.txt ]; do i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05; done",
      "cat /work/from-local-during.txt",
    ].join("; ");
    const child = Bun.spawn([process.execPath, entry, "run", "--host", host, project, "--", "sh", "-c", script], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
    for (let i = 0; i < 300 && !existsSync(join(project, "from-remote.txt")); i++) await Bun.sleep(50);
    expect(readFileSync(join(project, "from-remote.txt"), "utf8")).toBe("remote-wrote\n");
    writeFileSync(join(project, "from-local-during.txt"), "local-wrote\n");
    const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
    expect(await child.exited).toBe(0);
    expect(stdout).toBe("before\nlocal-wrote\n");
    expectNoStackTrace(stderr);
    // nothing left there: no mount in Podman's namespace, no mount point, no sshfs
    const left = onRemote("podman unshare sh -c 'grep -c agentenv-share /proc/self/mountinfo'; ls -d /tmp/agentenv-share-agentenv-* 2>/dev/null; pgrep -u agentenv-remote -f 'sshfs.*passive' ; true");
    expect(left.stdout.trim()).toBe("0");
  }, 120_000);

  test("--userns keep-id with a live-shared project: the remote user's own uid inside, the project readable and writable", async () => {
    const project = tempTree({ "mine.txt": "here\n" });
    const result = await run(["run", "--host", host, "--userns", "keep-id", project, "--", "sh", "-c", 'id -u; echo "$HOME"; cat /work/mine.txt; echo there > /work/theirs.txt; cat /work/theirs.txt; stat -c %u /work/theirs.txt']);
    expectNoStackTrace(result.stderr);
    const uid = onRemote("id -u").stdout.trim();
    expect(result.stdout).toBe(`${uid}\n/root\nhere\nthere\n${uid}\n`);
    expect(result.code).toBe(0);
    expect(readFileSync(join(project, "theirs.txt"), "utf8")).toBe("there\n");
  }, 120_000);

  test("a secret reaches the remote session through a tmpfs handoff and is found nowhere there afterwards", async () => {
    const value = `s3cret-${crypto.randomUUID()}`;
    const set = await run(["secret", "set", "RT_REMOTE_TOKEN"], { stdin: `${value}\n` });
    expect(set.code).toBe(0);
    try {
      const project = tempTree();
      // compared by its hash: the value itself must not reach the remote in any command line, this test's included
      const hash = new Bun.CryptoHasher("sha256").update(value).digest("hex");
      const result = await run(["run", "--host", host, project, "--", "sh", "-c", 'printf %s "$RT_REMOTE_TOKEN" | sha256sum | cut -d" " -f1; ls /run/agentenv/handoff | wc -l']);
      expect(result.stdout).toBe(`${hash}\n0\n`);
      expect(result.code).toBe(0);
      const found = onRemote(`grep -rlsF -- ${value} ~ /tmp /dev/shm /var/tmp 2>/dev/null; ls -d /dev/shm/agentenv-handoff-* 2>/dev/null; true`);
      expect(found.stdout).toBe("");
      // a project on the remote, not trusted (agentenv trust HOST:PATH): no secret at all
      const dir = onRemote("mktemp -d /tmp/agentenv-remote-secret-XXXXXX").stdout.trim();
      const there = await run(["run", `${host}:${dir}`, "--", "sh", "-c", 'echo "token=${RT_REMOTE_TOKEN:-none}"']);
      onRemote(`rm -rf ${dir}`);
      expect(there.stdout).toBe("token=none\n");
    } finally {
      await run(["secret", "rm", "RT_REMOTE_TOKEN"]);
    }
  }, 60_000);

  test("Ctrl-C (SIGINT to agentenv) reaches the remote command; its exit code comes back", async () => {
    const child = Bun.spawn([process.execPath, entry, "run", "--host", host, tempTree(), "--", "sh", "-c", 'trap "echo interrupted; exit 42" INT; echo ready; while :; do sleep 0.1; done'], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
    const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
    let out = "";
    while (!out.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    child.kill("SIGINT");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    expect(await child.exited).toBe(42);
    expect(out).toBe("ready\ninterrupted\n");
  }, 60_000);

  test("a shell on a terminal (ssh -t): the prompt, Ctrl-C reaching the container, exit N returning N", async () => {
    if (!Bun.which("tmux")) throw new Error("tmux is missing: bin/setup installs it");
    const { tmux, waitFor } = terminal(`agentenv-remote-tty-${process.pid}`);
    const session = `agentenv-remote-tty-${process.pid}`;
    const dir = onRemote("mktemp -d /tmp/agentenv-remote-tty-XXXXXX").stdout.trim();
    const resultFile = join(tempTree(), "code");
    const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ");
    const command = `${vars} ${process.execPath} ${entry} ${host}:${dir}; echo $? > ${resultFile}; echo AGENTENV-DONE; sleep 600`;
    expect(tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", command).exitCode).toBe(0);
    try {
      await waitFor(/\/work/);
      tmux("send-keys", "-t", session, "echo tty=$(tty | cut -c1-8) host=$(cat /etc/hostname | cut -c1-3)", "Enter");
      await waitFor(/tty=\/dev\/pts/);
      tmux("send-keys", "-t", session, "sleep 30; echo not-interrupted", "Enter");
      await Bun.sleep(700);
      tmux("send-keys", "-t", session, "C-c", "");
      tmux("send-keys", "-t", session, "echo after-ctrl-c", "Enter");
      const after = await waitFor(/^after-ctrl-c/m);
      expect(after).not.toMatch(/^not-interrupted/m);
      tmux("send-keys", "-t", session, "exit 6", "Enter");
      await waitFor(/AGENTENV-DONE/);
      expect(readFileSync(resultFile, "utf8").trim()).toBe("6");
    } finally {
      tmux("kill-session", "-t", session);
      onRemote(`rm -rf ${dir}`);
    }
  }, 120_000);

  test("the SSH master killed mid-session: a clear error, nothing left there, the next command works", async () => {
    const project = tempTree();
    const child = Bun.spawn([process.execPath, entry, "run", "--host", host, project, "--", "sh", "-c", "echo up; sleep 60"], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
    const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const pid = masterPid();
    expect(pid).toBeGreaterThan(0);
    process.kill(pid!, "SIGKILL");
    const stderr = await new Response(child.stderr).text();
    expect(await child.exited).toBe(255);
    expect(stderr).toMatch(/^agentenv: the SSH connection to rt-box was lost during the session \(its container agentenv-\S+ was removed\) — run the command again/m);
    expectNoStackTrace(stderr);
    const left = onRemote(`podman ps -a --filter label=agentenv.project=${project} --format '{{.Names}}'; podman unshare sh -c 'grep -c agentenv-share /proc/self/mountinfo'; true`);
    expect(left.stdout.trim()).toBe("0");
    const next = await run(["run", "--host", host, project, "--", "sh", "-c", "echo again"]);
    expect(next.stdout).toBe("again\n");
    expect(next.code).toBe(0);
    expect(masterPid()).not.toBe(pid);
  }, 120_000);
});

