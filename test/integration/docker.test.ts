import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, tempTree } from "../helpers/cli.ts";
import { DockerApi, derivationExpr, devShellFlake, leftoverContainers, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/**
 * The Docker runtime drives the real `docker` CLI. No Docker engine runs on these
 * machines, so the CLI talks to Podman's Docker-compatible API on a private socket.
 */
const api = new DockerApi("docker");
const env = api.env;

beforeAll(async () => {
  await requireImage();
  await api.start();
});

const storeVolume = `agentenv-test-docker-store-${process.pid}`;

afterAll(async () => {
  api.stop();
  await removeStoreVolume(storeVolume);
});

describe("the Docker runtime against Podman's Docker API", () => {
  test("runs at /work and propagates the exit code", async () => {
    const project = tempTree({ "in.txt": "host\n" });
    const result = await agentenv(["run", project, "--", "sh", "-c", "cat in.txt; pwd; echo out > out.txt; exit 4"], { env });
    expect(result.stdout).toBe("host\n/work\n");
    expect(result.code).toBe(4);
    expect(readFileSync(join(project, "out.txt"), "utf8")).toBe("out\n");
    expect(leftoverContainers(project)).toEqual([]);
  });

  test("the golden store works the same: a path one session builds is valid in the next", async () => {
    const storeEnv = { ...env, AGENTENV_STORE_VOLUME: storeVolume };
    const project = tempTree();
    const first = await agentenv(["run", project, "--", "nix-build", "--no-out-link", "-E", derivationExpr(`docker-${Date.now()}`)], { env: storeEnv });
    expect(first.code).toBe(0);
    expect(first.stderr).toContain("golden store: promoted 2 new store paths");
    expect(leftoverContainers(project)).toEqual([]);
    const path = first.stdout.trim().split("\n").pop()!;
    const second = await agentenv(["run", tempTree(), "--", "sh", "-c", `nix-store --check-validity ${path} && nix-store --verify --check-contents`], { env: storeEnv });
    expect(second.code).toBe(0);
    const status = JSON.parse((await agentenv(["store", "status", "--json"], { env: storeEnv })).stdout);
    expect(status).toMatchObject({ engine: "docker", volume: storeVolume, strategy: "overlay", layers: 2, paths: 2 });
  });

  test("flake dev shell and config hooks work the same", async () => {
    const project = tempTree({
      "flake.nix": devShellFlake,
      "agentenv.config.ts": `export default { hooks: { "session:boot"(ctx) { ctx.plan.env.ENGINE = ctx.runtime.name; } } };`,
    });
    const result = await agentenv(["run", project, "--", "sh", "-c", "echo $HELLO_FROM_SHELL $ENGINE"], { env });
    expect(result.stdout.trim()).toBe("yes docker");
  });

  test("--dry-run prints docker's command line; a missing image is reported clearly", async () => {
    const dry = await agentenv(["run", "--dry-run", tempTree(), "--", "true"], { env });
    const lines = dry.stdout.trim().split("\n");
    expect(lines[0]).toStartWith("docker run -i --init --pull=never --name agentenv-");
    expect(lines[1]).toMatch(/^docker rm --force agentenv-/);
    const missing = await agentenv(["run", "--image", "localhost/agentenv-missing:none", tempTree(), "--", "true"], { env });
    expect(missing.stderr).toContain("image localhost/agentenv-missing:none not found in docker — run `agentenv image build`");
  });

  test("a daemon that is not running is named, with how to start it", async () => {
    const result = await agentenv(["run", tempTree(), "--", "true"], { env: { ...env, DOCKER_HOST: `${env.DOCKER_HOST}.absent` } });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("agentenv: docker is not working");
    expect(result.stderr).toContain("start the Docker daemon, or point DOCKER_HOST at a running engine");
  });

  test("an environment exported from Docker imports into Podman with identical files", async () => {
    const [fromDocker, intoPodman] = [`docker-export-${process.pid}`, `podman-import-${process.pid}`];
    const archive = join(tempTree(), "home.tar.gz");
    try {
      const template = tempTree({ ".bashrc": "# docker home\n", ".config/tool/conf": "x = 1\n" });
      expect((await agentenv(["env", "create", fromDocker, template], { env })).code).toBe(0);
      const session = await agentenv(["run", "--env", fromDocker, tempTree(), "--", "sh", "-c", "echo made-in-docker > ~/note; mkdir -p ~/.agent && ln -s ../note ~/.agent/link"], { env });
      expect(session.code).toBe(0);
      expect((await agentenv(["env", "export", fromDocker, "-o", archive], { env })).code).toBe(0);
      const imported = await agentenv(["env", "import", intoPodman, archive], { env: { AGENTENV_RUNTIME: "podman" } });
      expect(imported.code).toBe(0);
      const listing = (name: string) => {
        const dir = Bun.spawnSync(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", `agentenv-env-${name}`]).stdout.toString().trim();
        const script = `cd ${dir} && find . ! -path ./.local/state/agentenv/env.json ! -path ./.local/state/agentenv/last-used -printf '%p %y %m %U %l\\n' | sort && find . -type f ! -path ./.local/state/agentenv/env.json -exec sha256sum {} + | sort`;
        return Bun.spawnSync(["sh", "-c", script]).stdout.toString();
      };
      expect(listing(intoPodman)).toContain("./note f 644 0");
      expect(listing(intoPodman)).toBe(listing(fromDocker));
      const read = await agentenv(["run", "--env", intoPodman, tempTree(), "--", "cat", "/root/.agent/link"], { env: { AGENTENV_RUNTIME: "podman" } });
      expect(read.stdout).toBe("made-in-docker\n");
    } finally {
      for (const name of [fromDocker, intoPodman]) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
    }
  });
});
