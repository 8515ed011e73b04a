import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "pathe";
import { storeFlag } from "../../core/commands/_shared.ts";
import { UserError, formatUserError } from "../../core/errors.ts";
import { checkHostStore, defaultDaemonSocket } from "../../plugins/nix/index.ts";
import { agentenv, tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace, requireHostStore } from "../helpers/engine.ts";

/**
 * `--store host` / `--nix host` as plans (`run --json`): no engine, no nix-daemon — a
 * plain listening unix socket stands in for the daemon's.
 */
const dir = tempTree({}, "agentenv-nixhost-");
const socket = join(dir, "daemon-socket", "socket");
let listener: ReturnType<typeof Bun.listen> | undefined;

beforeAll(() => {
  requireHostStore();
  mkdirSync(join(dir, "daemon-socket"));
  listener = Bun.listen({ unix: socket, socket: { data() {} } });
});
afterAll(() => {
  listener?.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

interface PlanJson {
  plugins: string[];
  plan: { mounts: Array<{ type: string; source: string; target: string; readonly?: boolean }>; env: Record<string, string>; labels: Record<string, string> };
  argv: string[][];
}

async function planFor(args: string[], env: Record<string, string> = { NIX_DAEMON_SOCKET_PATH: socket }): Promise<PlanJson> {
  const result = await agentenv(["run", "--json", ...args, tempTree(), "--", "true"], { env: { AGENTENV_STORE: "", ...env } });
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as PlanJson;
}

describe("--store host: the host's nix-daemon and /nix/store", () => {
  test.each([[["--store", "host"]], [["--nix", "host"]], [["--nix", "host", "--store", "host"]]])("%p mounts the store read-only and the socket's directory, sets NIX_REMOTE", async (flags) => {
    const { plan, argv } = await planFor(flags);
    expect(plan.mounts).toContainEqual({ type: "bind", source: "/nix/store", target: "/nix/store", readonly: true });
    expect(plan.mounts).toContainEqual({ type: "bind", source: join(dir, "daemon-socket"), target: join(dir, "daemon-socket"), readonly: true });
    // no golden store clone anywhere at /nix
    expect(plan.mounts.filter((m) => m.target === "/nix" || (m.target.startsWith("/nix/") && m.target !== "/nix/store"))).toEqual([]);
    expect(plan.env.NIX_REMOTE).toBe("daemon");
    expect(plan.env.NIX_CONF_DIR).toBe("/etc/agentenv/nix-host");
    expect(plan.env.NIX_DAEMON_SOCKET_PATH).toBe(socket);
    expect(plan.labels["agentenv.store"]).toBe("host");
    const run = argv[0]!.join(" ");
    expect(run).toContain("-v /nix/store:/nix/store:ro");
    expect(run).toContain("-e NIX_REMOTE=daemon");
  });

  test("store: \"host\" in config and AGENTENV_STORE=host work alike", async () => {
    const fromEnv = await planFor([], { NIX_DAEMON_SOCKET_PATH: socket, AGENTENV_STORE: "host" });
    expect(fromEnv.plan.env.NIX_REMOTE).toBe("daemon");
    const project = tempTree({ "agentenv.config.ts": `export default { store: "host" };` });
    const result = await agentenv(["run", "--json", project, "--", "true"], { env: { NIX_DAEMON_SOCKET_PATH: socket, AGENTENV_STORE: "" } });
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout).plan.labels["agentenv.store"]).toBe("host");
  });

  test("a symlink to the socket mounts the directory that really holds it", async () => {
    const link = join(tempTree(), "socket-link");
    symlinkSync(socket, link);
    const { plan } = await planFor(["--store", "host"], { NIX_DAEMON_SOCKET_PATH: link });
    expect(plan.mounts).toContainEqual({ type: "bind", source: join(dir, "daemon-socket"), target: join(dir, "daemon-socket"), readonly: true });
    expect(plan.env.NIX_DAEMON_SOCKET_PATH).toBe(socket);
  });

  test("a missing socket, or a file that is not one, is a one-line error", async () => {
    const missing = join(dir, "nothing-here", "socket");
    const notSocket = join(tempTree({ socket: "" }), "socket");
    for (const [path, flags] of [[missing, ["--store", "host"]], [notSocket, ["--nix", "host"]]] as const) {
      const result = await agentenv(["run", ...flags, tempTree(), "--", "true"], { env: { NIX_DAEMON_SOCKET_PATH: path, AGENTENV_STORE: "" } });
      expect(result.code).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe(`agentenv: no nix-daemon socket at ${path} — start the host's nix-daemon, or use --store golden\n`);
      expectNoStackTrace(result.stderr);
    }
  });

  test("a host with no /nix/store is one line naming the fix, before the socket is looked for", () => {
    const missing = join(tempTree(), "nix", "store");
    let caught: unknown;
    try {
      checkHostStore(missing);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(UserError);
    expect(formatUserError(caught as UserError)).toBe(`--store host: this host has no ${missing} (Nix is not installed here, or its store was never initialised) — install Nix with its nix-daemon (e.g. apt-get install nix-bin, then start nix-daemon), or use --store golden`);
    expect(() => checkHostStore(tempTree())).not.toThrow();
  });

  test("without NIX_DAEMON_SOCKET_PATH, Nix's default socket is the one looked for", async () => {
    const result = await agentenv(["run", "--dry-run", "--store", "host", tempTree(), "--", "true"], { env: { NIX_DAEMON_SOCKET_PATH: "", AGENTENV_STORE: "" } });
    if (result.code === 0) {
      // this machine runs a nix-daemon: its default socket is mounted and needs no override
      expect(result.stdout).toContain(`-v /nix/var/nix/daemon-socket:/nix/var/nix/daemon-socket:ro`);
      expect(result.stdout).not.toContain("NIX_DAEMON_SOCKET_PATH");
    } else {
      expect(result.stderr).toBe(`agentenv: no nix-daemon socket at ${defaultDaemonSocket} — start the host's nix-daemon, or use --store golden\n`);
    }
  });

  test.each([
    [["--nix", "bogus"], 'agentenv: unknown --nix value "bogus" — use --nix host (this host\'s nix-daemon and /nix/store) or --nix golden (the golden store, the default)'],
    [["--nix", "host", "--store", "ephemeral"], "agentenv: --nix host conflicts with --store ephemeral — pass only one of them"],
    [["--nix", "host", "--no-store"], "agentenv: --nix host conflicts with --no-store — pass only one of them"],
    [["--nix", "golden", "--store", "host"], "agentenv: --nix golden conflicts with --store host — pass only one of them"],
  ])("%p is a clear one-line error", async (flags, message) => {
    const result = await agentenv(["run", "--dry-run", ...flags, tempTree(), "--", "true"], { env: { NIX_DAEMON_SOCKET_PATH: socket } });
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(message);
    expectNoStackTrace(result.stderr);
  });

  test("--store help names host", async () => {
    const result = await agentenv(["run", "--help"]);
    expect(result.stdout + result.stderr).toContain("--nix");
    expect(result.stdout + result.stderr).toContain("golden|ephemeral|none|host");
  });
});

describe("storeFlag", () => {
  test("maps --store, --no-store and --nix to one store mode", () => {
    expect(storeFlag({})).toBeUndefined();
    expect(storeFlag({ store: "ephemeral" })).toBe("ephemeral");
    expect(storeFlag({ store: false })).toBe("none"); // citty's reading of --no-store
    expect(storeFlag({ "no-store": true })).toBe("none");
    expect(storeFlag({ nix: "host" })).toBe("host");
    expect(storeFlag({ nix: "host", store: "host" })).toBe("host");
    // --nix golden overrides a config's store: "host"; --store ephemeral (a golden clone too) refines it
    expect(storeFlag({ nix: "golden" })).toBe("golden");
    expect(storeFlag({ nix: "golden", store: "ephemeral" })).toBe("ephemeral");
  });

  test("refuses unknown --nix values and conflicts", () => {
    for (const args of [{ nix: "" }, { nix: "HOST" }, { nix: "host", store: "none" }, { nix: "golden", store: false }]) {
      expect(() => storeFlag(args)).toThrow(UserError);
    }
  });
});
