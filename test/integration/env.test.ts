import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv, isolatedHome, repoRoot, tempTree, rootless } from "../helpers/cli.ts";
import { envNames, volumeDir, volumeExists } from "../helpers/envs.ts";
import { derivationExpr, devShellFlake, expectNoStackTrace, leftoverContainers, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/** Environments on real Podman, with the input-less fixture home (test/fixtures/env). */
const fixture = join(repoRoot, "test", "fixtures", "env");
const prefix = `t${process.pid}`;
const { envName, made } = envNames(prefix);

async function create(name: string, template = fixture, ...extra: string[]) {
  const result = await agentenv(["env", "create", name, template, ...extra]);
  expect(result.stderr).toContain(`environment ${name} created`);
  expect(result.code).toBe(0);
  return result;
}

beforeAll(async () => {
  await requireImage();
});

afterAll(() => {
  for (const name of made) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
});

describe("env create / list / show / rm", () => {
  test("a template is copied whole: dotfiles, nested config, modes and symlinks; list and show describe it; rm removes it", async () => {
    const name = envName("basic");
    await create(name);
    const dir = volumeDir(name);
    expect(readFileSync(join(dir, ".config/fixture/settings"), "utf8")).toBe("fixture: a file from the template\n");
    expect(statSync(join(dir, "bin/fixture-tool")).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(dir, ".settings-link")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, ".settings-link"))).toBe(".config/fixture/settings");
    // files belong to root inside the container, whoever owns the template (rootless: root inside is the user)
    expect(statSync(join(dir, ".bashrc")).uid).toBe(rootless ? process.getuid!() : 0);
    // agentenv's own record is under ~/.local/state/agentenv, not among the dotfiles
    const record = JSON.parse(readFileSync(join(dir, ".local/state/agentenv/env.json"), "utf8"));
    expect(record).toMatchObject({ version: 1, source: { kind: "template", path: fixture }, shell: "bash" });
    expect(record.source.hash).toMatch(/^[0-9a-f]{16}$/);

    const list = JSON.parse((await agentenv(["env", "list", "--json"])).stdout);
    const entry = list.find((e: { name: string }) => e.name === name);
    expect(entry).toMatchObject({ name, volume: `agentenv-env-${name}`, source: { kind: "template", path: fixture }, shell: "bash" });
    expect(entry.size).toBeGreaterThan(0);
    const table = (await agentenv(["env", "list"])).stdout;
    expect(table).toMatch(new RegExp(`^${name}\\s+${fixture}\\s+\\d+ s ago\\s+-\\s+\\d`, "m"));

    const show = JSON.parse((await agentenv(["env", "show", name, "--json"])).stdout);
    expect(show).toMatchObject({ name, mountpoint: dir, tools: { flake: true }, sessions: [] });

    const rm = await agentenv(["env", "rm", name]);
    expect(rm.code).toBe(0);
    expect(volumeExists(name)).toBe(false);
    const again = await agentenv(["env", "show", name]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`agentenv: no environment named ${name} — create it: agentenv env create ${name}\n`);
  });

  test("without a template, the built-in test-env is copied", async () => {
    const name = envName("builtin");
    const result = await agentenv(["env", "create", name]);
    expect(result.code).toBe(0);
    const dir = volumeDir(name);
    for (const file of ["flake.nix", ".zshenv", ".config/zsh/.zshrc", ".tmux.conf", ".config/nvim/init.vim", ".config/git/ignore", ".claude/skills/agentenv/SKILL.md"]) {
      expect(readFileSync(join(dir, file), "utf8")).toBe(readFileSync(join(repoRoot, "test-env", file), "utf8"));
    }
    expect(JSON.parse(readFileSync(join(dir, ".local/state/agentenv/env.json"), "utf8"))).toMatchObject({ source: { kind: "builtin" }, shell: "zsh" });
  });

  test("bad names, an existing name and bad templates are one-line errors that create nothing", async () => {
    const outside = tempTree({ "secret.txt": "x" });
    const escaping = tempTree({ ".zshrc": "" });
    symlinkSync(join(outside, "secret.txt"), join(escaping, "abs-link"));
    const climbing = tempTree({ "a/b": "" });
    symlinkSync("../../elsewhere", join(climbing, "a", "up"));
    const cases: Array<[string[], RegExp]> = [
      [["env", "create", "Bad_Name"], /^agentenv: invalid environment name "Bad_Name" \(from the command line\) — use 1–63 of a-z 0-9/],
      [["env", "create", `${prefix}-x`, "/nonexistent/template"], /^agentenv: template \/nonexistent\/template: no such directory$/],
      [["env", "create", `${prefix}-x`, join(fixture, "flake.nix")], /: not a directory$/],
      [["env", "create", `${prefix}-x`, escaping], /the symlink abs-link → .* points outside the template/],
      [["env", "create", `${prefix}-x`, climbing], /the symlink a\/up → \.\.\/\.\.\/elsewhere points outside the template/],
    ];
    for (const [args, message] of cases) {
      const result = await agentenv(args);
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toMatch(message);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expectNoStackTrace(result.stderr);
    }
    expect(volumeExists(`${prefix}-x`)).toBe(false);

    const name = envName("taken");
    await create(name);
    writeFileSync(join(volumeDir(name), "mine.txt"), "kept");
    const taken = await agentenv(["env", "create", name, fixture]);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toContain(`agentenv: environment ${name} already exists`);
    expect(readFileSync(join(volumeDir(name), "mine.txt"), "utf8")).toBe("kept");
  });

  test("a create that fails in the engine, or is interrupted with Ctrl-C, leaves no volume", async () => {
    const name = envName("failed");
    const noImage = await agentenv(["env", "create", name, fixture, "--verbose"], { env: { AGENTENV_IMAGE: "localhost/agentenv-no-such-image:1" } });
    expect(noImage.code).toBe(1);
    expect(noImage.stderr).toContain(`creating environment ${name} failed`);
    expect(volumeExists(name)).toBe(false);

    // SIGINT as soon as the volume exists: while the helper container copies the template
    const big = tempTree();
    for (let i = 0; i < 4; i++) writeFileSync(join(big, `blob-${i}`), Buffer.alloc(16 << 20, i));
    const child = Bun.spawn([process.execPath, join(repoRoot, "bin/agentenv.ts"), "env", "create", name, big], {
      env: { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config") },
      stdout: "ignore",
      stderr: "pipe",
    });
    for (let i = 0; i < 400 && !volumeExists(name); i++) await Bun.sleep(10);
    expect(volumeExists(name)).toBe(true);
    child.kill("SIGINT");
    expect(await child.exited).toBe(130);
    expect(volumeExists(name)).toBe(false);
    expect(Bun.spawnSync(["podman", "ps", "-a", "--filter", "label=agentenv.helper=env", "--format", "{{.Names}}"]).stdout.toString()).toBe("");
  });
});

describe("sessions with --env", () => {
  test("one home across sessions and projects; its tools install on first boot only, and again when ~/flake.nix changes", async () => {
    const name = envName("home");
    await create(name);
    const projectA = tempTree();
    const projectB = tempTree();

    const first = await agentenv(["run", "--env", name, projectA, "--", "sh", "-c", 'echo "from A" > ~/note.txt; hello-env; echo "$SHELL"']);
    expect(first.stdout).toBe("hello-env v1\n/usr/bin/bash\n");
    expect(first.code).toBe(0);
    expect(first.stderr).toContain("agentenv: installing your tools from ~/flake.nix");
    const dir = volumeDir(name);
    const hashFile = join(dir, ".local/state/agentenv/tools.hash");
    const installedAt = statSync(hashFile).mtimeMs;

    // second boot, another project: same home, the tool is there, no install (no Nix call)
    const second = await agentenv(["run", "--env", name, projectB, "--", "sh", "-c", "cat ~/note.txt; hello-env"]);
    expect(second.stdout).toBe("from A\nhello-env v1\n");
    expect(second.stderr).not.toContain("installing");
    expect(statSync(hashFile).mtimeMs).toBe(installedAt);
    expect(readlinkSync(join(dir, ".local/state/agentenv/profile"))).toBe("profile-1-link");
    expect(leftoverContainers(projectB)).toEqual([]);

    // a changed ~/flake.nix is installed at the next boot
    const flake = join(dir, "flake.nix");
    const v1 = readFileSync(flake, "utf8");
    writeFileSync(flake, v1.replace("hello-env v1", "hello-env v2"));
    const third = await agentenv(["run", "--env", name, projectA, "--", "hello-env"]);
    expect(third.stdout).toBe("hello-env v2\n");
    expect(third.stderr).toContain("installing your tools");
    expect(readlinkSync(join(dir, ".local/state/agentenv/profile"))).toBe("profile-2-link");

    // touched but unchanged: no Nix build
    writeFileSync(flake, readFileSync(flake, "utf8"));
    const fourth = await agentenv(["run", "--env", name, projectA, "--", "hello-env"]);
    expect(fourth.stdout).toBe("hello-env v2\n");
    expect(fourth.stderr).not.toContain("installing");

    // an older copy put back, with its old file time: the content decides, not the time
    writeFileSync(flake, v1);
    utimesSync(flake, new Date(2001, 0, 1), new Date(2001, 0, 1));
    const fifth = await agentenv(["run", "--env", name, projectA, "--", "hello-env"]);
    expect(fifth.stdout).toBe("hello-env v1\n");
    expect(fifth.stderr).toContain("installing your tools");
  });

  test("an environment's tools never reach another environment, nor a session without one", async () => {
    const withTools = envName("tools");
    const bare = envName("bare");
    await create(withTools);
    await create(bare, tempTree({ ".bashrc": "" }));
    expect((await agentenv(["run", "--env", withTools, tempTree(), "--", "hello-env"])).code).toBe(0);
    for (const args of [["--env", bare], ["--no-env"], []]) {
      const result = await agentenv(["run", ...args, tempTree(), "--", "sh", "-c", "command -v hello-env || echo none"]);
      expect(result.stdout).toBe("none\n");
    }
  });

  test("login shells keep the tools first on PATH, and a flake project's dev shell still has them", async () => {
    const name = envName("path");
    await create(name);
    const project = tempTree({ "flake.nix": devShellFlake });
    const login = await agentenv(["run", "--env", name, tempTree(), "--", "bash", "-lc", "command -v hello-env"]);
    expect(login.stdout).toBe("/root/.local/state/agentenv/profile/bin/hello-env\n");
    const dev = await agentenv(["run", "--env", name, project, "--", "sh", "-c", "echo $HELLO_FROM_SHELL; hello-env"]);
    expect(dev.stdout).toBe("yes\nhello-env v1\n");
  });

  test("a missing environment is a clear error; env.autoCreate creates it from the configured template", async () => {
    const name = envName("auto");
    const missing = await agentenv(["run", "--env", name, tempTree(), "--", "true"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`agentenv: no environment named ${name} — create it (agentenv env create ${name}), or set env.autoCreate in config\n`);
    expect(volumeExists(name)).toBe(false);

    const project = tempTree({
      "agentenv.config.ts": `export default { env: { default: ${JSON.stringify(name)}, autoCreate: true, template: ${JSON.stringify(fixture)} } };\n`,
    });
    const dry = await agentenv(["run", "--dry-run", project, "--", "true"]);
    expect(dry.stdout).toContain(`-v agentenv-env-${name}:/root`);
    expect(volumeExists(name)).toBe(false);
    const first = await agentenv(["run", project, "--", "cat", "/root/.config/fixture/settings"]);
    expect(first.stdout).toBe("fixture: a file from the template\n");
    expect(first.stderr).toContain(`creating environment ${name}`);
    const second = await agentenv(["run", project, "--", "true"]);
    expect(second.stderr).not.toContain("creating environment");
    const none = await agentenv(["run", "--no-env", project, "--", "sh", "-c", "ls /root/.config/fixture 2>&1 || true"]);
    expect(none.stdout).toContain("No such file or directory");
  });

  test("two sessions on one environment share the home, with a warning; rm refuses while one runs", async () => {
    const name = envName("shared");
    await create(name, tempTree({ ".bashrc": "" }));
    const dir = volumeDir(name);
    const first = Bun.spawn(
      [process.execPath, join(repoRoot, "bin/agentenv.ts"), "run", "--env", name, tempTree(), "--", "sh", "-c", "touch ~/first-started; while [ ! -e ~/second-done ]; do sleep 0.1; done"],
      { env: { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config") }, stdout: "ignore", stderr: "pipe" },
    );
    for (let i = 0; i < 200 && !existsSync(join(dir, "first-started")); i++) await Bun.sleep(50);
    const second = await agentenv(["run", "--env", name, tempTree(), "--", "sh", "-c", "ls ~/first-started"]);
    expect(second.stdout).toBe("/root/first-started\n");
    expect(second.stderr).toMatch(new RegExp(`environment ${name} is also open in agentenv-\\S+: the sessions share one home`));

    const rm = await agentenv(["env", "rm", name]);
    expect(rm.code).toBe(1);
    expect(rm.stderr).toMatch(new RegExp(`^agentenv: environment ${name} is in use by agentenv-\\S+ — end that session first, or agentenv env rm ${name} --force\\n$`));
    const show = JSON.parse((await agentenv(["env", "show", name, "--json"])).stdout);
    expect(show.sessions).toHaveLength(1);
    writeFileSync(join(dir, "second-done"), "");
    expect(await first.exited).toBe(0);
    expect((await agentenv(["env", "rm", name])).code).toBe(0);
  });

  test("env rm --force stops the sessions using it", async () => {
    const name = envName("force");
    await create(name, tempTree({ ".bashrc": "" }));
    const session = Bun.spawn([process.execPath, join(repoRoot, "bin/agentenv.ts"), "run", "--env", name, tempTree(), "--", "sleep", "600"], {
      env: { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config") },
      stdout: "ignore",
      stderr: "ignore",
    });
    for (let i = 0; i < 200; i++) {
      if (Bun.spawnSync(["podman", "ps", "--filter", `label=agentenv.env=${name}`, "--format", "{{.Names}}"]).stdout.toString().trim()) break;
      await Bun.sleep(50);
    }
    const rm = await agentenv(["env", "rm", name, "--force"]);
    expect(rm.code).toBe(0);
    expect(volumeExists(name)).toBe(false);
    expect(await session.exited).not.toBe(0);
  });
});

describe("the golden store", () => {
  const storeVolume = `agentenv-test-env-store-${process.pid}`;
  afterAll(() => removeStoreVolume(storeVolume));

  test("an environment's installed tools are a gc root, also while no session mounts it", async () => {
    const env = { AGENTENV_STORE_VOLUME: storeVolume };
    const name = envName("gcroot");
    await create(name);
    const first = await agentenv(["run", "--env", name, tempTree(), "--", "hello-env"], { env });
    expect(first.stdout).toBe("hello-env v1\n");
    const target = readlinkSync(join(volumeDir(name), ".local/state/agentenv/profile-1-link"));
    // a path no root reaches: gc deletes it, the tools stay
    const orphan = await agentenv(["run", tempTree(), "--", "nix-build", "--no-out-link", "-E", derivationExpr(`orphan-${process.pid}`)], { env });
    const orphanPath = orphan.stdout.trim();
    const gc = await agentenv(["store", "gc", "--json"], { env });
    expect(gc.code).toBe(0);
    expect(JSON.parse(gc.stdout).deleted).toBeGreaterThan(0);
    const after = await agentenv(["run", "--env", name, tempTree(), "--", "sh", "-c", `nix-store --check-validity ${target} && hello-env; nix-store --check-validity ${orphanPath} 2>/dev/null || echo orphan-collected`], { env });
    expect(after.stdout).toBe("hello-env v1\norphan-collected\n");
    expect(after.stderr).not.toContain("installing");
  });
});

describe("env reset, export and import", () => {
  test("reset recreates the home from its template, keeping --keep paths", async () => {
    const template = tempTree({ ".bashrc": "# v1\n", ".config/app/conf": "v1\n" });
    const name = envName("reset");
    await create(name, template);
    const dir = volumeDir(name);
    writeFileSync(join(dir, ".bash_history"), "echo keep me\n");
    writeFileSync(join(dir, "scratch.txt"), "goes away\n");
    cpSync(join(dir, ".config"), join(dir, ".agent-memory"), { recursive: true });
    writeFileSync(join(template, ".config/app/conf"), "v2\n");

    const reset = await agentenv(["env", "reset", name, "--keep", ".bash_history", "--keep", "~/.agent-memory/app"]);
    expect(reset.code).toBe(0);
    expect(readFileSync(join(dir, ".bash_history"), "utf8")).toBe("echo keep me\n");
    expect(readFileSync(join(dir, ".agent-memory/app/conf"), "utf8")).toBe("v1\n");
    expect(readFileSync(join(dir, ".config/app/conf"), "utf8")).toBe("v2\n");
    expect(existsSync(join(dir, "scratch.txt"))).toBe(false);
    expect(existsSync(join(dir, ".agentenv-reset"))).toBe(false);
    const record = JSON.parse(readFileSync(join(dir, ".local/state/agentenv/env.json"), "utf8"));
    expect(record.reset).toBeString();

    const bad = await agentenv(["env", "reset", name, "--keep", "../etc"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe("agentenv: --keep ../etc: give a path inside HOME, e.g. --keep .zsh_history\n");

    // a kept path whose parent is a file in the new home: refused before anything changes
    writeFileSync(join(dir, "scratch.txt"), "still here\n");
    const blocked = await agentenv(["env", "reset", name, "--keep", ".bashrc/inner"]);
    expect(blocked.code).toBe(1);
    expect(blocked.stderr).toContain("cannot keep .bashrc/inner: the new home has a file where its parent directory would be");
    expect(readFileSync(join(dir, "scratch.txt"), "utf8")).toBe("still here\n");
    expect(existsSync(join(dir, ".agentenv-reset.keep"))).toBe(false);
  });

  test("a reset interrupted during its swap is finished by the next one: kept paths survive", async () => {
    const name = envName("resume");
    await create(name, tempTree({ ".bashrc": "# new\n" }));
    const dir = volumeDir(name);
    // the state a reset killed mid-swap leaves: the new home staged, a kept path already
    // moved into it, another still in the old home, part of the old home deleted
    mkdirSync(join(dir, ".agentenv-reset/.config"), { recursive: true });
    writeFileSync(join(dir, ".agentenv-reset/.bashrc"), "# staged\n");
    writeFileSync(join(dir, ".agentenv-reset/.zsh_history"), "moved already\n");
    mkdirSync(join(dir, ".claude/projects"), { recursive: true });
    writeFileSync(join(dir, ".claude/projects/memory.md"), "not moved yet\n");
    writeFileSync(join(dir, ".agentenv-reset.keep"), ".zsh_history\n.claude\n");
    const again = await agentenv(["env", "reset", name, "--keep", ".zsh_history", "--keep", ".claude", "--keep", ".claude/projects"]);
    expect(again.code).toBe(0);
    expect(readFileSync(join(dir, ".zsh_history"), "utf8")).toBe("moved already\n");
    expect(readFileSync(join(dir, ".claude/projects/memory.md"), "utf8")).toBe("not moved yet\n");
    expect(readFileSync(join(dir, ".bashrc"), "utf8")).toBe("# new\n");
    for (const leftover of [".agentenv-reset", ".agentenv-reset.keep", ".agentenv-reset.moving"]) expect(existsSync(join(dir, leftover))).toBe(false);
  });

  test("export writes one archive; import makes an identical home under another name", async () => {
    const name = envName("exported");
    await create(name);
    writeFileSync(join(volumeDir(name), "made-in-session.txt"), "hello\n");
    const out = join(tempTree(), "home.tar.gz");
    // a link where the archive goes is replaced, never written through
    const elsewhere = join(tempTree(), "not-the-archive");
    writeFileSync(elsewhere, "untouched\n");
    symlinkSync(elsewhere, out);
    const exported = await agentenv(["env", "export", name, "-o", out]);
    expect(exported.code).toBe(0);
    expect(readFileSync(out).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(readFileSync(elsewhere, "utf8")).toBe("untouched\n");
    // it holds the home's credentials in the clear: the user's alone
    expect(lstatSync(out).isFile()).toBe(true);
    expect(statSync(out).mode & 0o777).toBe(0o600);

    const copy = envName("imported");
    const imported = await agentenv(["env", "import", copy, out]);
    expect(imported.code).toBe(0);
    const listing = (env: string) =>
      Bun.spawnSync(["sh", "-c", `cd ${volumeDir(env)} && find . ! -path './.local/state/agentenv/env.json' -printf '%p %y %m %l\\n' | sort && find . -type f ! -path './.local/state/agentenv/env.json' -exec sha256sum {} + | sort`]).stdout.toString();
    expect(listing(copy)).toBe(listing(name));
    expect(JSON.parse(readFileSync(join(volumeDir(copy), ".local/state/agentenv/env.json"), "utf8")).source).toMatchObject({ kind: "archive", path: out });
    const session = await agentenv(["run", "--env", copy, tempTree(), "--", "cat", "/root/made-in-session.txt"]);
    expect(session.stdout).toBe("hello\n");

    // -o a directory: NAME.tar.gz in it; a directory that does not exist: one line, nothing run
    const outDir = tempTree();
    expect((await agentenv(["env", "export", name, "-o", outDir])).code).toBe(0);
    expect(existsSync(join(outDir, `${name}.tar.gz`))).toBe(true);
    const nowhere = await agentenv(["env", "export", name, "-o", "/nonexistent/dir/home.tar.gz"]);
    expect(nowhere.stderr).toBe("agentenv: -o /nonexistent/dir/home.tar.gz: the directory /nonexistent/dir does not exist\n");

    const notArchive = await agentenv(["env", "import", envName("broken"), join(fixture, "flake.nix")]);
    expect(notArchive.code).toBe(1);
    expect(notArchive.stderr).toBe(`agentenv: ${join(fixture, "flake.nix")}: not a tar archive — give an archive made by agentenv env export (a .tar.gz or .tar)\n`);
    expect(volumeExists(`${prefix}-broken`)).toBe(false);
  });
});

describe("legacy profiles", () => {
  /** A host HOME with a profile at ~/config, as users of the legacy model have it. */
  function profileHome() {
    const home = tempTree({
      "config/activate.sh": 'ln -sf "$HOME/config/bashrc" "$HOME/.profile-bashrc"\necho activated\n',
      "config/bashrc": "v1\n",
    });
    return { home, profile: join(home, "config") };
  }

  test("--profile mounts DIR live at the same place under HOME and runs its activate.sh first, with a hint", async () => {
    const { home, profile } = profileHome();
    const session = Bun.spawn(
      [process.execPath, join(repoRoot, "bin/agentenv.ts"), "run", "--profile", "~/config", tempTree(), "--", "sh", "-c", "cat ~/.profile-bashrc; while [ ! -e ~/config/ready ]; do sleep 0.1; done; cat ~/config/ready"],
      { env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(isolatedHome, ".config"), NO_COLOR: "1" }, stdout: "pipe", stderr: "pipe" },
    );
    await Bun.sleep(1500);
    writeFileSync(join(profile, "ready"), "edited on the host\n");
    expect(await session.exited).toBe(0);
    expect(await new Response(session.stdout).text()).toBe("v1\nedited on the host\n");
    const stderr = await new Response(session.stderr).text();
    expect(stderr).toContain("activated");
    expect(stderr).toContain(`--profile is the legacy model: \`agentenv env create NAME --from-profile ${profile}\` turns it into an environment`);
  });

  test("env create --from-profile turns a profile into an environment", async () => {
    const { home, profile } = profileHome();
    const name = envName("from-profile");
    const created = await agentenv(["env", "create", name, "--from-profile", profile], { env: { HOME: home } });
    expect(created.code).toBe(0);
    const dir = volumeDir(name);
    expect(readFileSync(join(dir, "config/bashrc"), "utf8")).toBe("v1\n");
    expect(readlinkSync(join(dir, ".profile-bashrc"))).toBe("/root/config/bashrc");
    expect(JSON.parse(readFileSync(join(dir, ".local/state/agentenv/env.json"), "utf8")).source).toMatchObject({ kind: "profile", path: profile, target: "config" });
    const session = await agentenv(["run", "--env", name, tempTree(), "--", "cat", "/root/.profile-bashrc"]);
    expect(session.stdout).toBe("v1\n");
  });
});
