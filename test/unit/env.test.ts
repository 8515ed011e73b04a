import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, linkSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "pathe";
import { repeatedFlag } from "../../core/commands/_shared.ts";
import { checkEnvName, loadConfig } from "../../core/config.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { checkLocalRepo } from "../../plugins/env/dotfiles/repo.ts";
import { checkArchive } from "../../plugins/env/archive.ts";
import { readHomeFile, toolsStorePath } from "../../plugins/env/home.ts";
import { checkKeepPath, keepPaths } from "../../plugins/env/lifecycle.ts";
import { adoptRecord, checkRecord } from "../../plugins/env/record.ts";
import { listWorktrees, worktreeRecord } from "../../plugins/wrap/worktrees.ts";
import { guessShell, scanTemplate } from "../../plugins/env/template.ts";
import { profileTarget } from "../../plugins/profile/index.ts";
import { tempTree, trustIn } from "../helpers/cli.ts";

describe("environment names", () => {
  test("a-z 0-9 . _ -, starting with a letter or digit, at most 63", () => {
    for (const good of ["dev", "a", "work.2", "my_env-1", "x".repeat(63)]) expect(checkEnvName(good, "test")).toBe(good);
    for (const bad of ["Dev", "-x", ".x", "a/b", "a b", "x".repeat(64), "é"]) expect(() => checkEnvName(bad, "test")).toThrow(/invalid environment name/);
    expect(checkEnvName("", "test")).toBeUndefined();
  });
});

describe("env config", () => {
  const project = tempTree({ "agentenv.config.ts": `export default { env: { default: "dev", autoCreate: true, template: "./home" } };\n` });
  const env = trustIn({ HOME: tempTree() }, project);

  test("config's default, with a template relative to the config file", async () => {
    const config = await loadConfig({ project, env });
    expect(config.env).toEqual({ name: "dev", autoCreate: true, template: join(project, "home"), strict: false });
  });

  test("AGENTENV_ENV and --env override it; --no-env (and AGENTENV_ENV=) clear it", async () => {
    expect((await loadConfig({ project, env: { ...env, AGENTENV_ENV: "other" } })).env.name).toBe("other");
    expect((await loadConfig({ project, env, flags: { env: "flag" } })).env.name).toBe("flag");
    expect((await loadConfig({ project, env, flags: { env: "" } })).env.name).toBeUndefined();
    expect((await loadConfig({ project, env: { ...env, AGENTENV_ENV: "" } })).env.name).toBeUndefined();
    await expect(loadConfig({ project, env, flags: { env: "Bad" } })).rejects.toThrow('invalid environment name "Bad" (from --env)');
  });

  test("a wrongly typed env block is named", async () => {
    const bad = tempTree({ "agentenv.config.ts": `export default { env: { autoCreate: "yes" } };\n` });
    await expect(loadConfig({ project: bad, env: trustIn(env, bad) })).rejects.toThrow("env.autoCreate must be true or false");
  });
});

describe("templates", () => {
  test("the hash follows content, modes and links, not the directory's place or timestamps", () => {
    const files = { ".zshrc": "a\n", "dir/file": "b\n" };
    const one = tempTree(files);
    const two = tempTree(files);
    expect(scanTemplate(one).hash).toBe(scanTemplate(two).hash);
    expect(scanTemplate(one)).toMatchObject({ files: 2, bytes: 4, shell: "zsh" });
    chmodSync(join(two, "dir/file"), 0o755);
    expect(scanTemplate(two).hash).not.toBe(scanTemplate(one).hash);
    writeFileSync(join(one, "dir/file"), "c\n");
    const changed = scanTemplate(one).hash;
    symlinkSync("dir/file", join(one, "link"));
    expect(scanTemplate(one).hash).not.toBe(changed);
  });

  test("the shell follows the template's config files", () => {
    expect(guessShell(tempTree({ ".config/zsh/.zshrc": "" }))).toBe("zsh");
    expect(guessShell(tempTree({ ".bashrc": "" }))).toBe("bash");
    expect(guessShell(tempTree({ ".bashrc": "", ".zshenv": "" }))).toBe("zsh");
    expect(guessShell(tempTree({ "notes.txt": "" }))).toBeUndefined();
  });

  test("a link is followed through the template's other links: one whose text stays inside but whose path leaves is refused", () => {
    const outside = (links: Record<string, string>) => {
      const dir = tempTree({ "sub/file": "x\n" });
      for (const [path, target] of Object.entries(links)) {
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        symlinkSync(target, join(dir, path));
      }
      return () => scanTemplate(dir);
    };
    // sub/up → .. is the template itself: sub/up/../x is its parent's x
    expect(outside({ "sub/up": "..", escape: "sub/up/../x" })).toThrow("the symlink escape → sub/up/../x points outside the template");
    expect(outside({ "sub/up": "..", "a/b": "../sub/up/../../etc/passwd" })).toThrow("points outside the template");
    // a chain of links out, and a loop
    expect(outside({ one: "two", two: "sub/three", "sub/three": "../../out" })).toThrow("the symlink one → two points outside the template");
    expect(outside({ ping: "pong", pong: "ping" })).toThrow("points outside the template");
    // through a link that stays inside, to a name that does not exist yet: inside
    expect(outside({ "sub/up": "..", fine: "sub/up/sub/file", later: "sub/up/not-yet/x", plain: "sub/../sub/file" })).not.toThrow();
  });
});

describe("paths", () => {
  test("--keep takes paths inside HOME, never agentenv's own state", () => {
    expect(checkKeepPath(".zsh_history")).toBe(".zsh_history");
    expect(checkKeepPath("~/.claude/")).toBe(".claude");
    for (const bad of ["/etc", "../x", "a/../../b", "", "~", "./x"]) expect(() => checkKeepPath(bad)).toThrow(/give a path inside HOME/);
    for (const state of [".local/state/agentenv", ".local/state/agentenv/env.json", ".local"]) expect(() => checkKeepPath(state)).toThrow(/agentenv's own record/);
  });

  test("a kept path inside another kept path goes with it (keeping both would lose the inner one)", () => {
    expect(keepPaths([".claude/projects", ".claude", ".zsh_history", ".zsh_history", ".claude-other"])).toEqual([".claude", ".claude-other", ".zsh_history"]);
  });

  test("a profile appears at its place under HOME, else under its own name", () => {
    expect(profileTarget("/home/me/config", "/home/me")).toBe("config");
    expect(profileTarget("/home/me/src/dots", "/home/me")).toBe("src/dots");
    expect(profileTarget("/srv/profiles/work", "/home/me")).toBe("work");
  });

  test("repeated flags keep every value, up to --", () => {
    expect(repeatedFlag(["x", "--keep", "a", "--keep=b", "--other", "c", "--keep", "d", "--", "--keep", "e"], "--keep")).toEqual(["a", "b", "d"]);
  });
});

/** A fresh XDG_STATE_HOME and XDG_CONFIG_HOME for every test of the block (host records, agentenv's own dirs). */
function isolatedXdg(): { state: () => string; config: () => string } {
  const names = ["XDG_STATE_HOME", "XDG_CONFIG_HOME"] as const;
  let saved: Record<string, string | undefined> = {};
  beforeEach(() => {
    saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
    for (const name of names) process.env[name] = tempTree();
  });
  afterEach(() => {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });
  return { state: () => process.env.XDG_STATE_HOME!, config: () => process.env.XDG_CONFIG_HOME! };
}

function git(dir: string, ...args: string[]): void {
  expect(Bun.spawnSync(["git", "-C", dir, "-c", "user.email=t@t", "-c", "user.name=t", ...args]).exitCode).toBe(0);
}

describe("archives (env import)", () => {
  /** A .tar of DIR's MEMBERS in that order (tar -P keeps names as given: .., absolute). */
  function tar(dir: string, members: string[] = ["."]): string {
    const file = join(tempTree(), "a.tar");
    expect(Bun.spawnSync(["tar", "-C", dir, "-cPf", file, ...members]).exitCode).toBe(0);
    return file;
  }
  const check = (file: string) => checkArchive(file, false, "a.tar");

  test("a home's entries, links inside it, into the Nix store and to /root/…, are accepted; its env.json is returned", async () => {
    const home = tempTree({ ".bashrc": "x\n", ".local/state/agentenv/env.json": '{"version":1}', ".config/app/conf": "y\n" });
    symlinkSync(".config/app/conf", join(home, ".conf-link"));
    symlinkSync("../../.bashrc", join(home, ".config/app/rc"));
    symlinkSync("/nix/store/abc-profile", join(home, ".local/state/agentenv/profile-1-link"));
    symlinkSync("/root/.local/state/agentenv/profile-1-link", join(home, ".nix-profile"));
    linkSync(join(home, ".bashrc"), join(home, ".bashrc-hard"));
    // a name over 100 bytes: a GNU long-name entry first
    const long = `${"d".repeat(60)}/${"e".repeat(60)}`;
    mkdirSync(join(home, long), { recursive: true });
    writeFileSync(join(home, long, "f"), "z\n");
    expect(await check(tar(home))).toBe('{"version":1}');
    const gz = join(tempTree(), "a.tar.gz");
    expect(Bun.spawnSync(["tar", "-C", home, "-czf", gz, "."]).exitCode).toBe(0);
    expect(await checkArchive(gz, true, "a.tar.gz")).toBe('{"version":1}');
  });

  test("an entry with .. or an absolute name is refused", async () => {
    const base = tempTree({ "home/.bashrc": "", "out": "" });
    await expect(check(tar(join(base, "home"), [".", "../out"]))).rejects.toThrow('a.tar: the entry "../out" is a path with ".."');
    await expect(check(tar(join(base, "home"), [".", join(base, "out")]))).rejects.toThrow("is an absolute path");
  });

  test("a link out of the home is refused, also through other links, and a hard link to one", async () => {
    const out = async (links: Record<string, string>, members?: string[]) => {
      const home = tempTree({ ".bashrc": "" });
      for (const [path, target] of Object.entries(links)) {
        mkdirSync(join(home, path, ".."), { recursive: true });
        symlinkSync(target, join(home, path));
      }
      return check(tar(home, members));
    };
    await expect(out({ "etc": "/etc" })).rejects.toThrow('the entry "etc" is a link out of the home (to /etc)');
    await expect(out({ "a/b/up": "../../.." })).rejects.toThrow("a link out of the home");
    await expect(out({ "root-up": "/root/.." })).rejects.toThrow("a link out of the home");
    // each inside on its own, out together: s is the home, so s/.. is above it
    await expect(out({ "s": ".", "t": "s/.." })).rejects.toThrow('the entry "t" is a link out of the home');
    await expect(out({ "loop": "loop" })).rejects.toThrow("a link out of the home");
    // x/y/a leads to the home's q; the same link hard-linked at the top leads above it
    const home = tempTree({ "x/y/.keep": "" });
    symlinkSync("../../q", join(home, "x/y/a"));
    linkSync(join(home, "x/y/a"), join(home, "h"));
    await expect(check(tar(home, ["x/y/a", "h"]))).rejects.toThrow('the entry "h" is a link out of the home');
  });

  test("an entry under a link is refused (tar would write through it)", async () => {
    const base = tempTree({ "real/file": "" });
    symlinkSync("real", join(base, "dir"));
    const file = join(tempTree(), "a.tar");
    // a link named dir, then a file under dir/: tar would write through the link
    expect(Bun.spawnSync(["tar", "-C", base, "-cf", file, "dir", "--transform", "s,^real,dir,", "real/file"]).exitCode).toBe(0);
    await expect(check(file)).rejects.toThrow('the entry "dir/file" is inside dir, a link');
  });

  test("not a tar archive, or a cut one, is one line", async () => {
    await expect(check(join(import.meta.dir, "env.test.ts"))).rejects.toThrow("a.tar: not a tar archive");
    const whole = readFileSync(tar(tempTree({ "a": "x".repeat(2000) })));
    const cut = join(tempTree(), "cut.tar");
    writeFileSync(cut, whole.subarray(0, 1536));
    await expect(check(cut)).rejects.toThrow("the archive ends in the middle of an entry");
  });
});

describe("records read from a home or an archive", () => {
  const xdg = isolatedXdg();

  test("every field is checked: source form, shell, dotfiles repo as env create checks one", () => {
    const ok = checkRecord({ version: 1, source: { kind: "template", path: "/srv/tpl", hash: "0123456789abcdef" }, created: "2024-01-01T00:00:00.000Z", shell: "zsh", dotfiles: { url: "https://example.com/d.git", ref: "main" } });
    expect(ok).toEqual({ version: 1, source: { kind: "template", path: "/srv/tpl", hash: "0123456789abcdef" }, created: "2024-01-01T00:00:00.000Z", shell: "zsh", dotfiles: { url: "https://example.com/d.git", ref: "main" } });
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ version: 2 }, "not a record agentenv wrote"],
      [{ version: 1, source: { kind: "template", path: "tpl" } }, "not a clean absolute path"],
      [{ version: 1, source: { kind: "template", path: "/a/../etc" } }, "not a clean absolute path"],
      [{ version: 1, source: { kind: "other" } }, "not one agentenv writes"],
      [{ version: 1, source: { kind: "builtin" }, shell: "zsh; rm -rf ~" }, "give a shell name or path"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "/" } }, "dotfiles repo / is a system path"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "/usr/share" } }, "dotfiles repo /usr/share is a system path"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: dirname(xdg.config()) } }, "holds agentenv's own keys and settings"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "-uhttps://x@y:z" } }, "not a git URL"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "https://a:b@example.com/x" } }, "password or token"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "https://example.com/x", ref: "--upload-pack=x" } }, "not a branch, tag or commit"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "https://example.com/x", setup: "../../x" } }, "must be a path inside the repo"],
      [{ version: 1, source: { kind: "builtin" }, dotfiles: { url: "https://example.com/x", ref: ["main"] } }, "not text"],
    ];
    for (const [value, message] of bad) expect(() => checkRecord(value)).toThrow(message);
  });

  test("a local dotfiles repo must be a git repository reached without a link", () => {
    const repo = tempTree({}, "agentenv-dots-");
    git(repo, "init", "-q");
    expect(checkLocalRepo(repo)).toBe(repo);
    const link = join(tempTree(), "link");
    symlinkSync(repo, link);
    expect(() => checkLocalRepo(link)).toThrow(`dotfiles repo ${link} is a link (to ${repo})`);
    const toRoot = join(tempTree(), "root");
    symlinkSync("/", toRoot);
    expect(() => checkLocalRepo(toRoot)).toThrow("dotfiles repo / is a system path");
    expect(() => checkLocalRepo(tempTree())).toThrow("is not a git repository");
  });

  test("adopting a home's record: a local repo is left for the user to confirm (quoted), a bad shell left out, the rest kept here", () => {
    const warnings: string[] = [];
    const ctx = { runtime: { name: "podman" }, log: { warn: (m: string) => warnings.push(m), debug() {} } } as unknown as BaseContext;
    const repo = tempTree({}, "agentenv-dots-");
    git(repo, "init", "-q");
    const text = JSON.stringify({ version: 1, source: { kind: "builtin", hash: "0123456789abcdef" }, created: "2024-01-01T00:00:00.000Z", shell: "$(x)", dotfiles: { url: repo, setup: "my setup" } });
    const record = adoptRecord(ctx, "dev", text)!;
    expect(record).toMatchObject({ version: 1, source: { kind: "builtin" }, created: "2024-01-01T00:00:00.000Z" });
    expect(record.adopted).toBeString();
    expect(record.shell).toBeUndefined();
    expect(record.dotfiles).toBeUndefined();
    expect(warnings[0]).toContain("left out the shell");
    expect(warnings[1]).toEndWith(`agentenv env set dev dotfiles.url=${repo} 'dotfiles.setup=my setup'`);
    expect(JSON.parse(readFileSync(join(xdg.state(), "agentenv/envs/podman-dev.json"), "utf8"))).toEqual(record);
    expect(adoptRecord(ctx, "dev", "not json")).toBeUndefined();
    expect(adoptRecord(ctx, "dev", JSON.stringify({ version: 1, source: { kind: "template", path: "rel" } }))).toBeUndefined();
  });
});

describe("files read from a home", () => {
  test("never through a link, nor a FIFO; a tools profile is followed only inside the home", () => {
    const home = tempTree({ ".local/state/agentenv/shell": "zsh\n", "elsewhere/shell": "bash\n" });
    expect(readHomeFile(home, ".local/state/agentenv/shell")).toBe("zsh\n");
    const moved = tempTree({ "shell": "evil\n" });
    const linked = tempTree({ ".local/state/.keep": "" });
    symlinkSync(moved, join(linked, ".local/state/agentenv"));
    expect(readHomeFile(linked, ".local/state/agentenv/shell")).toBeUndefined();
    symlinkSync("../../../elsewhere/shell", join(home, ".local/state/agentenv/linked"));
    expect(readHomeFile(home, ".local/state/agentenv/linked")).toBeUndefined();
    expect(Bun.spawnSync(["mkfifo", join(home, "fifo")]).exitCode).toBe(0);
    expect(readHomeFile(home, "fifo")).toBeUndefined();

    symlinkSync("profile-1-link", join(home, ".local/state/agentenv/profile"));
    symlinkSync("/nix/store/abc-profile/bin", join(home, ".local/state/agentenv/profile-1-link"));
    expect(toolsStorePath(home)).toBe("/nix/store/abc-profile");
    const out = tempTree({ ".local/state/agentenv/.keep": "" });
    symlinkSync("../../../../etc", join(out, ".local/state/agentenv/profile"));
    expect(toolsStorePath(out)).toBeUndefined();
  });
});

describe("worktrees in a home", () => {
  isolatedXdg();

  test("listed only when their repository knows them; links in the home are not followed", () => {
    const repo = realpathSync(tempTree({ "README": "x\n" }, "agentenv-repo-"));
    git(repo, "init", "-q", "-b", "main");
    git(repo, "add", "-A");
    git(repo, "commit", "-q", "-m", "init");
    const home = tempTree({}, "agentenv-home-");
    // what exec --worktree leaves: the home's .git file, the repository's record of it
    mkdirSync(join(home, "Code/p/feat"), { recursive: true });
    writeFileSync(join(home, "Code/p/feat/.git"), `gitdir: ${repo}/.git/worktrees/feat\n`);
    mkdirSync(join(repo, ".git/worktrees/feat"), { recursive: true });
    writeFileSync(join(repo, ".git/worktrees/feat/gitdir"), "/root/Code/p/feat/.git\n");
    writeFileSync(join(repo, ".git/worktrees/feat/HEAD"), "ref: refs/heads/feat\n");
    // a session's inventions: a repository that never had it, a system path, a linked project
    mkdirSync(join(home, "Code/p/other"), { recursive: true });
    writeFileSync(join(home, "Code/p/other/.git"), `gitdir: ${repo}/.git/worktrees/feat\n`);
    mkdirSync(join(home, "Code/p/sys"), { recursive: true });
    writeFileSync(join(home, "Code/p/sys/.git"), "gitdir: /etc/.git/worktrees/sys\n");
    const outside = tempTree({ "w/.git": `gitdir: ${repo}/.git/worktrees/feat\n` });
    symlinkSync(outside, join(home, "Code/linked"));
    expect(listWorktrees(home)).toEqual([{ project: "p", branch: "feat", path: "/root/Code/p/feat", repo, head: "feat" }]);
    expect(() => worktreeRecord(repo, "/root/Code/p/other")).toThrow("does not know that worktree");
    expect(() => worktreeRecord("/etc", "/root/Code/p/sys")).toThrow("could not be a root");
    const link = join(tempTree(), "repo-link");
    symlinkSync(repo, link);
    expect(() => worktreeRecord(link, "/root/Code/p/feat")).toThrow("is reached through a link");
  });
});
