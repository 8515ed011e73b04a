import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, repoRoot, tempTree } from "../helpers/cli.ts";
import { derivationExpr, leftoverContainers, requireHostStore, requireImage } from "../helpers/engine.ts";

/**
 * `--store host` on real Podman against a real nix-daemon this file starts on its own
 * socket (so it never meets a daemon the machine may run), working on the host's
 * /nix/store. Everything the tests add to the host's store is deleted afterwards.
 */
const nixDaemon = "/usr/bin/nix-daemon";
const nonce = `${process.pid}-${Date.now().toString(36)}`;
const daemonDir = tempTree({}, "agentenv-nixd-");
const socket = join(daemonDir, "socket");
const autoRoots = "/nix/var/nix/gcroots/auto";
/** no golden store may be made in host mode: this one must never appear */
const storeVolume = `agentenv-test-nixhost-${process.pid}`;
const envName = `t${process.pid}-nixhost`;
const env = { NIX_DAEMON_SOCKET_PATH: socket, AGENTENV_STORE_VOLUME: storeVolume, AGENTENV_STORE: "" };

let daemon: ReturnType<typeof Bun.spawn> | undefined;
let storeBefore = new Set<string>();
let rootsBefore = new Set<string>();
let autoRootsExisted = true;

const entries = (dir: string) => new Set(existsSync(dir) ? readdirSync(dir) : []);

async function waitForSocket(seconds = 15): Promise<void> {
  for (let i = 0; i < seconds * 10; i++) {
    if (existsSync(socket)) return;
    if (daemon?.exitCode !== null) break;
    await Bun.sleep(100);
  }
  throw new Error(`nix-daemon did not listen on ${socket}: ${readFileSync(join(daemonDir, "daemon.log"), "utf8")}`);
}

beforeAll(async () => {
  await requireImage();
  if (!existsSync(nixDaemon)) throw new Error(`${nixDaemon} is missing: apt-get install nix-bin (the host half of --store host)`);
  if (process.getuid?.() !== 0) throw new Error("the --store host tests start a nix-daemon on the host's /nix/store: run them as root");
  requireHostStore();
  storeBefore = entries("/nix/store");
  rootsBefore = entries(autoRoots);
  autoRootsExisted = existsSync(autoRoots);
  mkdirSync(join(daemonDir, "conf"));
  writeFileSync(
    join(daemonDir, "conf", "nix.conf"),
    ["experimental-features = nix-command flakes", "sandbox = false", "build-users-group =", "substituters =", ""].join("\n"),
  );
  const { NIX_CONFIG: _config, NIX_REMOTE: _remote, ...hostEnv } = process.env;
  const log = openSync(join(daemonDir, "daemon.log"), "w");
  daemon = Bun.spawn([nixDaemon], {
    env: { ...hostEnv, NIX_DAEMON_SOCKET_PATH: socket, NIX_CONF_DIR: join(daemonDir, "conf") },
    stdin: "ignore",
    stdout: log,
    stderr: log,
  });
  closeSync(log);
  await waitForSocket();
});

afterAll(async () => {
  Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${envName}`]);
  if (daemon) {
    daemon.kill();
    await daemon.exited;
  }
  // what the sessions added to the host's store (the daemon is gone: nothing holds them)
  const fresh = [...entries("/nix/store")].filter((name) => !storeBefore.has(name) && !name.startsWith("."));
  // a build that failed leaves its lock file, which is no store path
  for (const name of fresh.filter((n) => n.endsWith(".lock"))) rmSync(`/nix/store/${name}`, { force: true });
  const added = fresh.filter((n) => !n.endsWith(".lock")).map((name) => `/nix/store/${name}`);
  if (added.length) {
    const { NIX_REMOTE: _remote, ...hostEnv } = process.env;
    const deleted = Bun.spawnSync(["nix-store", "--delete", ...added], { env: hostEnv });
    if (deleted.exitCode !== 0) console.warn(`could not delete ${added.join(" ")}: ${deleted.stderr.toString()}`);
  }
  // the daemon registered the sessions' roots under their in-container paths: stale here
  for (const name of entries(autoRoots)) {
    if (rootsBefore.has(name)) continue;
    const link = join(autoRoots, name);
    if (!existsSync(readlinkSync(link))) rmSync(link, { force: true });
  }
  if (!autoRootsExisted && entries(autoRoots).size === 0) rmSync(autoRoots, { recursive: true, force: true });
  rmSync(daemonDir, { recursive: true, force: true });
});

describe("--store host: Nix in the session works through the host's nix-daemon", () => {
  test("paths added and built in the container land in the host's /nix/store, which the container cannot write", async () => {
    const project = tempTree();
    const content = `agentenv-nixhost-${nonce}`;
    const script = [
      'echo "remote=$NIX_REMOTE socket=$NIX_DAEMON_SOCKET_PATH"',
      `printf %s ${content} > /tmp/${content}`,
      `nix-store --add /tmp/${content}`,
      'nix-build --no-out-link -E "$1"',
      "touch /nix/store/agentenv-write-test 2>/dev/null && echo store=writable || echo store=read-only",
      // a trusted client's settings reach the host's daemon: the image's single-user "sandbox = false" must not
      "nix show-config | grep -c '^sandbox = false' || true",
      `touch ${daemonDir}/agentenv-write-test 2>/dev/null && echo socket-dir=writable || echo socket-dir=read-only`,
    ].join("\n");
    const result = await agentenv(["run", "--store", "host", project, "--", "sh", "-c", script, "sh", derivationExpr(`nixhost-${nonce}`)], { env });
    expect(result.stderr).not.toContain("error");
    expect(result.code).toBe(0);
    const [remote, added, built, store, sandboxOff, socketDir] = result.stdout.trim().split("\n");
    expect(sandboxOff).toBe("0");
    expect(remote).toBe(`remote=daemon socket=${socket}`);
    expect(added).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-${content}$`));
    expect(built).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-nixhost-${nonce}$`));
    expect([store, socketDir]).toEqual(["store=read-only", "socket-dir=read-only"]);

    // on the host, in its store and its database
    expect(readFileSync(added!, "utf8")).toBe(content);
    expect(readFileSync(built!, "utf8")).toBe(`nixhost-${nonce}\n`);
    const { NIX_REMOTE: _remote, ...hostEnv } = process.env;
    expect(Bun.spawnSync(["nix-store", "--check-validity", added!, built!], { env: hostEnv }).exitCode).toBe(0);

    // the golden store was left alone: not even its volume was made
    expect(Bun.spawnSync(["podman", "volume", "exists", storeVolume]).exitCode).not.toBe(0);
    expect(leftoverContainers(project)).toEqual([]);
  });

  test("--nix host: an environment's ~/flake.nix tools install through the daemon and run", async () => {
    const created = await agentenv(["env", "create", envName, join(repoRoot, "test", "fixtures", "env")], { env });
    expect(created.code).toBe(0);
    const project = tempTree();
    const result = await agentenv(["run", "--env", envName, "--nix", "host", project, "--", "sh", "-c", "hello-env && readlink -f ~/.local/state/agentenv/profile"], { env });
    expect(result.stderr).toContain("tools installed");
    expect(result.code).toBe(0);
    const [hello, profile] = result.stdout.trim().split("\n");
    expect(hello).toBe("hello-env v1");
    expect(profile).toMatch(/^\/nix\/store\/[a-z0-9]{32}-fixture-tools$/);
    expect(existsSync(join(profile!, "bin", "hello-env"))).toBe(true); // on the host
    // the next session finds them installed: no second install
    const again = await agentenv(["run", "--env", envName, "--nix", "host", project, "--", "hello-env"], { env });
    expect(again.stdout).toBe("hello-env v1\n");
    expect(again.stderr).not.toContain("installing");
    expect(Bun.spawnSync(["podman", "volume", "exists", storeVolume]).exitCode).not.toBe(0);
  });

  test("up --nix host: commands exec'd into the environment container use the host's daemon", async () => {
    const project = realpathSync(tempTree());
    const up = await agentenv(["up", "--env", envName, "--nix", "host", "--roots", project], { env });
    expect(up.code).toBe(0);
    try {
      const content = `agentenv-nixhost-up-${nonce}`;
      const result = await agentenv(["exec", "--env", envName, "--", "sh", "-c", `echo "remote=$NIX_REMOTE"; hello-env; printf %s ${content} > /tmp/f && nix-store --add /tmp/f`], { cwd: project, env });
      expect(result.code).toBe(0);
      const [remote, hello, added] = result.stdout.trim().split("\n");
      expect([remote, hello]).toEqual(["remote=daemon", "hello-env v1"]);
      expect(readFileSync(added!, "utf8")).toBe(content); // on the host
    } finally {
      expect((await agentenv(["down", "--env", envName], { env })).code).toBe(0);
    }
    expect(Bun.spawnSync(["podman", "volume", "exists", storeVolume]).exitCode).not.toBe(0);
  });

  test("no daemon listening: one line, nothing started", async () => {
    const project = tempTree();
    const missing = join(daemonDir, "no-such-socket");
    const result = await agentenv(["run", "--store", "host", project, "--", "true"], { env: { ...env, NIX_DAEMON_SOCKET_PATH: missing } });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`agentenv: no nix-daemon socket at ${missing} — start the host's nix-daemon, or use --store golden\n`);
    expect(leftoverContainers(project)).toEqual([]);
  });
});
