import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { agentenv as cli, repoRoot, tempTree, type CliResult } from "../helpers/cli.ts";
import { derivationExpr, expectNoStackTrace, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/**
 * The trust boundary on real Podman: a project's config is code and runs on the host only
 * once the user trusted it as it is; an untrusted project's sessions get no secrets and
 * keep nothing in the golden store. This file's user trusts no tree (unlike the other
 * tests' user, who trusts the temp dir), and its golden store is its own.
 */
const home = tempTree({
  ".config/agentenv/config.ts": `export default { extraEnv: { NIX_CONFIG: "substituters =" } };\n`,
});
const volume = `agentenv-test-trust-${process.pid}`;
const env = {
  HOME: home,
  XDG_CONFIG_HOME: join(home, ".config"),
  XDG_DATA_HOME: join(home, ".local/share"),
  XDG_STATE_HOME: join(home, ".local/state"),
  AGENTENV_STORE_VOLUME: volume,
};
const agentenv = (args: string[], options: { cwd?: string; stdin?: string } = {}): Promise<CliResult> => cli(args, { ...options, env });

/** A cloned repo whose config writes a marker on the host when it is imported. */
function hostileRepo(): { repo: string; marker: string; config: string } {
  const repo = realpathSync(tempTree({ ".git/HEAD": "ref: refs/heads/main\n", "sub/deeper/.keep": "" }));
  const marker = join(repo, "MARKER");
  const config = join(repo, "agentenv.config.ts");
  writeFileSync(config, `import { writeFileSync } from "node:fs";\nwriteFileSync(${JSON.stringify(marker)}, "ran on the host");\nexport default { extraEnv: { FROM_PROJECT: "yes" } };\n`);
  return { repo, marker, config };
}

/** environments this file made */
const envs: string[] = [];

beforeAll(() => requireImage());
afterAll(() => {
  removeStoreVolume(volume);
  for (const name of envs) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
});

describe("project config is trusted explicitly", () => {
  test("an untrusted config runs nowhere: run, env list, doctor, a typo, in the repo or below it", async () => {
    const { repo, marker } = hostileRepo();
    for (const cwd of [repo, join(repo, "sub/deeper")]) {
      for (const args of [["env", "list"], ["doctor"], ["store", "status"], ["secret", "list"], ["lsit"], ["plugins"]]) {
        const result = await agentenv(args, { cwd });
        expectNoStackTrace(result.stderr);
        expect(existsSync(marker)).toBe(false);
      }
    }
    const run = await agentenv(["run", repo, "--", "sh", "-c", 'echo "${FROM_PROJECT:-unset}"']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe("unset\n");
    expect(run.stderr).toContain(`⚠ ${repo} is not a trusted project: its agentenv.config.ts is not loaded, no secrets, and its store changes are not kept — agentenv trust ${repo} to trust it`);
    expect(existsSync(marker)).toBe(false);
    // doctor inside the project names the file and the fix
    const doctor = await agentenv(["doctor", "--json"], { cwd: join(repo, "sub") });
    expect(JSON.parse(doctor.stdout)).toContainEqual({ name: "project config", status: "warn", detail: `${repo} is not a trusted project: its agentenv.config.ts is not loaded, no secrets, and its store changes are not kept`, fix: `agentenv trust ${repo}` });
    expect(existsSync(marker)).toBe(false);
  });

  test("after agentenv trust the config applies; after an edit it is refused again until trusted again; untrust", async () => {
    const { repo, marker, config } = hostileRepo();
    const trusted = await agentenv(["trust"], { cwd: join(repo, "sub") });
    expect(trusted.code).toBe(0);
    expect(trusted.stderr).toContain(`✔ trusted ${repo}, with its ${config} as it is now (sha256 `);
    expect(existsSync(marker)).toBe(false);
    const listed = JSON.parse((await agentenv(["trust", "--list", "--json"])).stdout);
    expect(listed.projects).toContainEqual(expect.objectContaining({ dir: repo, config, configStatus: "trusted" }));

    const run = await agentenv(["run", repo, "--", "sh", "-c", 'echo "$FROM_PROJECT"']);
    expect(run.stdout).toBe("yes\n");
    expect(run.stderr).toBe("");
    expect(readFileSync(marker, "utf8")).toBe("ran on the host");
    rmSync(marker);

    // a pull that changes the config: not imported, said in one line
    writeFileSync(config, `${readFileSync(config, "utf8")}// changed upstream\n`);
    const changed = await agentenv(["run", repo, "--", "sh", "-c", 'echo "${FROM_PROJECT:-unset}"']);
    expect(changed.stdout).toBe("unset\n");
    expect(changed.stderr).toBe(`⚠ ${config} changed since you trusted it: not loaded — review it, then agentenv trust ${repo}\n`);
    expect(existsSync(marker)).toBe(false);
    expect(JSON.parse((await agentenv(["trust", "--list", "--json"])).stdout).projects).toContainEqual(expect.objectContaining({ dir: repo, configStatus: "changed" }));

    expect((await agentenv(["trust", repo])).code).toBe(0);
    expect((await agentenv(["run", repo, "--", "true"])).stderr).toBe("");
    rmSync(marker);

    const untrusted = await agentenv(["untrust", repo]);
    expect(untrusted.code).toBe(0);
    expect((await agentenv(["run", repo, "--", "true"])).stderr).toContain("is not a trusted project");
    expect(existsSync(marker)).toBe(false);
    const again = await agentenv(["untrust", repo]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`agentenv: ${repo} is not a trusted project — agentenv trust --list shows them (a tree in your user config's trust stays trusted)\n`);
  });

  test("a config writable by others is passed over, trusted or not", async () => {
    const { repo, marker, config } = hostileRepo();
    expect((await agentenv(["trust", repo])).code).toBe(0);
    chmodSync(config, 0o666);
    const run = await agentenv(["run", repo, "--", "sh", "-c", 'echo "${FROM_PROJECT:-unset}"']);
    expect(run.stdout).toBe("unset\n");
    expect(run.stderr).toBe(`⚠ ${config} is passed over (writable by group or others; chmod go-w it if it is yours)\n`);
    expect(existsSync(marker)).toBe(false);
  });

  test("a tree in the user config trusts every project in it; a project's config cannot add trees", async () => {
    const tree = realpathSync(tempTree());
    mkdirSync(join(tree, "app"));
    writeFileSync(join(tree, "app", "agentenv.config.ts"), `export default { extraEnv: { FROM_PROJECT: "tree" } };\n`);
    const treeHome = tempTree({ ".config/agentenv/config.ts": `export default { trust: [${JSON.stringify(tree)}] };\n` });
    const treeEnv = { ...env, HOME: treeHome, XDG_CONFIG_HOME: join(treeHome, ".config"), XDG_DATA_HOME: join(treeHome, ".local/share") };
    const run = await cli(["run", "--json", join(tree, "app"), "--", "true"], { env: treeEnv });
    expect(run.stderr).toBe("");
    expect(JSON.parse(run.stdout).plan.env.FROM_PROJECT).toBe("tree");
    writeFileSync(join(tree, "app", "agentenv.config.ts"), `export default { trust: ["/"] };\n`);
    const widened = await cli(["run", "--json", join(tree, "app"), "--", "true"], { env: treeEnv });
    expect(widened.code).toBe(1);
    expect(widened.stderr).toBe(`agentenv: config ${join(tree, "app", "agentenv.config.ts")}: trust belongs in your user config (${join(treeHome, ".config/agentenv/config.ts")}), not a project's\n`);
  });

  test("trust refuses / and a missing directory in one line", async () => {
    expect((await agentenv(["trust", "/"])).stderr).toBe(`agentenv: refusing to trust / (every directory on this host) — list the trees of your own work in your user config instead, e.g. trust: ["~/Code"]\n`);
    const missing = await agentenv(["trust", "/nonexistent/agentenv"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("agentenv: /nonexistent/agentenv: no such directory — pass an existing project directory\n");
  });
});

describe("an untrusted project's sessions", () => {
  test("get no secret; a trusted one does", async () => {
    expect((await agentenv(["secret", "set", "TRUST_TOKEN"], { stdin: "t0ken-value" })).code).toBe(0);
    const listed = await agentenv(["secret", "list"]);
    expect(listed.stdout).toContain("TRUST_TOKEN  all environments  sessions of trusted projects, any environment or none");
    const project = realpathSync(tempTree());
    const untrusted = await agentenv(["run", project, "--", "sh", "-c", 'echo "${TRUST_TOKEN:-none}"']);
    expect(untrusted.stdout).toBe("none\n");
    const verbose = await agentenv(["run", "-v", "--dry-run", project, "--", "true"]);
    expect(verbose.stderr).toContain(`secrets withheld (${project} is not trusted): TRUST_TOKEN`);
    expect(verbose.stderr).not.toContain("t0ken-value");
    expect((await agentenv(["trust", project])).code).toBe(0);
    const trusted = await agentenv(["run", project, "--", "sh", "-c", 'echo "${TRUST_TOKEN:-none}"']);
    expect(trusted.stdout).toBe("t0ken-value\n");
    expect((await agentenv(["secret", "rm", "TRUST_TOKEN"])).code).toBe(0);
  });

  test("read the golden store and keep nothing in it; a trusted project's build is kept", async () => {
    const nonce = Date.now().toString(36);
    const build = (name: string) => ["nix-build", "--no-out-link", "-E", derivationExpr(`${name}-${nonce}`)];
    const untrusted = realpathSync(tempTree());
    const built = await agentenv(["run", untrusted, "--", ...build("untrusted")]);
    expect(built.code).toBe(0);
    const planted = built.stdout.trim().split("\n").pop()!;
    expect(planted).toMatch(/^\/nix\/store\/[a-z0-9]{32}-untrusted-/);
    const plan = JSON.parse((await agentenv(["run", "--json", untrusted, "--", "true"])).stdout);
    expect(plan.plan.labels["agentenv.store"]).toBe("ephemeral");

    const trusted = realpathSync(tempTree());
    expect((await agentenv(["trust", trusted])).code).toBe(0);
    const check = await agentenv(["run", trusted, "--", "sh", "-c", `test -e ${planted} && echo there || echo gone`]);
    expect(check.stdout).toBe("gone\n");
    const kept = await agentenv(["run", trusted, "--", ...build("trusted")]);
    const keptPath = kept.stdout.trim().split("\n").pop()!;
    const later = await agentenv(["run", untrusted, "--", "sh", "-c", `test -e ${keptPath} && echo there`]);
    expect(later.stdout).toBe("there\n");
  });

  test("keep their environment's own tools cached: built from the host's copy in a step of their own, never from what the project left", async () => {
    const name = `t${process.pid}-tools`;
    envs.push(name);
    expect((await agentenv(["env", "create", name, join(repoRoot, "test/fixtures/env")])).code).toBe(0);
    const untrusted = realpathSync(tempTree());
    const stepLine = `environment ${name}: installing its ~/flake.nix tools into the golden store, before the project's code runs`;

    // first untrusted session: the tools step builds and promotes them, the session itself builds nothing
    const first = await agentenv(["run", "--env", name, untrusted, "--", "hello-env"]);
    expect(first.stdout).toBe("hello-env v1\n");
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(stepLine);
    expect(first.stderr.match(/installing your tools from/g)).toHaveLength(1);
    // the next ones find them in the golden store: no step, no Nix call
    for (let i = 0; i < 2; i++) {
      const next = await agentenv(["run", "--env", name, untrusted, "--", "hello-env"]);
      expect(next.stdout).toBe("hello-env v1\n");
      expect(next.stderr).not.toContain("installing");
    }

    // the project's code rewrites ~/flake.nix: later untrusted sessions build that in their own clone and keep nothing
    const edit = await agentenv(["run", "--env", name, untrusted, "--", "sed", "-i", "s/hello-env v1/hello-env v2/", "/root/flake.nix"]);
    expect(edit.code).toBe(0);
    for (let i = 0; i < 2; i++) {
      const edited = await agentenv(["run", "--env", name, untrusted, "--", "hello-env"]);
      expect(edited.stdout).toBe("hello-env v2\n");
      expect(edited.stderr).toContain(`environment ${name}: its ~/flake.nix changed since a trusted session last saw it`);
      expect(edited.stderr).toContain("installing your tools from ~/flake.nix");
      expect(edited.stderr).not.toContain(stepLine);
    }

    // a trusted session of the environment keeps it as the user's: untrusted sessions then find it cached
    const trusted = realpathSync(tempTree());
    expect((await agentenv(["trust", trusted])).code).toBe(0);
    expect((await agentenv(["run", "--env", name, trusted, "--", "hello-env"])).stdout).toBe("hello-env v2\n");
    const after = await agentenv(["run", "--env", name, untrusted, "--", "hello-env"]);
    expect(after.stdout).toBe("hello-env v2\n");
    expect(after.stderr).not.toContain("installing");
    expect(after.stderr).not.toContain("changed since");
  });

  test("their tools step reads no Nix config from the home (a session could have planted one)", async () => {
    const name = `t${process.pid}-nixconf`;
    envs.push(name);
    const template = tempTree({
      ".config/nix/nix.conf": "post-build-hook = /root/hook.sh\n",
      "hook.sh": "#!/bin/sh\ntouch /root/hooked\n",
      "flake.nix": readFileSync(join(repoRoot, "test/fixtures/env/flake.nix"), "utf8"),
    });
    chmodSync(join(template, "hook.sh"), 0o755);
    const created = await agentenv(["env", "create", name, template]);
    expect(created.stderr).toContain(`environment ${name} created`);
    const run = await agentenv(["run", "--env", name, realpathSync(tempTree()), "--", "sh", "-c", "hello-env; test -e /root/hooked && echo hooked || echo clean"]);
    expect(run.stderr).toContain(`environment ${name}: installing its ~/flake.nix tools into the golden store`);
    expect(run.stdout).toBe("hello-env v1\nclean\n");
  });
});
