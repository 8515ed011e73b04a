import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "pathe";
import { agentenv, repoRoot, tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace } from "../helpers/engine.ts";

/**
 * The Apple `container` runtime end to end, against test/fixtures/fake-container: a FAKE of
 * Apple's CLI (it cannot run on Linux) that answers as the documented one does — its JSON
 * shapes of 0.x and 1.x, its errors and exit codes — and logs every argv. Each test gets
 * its own world: the fake's state, its log, and a HOME with its own XDG directories, so
 * nothing touches the real user's state (nor another test's cached CLI version).
 */
const fakeDir = join(repoRoot, "test", "fixtures", "fake-container");
const fakeBin = join(fakeDir, "container");
const image = "localhost/agentenv:latest";

/** Every directory a test made (worlds, projects), removed at the end. */
const made: string[] = [];
function temp(files: Record<string, string> = {}, prefix = "agentenv-apple-"): string {
  const dir = realpathSync(tempTree(files, prefix));
  made.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

interface World {
  root: string;
  state: string;
  env: Record<string, string>;
  /** the fake, directly (test setup) */
  fake(args: string[], extra?: Record<string, string>): { code: number; stdout: string; stderr: string };
  /** every argv the fake `container` and `cp` saw, in order */
  log(): string[][];
  /** agentenv with the fake first on PATH */
  cli(args: string[], options?: { cwd?: string; env?: Record<string, string> }): ReturnType<typeof agentenv>;
}

function world(options: { version?: string; image?: boolean } = {}): World {
  const root = temp();
  const state = join(root, "state");
  const home = join(root, "home");
  const runtimeDir = join(root, "run");
  for (const dir of [state, home, runtimeDir]) mkdirSync(dir, { recursive: true });
  // its user's own work is in the temp dir, where the projects are: trusted (sessions promote)
  mkdirSync(join(home, ".config", "agentenv"), { recursive: true });
  writeFileSync(join(home, ".config", "agentenv", "config.ts"), `export default { trust: [${JSON.stringify(realpathSync(tmpdir()))}] };\n`);
  chmodSync(runtimeDir, 0o700);
  const logFile = join(root, "fake.log");
  const env: Record<string, string> = {
    // the fakes are `#!/usr/bin/env bun` scripts: the bun running the tests must be found
    PATH: `${fakeDir}:${dirname(process.execPath)}:${process.env.PATH}`,
    FAKE_CONTAINER_STATE: state,
    FAKE_CONTAINER_LOG: logFile,
    FAKE_CONTAINER_VERSION: options.version ?? "1.2.0",
    HOME: home,
    XDG_CONFIG_HOME: join(home, ".config"),
    XDG_CACHE_HOME: join(home, ".cache"),
    XDG_DATA_HOME: join(home, ".local", "share"),
    XDG_STATE_HOME: join(home, ".local", "state"),
    XDG_RUNTIME_DIR: runtimeDir,
    AGENTENV_RUNTIME: "container",
    NO_COLOR: "1",
  };
  const w: World = {
    root,
    state,
    env,
    fake(args, extra = {}) {
      const out = Bun.spawnSync([fakeBin, ...args], { env: { ...process.env, ...env, ...extra }, stdin: "ignore" });
      return { code: out.exitCode, stdout: out.stdout.toString(), stderr: out.stderr.toString() };
    },
    log() {
      if (!existsSync(logFile)) return [];
      return readFileSync(logFile, "utf8").trim().split("\n").filter(Boolean).map((line) => JSON.parse(line) as string[]);
    },
    cli(args, opts = {}) {
      return agentenv(args, { cwd: opts.cwd ?? root, env: { ...env, ...opts.env } });
    },
  };
  if (options.image !== false) {
    const context = join(root, "image");
    mkdirSync(context, { recursive: true });
    writeFileSync(join(context, "Containerfile"), "FROM scratch\n");
    const built = w.fake(["build", "--tag", image, "--file", join(context, "Containerfile"), context]);
    if (built.code !== 0) throw new Error(built.stderr);
  }
  return w;
}

/** The Apple runtime in a child process (Bun's spawn and PATH lookups keep the env they started with). */
const driver = join(temp({}, "agentenv-apple-driver-"), "driver.ts");
writeFileSync(
  driver,
  `import { AppleContainerRuntime } from ${JSON.stringify(join(repoRoot, "core", "runtime", "apple.ts"))};
const { version, platform, calls } = JSON.parse(process.argv[2]);
const runtime = new AppleContainerRuntime("container", { version, platform, cp: "cp" });
const results = [];
for (const [method, ...args] of calls) {
  try {
    results.push({ value: (await runtime[method](...args)) ?? null });
  } catch (error) {
    results.push({ error: error.message, hint: error.hint, name: error.name });
  }
}
console.log(JSON.stringify(results));
`,
);

async function runtimeCalls(w: World, calls: unknown[][], options: { platform?: string; env?: Record<string, string> } = {}): Promise<Array<{ value?: any; error?: string; hint?: string; name?: string }>> {
  const child = Bun.spawn([process.execPath, driver, JSON.stringify({ version: w.env.FAKE_CONTAINER_VERSION, platform: options.platform ?? "linux", calls })], {
    env: { ...process.env, ...w.env, ...options.env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  if ((await child.exited) !== 0) throw new Error(`driver failed: ${stderr}`);
  return JSON.parse(stdout);
}

const runs = (log: string[][]) => log.filter((argv) => argv[0] === "container" && argv[1] === "run");

describe("Apple container (fake CLI)", () => {
  test("--dry-run prints the exact argv: no --hostname, no --pull, --init", async () => {
    const w = world();
    const dir = temp({ "README": "hi\n" }, "agentenv-apple-proj-");
    const result = await w.cli(["run", "--runtime", "container", "--no-env", "--store", "none", "--dry-run", dir, "--", "true"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    const name = /--name (agentenv-[a-z0-9-]+-[0-9a-f]{8}) /.exec(lines[0]!)?.[1];
    expect(name).toBeDefined();
    expect(lines[0]).toBe(
      `container run --rm -i --init --name ${name} -w /work --label agentenv.session=run --label agentenv.project=${dir} -v ${dir}:/work ${image} true`,
    );
    // only the (cached) version was asked
    expect(w.log().filter((argv) => argv[0] === "container").map((argv) => argv.slice(1))).toEqual([["build", "--tag", image, "--file", join(w.root, "image", "Containerfile"), join(w.root, "image")], ["--version"]]);
    // before 0.11: no --init
    const old = world({ version: "0.10.0" });
    const oldRun = await old.cli(["run", "--runtime", "container", "--no-env", "--store", "none", "--dry-run", dir, "--", "true"]);
    expect(oldRun.stdout).toStartWith("container run --rm -i --name ");
  });

  test("doctor: a stopped service is a failure naming `container system start`; a running one is ok", async () => {
    const w = world();
    const stopped = await w.cli(["doctor", "--runtime", "container"], { env: { FAKE_CONTAINER_SERVICE: "stopped" } });
    expect(stopped.code).toBe(1);
    expect(stopped.stdout).toMatch(/^✖ engine: container 1\.2\.0: the container system service is not running$/m);
    expect(stopped.stdout).toMatch(/^\s+fix: container system start$/m);
    expectNoStackTrace(stopped.stderr);

    const running = await w.cli(["doctor", "--runtime", "container", "--json"]);
    const checks = JSON.parse(running.stdout) as Array<{ name: string; status: string; detail: string }>;
    expect(checks.find((c) => c.name === "engine")).toMatchObject({ status: "ok", detail: expect.stringContaining("Apple container 1.2.0") });
    expect(checks.find((c) => c.name === "image")).toMatchObject({ status: "ok" });
    expect(checks.find((c) => c.name === "container run")).toMatchObject({ status: "ok" });

    // 1.5: the nested status shape
    const nested = world({ version: "1.5.0", image: false });
    const nestedChecks = JSON.parse((await nested.cli(["doctor", "--runtime", "container", "--json"])).stdout) as Array<{ name: string; status: string; detail: string }>;
    expect(nestedChecks.find((c) => c.name === "engine")).toMatchObject({ status: "ok", detail: expect.stringContaining("service running (container-apiserver version 1.5.0") });
    expect(nestedChecks.find((c) => c.name === "image")).toMatchObject({ status: "fail", detail: `${image} not found` });

    // 0.9: no `system status --format` (exit 64): the plain command's exit code says it; no run --init
    const old = world({ version: "0.9.0" });
    const oldChecks = JSON.parse((await old.cli(["doctor", "--runtime", "container", "--json"])).stdout) as Array<{ name: string; status: string; detail: string }>;
    expect(oldChecks.find((c) => c.name === "engine")).toMatchObject({ status: "ok", detail: expect.stringContaining("Apple container 0.9.0") });
    expect(oldChecks.find((c) => c.name === "init")).toMatchObject({ status: "warn" });
    const oldStopped = await old.cli(["doctor", "--runtime", "container"], { env: { FAKE_CONTAINER_SERVICE: "stopped" } });
    expect(oldStopped.code).toBe(1);
    expect(oldStopped.stdout).toContain("fix: container system start");
    expect(old.log()).toContainEqual(["container", "system", "status"]);
  });

  test("a volume attached read-write elsewhere: agentenv names it and its holder before any run; in a race it rewrites the engine's error", async () => {
    const w = world();
    const dir = temp({ "README": "hi\n" }, "agentenv-apple-proj-");
    expect(w.fake(["volume", "create", "--label", "agentenv.env=dev", "--label", "agentenv.volume=1", "agentenv-env-dev"]).code).toBe(0);
    expect(w.fake(["run", "-d", "--name", "agentenv-up-dev", "--label", "agentenv.session=up", "-v", "agentenv-env-dev:/root", image, "sleep", "infinity"]).code).toBe(0);
    const before = runs(w.log()).length;

    const result = await w.cli(["run", "--runtime", "container", "--env", "dev", "--store", "none", dir, "--", "true"]);
    expect(result.code).toBe(1);
    expectNoStackTrace(result.stderr);
    const lines = result.stderr.trim().split("\n");
    expect(lines).toEqual([
      "agentenv: volume agentenv-env-dev is attached read-write by container agentenv-up-dev: Apple container attaches a volume's disk to one VM at a time — join that container instead: agentenv exec --env dev",
    ]);
    expect(runs(w.log())).toHaveLength(before);

    // the holder started after agentenv looked (hidden from `ls`): the engine's
    // Virtualization.framework error comes back in agentenv's words
    const race = await w.cli(["run", "--runtime", "container", "--env", "dev", "--store", "none", dir, "--", "true"], { env: { FAKE_CONTAINER_HIDE: "agentenv-up-dev" } });
    expect(race.code).toBe(1);
    expect(race.stderr).not.toContain("VZErrorDomain");
    expect(race.stderr).toBe(
      "agentenv: volume agentenv-env-dev is attached read-write by another container: Apple container attaches a volume's disk to one VM at a time — end the other session first (agentenv ps, container ls), or use another environment\n",
    );
    expectNoStackTrace(race.stderr);
    expect(runs(w.log())).toHaveLength(before + 1);
    // the engine removed what it could not start; agentenv left nothing behind either
    expect(JSON.parse(w.fake(["ls", "--all", "--format", "json"]).stdout).map((c: { id: string }) => c.id)).toEqual(["agentenv-up-dev"]);

    // held read-only: a read-write session still cannot have it, and is told how it is held
    expect(w.fake(["delete", "--force", "agentenv-up-dev"]).code).toBe(0);
    expect(w.fake(["run", "-d", "--name", "agentenv-reader", "-v", "agentenv-env-dev:/data:ro", image, "sleep", "infinity"]).code).toBe(0);
    const shared = await w.cli(["run", "--runtime", "container", "--env", "dev", "--store", "none", dir, "--", "true"]);
    expect(shared.code).toBe(1);
    expect(shared.stderr).toStartWith("agentenv: volume agentenv-env-dev is attached read-only by container agentenv-reader: ");
    expect(runs(w.log()).filter((argv) => argv.includes("agentenv.session=run"))).toHaveLength(1);
  });

  test("cloneVolume: an APFS clone (cp -c) of volume.img on macOS; another layout, or Linux, is a reason and no change", async () => {
    const w = world({ image: false });
    const [, , cloned] = await runtimeCalls(
      w,
      [
        ["volumeCreate", "agentenv-nix", { "agentenv.store": "golden" }],
        ["volumeCreate", "agentenv-nix-s1", {}],
        ["cloneVolume", "agentenv-nix", "agentenv-nix-s1"],
      ],
      { platform: "darwin" },
    );
    expect(cloned).toEqual({ value: { cloned: true } });
    const a = join(w.state, "volumes", "agentenv-nix", "volume.img");
    const b = join(w.state, "volumes", "agentenv-nix-s1", "volume.img");
    expect(w.log().filter((argv) => argv[0] === "cp")).toEqual([["cp", "-c", a, `${b}.agentenv-clone`]]);
    expect(readFileSync(b, "utf8")).toBe(readFileSync(a, "utf8"));
    expect(readFileSync(a, "utf8")).toContain("volume agentenv-nix ");
    expect(existsSync(`${b}.agentenv-clone`)).toBe(false);

    // a layout whose disk image is not a volume.img: not cloned, and why
    const other = world({ image: false });
    const layout = { FAKE_CONTAINER_LAYOUT: "disk" };
    const results = await runtimeCalls(
      other,
      [
        ["volumeCreate", "g", {}],
        ["volumeCreate", "s", {}],
        ["cloneVolume", "g", "s"],
        ["cloneVolume", "g", "missing"],
      ],
      { platform: "darwin", env: layout },
    );
    const g = join(other.state, "volumes", "g", "disk.img");
    const s = join(other.state, "volumes", "s", "disk.img");
    expect(results[2]).toEqual({ value: { cloned: false, why: `volume g is at ${g}, not a volume.img` } });
    expect(results[3]?.value).toMatchObject({ cloned: false });
    expect(readFileSync(s, "utf8")).toContain("volume s ");
    expect(readFileSync(s, "utf8")).not.toBe(readFileSync(g, "utf8"));
    expect(other.log().filter((argv) => argv[0] === "cp")).toEqual([]);

    // Linux: no APFS, and no engine call to find out
    const linux = await runtimeCalls(w, [["cloneVolume", "agentenv-nix", "agentenv-nix-s1"]], { platform: "linux" });
    expect(linux[0]?.value).toEqual({ cloned: false, why: "APFS clones need macOS, not linux" });
  });

  for (const version of ["0.12.0", "1.2.0"]) {
    test(`volumes and containers through the runtime, ${version} JSON`, async () => {
      const w = world({ version });
      const mk = (args: string[]) => expect(w.fake(args).stderr).toBe("");
      mk(["volume", "create", "--label", "agentenv.env=dev", "agentenv-env-dev"]);
      mk(["volume", "create", "--label", "other=1", "scratch"]);
      // a finished session that had the home read-only (stopped, not removed), then the up container holding it read-write
      mk(["run", "--name", "agentenv-old", "--label", "agentenv.session=up", "-v", "agentenv-env-dev:/root:ro", image, "true"]);
      mk(["run", "-d", "--name", "agentenv-up-dev", "--label", "agentenv.session=up", "--label", "agentenv.env=dev", "-v", "agentenv-env-dev:/root", image, "agentenv-keepalive"]);
      mk(["run", "-d", "--name", "agentenv-proj-0000", "--label", "agentenv.session=run", image, "sleep", "9"]);
      // the fake prints the shape of the version it is
      const listed = JSON.parse(w.fake(["ls", "--format", "json"]).stdout) as Array<Record<string, any>>;
      expect(typeof listed[0]!.status).toBe(version.startsWith("0.") ? "string" : "object");

      const results = await runtimeCalls(w, [
        ["volumeList", "agentenv.env"],
        ["listContainers", "agentenv.session=up"],
        ["listContainers", "agentenv.env"],
        ["inspectContainer", "agentenv-up-dev"],
        ["inspectContainer", "agentenv-old"],
        ["inspectContainer", "agentenv-nope"],
        ["containerStatus", "agentenv-up-dev"],
        ["containerStatus", "agentenv-old"],
        ["containerStatus", "agentenv-nope"],
        ["volumeUsers", "agentenv-env-dev"],
        ["volumeUsers", "scratch"],
        ["volumeExists", "scratch"],
        ["volumeExists", "nope"],
        ["volumeMountpoint", "agentenv-env-dev"],
        ["imageLabels", image],
        ["imageLabels", "nope:latest"],
        ["version"],
      ]);
      const values = results.map((r) => (r.error ? { error: r.error } : r.value));
      expect(values).toEqual([
        [{ name: "agentenv-env-dev", mountpoint: join(w.state, "volumes", "agentenv-env-dev") }],
        [
          { name: "agentenv-old", running: false, labels: { "agentenv.session": "up" } },
          { name: "agentenv-up-dev", running: true, labels: { "agentenv.session": "up", "agentenv.env": "dev" } },
        ],
        [{ name: "agentenv-up-dev", running: true, labels: { "agentenv.session": "up", "agentenv.env": "dev" } }],
        { name: "agentenv-up-dev", running: true, labels: { "agentenv.session": "up", "agentenv.env": "dev" } },
        { name: "agentenv-old", running: false, labels: { "agentenv.session": "up" } },
        null,
        "running",
        "stopped",
        "absent",
        [
          { name: "agentenv-old", running: false },
          { name: "agentenv-up-dev", running: true },
        ],
        [],
        true,
        false,
        join(w.state, "volumes", "agentenv-env-dev"),
        {},
        null,
        version,
      ]);

      // volumeRemove: its containers first (the engine refuses a referenced volume), then the volume
      const [removed, gone] = await runtimeCalls(w, [["volumeRemove", "agentenv-env-dev"], ["volumeExists", "agentenv-env-dev"]]);
      expect(removed).toEqual({ value: null });
      expect(gone).toEqual({ value: false });
      const tail = w.log().slice(-8).map((argv) => argv.slice(1).join(" "));
      expect(tail).toContain("delete --force agentenv-old");
      expect(tail).toContain("delete --force agentenv-up-dev");
      expect(tail.indexOf("volume delete agentenv-env-dev")).toBeGreaterThan(tail.indexOf("delete --force agentenv-up-dev"));

      // the service down: a user error naming the fix, not "not found"
      const [down] = await runtimeCalls(w, [["listContainers", "agentenv.session=up"]], { env: { FAKE_CONTAINER_SERVICE: "stopped" } });
      expect(down).toMatchObject({ name: "UserError", hint: "start it: container system start" });
      const [inspectDown] = await runtimeCalls(w, [["inspectContainer", "agentenv-proj-0000"]], { env: { FAKE_CONTAINER_SERVICE: "stopped" } });
      expect(inspectDown).toMatchObject({ name: "UserError", hint: "start it: container system start" });
    });
  }

  test("up, ps, exec and down", async () => {
    const w = world();
    const dir = temp({ "README": "hi\n", "sub/.keep": "" }, "agentenv-apple-up-");
    const up = await w.cli(["up", "--runtime", "container", "--no-env", "--store", "none", "--roots", dir], { cwd: dir });
    expectNoStackTrace(up.stderr);
    expect(up.stderr).toContain("agentenv-up is up");
    expect(up.code).toBe(0);
    const started = runs(w.log()).at(-1)!;
    expect(started.slice(0, 6)).toEqual(["container", "run", "-d", "--init", "--name", "agentenv-up"]);
    expect(started).toContain(`${dir}:${dir}`);
    expect(started.at(-1)).toBe("agentenv-keepalive");
    expect(started.some((a) => a.startsWith("--hostname"))).toBe(false);

    const ps = await w.cli(["ps", "--json", "--runtime", "container"], { cwd: dir });
    expect(ps.code).toBe(0);
    expect(JSON.parse(ps.stdout)).toEqual([expect.objectContaining({ name: "agentenv-up", env: null, status: "running", roots: [dir] })]);

    const exec = await w.cli(["exec", "--runtime", "container", "--no-env", "--", "true"], { cwd: dir });
    expectNoStackTrace(exec.stderr);
    expect(exec.code).toBe(0);
    const execs = w.log().filter((argv) => argv[1] === "exec");
    expect(execs).toHaveLength(1);
    expect(execs[0]!.slice(0, 5)).toEqual(["container", "exec", "-i", "-w", dir]);
    expect(execs[0]!.slice(-3)).toEqual(["agentenv-up", "agentenv-exec", "true"]);
    // the command's exit code comes back; from a subdirectory, that is the workdir
    const failed = await w.cli(["exec", "--runtime", "container", "--no-env", "--", "sh", "-c", "exit 3"], { cwd: join(dir, "sub") });
    expect(failed.code).toBe(3);
    expect(w.log().filter((argv) => argv[1] === "exec").at(-1)!.slice(3, 5)).toEqual(["-w", join(dir, "sub")]);

    const before = w.log().length;
    const down = await w.cli(["down", "--runtime", "container", "--no-env"], { cwd: dir });
    expectNoStackTrace(down.stderr);
    expect(down.code).toBe(0);
    const ends = w.log().slice(before).map((argv) => argv.slice(1).join(" ")).filter((line) => /^(stop|delete)/.test(line));
    expect(ends).toEqual(["stop --time 10 agentenv-up", "delete --force agentenv-up"]);
    const after = await w.cli(["ps", "--json", "--runtime", "container"], { cwd: dir });
    expect(JSON.parse(after.stdout)).toEqual([]);
  });

  test("the golden store as volumes: seeded once, each session's volume filled by a helper copy (no APFS here), promoted, removed", async () => {
    const w = world();
    const dir = temp({ "README": "hi\n" }, "agentenv-apple-store-");
    const env = {
      // what a Mac decides from its platform (on Linux the fake's volume directories would look reachable)
      AGENTENV_STORE_CLONE: "volume",
      // the promotion helper's summary, as the real script prints it
      FAKE_CONTAINER_STDOUT: JSON.stringify({ "agentenv.helper=promote-store": "promoted 0 0\n" }),
    };
    const first = await w.cli(["run", "--runtime", "container", "--no-env", dir, "--", "true"], { env });
    expectNoStackTrace(first.stderr);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain("golden store: cannot clone volume images here (APFS clones need macOS, not linux): copying through a helper container");
    expect(first.stderr).not.toContain("failed");

    const log = w.log().map((argv) => argv.slice(1));
    const session = runs(w.log()).find((argv) => argv.includes("agentenv.session=run"))!;
    const name = session[session.indexOf("--name") + 1]!;
    const sessionVolume = `agentenv-nix-${name}`;
    const helper = (purpose: string) => log.filter((argv) => argv[0] === "run" && argv.includes(`agentenv.helper=${purpose}`));
    expect(helper("seed-store")).toHaveLength(1);
    expect(helper("seed-store")[0]).toContain("agentenv-nix:/golden");
    const clone = helper("clone-store");
    expect(clone).toHaveLength(1);
    expect(clone[0]).toEqual(expect.arrayContaining(["-v", "agentenv-nix:/s:ro", "-v", `${sessionVolume}:/d`]));
    expect(clone[0]!.at(-1)).toContain("cp -a /s/. /d/");
    expect(session).toEqual(expect.arrayContaining(["-v", `${sessionVolume}:/nix`]));
    expect(helper("promote-store")[0]).toEqual(expect.arrayContaining(["-v", `${sessionVolume}:/nix`, "-v", "agentenv-nix:/golden/nix"]));
    const order = [
      log.findIndex((argv) => argv.join(" ") === `volume create --label agentenv.volume=1 --label agentenv.store=session --label agentenv.store-of=agentenv-nix ${sessionVolume}`),
      log.indexOf(clone[0]!),
      log.findIndex((argv) => argv.includes("agentenv.session=run")),
      log.indexOf(helper("promote-store")[0]!),
      log.findIndex((argv) => argv.join(" ") === `volume delete ${sessionVolume}`),
    ];
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    const volumes = () => (JSON.parse(w.fake(["volume", "list", "--format", "json"]).stdout) as Array<{ id: string }>).map((v) => v.id);
    expect(volumes()).toEqual(["agentenv-nix"]);

    // the next session: no second seed, and the fallback is not warned about again
    const second = await w.cli(["run", "--runtime", "container", "--no-env", dir, "--", "true"], { env });
    expect(second.code).toBe(0);
    expect(second.stderr).not.toContain("cannot clone");
    expect(w.log().filter((argv) => argv.includes("agentenv.helper=seed-store"))).toHaveLength(1);
    expect(w.log().filter((argv) => argv.includes("agentenv.helper=clone-store"))).toHaveLength(2);
    expect(volumes()).toEqual(["agentenv-nix"]);
  });
});
