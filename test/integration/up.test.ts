import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "pathe";
import { agentenv, isolatedHome, repoRoot, sh, tempTree, testStoreVolume } from "../helpers/cli.ts";
import { derivationExpr, devShellFlake, expectNoStackTrace, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/**
 * Long-running environment containers on real Podman: up/exec/down/ps, wrappers and
 * worktrees. One environment (the input-less fixture home, whose ~/flake.nix installs
 * `hello-env`) serves the file; each test takes its container down again.
 */
const fixture = join(repoRoot, "test", "fixtures", "env");
const env = `t${process.pid}-up`;
const container = `agentenv-up-${env}`;
const stateDir = join(isolatedHome, ".local", "state", "agentenv");
/** The container's session record (core/record.ts). */
const recordFile = join(stateDir, "running", `podman-${container}.json`);

const git = (dir: string, ...args: string[]) => sh(["git", "-C", dir, "-c", "user.name=t", "-c", "user.email=t@t", ...args]);

/** A git project with a subdirectory and one commit (physical path: roots are compared that way). */
function project(files: Record<string, string> = {}): string {
  const dir = realpathSync(tempTree({ "sub/.keep": "", "README": "hi\n", ...files }, "agentenv-up-"));
  git(dir, "init", "-q", "-b", "main");
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", "init");
  return dir;
}

function containerExists(): boolean {
  return sh(["podman", "container", "exists", container]).code === 0;
}

async function down() {
  const result = await agentenv(["down", "--env", env]);
  expect(result.code).toBe(0);
  expect(containerExists()).toBe(false);
}

beforeAll(async () => {
  await requireImage();
  const created = await agentenv(["env", "create", env, fixture]);
  expect(created.code).toBe(0);
});

afterAll(async () => {
  await agentenv(["down", "--env", env]);
  await agentenv(["env", "rm", env]);
});

describe("up / exec / down / ps", () => {
  test("down ends a container as it started, though its config changed since: promotion into the store it started with", async () => {
    const started = `agentenv-test-upcfg-${process.pid}-a`;
    const changed = `agentenv-test-upcfg-${process.pid}-b`;
    const dir = project({ "agentenv.config.ts": `export default { storeVolume: "${started}" };\n` });
    try {
      expect((await agentenv(["up", "--env", env, "--roots", dir], { cwd: dir })).code).toBe(0);
      const built = await agentenv(["exec", "--env", env, "--", "nix-build", "--no-out-link", "-E", derivationExpr(`upcfg-${process.pid}`)], { cwd: dir });
      expect(built.code).toBe(0);
      const path = built.stdout.trim().split("\n").pop()!;
      writeFileSync(join(dir, "agentenv.config.ts"), `export default { storeVolume: "${changed}" };\n`);
      expect((await agentenv(["down", "--env", env], { cwd: dir })).code).toBe(0);
      const later = await agentenv(["run", "--no-env", tempTree(), "--", "sh", "-c", `test -e ${path} && echo promoted`], { env: { AGENTENV_STORE_VOLUME: started } });
      expect(later.stdout).toBe("promoted\n");
      expect(sh(["podman", "volume", "exists", changed]).code).toBe(1);
    } finally {
      await agentenv(["down", "--env", env]);
      await removeStoreVolume(started);
      await removeStoreVolume(changed);
    }
  });

  test("down ends the session its record describes: a trusted container's ~/flake.nix edits are kept as the environment's tools", async () => {
    const dir = project();
    const toolsCopy = join(stateDir, "envs", `podman-${env}.tools`, "flake.nix");
    try {
      expect((await agentenv(["up", "--env", env, "--roots", dir])).code).toBe(0);
      const marker = `# edited in ${container} ${crypto.randomUUID()}`;
      const edit = await agentenv(["exec", "--env", env, "--", "sh", "-c", `echo '${marker}' >> ~/flake.nix`], { cwd: dir });
      expect(edit.code).toBe(0);
      expect(existsSync(toolsCopy) ? readFileSync(toolsCopy, "utf8") : "").not.toContain(marker);
      // the project's config now says nothing; the record says whose session it was
      expect((await agentenv(["down", "--env", env], { cwd: dir })).code).toBe(0);
      expect(readFileSync(toolsCopy, "utf8")).toContain(marker);
    } finally {
      await agentenv(["down", "--env", env]);
      await agentenv(["env", "reset", env]);
    }
  });

  test("a plugin's saved part of the record reaches its session:exit in down, its state of the up process does not", async () => {
    const out = join(realpathSync(tempTree()), "exit.json");
    const plugin = `import { writeFileSync } from "node:fs";
export default { plugins: [{ name: "probe", hooks: {
  "session:start"(ctx) { ctx.state.probe = { handle: "live" }; ctx.saved.probe = { container: ctx.plan.name, pid: process.pid }; },
  "session:exit"(ctx) { writeFileSync(${JSON.stringify(out)}, JSON.stringify({ saved: ctx.saved.probe ?? null, state: ctx.state.probe ?? null, pid: process.pid, mode: ctx.mode })); },
} }] };
`;
    const dir = project({ "agentenv.config.ts": plugin });
    try {
      expect((await agentenv(["up", "--env", env, "--roots", dir], { cwd: dir })).code).toBe(0);
      const saved = (JSON.parse(readFileSync(recordFile, "utf8")) as { plugins: Record<string, { container: string; pid: number }> }).plugins.probe!;
      expect(saved.container).toBe(container);
      expect(existsSync(out)).toBe(false);
      expect((await agentenv(["down", "--env", env], { cwd: dir })).code).toBe(0);
      const exit = JSON.parse(readFileSync(out, "utf8")) as { saved: { pid: number }; state: unknown; pid: number; mode: string };
      expect(exit).toMatchObject({ saved, state: null, mode: "up" });
      expect(exit.pid).not.toBe(saved.pid);
    } finally {
      await agentenv(["down", "--env", env]);
    }
  });

  test("up where agentenv's state dir cannot be made (a file in the way): one line, no container", async () => {
    const dir = project();
    const blocked = join(tempTree({ "state": "a file, not a directory\n" }), "state");
    const result = await agentenv(["up", "--env", env, "--roots", dir], { env: { XDG_STATE_HOME: blocked } });
    expectNoStackTrace(result.stderr);
    expect(result.stderr).toBe(`agentenv: ENOTDIR: not a directory, mkdir '${blocked}/agentenv/running' — check that path's permissions and free space (-v: where it happened)\n`);
    expect(result.code).toBe(1);
    expect(containerExists()).toBe(false);
  });

  test("a command that exits 255 while its container stops is run once, never again", async () => {
    const dir = project();
    // a wrapper around the real podman (named as such): right after an exec that ended with
    // 255 it stops the container, as a `down` in another terminal might
    const bin = tempTree({ podman: `#!/bin/sh\n${Bun.which("podman")} "$@"; code=$?\nif [ "$1" = exec ] && [ $code = 255 ]; then ${Bun.which("podman")} stop --time 0 ${container} >/dev/null 2>&1; fi\nexit $code\n` });
    chmodSync(join(bin, "podman"), 0o755);
    try {
      expect((await agentenv(["up", "--env", env, "--roots", dir])).code).toBe(0);
      const result = await agentenv(["exec", "--env", env, "--", "sh", "-c", "echo ran >> count; exit 255"], { cwd: dir, env: { PATH: `${bin}:${process.env.PATH}` } });
      expect(readFileSync(join(dir, "count"), "utf8")).toBe("ran\n");
      expect(result.code).toBe(255);
      expect(result.stderr).toBe(`⚠ ${container} stopped while the command ran, or just before: it is not run again (run it again yourself if it did not run)\n`);
    } finally {
      await down();
    }
  });

  test("the roots at their own paths, cwd mapped, exit codes passed back, secrets through the handoff, new store paths promoted at down", async () => {
    const dir = project();
    const secret = await agentenv(["secret", "set", "UP_TOKEN", "--env", env], { stdin: "s3cret-value" });
    expect(secret.code).toBe(0);
    try {
      const up = await agentenv(["up", "--env", env, "--roots", dir]);
      expect(up.stderr).toContain(`${container} is up`);
      expect(up.code).toBe(0);
      const again = await agentenv(["up", "--env", env, "--roots", dir]);
      expect(again.stderr).toContain("already up");

      const mounts = JSON.parse(sh(["podman", "inspect", "--format", "{{json .Mounts}}", container]).stdout) as Array<{ Source: string; Destination: string }>;
      expect(mounts.find((m) => m.Destination === dir)?.Source).toBe(dir);
      // the secret is not in the container's configuration
      expect(sh(["podman", "inspect", container]).stdout).not.toContain("s3cret-value");
      // the session is one record: the final plan, the config it resolved, each plugin's saved part — and no secret
      const recordText = readFileSync(recordFile, "utf8");
      expect(recordText).not.toContain("s3cret-value");
      const record = JSON.parse(recordText) as { mode: string; project: string; plan: { name: string; labels: Record<string, string> }; config: { store: string }; plugins: Record<string, Record<string, unknown>> };
      expect(record).toMatchObject({ mode: "up", project: dir, plan: { name: container, labels: { "agentenv.roots": JSON.stringify([dir]), "agentenv.env": env } }, config: { store: "golden" } });
      expect(record.plugins.env).toEqual({ name: env, volume: `agentenv-env-${env}` });
      expect(record.plugins.golden).toMatchObject({ volume: testStoreVolume, clone: "overlay" });
      expect(statSync(recordFile).mode & 0o077).toBe(0);
      expect(existsSync(join(stateDir, "up", `podman-${container}.json`))).toBe(false);

      const ps = JSON.parse((await agentenv(["ps", "--json"])).stdout) as Array<Record<string, unknown>>;
      expect(ps.find((row) => row.name === container)).toMatchObject({ env, status: "running", roots: [dir] });
      expect((await agentenv(["ps"])).stdout).toMatch(new RegExp(`^${env}\\s+${container}\\s+running\\s+\\d+s\\s+${dir}$`, "m"));

      const run = await agentenv(["exec", "--env", env, "--", "sh", "-c", 'pwd; hello-env; echo "token=$UP_TOKEN"; [ -t 0 ] || echo no-tty; echo made > here.txt; exit 3'], { cwd: join(dir, "sub") });
      expect(run.stdout).toBe(`${dir}/sub\nhello-env v1\ntoken=s3cret-value\nno-tty\n`);
      expect(run.code).toBe(3);
      // written inside, at the same path outside
      expect(readFileSync(join(dir, "sub", "here.txt"), "utf8")).toBe("made\n");
      // flags after the command are the command's
      const words = await agentenv(["exec", "--env", env, "echo", "-n", "--env", "x"], { cwd: dir });
      expect(words.stdout).toBe("--env x");

      const added = await agentenv(["exec", "--env", env, "--", "sh", "-c", `echo ${crypto.randomUUID()} > /tmp/f && nix-store --add /tmp/f`], { cwd: dir });
      const path = added.stdout.trim();
      expect(path).toMatch(/^\/nix\/store\/[a-z0-9]{32}-f$/);

      const stopped = await agentenv(["down", "--env", env]);
      expect(stopped.stderr).toContain("promoted 1 new store path");
      expect(stopped.code).toBe(0);
      expect(containerExists()).toBe(false);
      expect(existsSync(recordFile)).toBe(false);
      expect(JSON.parse((await agentenv(["ps", "--json"])).stdout).some((row: { name: string }) => row.name === container)).toBe(false);
      // the path outlived the container: a new session of the golden store has it
      const check = await agentenv(["run", dir, "--no-env", "--", "nix-store", "--check-validity", path]);
      expect(check.code).toBe(0);
    } finally {
      await agentenv(["secret", "rm", "UP_TOKEN", "--env", env]);
    }
  });

  test("a container removed by hand: its new store paths survive other sessions and are promoted by the next up", async () => {
    const dir = project();
    const added = await agentenv(["exec", "--env", env, "--", "sh", "-c", `echo ${crypto.randomUUID()} > /tmp/f && nix-store --add /tmp/f`], { cwd: dir });
    const path = added.stdout.trim();
    expect(path).toStartWith("/nix/store/");
    sh(["podman", "rm", "--force", container]);
    // another session meanwhile: it must not throw the clone away
    expect((await agentenv(["run", dir, "--no-env", "--", "true"])).code).toBe(0);
    const up = await agentenv(["up", "--env", env, "--roots", dir]);
    expect(up.stderr).toContain(`${container} is gone: ending it (its new store paths are promoted)`);
    expect(up.stderr).toContain("promoted 1 new store path");
    expect((await agentenv(["run", dir, "--no-env", "--", "nix-store", "--check-validity", path])).code).toBe(0);
    await down();
  });

  test("exec starts the container when it is down (autoStart), and says so when autoStart is off", async () => {
    const dir = project();
    const first = await agentenv(["exec", "--env", env, "--", "hello-env"], { cwd: dir });
    expect(first.stdout).toBe("hello-env v1\n");
    expect(first.stderr).toContain(`starting ${container}`);
    expect(containerExists()).toBe(true);
    await down();

    writeFileSync(join(dir, "agentenv.config.ts"), "export default { autoStart: false };\n");
    const off = await agentenv(["exec", "--env", env, "--", "true"], { cwd: dir });
    expect(off.stderr).toBe(`agentenv: ${container} is not running (autoStart is off) — agentenv up --env ${env}\n`);
    expect(off.code).toBe(1);
    expect(containerExists()).toBe(false);
  });

  test("a directory outside the roots is refused before any engine call", async () => {
    const dir = project();
    const elsewhere = realpathSync(tempTree());
    // a fake podman that records being called: it must never be
    const fakeBin = tempTree({ "podman": "#!/bin/sh\necho called >> \"$(dirname \"$0\")/calls\"\nexit 1\n" });
    chmodSync(join(fakeBin, "podman"), 0o755);
    const result = await agentenv(["exec", "--env", env, "--roots", dir, "--", "true"], { cwd: elsewhere, env: { PATH: `${fakeBin}:${process.env.PATH}` } });
    expect(result.stderr).toBe(`agentenv: ${elsewhere} is outside the roots given with --roots: ${dir} — cd into one of them, or pass --roots\n`);
    expect(result.code).toBe(126);
    expect(existsSync(join(fakeBin, "calls"))).toBe(false);

    // a running container cannot gain a root
    expect((await agentenv(["up", "--env", env, "--roots", dir])).code).toBe(0);
    const other = await agentenv(["exec", "--env", env, "--", "true"], { cwd: elsewhere });
    expect(other.stderr).toBe(`agentenv: ${container} is running with roots ${dir}, not ${elsewhere} — a running container cannot gain mounts: agentenv down --env ${env}, then up with all the roots you need\n`);
    expect(other.code).toBe(1);
    // nor can `up` add one
    const more = await agentenv(["up", "--env", env, "--roots", `${dir},${elsewhere}`]);
    expect(more.stderr).toBe(`agentenv: ${container} is running with roots ${dir}, not ${elsewhere} — a running container cannot gain mounts: agentenv down --env ${env}, then up with all the roots you need\n`);
    expectNoStackTrace(other.stderr);
    await down();
  });

  test("autoNixDevelop: the nearest flake.nix's dev shell, on request or from config", async () => {
    const dir = project({ "flake.nix": devShellFlake });
    git(dir, "add", "-A");
    const probe = ["sh", "-c", 'echo "dev=${HELLO_FROM_SHELL:-none}"'];
    const auto = await agentenv(["exec", "--env", env, "--nix-develop", "auto", "--", ...probe], { cwd: join(dir, "sub") });
    expect(auto.stdout).toBe("dev=yes\n");
    const off = await agentenv(["exec", "--env", env, "--", ...probe], { cwd: join(dir, "sub") });
    expect(off.stdout).toBe("dev=none\n");
    writeFileSync(join(dir, "agentenv.config.ts"), "export default { autoNixDevelop: true };\n");
    const configured = await agentenv(["exec", "--env", env, "--", ...probe], { cwd: dir });
    expect(configured.stdout).toBe("dev=yes\n");
    const noFlake = project();
    const always = await agentenv(["exec", "--env", env, "--roots", `${dir},${noFlake}`, "--nix-develop", "always", "--", "true"], { cwd: noFlake });
    // the running container has only `dir`
    expect(always.code).not.toBe(0);
    await down();
    const alwaysFresh = await agentenv(["exec", "--env", env, "--nix-develop", "always", "--", "true"], { cwd: noFlake });
    expect(alwaysFresh.stderr).toContain(`agentenv: no flake.nix in ${noFlake} or above it`);
    expect(alwaysFresh.code).toBe(2);
    await down();
  });
});

describe("wrap", () => {
  test("a wrapper on PATH runs the command in the container, fast when it is alive, through agentenv when it is not", async () => {
    const dir = project();
    const bin = tempTree();
    const wrote = await agentenv(["wrap", "hello-env", "--env", env, "--roots", dir, "--bin-dir", bin, "--set", "GREETING=hi"]);
    expect(wrote.code).toBe(0);
    expect(wrote.stderr).toContain(`wrote ${bin}/hello-env`);
    const wrapper = join(bin, "hello-env");
    expect(statSync(wrapper).mode & 0o777).toBe(0o755);
    const PATH = `${bin}:${process.env.PATH}`;

    // down: the wrapper goes through agentenv exec, which starts the container
    const cold = sh(["sh", "-c", "hello-env; echo code=$?"], { cwd: join(dir, "sub"), env: { PATH } });
    expect(cold.stdout).toBe("hello-env v1\ncode=0\n");
    expect(containerExists()).toBe(true);

    // alive: the wrapper execs the engine itself (its agentenv line replaced: never reached)
    const fastOnly = join(bin, "fast-only");
    writeFileSync(fastOnly, readFileSync(wrapper, "utf8").replace(/^exec .* exec --env .*$/m, "echo SLOW; exit 99"));
    chmodSync(fastOnly, 0o755);
    const fast = sh([fastOnly, "--flag"], { cwd: join(dir, "sub") });
    expect(fast.stdout).toBe("hello-env v1\n");
    expect(fast.code).toBe(0);
    const seen = sh([fastOnly], { cwd: dir });
    expect(seen.code).toBe(0);

    // killed (no clean stop: the ready file stays): the lock is gone, so not "alive"
    sh(["podman", "kill", container]);
    expect(sh([fastOnly], { cwd: dir }).stdout).toBe("SLOW\n");
    const restarted = sh([wrapper], { cwd: dir });
    expect(restarted.stdout).toBe("hello-env v1\n");

    // outside the roots: one line naming them, exit 126
    const outside = sh([wrapper], { cwd: realpathSync(tempTree()) });
    expect(outside.stderr).toContain(`is outside the roots of this wrapper: ${dir}`);
    expect(outside.code).toBe(126);

    const list = JSON.parse((await agentenv(["wrap", "--list", "--json"])).stdout) as Array<Record<string, unknown>>;
    expect(list.find((w) => w.path === wrapper)).toMatchObject({ name: "hello-env", env, roots: [dir], set: { GREETING: "hi" } });

    // a file that is not a wrapper is never replaced
    writeFileSync(join(bin, "mine"), "#!/bin/sh\necho mine\n");
    const refused = await agentenv(["wrap", "mine", "--env", env, "--roots", dir, "--bin-dir", bin]);
    expect(refused.stderr).toContain(`${bin}/mine exists and is not an agentenv wrapper`);
    expect(readFileSync(join(bin, "mine"), "utf8")).toBe("#!/bin/sh\necho mine\n");

    const unwrap = await agentenv(["unwrap", "hello-env"]);
    expect(unwrap.code).toBe(0);
    expect(existsSync(wrapper)).toBe(false);
    expect((await agentenv(["unwrap", "hello-env"])).stderr).toBe("agentenv: no agentenv wrapper named hello-env — see agentenv wrap --list\n");
    await down();
  });
});

describe("worktrees", () => {
  test("exec --worktree makes a worktree at ~/Code/<project>/<branch>, reuses it, lists and removes it", async () => {
    const dir = project();
    const name = basename(dir);
    const where = `/root/Code/${name}/feat/x`;
    const first = await agentenv(["exec", "--env", env, "--worktree", "feat/x", "--", "sh", "-c", "pwd; git branch --show-current; echo wip > note.txt"], { cwd: join(dir, "sub") });
    expect(first.stdout).toBe(`${where}/sub\nfeat/x\n`);
    expect(first.code).toBe(0);
    const second = await agentenv(["exec", "--env", env, "--worktree", "feat/x", "--", "sh", "-c", "pwd; cat note.txt"], { cwd: join(dir, "sub") });
    expect(second.stdout).toBe(`${where}/sub\nwip\n`);

    // the host's repository knows it, locked so a prune there never drops it
    expect(git(dir, "worktree", "list", "--porcelain").stdout).toContain(`worktree ${where}\n`);
    expect(git(dir, "worktree", "list", "--porcelain").stdout).toContain("locked");

    const list = JSON.parse((await agentenv(["worktrees", "--env", env, "--json"])).stdout) as Array<Record<string, unknown>>;
    expect(list).toContainEqual({ env, project: name, branch: "feat/x", path: where, repo: dir, head: "feat/x" });

    const dirty = await agentenv(["worktrees", "rm", "feat/x", "--env", env]);
    expect(dirty.code).toBe(1);
    expect(dirty.stderr).toContain("commit them, or pass --force");
    const removed = await agentenv(["worktrees", "rm", "feat/x", "--env", env, "--force"]);
    expect(removed.code).toBe(0);
    expect(JSON.parse((await agentenv(["worktrees", "--env", env, "--json"])).stdout).some((w: { repo: string }) => w.repo === dir)).toBe(false);
    expect(git(dir, "branch", "--list", "feat/x").stdout).toContain("feat/x");

    const bad = await agentenv(["exec", "--env", env, "--worktree", "../x", "--", "true"], { cwd: dir });
    expect(bad.stderr).toBe("agentenv: --worktree ../x: not a branch name git accepts\n");
    await down();
  });
});
