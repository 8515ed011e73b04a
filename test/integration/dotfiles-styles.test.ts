import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "pathe";
import { agentenv as cli, entry, isolatedHome, repoRoot, tempTree, type CliResult } from "../helpers/cli.ts";
import { terminal } from "../helpers/terminal.ts";
import { envNames, volumeDir } from "../helpers/envs.ts";
import { leftoverContainers, requireImage } from "../helpers/engine.ts";

/**
 * Dotfiles repos of the styles people really publish (test/fixtures/dotfiles/: a
 * bootstrap that asks questions, a y/n rsync script that takes --force, rcm, GNU stow,
 * a chezmoi source dir, a setup that needs the network, one that takes its time), made
 * real git repositories and set up by real sessions on Podman. Terminals are tmux.
 */
const prefix = `s${process.pid}`;
const { envName, made } = envNames(prefix);
const dataHome = tempTree({}, "agentenv-data-");
const fixtures = join(repoRoot, "test/fixtures/dotfiles");
const session = `agentenv-dotfiles-${process.pid}`;
const state = ".local/state/agentenv";

function agentenv(args: string[]): Promise<CliResult> {
  return cli(args, { env: { XDG_DATA_HOME: dataHome } });
}

function git(dir: string, ...args: string[]): void {
  const result = Bun.spawnSync(["git", "-C", dir, "-c", "user.email=test@example.com", "-c", "user.name=test", ...args]);
  if (result.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr.toString()}`);
}

/** The fixture STYLE (plus EXTRA files) as a git repository of its own; a file starting with #! is made executable. */
function fixtureRepo(style: string, extra: Record<string, string> = {}): string {
  const dir = tempTree({}, `agentenv-${style}-`);
  cpSync(join(fixtures, style), dir, { recursive: true });
  for (const [path, content] of Object.entries(extra)) {
    Bun.spawnSync(["mkdir", "-p", join(dir, path, "..")]);
    writeFileSync(join(dir, path), content);
  }
  const files = Bun.spawnSync(["find", dir, "-type", "f"]).stdout.toString().trim().split("\n");
  for (const file of files) if (readFileSync(file, "utf8").startsWith("#!")) Bun.spawnSync(["chmod", "+x", file]);
  git(dir, "init", "-q", "-b", "main");
  commit(dir, "first");
  return dir;
}

function commit(dir: string, message: string): void {
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", message);
}

async function create(name: string, ...args: string[]): Promise<void> {
  const result = await agentenv(["env", "create", name, ...args]);
  expect(result.stderr).toContain(`environment ${name} created`);
  expect(result.code).toBe(0);
}

function run(name: string, command: string, ...flags: string[]): Promise<CliResult> {
  return agentenv(["run", "--env", name, ...flags, tempTree(), "--", "sh", "-c", command]);
}

/** The lines agentenv itself printed (its setup's own output aside). */
const said = (stderr: string) => stderr.split("\n").filter((line) => line.startsWith("agentenv: "));

/** ~/REL of NAME's home: a link's target, or "file"/"dir" (undefined: nothing there). */
function inHome(name: string, rel: string): string | undefined {
  const path = join(volumeDir(name), rel);
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (!stat) return undefined;
  return stat.isSymbolicLink() ? readlinkSync(path) : stat.isDirectory() ? "dir" : "file";
}

function lastSetup(name: string): Record<string, string> {
  const text = readFileSync(join(volumeDir(name), state, "dotfiles.result"), "utf8");
  return Object.fromEntries(text.trim().split("\n").map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]));
}

// a real terminal: tmux, driven with send-keys, read with capture-pane
const { tmux, screen, waitFor } = terminal(session);

/** `agentenv ARGS` in a tmux terminal; its exit code goes to the returned file. */
function inTerminal(args: string[]): string {
  const exitFile = join(tempTree(), "exit-code");
  const env = [`HOME=${isolatedHome}`, `XDG_CONFIG_HOME=${join(isolatedHome, ".config")}`, `XDG_DATA_HOME=${dataHome}`, "NO_COLOR=1"];
  if (process.env.AGENTENV_IMAGE) env.push(`AGENTENV_IMAGE=${process.env.AGENTENV_IMAGE}`);
  tmux("kill-session", "-t", session);
  const started = tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", `${env.join(" ")} ${process.execPath} ${entry} ${args.join(" ")}; echo $? > ${exitFile}; echo AGENTENV-DONE; sleep 600`);
  if (started.exitCode !== 0) throw new Error(`tmux failed: ${started.stderr}`);
  return exitFile;
}

beforeAll(async () => {
  await requireImage();
  if (!Bun.which("tmux")) throw new Error("tmux is missing: .ci/run installs it");
});

afterAll(() => {
  tmux("kill-session", "-t", session);
  for (const name of made) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
});

describe("setup scripts that ask", () => {
  test("a bootstrap asking two questions: without a terminal it needs one (said once, then one line per boot); env update in a terminal asks them", async () => {
    const name = envName("asks");
    await create(name, "--dotfiles", fixtureRepo("asks-twice"));
    const first = await run(name, "echo opened");
    expect(first.code).toBe(0);
    expect(first.stdout).toBe("opened\n");
    expect(first.stderr).toContain(`agentenv: the dotfiles setup script/bootstrap needs a terminal: it read its input (a question?) in a session without one: run \`agentenv env update ${name}\` in a terminal`);
    expect(first.stderr).not.toContain("dotfiles applied");
    expect(lastSetup(name).status).toBe("needs-terminal");

    // the next boot does not run it again: one line says why, and where the log is
    const second = await run(name, "echo opened");
    expect(second.stdout).toBe("opened\n");
    expect(second.stderr).not.toContain("setting up gitconfig");
    const lines = said(second.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^agentenv: the last dotfiles setup failed .*script\/bootstrap needs a terminal.*agentenv env update .* in a terminal; log: ~\/\.local\/state\/agentenv\/dotfiles\.log$/);

    const exitFile = inTerminal(["env", "update", name]);
    await waitFor(/What is your github author name\? $/m);
    tmux("send-keys", "-t", session, "Ada Lovelace", "Enter");
    await waitFor(/What is your github author email\? $/m);
    tmux("send-keys", "-t", session, "ada@example.com", "Enter");
    const done = await waitFor(/AGENTENV-DONE/);
    expect(readFileSync(exitFile, "utf8").trim()).toBe("0");
    expect(done).toContain(`dotfiles applied: `);
    expect(done).toContain("script/bootstrap: 2 added (1 link), 0 changed in ~");
    expect(done).toContain(`environment ${name}: dotfiles updated`);
    expect(readFileSync(join(volumeDir(name), ".gitconfig.local"), "utf8")).toBe("[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n");
    expect(inHome(name, ".gitconfig")).toBe(".dotfiles/gitconfig");
    // the terminal's output is kept in the log too
    expect(readFileSync(join(volumeDir(name), state, "dotfiles.log"), "utf8")).toContain("What is your github author email? ada@example.com");

    const show = await agentenv(["env", "show", name]);
    expect(show.stdout).toMatch(/^setup {5}applied \d+ s ago — script\/bootstrap: 2 added \(1 link\), 0 changed$/m);
    // applied: the next boot runs nothing
    const after = await run(name, "git config user.email");
    expect(after.stdout).toBe("ada@example.com\n");
    expect(said(after.stderr)).toEqual([]);
  });

  test("a y/n script: without a terminal nothing is applied; in a terminal session (agentenv --env NAME DIR) it asks before the shell opens", async () => {
    const name = envName("yesno");
    await create(name, "--dotfiles", fixtureRepo("yes-no"));
    const quiet = await run(name, "echo opened");
    expect(quiet.stdout).toBe("opened\n");
    expect(quiet.stderr).toContain("the dotfiles setup bootstrap.sh needs a terminal");
    expect(inHome(name, ".aliases")).toBeUndefined();

    // a terminal: the failure for the want of one is retried at once, on it
    const exitFile = inTerminal(["--env", name, tempTree()]);
    await waitFor(/Are you sure\? \(y\/n\) $/m);
    tmux("send-keys", "-t", session, "y", "");
    await waitFor(/dotfiles applied: .* bootstrap\.sh: 2 added \(0 links\), 0 changed in ~/);
    // bash (the repo configures bash only) reads the ~/.bash_profile rsync copied
    tmux("send-keys", "-t", session, "echo from=$FROM_YES_NO; exit 3", "Enter");
    await waitFor(/AGENTENV-DONE/);
    expect(screen()).toMatch(/^from=1$/m);
    expect(readFileSync(exitFile, "utf8").trim()).toBe("3");
    expect(inHome(name, ".aliases")).toBe("file");
    expect(inHome(name, "README.md")).toBeUndefined();
    expect(lastSetup(name)).toMatchObject({ status: "applied", ran: "bootstrap.sh", added: "2" });
  });
});

describe("--setup", () => {
  test("takes arguments quoted as a shell would; none (or dotfiles.setup=none) places the files without running anything", async () => {
    const repo = fixtureRepo("yes-no");
    const forced = envName("force");
    await create(forced, "--dotfiles", repo, "--setup", "bootstrap.sh --force");
    const result = await run(forced, "cat ~/.aliases");
    expect(result.stdout).toBe('alias ll="ls -l"\n');
    expect(result.stderr).toContain("running bootstrap.sh --force from the dotfiles repo");
    expect(result.stderr).toContain("— bootstrap.sh --force: 2 added (0 links), 0 changed in ~");
    expect(JSON.parse(readFileSync(join(volumeDir(forced), state, "env.json"), "utf8")).dotfiles).toEqual({ url: repo, setup: "bootstrap.sh --force" });

    const none = envName("none");
    await create(none, "--dotfiles", repo, "--setup", "none");
    const linked = await run(none, "cat ~/.aliases");
    expect(linked.stdout).toBe('alias ll="ls -l"\n');
    expect(linked.stderr).not.toContain("running");
    expect(linked.stderr).toContain("— plain: 2 added (2 links), 0 changed in ~");
    expect(inHome(none, ".aliases")).toBe(".dotfiles/.aliases");

    // a new setup is a new input: the files rsync copied go to the backup, links take their place
    expect((await agentenv(["env", "set", forced, "dotfiles.setup=none"])).code).toBe(0);
    const relinked = await run(forced, "true");
    expect(relinked.stderr).toContain("— plain: 0 added (0 links), 2 changed in ~");
    expect(inHome(forced, ".aliases")).toBe(".dotfiles/.aliases");
    expect(readFileSync(join(volumeDir(forced), state, "dotfiles-backup/.aliases"), "utf8")).toBe('alias ll="ls -l"\n');
  });
});

describe("dotfile managers, done by agentenv", () => {
  test("rcm: undotted files as ~/.NAME, host- before tag- before the rest, rcrc's EXCLUDES, UNDOTTED and SYMLINK_DIRS; hooks are named, not run", async () => {
    const host = hostname().split(".")[0]!;
    const repo = fixtureRepo("rcm", { [`host-${host}/zshrc`]: "export RCM_ZSHRC=host\n", ".gitignore": "*.swp\n", ".github/workflows/ci.yml": "on: push\n" });
    const name = envName("rcm");
    await create(name, "--dotfiles", repo);
    const result = await run(name, ". ~/.zshrc; echo $RCM_ZSHRC; git config user.name; ~/bin/hello");
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("host\nwork\nhello from rcm\n");
    expect(result.stderr).toContain("placing the dotfiles into ~ as rcm would");
    expect(result.stderr).toContain(`agentenv: rcm hooks not run: hooks/post-up (to run one after the links: agentenv env set ${name} dotfiles.manager=rcm dotfiles.setup=hooks/post-up)`);
    expect(result.stderr).not.toContain("post-up hook ran");
    expect(result.stderr).toContain("— rcm: 6 added (6 links), 0 changed in ~");
    expect(inHome(name, ".zshrc")).toBe(`.dotfiles/host-${host}/zshrc`);
    expect(inHome(name, ".gitconfig")).toBe(".dotfiles/tag-work/gitconfig");
    expect(inHome(name, ".rcrc")).toBe(".dotfiles/rcrc");
    expect(inHome(name, ".config")).toBe("dir");
    expect(inHome(name, ".config/nvim")).toBe("dir");
    expect(inHome(name, ".config/nvim/init.vim")).toBe("../../.dotfiles/config/nvim/init.vim");
    expect(inHome(name, ".vim")).toBe(".dotfiles/vim");
    expect(inHome(name, "bin/hello")).toBe("../.dotfiles/bin/hello");
    for (const absent of [".README.md", ".LICENSE", ".hooks", ".tag-home", ".tag-work", `.host-${host}`, ".gitignore", ".github", ".bin"]) expect(inHome(name, absent)).toBeUndefined();
  });

  test("GNU stow: each top-level directory's tree linked into ~, whole directories where ~ has none (unfolded when two packages share one)", async () => {
    const name = envName("stow");
    await create(name, "--dotfiles", fixtureRepo("stow"));
    const result = await run(name, "~/.local/bin/hello; cat ~/.config/tmux/tmux.conf");
    expect(result.stdout).toBe("hello from stow\nset -g mouse on\n");
    expect(result.stderr).toContain("placing the dotfiles into ~ as stow would");
    expect(result.stderr).toContain("— stow: 5 added (5 links), 0 changed in ~");
    expect(inHome(name, ".zshrc")).toBe(".dotfiles/zsh/.zshrc");
    expect(inHome(name, ".gitconfig")).toBe(".dotfiles/git/.gitconfig");
    expect(inHome(name, ".config")).toBe("dir");
    expect(inHome(name, ".config/nvim")).toBe("../.dotfiles/nvim/.config/nvim");
    expect(inHome(name, ".config/tmux")).toBe("../.dotfiles/tmux/.config/tmux");
    // ~/.local is the home's own (agentenv's state is in it): merged, not replaced
    expect(inHome(name, ".local")).toBe("dir");
    expect(inHome(name, ".local/bin")).toBe("../.dotfiles/bin/.local/bin");
    // not packages' files: a top-level README, and a package's README (stow's default ignore list)
    expect(inHome(name, "README.md")).toBeUndefined();
    expect(readdirSync(volumeDir(name)).sort()).toEqual([".config", ".dotfiles", ".gitconfig", ".local", ".zshrc"]);
  });

  test("a chezmoi source dir: its install.sh that downloads chezmoi changes nothing and says so; dotfiles.manager=chezmoi applies it without a download", async () => {
    const repo = fixtureRepo("chezmoi");
    const name = envName("chezmoi");
    await create(name, "--dotfiles", repo);
    const first = await run(name, "echo opened");
    expect(first.stdout).toBe("opened\n");
    expect(first.stderr).toContain("running install.sh from the dotfiles repo");
    expect(first.stderr).not.toContain("dotfiles applied");
    expect(first.stderr).toContain(`agentenv: the dotfiles setup (install.sh) changed nothing in ~`);
    expect(first.stderr).toContain(`the repo is laid out for chezmoi, which agentenv applies itself with no download: agentenv env set ${name} dotfiles.manager=chezmoi`);
    expect(lastSetup(name).status).toBe("unchanged");

    expect((await agentenv(["env", "set", name, "dotfiles.manager=chezmoi"])).code).toBe(0);
    const applied = await run(name, "~/.local/bin/hello; cat ~/.zshrc ~/.vimrc");
    expect(applied.stdout).toBe("hello from chezmoi\nexport CHEZMOI_ZSHRC=1\nset number\n");
    expect(applied.stderr).not.toContain("running install.sh");
    expect(applied.stderr).toContain("agentenv: chezmoi templates not applied (agentenv does not evaluate them; chezmoi on PATH would, e.g. from ~/flake.nix): dot_config/git/config.tmpl");
    expect(applied.stderr).toContain("agentenv: chezmoi scripts not run: run_once_install-packages.sh");
    expect(applied.stderr).toContain("— chezmoi: 5 added (1 link), 0 changed in ~");
    const dir = volumeDir(name);
    // files are written, as chezmoi writes them, with the modes their names ask for
    expect(inHome(name, ".zshrc")).toBe("file");
    expect(statSync(join(dir, ".ssh")).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(dir, ".ssh/config"), "utf8")).toContain("ServerAliveInterval");
    expect(statSync(join(dir, ".local/bin/hello")).mode & 0o777).toBe(0o755);
    expect(inHome(name, ".vimrc")).toBe(".config/nvim/init.vim");
    // .chezmoiignore: README.md, install.sh, and (not on darwin) .config/karabiner
    for (const absent of ["README.md", "install.sh", ".config/karabiner", ".config/git/config", "run_once_install-packages.sh", ".chezmoiignore"]) expect(inHome(name, absent)).toBeUndefined();

    // a new commit rewrites what agentenv wrote (no backup); a file the user changed is kept aside first
    writeFileSync(join(repo, "dot_zshrc"), "export CHEZMOI_ZSHRC=2\n");
    writeFileSync(join(repo, "private_dot_ssh/config"), "Host example\n");
    commit(repo, "second");
    writeFileSync(join(dir, ".ssh/config"), "# my own edit\n");
    const second = await run(name, "cat ~/.zshrc ~/.ssh/config");
    expect(second.stdout).toBe("export CHEZMOI_ZSHRC=2\nHost example\n");
    expect(second.stderr).toContain("— chezmoi: 0 added (0 links), 2 changed in ~");
    expect(readdirSync(join(dir, state, "dotfiles-backup/.ssh"))).toEqual(["config"]);
    expect(readFileSync(join(dir, state, "dotfiles-backup/.ssh/config"), "utf8")).toBe("# my own edit\n");
    expect(existsSync(join(dir, state, "dotfiles-backup/.zshrc"))).toBe(false);
  });

  test("with chezmoi on PATH (here a fake that records its arguments, in the home's ~/.local/bin) chezmoi applies its own source state", async () => {
    const fake = "#!/bin/sh\n# a FAKE chezmoi: records how it was called\nprintf '%s\\n' \"$@\" > \"$HOME/chezmoi-called-with\"\necho applied-by-fake-chezmoi > \"$HOME/.from-fake-chezmoi\"\n";
    const template = tempTree({ ".local/bin/chezmoi": fake });
    Bun.spawnSync(["chmod", "+x", join(template, ".local/bin/chezmoi")]);
    const name = envName("chezmoi-itself");
    await create(name, template, "--dotfiles", fixtureRepo("chezmoi"), "--manager", "chezmoi");
    const result = await run(name, "true");
    expect(result.stderr).toContain("agentenv: chezmoi is on PATH: running chezmoi apply --source /root/.dotfiles --destination /root --force --no-tty");
    expect(result.stderr).not.toContain("templates not applied");
    expect(result.stderr).toContain("— chezmoi: 2 added (0 links), 0 changed in ~");
    expect(readFileSync(join(volumeDir(name), "chezmoi-called-with"), "utf8")).toBe("apply\n--source\n/root/.dotfiles\n--destination\n/root\n--force\n--no-tty\n");
  });
});

describe("failures, signals and time", () => {
  test("a setup that needs the network fails, and is not run again at every boot: one line says so; --strict refuses; env update runs it now", async () => {
    const name = envName("network");
    await create(name, "--dotfiles", fixtureRepo("needs-network"));
    const first = await run(name, "echo opened");
    expect(first.stdout).toBe("opened\n");
    expect(first.stderr).toContain("agentenv: the dotfiles setup script install.sh failed (exit 7); its output is above and in ~/.local/state/agentenv/dotfiles.log");
    expect(first.stderr).toContain(`agentenv: the dotfiles setup failed; this session runs without it (not run again with the same inputs for a day; agentenv env update ${name} runs it now)`);

    const second = await run(name, "echo opened");
    expect(second.stdout).toBe("opened\n");
    expect(said(second.stderr)).toEqual([
      expect.stringMatching(new RegExp(`^agentenv: the last dotfiles setup failed \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d \\(script install\\.sh failed \\(exit 7\\)\\); with the same inputs it runs again after a day — now: agentenv env update ${name}; log: ~/\\.local/state/agentenv/dotfiles\\.log$`)),
    ]);
    const strict = await run(name, "echo opened", "--strict");
    expect(strict.code).toBe(1);
    expect(strict.stdout).toBe("");
    expect(strict.stderr).toContain("agentenv: the dotfiles setup failed; not opening the session (strict)");

    const update = await agentenv(["env", "update", name]);
    expect(update.code).toBe(1);
    expect(update.stderr).toContain("running install.sh from the dotfiles repo");
    expect(update.stderr).toContain(`updating the dotfiles of environment ${name} failed (exit 1)`);
    const show = JSON.parse((await agentenv(["env", "show", name, "--json"])).stdout);
    expect(show.dotfiles.lastSetup).toMatchObject({ status: "failed", ran: "install.sh", message: "script install.sh failed (exit 7)" });
  });

  test("SIGINT and SIGTERM stop a setup at once (130, 143; nothing recorded); dotfiles.timeout stops one that runs too long", async () => {
    const name = envName("sleeps");
    await create(name, "--dotfiles", fixtureRepo("sleeps"));
    const dir = volumeDir(name);
    for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      const project = tempTree();
      const child = Bun.spawn([process.execPath, entry, "run", "--env", name, project, "--", "echo", "opened"], {
        env: { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config"), XDG_DATA_HOME: dataHome, NO_COLOR: "1" },
        stdout: "pipe",
        stderr: "pipe",
      });
      const started = join(dir, "sleeps-started");
      const deadline = Date.now() + 30_000;
      while (!existsSync(started) && Date.now() < deadline) await Bun.sleep(100);
      const sent = Date.now();
      child.kill(signal);
      const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
      expect(await child.exited).toBe(code);
      expect(Date.now() - sent).toBeLessThan(15_000);
      expect(stdout).toBe("");
      expect(stderr).toContain(`agentenv: stopped during the dotfiles setup (signal ${code - 128}); nothing of it is recorded as applied`);
      expect(lastSetup(name).status).toBe("interrupted");
      expect(existsSync(join(dir, state, "dotfiles.hash"))).toBe(false);
      expect(existsSync(join(dir, "sleeps-finished"))).toBe(false);
      expect(leftoverContainers(project)).toEqual([]);
      Bun.spawnSync(["rm", "-f", started]);
    }

    expect((await agentenv(["env", "set", name, "dotfiles.timeout=2s"])).code).toBe(0);
    const begun = Date.now();
    const limited = await run(name, "echo opened");
    expect(Date.now() - begun).toBeLessThan(20_000);
    expect(limited.stdout).toBe("opened\n");
    expect(limited.stderr).toContain(`agentenv: the dotfiles setup install.sh was stopped after 2 s (its limit, dotfiles.timeout); its output is above and in ~/.local/state/agentenv/dotfiles.log; a longer limit: agentenv env set ${name} dotfiles.timeout=30m`);
    expect(lastSetup(name)).toMatchObject({ status: "timed-out", timeout: "2" });
    expect(existsSync(join(dir, "sleeps-finished"))).toBe(false);
  });
});

describe("the image", () => {
  test("has rsync, make, python3, stow and the en_US.UTF-8 locale", async () => {
    const script = "export LC_ALL=en_US.UTF-8; bash -c 'locale charmap'; for tool in rsync make python3 stow; do $tool --version >/dev/null && command -v $tool; done";
    const result = await agentenv(["run", "--no-env", tempTree(), "--", "bash", "-c", script]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("UTF-8\n/usr/bin/rsync\n/usr/bin/make\n/usr/bin/python3\n/usr/bin/stow\n");
    expect(result.stderr).not.toContain("setlocale");
  });
});
