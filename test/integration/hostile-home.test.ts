import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join } from "pathe";
import { agentenv, isolatedHome, repoRoot, tempTree, type CliResult } from "../helpers/cli.ts";
import { envNames, volumeDir, volumeExists } from "../helpers/envs.ts";
import { expectNoStackTrace, requireImage } from "../helpers/engine.ts";

/**
 * The trust boundary (docs: DESIGN.md): a session writes its HOME, the environment's
 * volume, so nothing the host reads from it may steer the host. Each attack here worked
 * before the host kept its own record of an environment: a session rewrites its state
 * files, and a later session, `env reset`, `env update`, `worktrees rm` or `env import`
 * must not mount or copy any host path it names. A spy `podman` first on PATH logs every
 * engine call, so "nothing mounted" is checked on the engine's command lines themselves.
 */
const fixture = join(repoRoot, "test", "fixtures", "env");
const prefix = `h${process.pid}`;
const { envName, made } = envNames(prefix);

/** What this host keeps about NAME (agentenv's state dir in the isolated HOME). */
function hostRecordFile(name: string): string {
  return join(isolatedHome, ".local/state/agentenv/envs", `podman-${name}.json`);
}

function git(dir: string, ...args: string[]): void {
  const result = Bun.spawnSync(["git", "-C", dir, "-c", "user.email=t@t", "-c", "user.name=t", ...args]);
  if (result.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr.toString()}`);
}

function gitRepo(files: Record<string, string>): string {
  const dir = tempTree(files, "agentenv-repo-");
  git(dir, "init", "-q", "-b", "main");
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", "init");
  return dir;
}

/** A `podman` that logs its arguments (one a line, a blank line after each call), then runs the real one. */
const spyDir = tempTree({}, "agentenv-spy-");
const spyLog = join(spyDir, "calls.log");
writeFileSync(join(spyDir, "podman"), `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done >> ${spyLog}\necho >> ${spyLog}\nexec /usr/bin/podman "$@"\n`);
chmodSync(join(spyDir, "podman"), 0o755);
const spied = { PATH: `${spyDir}:${process.env.PATH}` };

/** Host paths the engine was asked to mount since the log was last cleared (the part of each `-v` before its first ":"). */
function mountedSources(): string[] {
  if (!existsSync(spyLog)) return [];
  const args = readFileSync(spyLog, "utf8").split("\n");
  return args.flatMap((arg, i) => (i > 0 && args[i - 1] === "-v" && arg.startsWith("/") ? [arg.split(":")[0]!] : []));
}

/** Runs agentenv with the spy, and checks none of FORBIDDEN (or a path inside one) was mounted. */
async function spiedRun(args: string[], forbidden: string[], options: { cwd?: string } = {}): Promise<CliResult> {
  rmSync(spyLog, { force: true });
  const result = await agentenv(args, { ...options, env: spied });
  const sources = mountedSources();
  for (const path of forbidden) expect(sources.filter((s) => s === path || (path !== "/" && s.startsWith(`${path}/`)))).toEqual([]);
  expectNoStackTrace(result.stderr);
  return result;
}

/** One line, "agentenv: …" (a hint after " — " included), and nothing else. */
function expectOneLineError(result: CliResult): void {
  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(/^agentenv: [^\n]+\n$/);
}

async function create(name: string, ...args: string[]): Promise<void> {
  const result = await agentenv(["env", "create", name, ...args]);
  expect(result.stderr).toContain(`environment ${name} created`);
  expect(result.code).toBe(0);
}

/** Runs SCRIPT in a session of NAME (as an agent in it could), with PROJECT as its project. */
async function inSession(name: string, script: string, project = tempTree()): Promise<void> {
  const result = await agentenv(["run", "--env", name, project, "--", "sh", "-c", script]);
  expect(result.stderr).not.toContain("failed");
  expect(result.code).toBe(0);
}

const record = (fields: Record<string, unknown>) => JSON.stringify({ version: 1, source: { kind: "builtin", hash: "0000000000000000" }, created: "2020-01-01T00:00:00.000Z", ...fields });

/** The session's heredoc that replaces its env.json with TEXT. */
const writeRecord = (text: string) => `cat > ~/.local/state/agentenv/env.json <<'EOF'\n${text}\nEOF`;

/** A directory the user never gave any environment: what an attacker would like copied or mounted. */
const secret = tempTree({ ".ssh/id_ed25519": "PRIVATE KEY\n" }, "agentenv-secret-");

beforeAll(async () => {
  await requireImage();
});

afterAll(() => {
  for (const name of made) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
});

describe("a session rewriting its home steers nothing on the host", () => {
  test("env.json naming /, a system path or agentenv's own dirs as the dotfiles repo: no later session or env update mounts it", async () => {
    const name = envName("dotfiles");
    await create(name, fixture);
    for (const url of ["/", "/etc", isolatedHome, secret]) {
      await inSession(name, writeRecord(record({ dotfiles: { url } })));
      const next = await spiedRun(["run", "--env", name, tempTree(), "--", "sh", "-c", "test -e /run/agentenv/dotfiles-repo && echo MOUNTED; true"], [url]);
      expect(next.stdout).toBe("");
      expect(next.code).toBe(0);
      // env update acts on this host's record: the environment has no dotfiles repo
      const update = await spiedRun(["env", "update", name], [url]);
      expectOneLineError(update);
      expect(update.stderr).toContain(`environment ${name} has no dotfiles repo`);
    }
    // what env show and env list report is this host's record, not the home's
    expect(JSON.parse((await agentenv(["env", "show", name, "--json"])).stdout).dotfiles).toBeUndefined();
  });

  test("a home whose dotfiles repo is on this host still mounts only the recorded one", async () => {
    const repo = gitRepo({ ".bashrc": "# dots\n" });
    const name = envName("localrepo");
    await create(name, "--dotfiles", repo);
    await inSession(name, writeRecord(record({ source: { kind: "empty" }, dotfiles: { url: secret } })));
    const next = await spiedRun(["run", "--env", name, tempTree(), "--", "sh", "-c", "ls -A /run/agentenv/dotfiles-repo"], [secret]);
    expect(next.stdout).toBe(".bashrc\n.git\n");
    expect(mountedSources()).toContain(repo);
  });

  test("source.path naming another host directory: env reset copies only from the recorded template", async () => {
    const template = tempTree({ ".bashrc": "# mine\n" });
    const name = envName("reset");
    await create(name, template);
    for (const path of [secret, "/etc"]) {
      await inSession(name, writeRecord(record({ source: { kind: "template", path, hash: "0000000000000000" } })));
      const reset = await spiedRun(["env", "reset", name], [path]);
      expect(reset.stderr).toContain(`environment ${name} reset from ${template}`);
      expect(reset.code).toBe(0);
      expect(existsSync(join(volumeDir(name), ".ssh"))).toBe(false);
      expect(readFileSync(join(volumeDir(name), ".bashrc"), "utf8")).toBe("# mine\n");
    }
  });

  test("a state dir symlinked out of the home, to a record the session wrote in its project: nothing is read through it", async () => {
    const name = envName("symlinked");
    const template = tempTree({ ".bashrc": "# mine\n" });
    await create(name, template);
    const project = tempTree();
    const evil = record({ source: { kind: "template", path: secret, hash: "0000000000000000" }, dotfiles: { url: "/" } });
    // the project is mounted at its own path: the link resolves to the same file on the host
    await inSession(name, `mkdir -p ${project}/state && ${writeRecord(evil).replace("~/.local/state/agentenv", `${project}/state`)} && rm -rf ~/.local/state/agentenv && ln -s ${project}/state ~/.local/state/agentenv`, project);
    const next = await spiedRun(["run", "--env", name, tempTree(), "--", "sh", "-c", "test -e /run/agentenv/dotfiles-repo && echo MOUNTED; true"], ["/"]);
    expect(next.stdout).toBe("");
    const reset = await spiedRun(["env", "reset", name], [secret]);
    expect(reset.code).toBe(0);
    expect(existsSync(join(volumeDir(name), ".ssh"))).toBe(false);

    // an environment this host has no record of (one made before host records) adopts nothing through the link
    await inSession(name, `rm -rf ~/.local/state/agentenv && ln -s ${project}/state ~/.local/state/agentenv`, project);
    rmSync(hostRecordFile(name));
    const old = await spiedRun(["run", "--env", name, tempTree(), "--", "sh", "-c", "test -e /run/agentenv/dotfiles-repo && echo MOUNTED; true"], ["/"]);
    expect(old.stdout).toBe("");
    const oldReset = await spiedRun(["env", "reset", name], [secret]);
    expectOneLineError(oldReset);
    expect(existsSync(join(volumeDir(name), ".ssh"))).toBe(false);
  });

  test("worktrees rm mounts no repository a .git file in the home names, unless that repository has the worktree", async () => {
    const name = envName("worktree");
    await create(name, fixture);
    const repo = gitRepo({ "README": "private\n" });
    for (const gitdir of [`${repo}/.git/worktrees/x`, "/etc/.git/worktrees/x", "//.git/worktrees/x", `${repo}/../${repo.split("/").pop()}/.git/worktrees/x`]) {
      await inSession(name, `mkdir -p ~/Code/p/x && printf 'gitdir: %s\\n' '${gitdir}' > ~/Code/p/x/.git`);
      const rm = await spiedRun(["worktrees", "rm", "x", "--env", name, "--force"], [repo, "/etc", "/"]);
      expectOneLineError(rm);
    }
  });
});

describe("env import of a crafted archive", () => {
  /** A home in a directory, and a .tar of it with EXTRA members (tar -P keeps their names as given). */
  function archive(files: Record<string, string>, extra: string[] = [], links: Record<string, string> = {}): string {
    const home = tempTree(files, "agentenv-archived-");
    for (const [path, target] of Object.entries(links)) {
      mkdirSync(join(home, path, ".."), { recursive: true });
      symlinkSync(target, join(home, path));
    }
    const file = join(tempTree(), "home.tar");
    const result = Bun.spawnSync(["tar", "-C", home, "-cPf", file, ".", ...extra]);
    expect(result.exitCode).toBe(0);
    return file;
  }

  async function refused(file: string, message: string): Promise<void> {
    const name = envName(`import-${made.length}`);
    const result = await spiedRun(["env", "import", name, file], []);
    expectOneLineError(result);
    expect(result.stderr).toContain(message);
    expect(volumeExists(name)).toBe(false);
    expect(existsSync(hostRecordFile(name))).toBe(false);
  }

  const outside = tempTree({ "planted": "x\n" }, "agentenv-outside-");

  test("an entry with .. or an absolute path, or a link out of the home: one line, nothing created", async () => {
    // tar runs in the home's directory: ../NAME is a sibling of it, as the member is named
    await refused(archive({ ".bashrc": "" }, [`../${basename(outside)}/planted`]), "..");
    await refused(archive({ ".bashrc": "" }, [join(outside, "planted")]), "absolute");
    await refused(archive({ ".bashrc": "" }, [], { ".local/state/agentenv": "/etc" }), "a link out of the home");
    await refused(archive({ ".bashrc": "" }, [], { "deep/link": "../../../etc" }), "a link out of the home");
  });

  test("a hostile dotfiles repo, shell or source in its env.json: one line, nothing created", async () => {
    const state = ".local/state/agentenv/env.json";
    await refused(archive({ [state]: record({ dotfiles: { url: "/" } }) }), "/");
    await refused(archive({ [state]: record({ dotfiles: { url: "/etc" } }) }), "/etc");
    await refused(archive({ [state]: record({ dotfiles: { url: isolatedHome } }) }), isolatedHome);
    await refused(archive({ [state]: record({ dotfiles: { url: "https://me:token@example.com/dots.git" } }) }), "password or token");
    await refused(archive({ [state]: record({ dotfiles: { url: "https://example.com/dots.git", setup: "../../x" } }) }), "setup script");
    await refused(archive({ [state]: record({ shell: "zsh; rm -rf /" }) }), "shell");
    await refused(archive({ [state]: record({ source: { kind: "template", path: "relative/dir" } }) }), "source");
  });

  test("a plain home with a remote dotfiles repo and links inside it (and into the Nix store) is imported", async () => {
    const name = envName("import-ok");
    const file = archive(
      { ".bashrc": "# ok\n", ".local/state/agentenv/env.json": record({ shell: "bash", dotfiles: { url: "https://example.com/dots.git", ref: "main" } }) },
      [],
      { ".vimrc": ".dotfiles/.vimrc", ".local/state/agentenv/profile-1-link": "/nix/store/00000000000000000000000000000000-profile" },
    );
    const result = await agentenv(["env", "import", name, file]);
    expect(result.stderr).toContain(`environment ${name} imported`);
    expect(result.code).toBe(0);
    const kept = JSON.parse(readFileSync(hostRecordFile(name), "utf8"));
    expect(kept).toMatchObject({ source: { kind: "archive", path: file }, shell: "bash", dotfiles: { url: "https://example.com/dots.git", ref: "main" } });
  });
});

describe("environments made before this host kept records", () => {
  test("the home's record is adopted once, every value checked: a remote repo and an unchanged template are kept, a local repo is not", async () => {
    const template = tempTree({ ".bashrc": "# v1\n" });
    const repo = gitRepo({ ".bashrc": "# dots\n" });
    const name = envName("old");
    await create(name, template, "--dotfiles", repo);
    rmSync(hostRecordFile(name));
    const show = await agentenv(["env", "show", name, "--json"]);
    expect(show.stderr).toContain(`agentenv env set ${name} dotfiles.url=${repo}`);
    const adopted = JSON.parse(readFileSync(hostRecordFile(name), "utf8"));
    expect(adopted).toMatchObject({ source: { kind: "template", path: template }, shell: "bash" });
    expect(adopted.dotfiles).toBeUndefined();
    // unchanged since: the reset proves the home's record right
    expect((await agentenv(["env", "reset", name])).code).toBe(0);

    const remote = envName("old-remote");
    await create(remote, "--dotfiles", "https://example.com/dots.git");
    rmSync(hostRecordFile(remote));
    expect(JSON.parse((await agentenv(["env", "show", remote, "--json"])).stdout).dotfiles).toMatchObject({ url: "https://example.com/dots.git" });
  });

  test("a source the home names but whose content this host cannot match is never copied", async () => {
    const name = envName("old-forged");
    await create(name, tempTree({ ".bashrc": "# mine\n" }));
    await inSession(name, writeRecord(record({ source: { kind: "template", path: secret, hash: "0000000000000000" } })));
    rmSync(hostRecordFile(name));
    const reset = await spiedRun(["env", "reset", name], [secret]);
    expectOneLineError(reset);
    expect(existsSync(join(volumeDir(name), ".ssh"))).toBe(false);
  });
});
