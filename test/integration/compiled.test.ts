import { beforeAll, describe, expect, test } from "bun:test";
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
    expect(JSON.parse(plugins.stdout).map((p: { name: string }) => p.name)).toEqual(["golden", "nix", "stamp"]);
  });

  test("--version and --help", async () => {
    const version = await agentenv(["--version"], { bin: [binary] });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const help = await agentenv(["--help"], { bin: [binary] });
    for (const word of ["USAGE", "run", "image", "doctor", "plugins", "store", "--dry-run", "--store"]) expect(help.stdout).toContain(word);
  });
});
