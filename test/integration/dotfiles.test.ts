import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv as cli, isolatedHome, tempTree, type CliResult } from "../helpers/cli.ts";
import { envNames, volumeDir } from "../helpers/envs.ts";
import { expectNoStackTrace, leftoverContainers, requireImage } from "../helpers/engine.ts";

/**
 * Dotfiles repos (real git repositories on disk), the encrypted overlay and secrets, on
 * real Podman. Encrypted files and the key live in this file's own data and config dirs,
 * so no other test's sessions get its secrets.
 */
const prefix = `d${process.pid}`;
const { envName, made } = envNames(prefix);
const dataHome = tempTree({}, "agentenv-data-");
const xdg = { XDG_DATA_HOME: dataHome };

function agentenv(args: string[], options: { env?: Record<string, string>; stdin?: string; cwd?: string } = {}): Promise<CliResult> {
  return cli(args, { ...options, env: { ...xdg, ...options.env } });
}

function git(dir: string, ...args: string[]): string {
  const result = Bun.spawnSync(["git", "-C", dir, "-c", "user.email=test@example.com", "-c", "user.name=test", ...args]);
  if (result.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr.toString()}`);
  return result.stdout.toString().trim();
}

/** A git repository on disk with FILES committed (path → content; a leading "x:" makes it executable). */
function dotfilesRepo(files: Record<string, string>): string {
  const dir = tempTree({}, "agentenv-dots-");
  git(dir, "init", "-q", "-b", "main");
  commit(dir, files, "first");
  return dir;
}

function commit(dir: string, files: Record<string, string>, message: string): string {
  for (const [path, content] of Object.entries(files)) {
    const executable = content.startsWith("x:");
    const file = join(dir, path);
    Bun.spawnSync(["mkdir", "-p", join(file, "..")]);
    writeFileSync(file, executable ? content.slice(2) : content, { mode: executable ? 0o755 : 0o644 });
  }
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", message);
  return git(dir, "rev-parse", "HEAD");
}

/** A setup script that counts its runs in ~/runs.txt and says which script it is. */
const counting = (which: string) => `x:#!/bin/sh\necho ${which} >> "$HOME/runs.txt"\necho "setup output from ${which}"\n`;

async function create(name: string, ...args: string[]): Promise<CliResult> {
  const result = await agentenv(["env", "create", name, ...args]);
  expect(result.stderr).toContain(`environment ${name} created`);
  expect(result.code).toBe(0);
  return result;
}

async function run(name: string, command: string, ...flags: string[]): Promise<CliResult> {
  return agentenv(["run", "--env", name, ...flags, tempTree(), "--", "sh", "-c", command]);
}

beforeAll(async () => {
  await requireImage();
});

afterAll(() => {
  for (const name of made) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
});

describe("dotfiles repo", () => {
  test("install.sh runs at the first boot only, again after a new commit, and env update re-runs it now", async () => {
    // a daemon the script starts in the background must not hold the session open
    const repo = dotfilesRepo({ "install.sh": `${counting("install.sh")}sleep 600 &\n`, ".bashrc": "export FROM_REPO=1\n" });
    const name = envName("install");
    const created = await create(name, "--dotfiles", repo);
    expect(created.stderr).toContain(`created from dotfiles ${repo}`);

    const first = await run(name, "cat ~/runs.txt; git -C ~/.dotfiles rev-parse HEAD");
    expect(first.code).toBe(0);
    const head = git(repo, "rev-parse", "HEAD");
    expect(first.stdout).toBe(`install.sh\n${head}\n`);
    expect(first.stderr).toContain("setup output from install.sh");
    expect(first.stderr).toContain(`dotfiles applied: ${repo} at ${head.slice(0, 12)}`);
    const dir = volumeDir(name);
    // agentenv's record of it is in its state dir, never among the user's dotfiles
    expect(readFileSync(join(dir, ".local/state/agentenv/dotfiles.commit"), "utf8")).toBe(`${head}\n`);
    expect(readFileSync(join(dir, ".local/state/agentenv/dotfiles.log"), "utf8")).toContain("setup output from install.sh");
    expect(readdirSync(join(dir, ".dotfiles")).sort()).toEqual([".bashrc", ".git", "install.sh"]);
    // shallow: one commit
    expect(existsSync(join(dir, ".dotfiles/.git/shallow"))).toBe(true);

    const second = await run(name, "cat ~/runs.txt");
    expect(second.stdout).toBe("install.sh\n");
    expect(second.stderr).not.toContain("running");

    const next = commit(repo, { ".bashrc": "export FROM_REPO=2\n" }, "second");
    const third = await run(name, "cat ~/runs.txt; cat ~/.dotfiles/.bashrc");
    expect(third.stdout).toBe("install.sh\ninstall.sh\nexport FROM_REPO=2\n");
    expect(third.stderr).toContain(`updating ~/.dotfiles to ${next}`);

    const update = await agentenv(["env", "update", name]);
    expect(update.code).toBe(0);
    expect(update.stderr).toContain(`environment ${name}: dotfiles updated`);
    expect(readFileSync(join(dir, "runs.txt"), "utf8")).toBe("install.sh\ninstall.sh\ninstall.sh\n");
    expect((await run(name, "cat ~/runs.txt")).stdout).toBe("install.sh\ninstall.sh\ninstall.sh\n");

    const show = JSON.parse((await agentenv(["env", "show", name, "--json"])).stdout);
    expect(show.dotfiles).toEqual({ url: repo, commit: next, lastSetup: expect.objectContaining({ status: "applied", commit: next, ran: "install.sh", changed: 1 }) });

    // a checkout deleted by hand is cloned (and set up) again
    Bun.spawnSync(["rm", "-rf", join(dir, ".dotfiles")]);
    expect((await run(name, "git -C ~/.dotfiles rev-parse HEAD; wc -l < ~/runs.txt")).stdout).toBe(`${next}\n4\n`);

    // an exported home keeps its dotfiles repo when imported
    const archive = join(tempTree(), "home.tar.gz");
    expect((await agentenv(["env", "export", name, "-o", archive])).code).toBe(0);
    const imported = envName("imported");
    expect((await agentenv(["env", "import", imported, archive])).code).toBe(0);
    expect(JSON.parse(readFileSync(join(volumeDir(imported), ".local/state/agentenv/env.json"), "utf8")).dotfiles).toEqual({ url: repo });
    expect(readFileSync(join(volumeDir(imported), ".local/state/agentenv/dotfiles.conf"), "utf8")).toContain(`url=${repo}\n`);
  });

  test("search order: install.sh wins over setup.sh and bootstrap; --setup picks another; env set changes ref and setup", async () => {
    // script/custom is not executable and needs bash: it runs with its #! interpreter
    const custom = `#!/usr/bin/env bash\n[[ -n "$HOME" ]] && echo script/custom >> "$HOME/runs.txt"\n`;
    const repo = dotfilesRepo({ "setup.sh": counting("setup.sh"), "install.sh": counting("install.sh"), bootstrap: counting("bootstrap"), "script/custom": custom });
    // an annotated tag: its commit is the peeled one
    git(repo, "tag", "-a", "v1", "-m", "v1");
    commit(repo, { "install.sh": counting("install.sh-v2") }, "v2");
    const name = envName("order");
    await create(name, "--dotfiles", repo, "--ref", "v1");
    expect((await run(name, "cat ~/runs.txt")).stdout).toBe("install.sh\n");
    const again = await run(name, "cat ~/runs.txt");
    expect(again.stdout).toBe("install.sh\n");
    expect(again.stderr).not.toContain("updating");

    const chosen = envName("setup");
    await create(chosen, "--dotfiles", repo, "--setup", "script/custom");
    expect((await run(chosen, "cat ~/runs.txt")).stdout).toBe("script/custom\n");

    // a new ref and a new setup path are new inputs: the setup runs again
    const set = await agentenv(["env", "set", name, "dotfiles.ref=main", "dotfiles.setup=setup.sh"]);
    expect(set.code).toBe(0);
    expect((await run(name, "cat ~/runs.txt")).stdout).toBe("install.sh\nsetup.sh\n");
    const record = JSON.parse(readFileSync(join(volumeDir(name), ".local/state/agentenv/env.json"), "utf8"));
    expect(record.dotfiles).toEqual({ url: repo, ref: "main", setup: "setup.sh" });
    // another repo starts from its defaults, whatever order the keys come in
    expect((await agentenv(["env", "set", name, "dotfiles.ref=v1", `dotfiles.url=${repo}`])).code).toBe(0);
    expect(JSON.parse(readFileSync(join(volumeDir(name), ".local/state/agentenv/env.json"), "utf8")).dotfiles).toEqual({ url: repo, ref: "v1" });

    const missing = await agentenv(["env", "set", chosen, "dotfiles.setup=nope.sh"]);
    expect(missing.code).toBe(0);
    const failed = await run(chosen, "echo opened");
    expect(failed.stdout).toBe("opened\n");
    expect(failed.stderr).toContain(`the dotfiles setup script nope.sh is not in the dotfiles repo ${repo} (nor a command on PATH)`);
  });

  test("without a setup script, the repo's dotfiles are linked into ~, directories both have merged, what was in the way kept aside", async () => {
    const repo = dotfilesRepo({
      ".bashrc": "export LINKED_BASHRC=yes\n",
      ".config/tool/conf": "repo conf\n",
      ".local/bin/repo-tool": "x:#!/bin/sh\necho repo tool\n",
      "README.md": "not a dotfile\n",
    });
    const name = envName("links");
    await create(name, tempTree({ ".bashrc": "# the template's\n", ".config/other/keep": "kept\n" }), "--dotfiles", repo);
    const result = await run(name, "bash -lc 'echo $LINKED_BASHRC'; cat ~/.config/tool/conf ~/.config/other/keep; ~/.local/bin/repo-tool");
    expect(result.stdout).toBe("yes\nrepo conf\nkept\nrepo tool\n");
    const dir = volumeDir(name);
    expect(readlinkSync(join(dir, ".bashrc"))).toBe(".dotfiles/.bashrc");
    // ~/.config and ~/.local exist in the home: merged, one level down, with relative links
    expect(lstatSync(join(dir, ".config")).isDirectory()).toBe(true);
    expect(readlinkSync(join(dir, ".config/tool"))).toBe("../.dotfiles/.config/tool");
    expect(readlinkSync(join(dir, ".local/bin"))).toBe("../.dotfiles/.local/bin");
    expect(existsSync(join(dir, ".local/state/agentenv/env.json"))).toBe(true);
    expect(existsSync(join(dir, "README.md"))).toBe(false);
    expect(existsSync(join(dir, ".git"))).toBe(false);
    expect(readFileSync(join(dir, ".local/state/agentenv/dotfiles-backup/.bashrc"), "utf8")).toBe("# the template's\n");
    // a login shell reads ~/.bashrc through the ~/.bash_profile agentenv wrote (the home had none)
    expect(readFileSync(join(dir, ".bash_profile"), "utf8")).toContain(". ~/.bashrc");
    // bash only: sessions start bash
    expect(readFileSync(join(dir, ".local/state/agentenv/shell"), "utf8")).toBe("bash\n");
  });

  test("a failed setup opens the session with a warning and is not retried with the same inputs; --strict refuses the session; a new commit is retried", async () => {
    const repo = dotfilesRepo({ "install.sh": `x:#!/bin/sh\necho attempt >> "$HOME/attempts.txt"\n[ -e fixed ] || { echo "setup broke here"; exit 3; }\necho fine\n` });
    const name = envName("failing");
    await create(name, "--dotfiles", repo);
    const first = await run(name, "echo opened");
    expect(first.code).toBe(0);
    expect(first.stdout).toBe("opened\n");
    expect(first.stderr).toContain("setup broke here");
    expect(first.stderr).toContain("the dotfiles setup script install.sh failed (exit 3)");
    expect(first.stderr).toContain(`the dotfiles setup failed; this session runs without it (not run again with the same inputs for a day; agentenv env update ${name} runs it now)`);
    const dir = volumeDir(name);
    expect(existsSync(join(dir, ".local/state/agentenv/dotfiles.hash"))).toBe(false);

    // the same inputs: not run again (test/integration/dotfiles-styles.test.ts shows the one line it prints)
    const strict = await run(name, "echo opened", "--strict");
    expect(strict.code).toBe(1);
    expect(strict.stdout).toBe("");
    expect(strict.stderr).toContain("the last dotfiles setup failed");
    expect(strict.stderr).toContain("failed; not opening the session (strict)");
    expect(readFileSync(join(dir, "attempts.txt"), "utf8")).toBe("attempt\n");

    // the fix is a new commit: the checkout a failed setup left behind is still agentenv's to move
    commit(repo, { fixed: "" }, "fix");
    const retried = await run(name, "cat ~/attempts.txt");
    expect(retried.stdout).toBe("attempt\nattempt\n");
    expect(retried.stderr).toContain("dotfiles applied");
    expect(existsSync(join(dir, ".local/state/agentenv/dotfiles.hash"))).toBe(true);
    expect((await run(name, "cat ~/attempts.txt")).stdout).toBe("attempt\nattempt\n");
  });

  test("a home with only ~/.bashrc gets a ~/.bash_profile that sources it; one with its own ~/.profile is left alone", async () => {
    const name = envName("profile");
    await create(name, tempTree({ ".bashrc": "export FROM_BASHRC=yes\n" }));
    expect((await run(name, "bash -lc 'echo $FROM_BASHRC'")).stdout).toBe("yes\n");
    const own = envName("ownprofile");
    await create(own, tempTree({ ".bashrc": "export FROM_BASHRC=yes\n", ".profile": "export FROM_PROFILE=yes\n" }));
    expect((await run(own, "bash -lc 'echo ${FROM_BASHRC:-no} $FROM_PROFILE'")).stdout).toBe("no yes\n");
    expect(existsSync(join(volumeDir(own), ".bash_profile"))).toBe(false);
  });

  test("bad input is a one-line error that creates nothing", async () => {
    const notRepo = tempTree({ ".bashrc": "" });
    const cases: Array<[string[], string]> = [
      [["env", "create", `${prefix}-bad`, "--dotfiles", notRepo], `is not a git repository`],
      [["env", "create", `${prefix}-bad`, "--dotfiles", "/nonexistent/dots"], "no such directory"],
      [["env", "create", `${prefix}-bad`, "--ref", "main"], "--ref goes with --dotfiles URL"],
      [["env", "create", `${prefix}-bad`, "--dotfiles", "owner/repo", "--setup", "../x"], "must be a path inside the repo"],
      [["env", "set", `${prefix}-bad`, "colour=blue"], "give KEY=VALUE, KEY one of dotfiles.url"],
      [["env", "update", `${prefix}-bad`], `no environment named ${prefix}-bad`],
      [["env", "create", `${prefix}-bad`, "--dotfiles", "https://me:ghp_token@github.com/me/dots.git"], "a dotfiles URL must not carry a password or token"],
      [["env", "create", `${prefix}-bad`, "--dotfiles", "owner/repo", "--ref", "6442f75cf3"], "give a commit as its full 40-character hash"],
    ];
    for (const [args, message] of cases) {
      const result = await agentenv(args);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(message);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expectNoStackTrace(result.stderr);
    }
    expect(Bun.spawnSync(["podman", "volume", "exists", `agentenv-env-${prefix}-bad`]).exitCode).toBe(1);
  });
});

describe("overlay", () => {
  test("overlay files win over the repo's, are encrypted at rest, and a tampered overlay writes nothing", async () => {
    const repo = dotfilesRepo({ ".gitconfig": "[user]\n\tname = From Repo\n" });
    const name = envName("overlay");
    await create(name, "--dotfiles", repo);
    const plain = "[user]\n\tname = From Overlay\n\temail = overlay-only@example.com\n";
    const add = await agentenv(["env", "overlay", name, "add", ".gitconfig"], { stdin: plain });
    expect(add.code).toBe(0);
    const tool = "#!/bin/sh\necho overlay tool\n";
    const script = tempTree({ "tool.sh": tool });
    Bun.spawnSync(["chmod", "0750", join(script, "tool.sh")]);
    expect((await agentenv(["env", "overlay", name, "add", "bin/tool.sh", "--from", join(script, "tool.sh")])).code).toBe(0);

    const ls = JSON.parse((await agentenv(["env", "overlay", name, "ls", "--json"])).stdout);
    expect(ls).toEqual([
      { path: ".gitconfig", mode: "0600", size: plain.length },
      { path: "bin/tool.sh", mode: "0750", size: tool.length },
    ]);
    expect((await agentenv(["env", "overlay", name, "cat", ".gitconfig"])).stdout).toBe(plain);

    // at rest: the bytes on disk are not the plaintext
    const stored = join(dataHome, "agentenv/overlays", `${name}.enc`);
    const bytes = readFileSync(stored);
    expect(bytes.includes(Buffer.from("overlay-only@example.com"))).toBe(false);
    expect(bytes.includes(Buffer.from("From Overlay"))).toBe(false);
    expect(statSync(stored).mode & 0o777).toBe(0o600);

    const session = await run(name, "git config user.name; ~/bin/tool.sh");
    expect(session.stdout).toBe("From Overlay\noverlay tool\n");
    expect(session.stderr).toContain("overlay: 2 file(s) written");
    const dir = volumeDir(name);
    // the repo's file is replaced, not written through its link: the checkout stays clean
    expect(lstatSync(join(dir, ".gitconfig")).isSymbolicLink()).toBe(false);
    expect(readFileSync(join(dir, ".dotfiles/.gitconfig"), "utf8")).toContain("From Repo");
    expect(statSync(join(dir, "bin/tool.sh")).mode & 0o777).toBe(0o750);

    // tampered: one byte flipped → a clear error before the container starts; the home is untouched
    const tampered = Buffer.from(bytes);
    tampered[tampered.length - 1]! ^= 0x01;
    writeFileSync(stored, tampered);
    writeFileSync(join(dir, ".gitconfig"), "sentinel\n");
    const project = tempTree();
    const refused = await agentenv(["run", "--env", name, project, "--", "true"]);
    expect(refused.code).toBe(1);
    const key = join(isolatedHome, ".config/agentenv/key");
    expect(refused.stderr).toBe(`agentenv: cannot decrypt ${stored}: wrong key (${key}) or the file was changed — use the key it was written with; a changed file cannot be recovered\n`);
    expect(readFileSync(join(dir, ".gitconfig"), "utf8")).toBe("sentinel\n");
    expect(leftoverContainers(project)).toEqual([]);
    // the wrong key: the same refusal
    writeFileSync(stored, bytes);
    const wrongKey = await agentenv(["env", "overlay", name, "ls"], { env: { AGENTENV_KEY: "11".repeat(32) } });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain("wrong key (AGENTENV_KEY)");
  });

  test("paths that escape HOME are refused; rm removes a file; env rm removes the overlay", async () => {
    const name = envName("paths");
    await create(name, tempTree({ ".bashrc": "" }));
    for (const path of ["../outside", "/etc/passwd", ".config/../../x", ".local/state/agentenv/env.json"]) {
      const result = await agentenv(["env", "overlay", name, "add", path], { stdin: "x" });
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expectNoStackTrace(result.stderr);
    }
    expect(existsSync(join(dataHome, "agentenv/overlays", `${name}.enc`))).toBe(false);
    expect((await agentenv(["env", "overlay", name, "add", ".x"], { stdin: "x" })).code).toBe(0);
    expect((await agentenv(["env", "overlay", name, "add", ".y"], { stdin: "y" })).code).toBe(0);
    expect((await agentenv(["env", "overlay", name, "rm", ".x"])).code).toBe(0);
    expect((await agentenv(["env", "overlay", name, "ls"])).stdout).toMatch(/^0600 +1 B {2}\.y\n$/);
    // a file and a directory of the same path could never both be written
    const clash = await agentenv(["env", "overlay", name, "add", ".y/z"], { stdin: "z" });
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain(".y/z and .y cannot both be in the overlay");

    // a directory of the home linked out of HOME (here into the project): the overlay is not written through it
    const project = tempTree();
    expect((await agentenv(["run", "--env", name, project, "--", "sh", "-c", "mkdir -p /work/out && ln -s /work/out ~/.linked"])).code).toBe(0);
    expect((await agentenv(["env", "overlay", name, "add", ".linked/token", "--mode", "640"], { stdin: "token" })).code).toBe(0);
    const through = await agentenv(["run", "--env", name, project, "--", "true"]);
    expect(through.code).toBe(0);
    expect(through.stderr).toContain("overlay: ~/.linked/token leads out of HOME (through a link); not written");
    expect(existsSync(join(project, "out/token"))).toBe(false);
    const rm = await agentenv(["env", "rm", name]);
    expect(rm.stderr).toContain(`environment ${name} removed, with its overlay`);
    expect(existsSync(join(dataHome, "agentenv/overlays", `${name}.enc`))).toBe(false);
  });
});

describe("secrets", () => {
  test("a secret is $NAME in the session and nowhere else: not in the home, the plan, -v, nor the engine's inspect", async () => {
    const name = envName("secrets");
    await create(name, tempTree({ ".bashrc": "" }));
    const value = "s3cr3t-'quoted' $value \\ with spaces";
    const set = await agentenv(["secret", "set", "TEST_TOKEN", "--env", name], { stdin: `${value}\n` });
    expect(set.code).toBe(0);
    expect(set.stderr).toContain(`secret TEST_TOKEN set for environment ${name}`);
    expect((await agentenv(["secret", "set", "GLOBAL_TOKEN"], { stdin: "global-value" })).code).toBe(0);
    const list = JSON.parse((await agentenv(["secret", "list", "--json"])).stdout);
    expect(list).toEqual([
      { name: "GLOBAL_TOKEN", scope: "all", sessions: "sessions of trusted projects, any environment or none" },
      { name: "TEST_TOKEN", scope: name, sessions: `sessions of trusted projects with --env ${name}` },
    ]);
    expect(JSON.stringify(list)).not.toContain("global-value");

    // the session sees them; the value went through a file the entrypoint deleted
    const project = tempTree();
    const child = Bun.spawn([process.execPath, join(import.meta.dir, "../../bin/agentenv.ts"), "run", "--env", name, project, "--", "sh", "-c", 'printf "%s|%s\\n" "$TEST_TOKEN" "$GLOBAL_TOKEN"; ls -A /run/agentenv/handoff; echo listed; sleep 30'], {
      env: { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config"), ...xdg },
      stdout: "pipe",
      stderr: "pipe",
    });
    const reader = child.stdout.getReader();
    let out = "";
    while (!out.includes("listed\n")) {
      const { value: chunk, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(chunk);
    }
    expect(out).toBe(`${value}|global-value\nlisted\n`);
    const [container] = leftoverContainers(project);
    expect(container).toBeDefined();
    const inspect = Bun.spawnSync(["podman", "inspect", container!]).stdout.toString();
    expect(inspect).toContain("/run/agentenv/handoff");
    expect(inspect).not.toContain("s3cr3t");
    expect(inspect).not.toContain("global-value");
    child.kill("SIGTERM");
    await child.exited;
    expect(leftoverContainers(project)).toEqual([]);

    // nothing of them in the home volume
    const grep = Bun.spawnSync(["grep", "-rlF", "-e", "s3cr3t", "-e", "global-value", volumeDir(name)]);
    expect(grep.stdout.toString()).toBe("");
    expect(grep.exitCode).toBe(1);

    // nor in what agentenv prints about the session
    for (const flag of ["--dry-run", "--json", "-v"]) {
      const result = await agentenv(["run", flag, "--env", name, tempTree(), "--", "true"]);
      expect(result.code).toBe(0);
      const printed = result.stdout + result.stderr;
      expect(printed).not.toContain("s3cr3t");
      expect(printed).not.toContain("global-value");
      if (flag === "-v") expect(result.stderr).toContain("GLOBAL_TOKEN=*** TEST_TOKEN=***");
    }

    // scoped: another environment gets only the global one
    const other = envName("other");
    await create(other, tempTree({ ".bashrc": "" }));
    expect((await run(other, 'echo "${TEST_TOKEN:-unset} $GLOBAL_TOKEN"')).stdout).toBe("unset global-value\n");

    const rm = await agentenv(["secret", "rm", "GLOBAL_TOKEN"]);
    expect(rm.code).toBe(0);
    const missing = await agentenv(["secret", "rm", "TEST_TOKEN"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`agentenv: no secret TEST_TOKEN for all environments — it is set for environment ${name} (--env ${name})\n`);
    const removed = await agentenv(["env", "rm", name]);
    expect(removed.stderr).toContain(`with its secrets (TEST_TOKEN)`);
    expect((await agentenv(["secret", "list"])).stdout).toBe("no secrets — set one: agentenv secret set NAME < file\n");
  });

  test("a secret set or removed while the environment's up container runs: one line says when its commands see it", async () => {
    const name = envName("upsecret");
    await create(name, tempTree({ ".bashrc": "" }));
    const root = realpathSync(tempTree());
    expect((await agentenv(["up", "--env", name, "--roots", root])).code).toBe(0);
    try {
      const notice = `agentenv-up-${name} is running: its commands see this change after agentenv down --env ${name} and agentenv up --env ${name}`;
      const set = await agentenv(["secret", "set", "UP_TOKEN", "--env", name], { stdin: "v" });
      expect(set.code).toBe(0);
      expect(set.stderr).toContain(notice);
      // every environment's secret concerns it too; another environment's does not
      const all = await agentenv(["secret", "set", "UP_ALL"], { stdin: "v" });
      expect(all.stderr).toContain(notice);
      const other = await agentenv(["secret", "set", "UP_OTHER", "--env", `${name}-other`], { stdin: "v" });
      expect(other.stderr).not.toContain("is running");
      const rm = await agentenv(["secret", "rm", "UP_TOKEN", "--env", name]);
      expect(rm.code).toBe(0);
      expect(rm.stderr).toContain(notice);
      for (const [secret, scope] of [["UP_ALL", []], ["UP_OTHER", ["--env", `${name}-other`]]] as const) await agentenv(["secret", "rm", secret, ...scope]);
    } finally {
      await agentenv(["down", "--env", name]);
    }
  });

  test("a value comes from stdin only; bad names are refused", async () => {
    const argv = await agentenv(["secret", "set", "TOKEN", "the-value"]);
    expect(argv.code).toBe(2);
    expect(argv.stderr).toContain("unexpected argument the-value");
    const empty = await agentenv(["secret", "set", "TOKEN"], { stdin: "" });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain("no value for TOKEN");
    for (const name of ["1BAD", "PATH", "AGENTENV_ENV", "with-dash"]) {
      const result = await agentenv(["secret", "set", name], { stdin: "x" });
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
    }
  });
});
