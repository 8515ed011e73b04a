import { expect } from "bun:test";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { defaultImage } from "../../core/config.ts";

/**
 * Integration tests run real containers. A missing engine or image is a failure
 * with the fix in the message, never a silent skip: `.ci/run` (via bin/setup)
 * installs both.
 */
export async function requireImage(engine = "podman", image = defaultImage): Promise<void> {
  const check = Bun.spawnSync([engine, "image", "exists", image]);
  if (check.exitCode !== 0) throw new Error(`${image} is missing from ${engine}: run bin/setup (or agentenv image build) before the integration tests`);
}

/**
 * The host's /nix/store, for the `--store host` tests. A new machine has Nix (bin/setup
 * installs nix-bin) but no store until something opens it: made here the way Nix makes
 * it (`nix-store --init` opens the local store, creating /nix/store and its database).
 */
export function requireHostStore(): void {
  if (existsSync("/nix/store")) return;
  if (process.getuid?.() !== 0) throw new Error("the --store host tests need the host's /nix/store: run them as root (they create it), or install Nix");
  const { NIX_REMOTE: _remote, ...hostEnv } = process.env;
  const init = Bun.spawnSync(["nix-store", "--init"], { env: hostEnv, stderr: "pipe" });
  if (init.exitCode !== 0 || !existsSync("/nix/store")) throw new Error(`nix-store --init did not make /nix/store (run bin/setup: it installs nix-bin): ${init.stderr.toString().trim()}`);
}

/** Containers agentenv left behind for a project (there should be none after a session). */
export function leftoverContainers(project: string, engine = "podman"): string[] {
  const out = Bun.spawnSync([engine, "ps", "-a", "--filter", `label=agentenv.project=${project}`, "--format", "{{.Names}}"]);
  return out.stdout.toString().split("\n").filter(Boolean);
}

export const devShellFlake = `{
  outputs = { self }: {
    devShells.x86_64-linux.default = derivation {
      name = "devshell"; system = "x86_64-linux"; builder = "/bin/bash";
      args = [ "-c" "echo > $out" ]; outputs = [ "out" ];
      PATH = "/usr/bin:/bin"; HELLO_FROM_SHELL = "yes";
    };
  };
}
`;

export function expectNoStackTrace(stderr: string): void {
  expect(stderr).not.toMatch(/^\s+at .+:\d+:\d+/m);
}

/** Removes a golden store volume a test made, unmounting what sessions left mounted in it first. */
export async function removeStoreVolume(name: string, engine = "podman"): Promise<void> {
  const { GoldenStore } = await import("../../plugins/golden/layout.ts");
  const inspect = Bun.spawnSync([engine, "volume", "inspect", "--format", "{{.Mountpoint}}", name]);
  if (inspect.exitCode !== 0) return;
  const store = new GoldenStore(inspect.stdout.toString().trim());
  for (const session of store.sessionNames()) await store.removeSession(session);
  Bun.spawnSync([engine, "volume", "rm", "--force", name]);
}

/** A Nix expression for a derivation that needs nothing but /bin/sh (no nixpkgs here). */
export function derivationExpr(name: string, script = "echo $name > $out"): string {
  return `derivation { name = "${name}"; system = "x86_64-linux"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" ${JSON.stringify(script)} ]; }`;
}

/**
 * The real docker CLI against Podman's Docker-compatible API, on a socket of the caller's
 * own (no Docker engine runs on these machines). `env` points agentenv and the CLI at it.
 */
export class DockerApi {
  readonly env: { DOCKER_HOST: string; AGENTENV_RUNTIME: "docker" };
  private service: ReturnType<typeof Bun.spawn> | undefined;

  constructor(name: string) {
    this.env = { DOCKER_HOST: `unix://${join(tmpdir(), `agentenv-${name}-${process.pid}.sock`)}`, AGENTENV_RUNTIME: "docker" };
  }

  async start(): Promise<void> {
    if (!Bun.which("docker")) throw new Error("the docker CLI is missing: .ci/run installs it (apt-get install docker.io)");
    this.service = Bun.spawn(["podman", "system", "service", "--time=0", this.env.DOCKER_HOST], { stdout: "ignore", stderr: "ignore" });
    for (let i = 0; i < 100; i++) {
      if (Bun.spawnSync(["docker", "version"], { env: { ...process.env, ...this.env } }).exitCode === 0) return;
      await Bun.sleep(100);
    }
    throw new Error("podman's Docker API socket did not come up");
  }

  stop(): void {
    this.service?.kill();
  }
}
