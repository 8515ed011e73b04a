import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { trustProject, untrustProject } from "../../core/trust.ts";
import { entry } from "../helpers/cli.ts";
import { devShellFlake, expectNoStackTrace, leftoverContainers } from "../helpers/engine.ts";

/**
 * `--userns keep-id`. Rootless Podman keeps its images and volumes under the real HOME,
 * so these runs keep it (test/helpers/cli.ts isolates HOME): each project carries an
 * agentenv.config.ts with this file's own store volume, and AGENTENV_ENV="" keeps a
 * user config's default environment out. The real runs need a normal user with rootless
 * Podman and the image loaded (e.g. `su - agentenv-test -c 'cd /work/main && bun test
 * test/integration/userns.test.ts'`); as root, only the dry run and the refusals run.
 */
const uid = process.getuid?.() ?? 0;
const storeVolume = `agentenv-test-userns-${process.pid}`;
const made: string[] = [];
/** projects this file trusted: forgotten again at the end (the records are the user's own) */
const trusted: string[] = [];
afterAll(() => {
  for (const dir of trusted) untrustProject(dir);
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

function podmanInfo(format: string): string {
  const result = Bun.spawnSync(["podman", "info", "--format", format], { stdout: "pipe", stderr: "pipe" });
  return result.exitCode === 0 ? result.stdout.toString().trim() : "";
}

/** Why the real keep-id runs cannot happen here, or "" when they can. */
function whyNotRootless(): string {
  if (uid === 0) return "running as root (keep-id is rootless Podman's)";
  if (!Bun.which("podman")) return "podman is not installed";
  if (podmanInfo("{{.Host.Security.Rootless}}") !== "true") return "podman is not rootless for this user";
  if (Bun.spawnSync(["podman", "image", "exists", "localhost/agentenv:latest"]).exitCode !== 0) {
    return "localhost/agentenv:latest is not in this user's Podman (podman save as root, podman load as the user)";
  }
  return "";
}
const skipReason = whyNotRootless();
if (skipReason) console.log(`userns.test.ts: skipping the real keep-id sessions: ${skipReason}`);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI with this user's own HOME and environment (see above). */
async function agentenv(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const child = Bun.spawn([process.execPath, entry, ...args], {
    env: { ...process.env, AGENTENV_ENV: "", NO_COLOR: "1", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  return { code: await child.exited, stdout, stderr };
}

/** A project directory of this user, with the config that keeps the test's store apart. */
function project(files: Record<string, string> = {}): string {
  const dir = tempDir("agentenv-userns-");
  const config = `export default { storeVolume: "${storeVolume}", extraEnv: { NIX_CONFIG: "substituters =" } };\n`;
  for (const [name, content] of Object.entries({ "agentenv.config.ts": config, ...files })) writeFileSync(join(dir, name), content);
  // trusted (its config is loaded). In the user's own records: this file runs with the
  // user's real HOME and XDG dirs, where rootless Podman keeps its storage and config
  trustProject(dir);
  trusted.push(dir);
  return dir;
}

describe("--userns keep-id: argv and refusals (any user)", () => {
  test("--dry-run shows Podman's keep-id, the passwd line, HOME and the user's /root", async () => {
    const result = await agentenv(["run", "--no-store", "--userns", "keep-id", "--dry-run", project(), "--", "id"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(" --userns=keep-id ");
    expect(result.stdout).toContain("'--passwd-entry=$USERNAME:*:$UID:$GID:$NAME:/root:/bin/sh'");
    expect(result.stdout).toContain(" --tmpfs /root:rw,exec,U ");
    expect(result.stdout).toContain(" -e HOME=/root ");
  });

  test("the default and --userns root have none of it; AGENTENV_USERNS=keep-id does", async () => {
    const dir = project();
    for (const args of [[], ["--userns", "root"]]) {
      const result = await agentenv(["run", "--no-store", ...args, "--dry-run", dir, "--", "id"]);
      expect(result.code).toBe(0);
      expect(result.stdout).not.toContain("keep-id");
      expect(result.stdout).not.toContain("HOME=");
    }
    const fromEnv = await agentenv(["run", "--no-store", "--dry-run", dir, "--", "id"], { AGENTENV_USERNS: "keep-id" });
    expect(fromEnv.stdout).toContain(" --userns=keep-id ");
    const overridden = await agentenv(["run", "--no-store", "--userns", "root", "--dry-run", dir, "--", "id"], { AGENTENV_USERNS: "keep-id" });
    expect(overridden.stdout).not.toContain("keep-id");
  });

  test.skipIf(!Bun.which("docker"))("Docker refuses it in one line, exit 1, even for a dry run", async () => {
    const result = await agentenv(["run", "--runtime", "docker", "--no-store", "--userns", "keep-id", "--dry-run", project(), "--", "id"]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe("agentenv: --userns keep-id needs rootless Podman: Docker cannot map your uid into the container — run agentenv as your own user (rootless Podman), or drop keep-id (--userns root)");
    expect(result.stdout).toBe("");
  });

  test("an unknown mode is a one-line error naming the flag", async () => {
    const result = await agentenv(["run", "--no-store", "--userns", "auto", "--dry-run", project(), "--", "id"]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe('agentenv: unknown userns mode "auto" (from --userns) — use one of: root, keep-id');
  });

  test.skipIf(uid !== 0)("as root, Podman's refusal is said before anything starts: one line, exit 1, no container", async () => {
    const dir = project();
    const result = await agentenv(["run", "--no-store", "--userns", "keep-id", dir, "--", "true"]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe("agentenv: --userns keep-id needs rootless Podman: Podman running as root refuses it — run agentenv as your own user (rootless Podman), or drop keep-id (--userns root)");
    expectNoStackTrace(result.stderr);
    expect(leftoverContainers(dir)).toEqual([]);
  });
});

describe.skipIf(skipReason !== "")("--userns keep-id on rootless Podman", () => {
  const envName = `ue${process.pid}`;
  afterAll(async () => {
    await agentenv(["env", "rm", envName, "--force"]);
    Bun.spawnSync(["podman", "volume", "rm", "--force", storeVolume]);
  });

  test("runs as the user's own uid with exit code, HOME /root writable, files in /work the user's", async () => {
    const dir = project();
    const result = await agentenv(["run", "--no-store", "--userns", "keep-id", dir, "--", "sh", "-c", 'id -u; id -g; echo "$HOME"; touch ~/h /work/made-inside; exit 7']);
    expect(result.stdout).toBe(`${uid}\n${process.getgid?.()}\n/root\n`);
    expect(result.code).toBe(7);
    expect(statSync(join(dir, "made-inside")).uid).toBe(uid);
    expect(leftoverContainers(dir)).toEqual([]);
  });

  test("without it, the same session is root inside and the files are still the user's", async () => {
    const dir = project();
    const result = await agentenv(["run", "--no-store", dir, "--", "sh", "-c", "id -u; touch /work/made-inside"]);
    expect(result.stdout).toBe("0\n");
    expect(statSync(join(dir, "made-inside")).uid).toBe(uid);
  });

  test("the golden store and a flake's dev shell work: Nix runs single-user as that uid", async () => {
    const dir = project({ "flake.nix": devShellFlake });
    const result = await agentenv(["run", "--userns", "keep-id", dir, "--", "sh", "-c", 'echo "dev=$HELLO_FROM_SHELL"; id -u; stat -c %u /nix/var/nix/db/db.sqlite']);
    expect(result.stderr).not.toContain("Permission denied");
    expect(result.stdout).toBe(`dev=yes\n${uid}\n${uid}\n`);
    expect(result.code).toBe(0);
    // what it added is promoted, and a root session reads the same store
    const again = await agentenv(["run", dir, "--", "sh", "-c", 'echo "dev=$HELLO_FROM_SHELL"; id -u']);
    expect(again.stdout).toBe("dev=yes\n0\n");
  });

  test("--no-store: Nix still works (/nix is the user's for the session)", async () => {
    const dir = project({ "flake.nix": devShellFlake });
    const result = await agentenv(["run", "--no-store", "--userns", "keep-id", dir, "--", "sh", "-c", 'echo "dev=$HELLO_FROM_SHELL"']);
    expect(result.stdout).toBe("dev=yes\n");
    expect(result.code).toBe(0);
  });

  test("an environment's home is shared with root sessions: each sees the other's files as its own", async () => {
    const template = tempDir("agentenv-userns-home-");
    writeFileSync(join(template, ".profile-note"), "from the template\n");
    const created = await agentenv(["env", "create", envName, template]);
    expect(created.code).toBe(0);
    const dir = project();
    const mine = await agentenv(["run", "--no-store", "--userns", "keep-id", "--env", envName, dir, "--", "sh", "-c", 'cat ~/.profile-note; stat -c %u ~ ~/.profile-note; echo mine > ~/from-keep-id']);
    expect(mine.stdout).toBe(`from the template\n${uid}\n${uid}\n`);
    expect(mine.code).toBe(0);
    const root = await agentenv(["run", "--no-store", "--env", envName, dir, "--", "sh", "-c", "stat -c %u ~/from-keep-id; cat ~/from-keep-id"]);
    expect(root.stdout).toBe("0\nmine\n");
    expect(readdirSync(dir)).toEqual(["agentenv.config.ts"]);
  });
});
