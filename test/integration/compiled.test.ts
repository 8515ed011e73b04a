import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { agentenv, repoRoot, tempTree } from "../helpers/cli.ts";
import { requireImage } from "../helpers/engine.ts";

const binary = join(tmpdir(), `agentenv-compiled-${process.pid}`);

beforeAll(async () => {
  await requireImage();
  // the same flags as `bun run build`, into a temp file so the test never uses a stale dist/
  const build = Bun.spawnSync(
    [process.execPath, "build", "--compile", "--minify", "--bytecode", "--no-compile-autoload-bunfig", "--no-compile-autoload-dotenv", "bin/agentenv.ts", "--outfile", binary],
    { cwd: repoRoot },
  );
  if (build.exitCode !== 0) throw new Error(`compile failed: ${build.stderr}`);
});

describe("the compiled binary", () => {
  test("loads a config that imports from \"agentenv\" with no node_modules beside it, and runs it", async () => {
    const project = tempTree({
      "agentenv.config.ts": `
        import { defineConfig, definePlugin } from "agentenv";
        const stamp = definePlugin({ name: "stamp", hooks: { "session:boot"(ctx) { ctx.plan.env.STAMP = "compiled-" + ctx.runtime.name; } } });
        export default defineConfig({ plugins: [stamp] });`,
    });
    const result = await agentenv(["run", project, "--", "sh", "-c", "echo $STAMP"], { bin: [binary], cwd: project });
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("compiled-podman\n");
    const plugins = await agentenv(["plugins", project, "--json"], { bin: [binary] });
    expect(JSON.parse(plugins.stdout).map((p: { name: string }) => p.name)).toEqual(["remote", "env", "golden", "profile", "dotfiles", "secrets", "nix", "wrap", "attach", "stamp"]);
  });

  test("creates an environment from the test-env template it carries", async () => {
    const name = `compiled-${process.pid}`;
    try {
      const created = await agentenv(["env", "create", name], { bin: [binary], cwd: tempTree() });
      expect(created.code).toBe(0);
      // read on the host: a session would install the template's tools, which need the network
      const dir = Bun.spawnSync(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", `agentenv-env-${name}`]).stdout.toString().trim();
      expect(readFileSync(join(dir, "flake.nix"), "utf8")).toBe(readFileSync(join(repoRoot, "test-env", "flake.nix"), "utf8"));
      expect(readFileSync(join(dir, ".local/state/agentenv/shell"), "utf8")).toBe("zsh\n");
    } finally {
      Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
    }
  });

  test("--version and --help", async () => {
    const version = await agentenv(["--version"], { bin: [binary] });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const help = await agentenv(["--help"], { bin: [binary] });
    for (const word of ["USAGE", "run", "image", "doctor", "plugins", "store", "env", "--dry-run", "--store", "--env"]) expect(help.stdout).toContain(word);
  });
});
