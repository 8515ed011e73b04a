import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { realpathSync } from "node:fs";
import { join } from "pathe";
import { agentenv, isolatedHome, tempTree } from "../helpers/cli.ts";
import { derivationExpr, expectNoStackTrace, removeStoreVolume, requireImage } from "../helpers/engine.ts";

/**
 * A session's /nix is hostile input to promotion: what it registered, what it left in
 * its store, what it did to its Nix database. Each attack below runs on both golden-store
 * strategies (the layered one on the host, the volume one through Nix in a helper
 * container); after each, a later session must not see any of it, and its store must
 * verify. Sessions edit their database with bun:sqlite (the image has no sqlite3): the
 * test's own bun is mounted into them.
 */
const nonce = Date.now().toString(36);
const nix32 = "0123456789abcdfghijklmnpqrsvwxyz";
/** a random store path hash part: valid, so only what follows it makes a name invalid */
const hashPart = () => Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => nix32[b % 32]).join("");
const quoted = (words: string[]) => words.map((w) => `'${w.replaceAll("'", `'\\''`)}'`).join(" ");

/** The test's user config plus the mount of this bun at /usr/local/bin/bun. */
const configHome = tempTree({
  "agentenv/config.ts": `import base from ${JSON.stringify(join(isolatedHome, ".config/agentenv/config.ts"))};
export default { ...base, mounts: [...(base.mounts ?? []), { source: ${JSON.stringify(realpathSync(process.execPath))}, target: "/usr/local/bin/bun", readonly: true }] };
`,
});

const dataHome = tempTree({}, "agentenv-data-");

/** Run in a session: edits its Nix database as a hostile session could. */
const forgeScript = `import { Database } from "bun:sqlite";
const db = new Database("/nix/var/nix/db/db.sqlite");
const [mode, ...paths] = process.argv.slice(2);
for (const path of paths) {
  if (mode === "register") db.run("INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?, ?, 1, 8)", [path, "sha256:" + "0".repeat(64)]);
  // leaves the rows of Refs that name it: references to nothing
  else if (mode === "unregister") db.run("DELETE FROM ValidPaths WHERE path = ?", [path]);
}
db.close();
`;

/** A derivation needing only /bin/sh; its builder leaves a child holding the log pipe (the Nix 2.8 race in MACHINE-NOTES). */
function drv(name: string, content = "$name"): string {
  return `derivation { name = "${name}-${nonce}"; system = "x86_64-linux"; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" "echo ${content} > $out; sleep 0.3 &" ]; }`;
}

const strategies: Array<{ name: string; volume: string; clone: Record<string, string> }> = [
  { name: "layered (overlay)", volume: `agentenv-test-trust-${process.pid}`, clone: {} },
  { name: "volume", volume: `agentenv-test-vtrust-${process.pid}`, clone: { AGENTENV_STORE_CLONE: "volume" } },
];

beforeAll(() => requireImage());
afterAll(async () => {
  for (const { volume } of strategies) {
    await removeStoreVolume(volume);
    const sessions = Bun.spawnSync(["podman", "volume", "ls", "--filter", `label=agentenv.store-of=${volume}`, "--format", "{{.Name}}"]);
    for (const name of sessions.stdout.toString().split("\n").filter(Boolean)) Bun.spawnSync(["podman", "volume", "rm", "--force", name]);
  }
});

describe.each(strategies)("promotion into the golden store checks what it publishes: $name", ({ volume, clone }) => {
  // a data dir of its own too: secrets other tests left in the shared one use another key
  const env = { AGENTENV_STORE_VOLUME: volume, XDG_CONFIG_HOME: configHome, XDG_DATA_HOME: dataHome, ...clone };
  /** A session running SCRIPT; its own failure fails the test, with what it said. */
  async function run(script: string, project = tempTree({ "forge.ts": forgeScript })) {
    const result = await agentenv(["run", project, "--", "sh", "-c", script], { env });
    if (result.code !== 0) throw new Error(`the session failed (exit ${result.code}): ${result.stderr}`);
    return result;
  }
  /** In a later session: which of PATHS are valid or present, and whether the whole store verifies. */
  async function later(paths: string[]): Promise<{ present: string[]; verify: string }> {
    const checks = paths.map((p) => `if nix-store --check-validity ${quoted([p])} 2>/dev/null || [ -e ${quoted([p])} ] || [ -L ${quoted([p])} ]; then echo present ${quoted([p])}; fi`);
    const result = await run(`${checks.join("\n")}\nnix-store --verify --check-contents >/tmp/verify 2>&1; echo verify=$?; cat /tmp/verify; ls -A /nix/store | grep -F ${nonce} || true`);
    expect(result.stderr).not.toContain("promoted");
    const present = result.stdout.split("\n").filter((l) => l.startsWith("present ")).map((l) => l.slice("present ".length));
    return { present, verify: result.stdout.slice(result.stdout.indexOf("verify=")) };
  }

  test("content that no longer matches its registered hash is not promoted; honest paths still are", async () => {
    const forged = `/nix/store/${hashPart()}-forged-registered-${nonce}`;
    const script = [
      "set -e",
      `honest=$(nix-build --no-out-link -E '${drv("honest")}')`,
      // built by Nix, then overwritten: its registered hash is the real content's
      `tampered=$(nix-build --no-out-link -E '${drv("tampered")}')`,
      'chmod u+w "$tampered" && echo trojan > "$tampered"',
      // registered by hand with a hash that is not its content's
      `echo real > ${forged}`,
      `printf '%s\\n' ${forged} sha256:${"1".repeat(64)} 5 '' 0 | nix-store --register-validity --hash-given`,
      `nix-store --check-validity "$honest" "$tampered" ${forged}`,
      'echo "$honest" "$tampered"',
    ].join("\n");
    const result = await run(script);
    const [honest, tampered] = result.stdout.trim().split(/\s+/);
    expect(tampered).toContain(`-tampered-${nonce}`);
    const after = await later([honest!, tampered!, forged]);
    expect(after.present).toEqual([honest!]);
    expect(after.verify).toStartWith("verify=0\n");
    expect(after.verify).not.toContain("modified");

    const warning = result.stderr.split("\n").find((l) => l.includes("does not match the hash the session registered")) ?? "";
    expect(warning).toContain(tampered!);
    expect(warning).toContain(forged);
    expect(result.stderr).toMatch(/golden store: promoted \d+ new store paths?/);
    expectNoStackTrace(result.stderr);
  });

  test("invalid store path names in the session's database, and files it never registered, stay out; each is named", async () => {
    const [h1, h2, h3, h4, h5] = [hashPart(), hashPart(), hashPart(), hashPart(), hashPart()];
    const badHash = `eeeeoooouuuutttt${hashPart().slice(16)}`;
    const invalid = [
      "/nix/store/..",
      `/nix/store/${badHash}-bad-hash-${nonce}`,
      `/nix/store/${h1}-.dotted-${nonce}`,
      `/nix/store/${h2}-has space-${nonce}`,
      `/nix/store/${h3}-sub/dir-${nonce}`,
      `/tmp/evil-${nonce}`,
    ];
    const strays = [`/nix/store/${h4}-stray-${nonce}`, `/nix/store/.hidden-${nonce}`, `/nix/store/${h5}-escape-${nonce}`];
    const script = [
      "set -e",
      `honest=$(nix-build --no-out-link -E '${drv("names-honest")}')`,
      // content under each invalid name (the last one where its base name points)
      `echo x > ${quoted([invalid[1]!])}; echo x > ${quoted([invalid[2]!])}; echo x > ${quoted([invalid[3]!])}`,
      `mkdir -p ${quoted([invalid[4]!])} && echo x > ${quoted([`${invalid[4]}/f`])}`,
      `echo x > /nix/store/evil-${nonce}`,
      `mkdir ${strays[0]} && echo x > ${strays[0]}/f && echo x > ${strays[1]} && ln -s /etc ${strays[2]}`,
      `bun /work/forge.ts register ${quoted(invalid)}`,
      'echo "$honest"',
    ].join("\n");
    const result = await run(script);
    const honest = result.stdout.trim().split("\n").pop()!;
    const after = await later([honest, ...invalid.slice(1, 5), `/nix/store/evil-${nonce}`, `/nix/store/${h3}-sub`, ...strays]);
    expect(after.present).toEqual([honest]);
    expect(after.verify).toStartWith("verify=0\n");
    // nothing else of this test in the golden store: the honest path and its .drv
    expect(after.verify.trim().split("\n").filter((l) => l.includes(nonce) && l.includes("names-"))).toHaveLength(2);

    const named = result.stderr.split("\n").find((l) => l.includes("not a valid store path")) ?? "";
    for (const path of invalid) expect(named).toContain(path);
    const stray = result.stderr.split("\n").find((l) => l.includes("not registered in its Nix database")) ?? "";
    for (const path of [...strays, `/nix/store/evil-${nonce}`, `/nix/store/${h3}-sub`]) expect(stray).toContain(path);
    expect(result.stderr).toContain("golden store: promoted 2 new store paths");
    expectNoStackTrace(result.stderr);
  });

  test("a built path is promoted; one referencing a path in no store is not, nor what references it", async () => {
    const script = [
      "set -e",
      `nix-build --no-out-link -E 'let d = ${drv("dep")}; t = ${drv("top", "${d}")}; in [ d t (${drv("user", "${t}")}) (${drv("plain")}) ]' > /tmp/paths`,
      "cat /tmp/paths",
      // the dependency vanishes from the session's store: what references it now references nothing
      'dep=$(head -1 /tmp/paths) && bun /work/forge.ts unregister "$dep" && rm -rf "$dep"',
    ].join("\n");
    const result = await run(script);
    const [dep, top, user, plain] = result.stdout.trim().split("\n");
    expect(plain).toContain(`-plain-${nonce}`);
    const after = await later([dep!, top!, user!, plain!]);
    expect(after.present).toEqual([plain!]);
    expect(after.verify).toStartWith("verify=0\n");
    const content = await run(`cat ${plain}`);
    expect(content.stdout).toBe(`plain-${nonce}\n`);

    const warning = result.stderr.split("\n").find((l) => l.includes("neither promoted nor in the golden store")) ?? "";
    expect(warning).toContain(top!);
    expect(warning).toContain(user!);
    expectNoStackTrace(result.stderr);
  });

  test("a database that is a symlink out of the session's tree is never read through", async () => {
    // the link's target is a path of this host (the project's), not of the container
    const project = tempTree();
    const script = [
      "set -e",
      `honest=$(nix-build --no-out-link -E '${drv("linked")}')`,
      "cp /nix/var/nix/db/db.sqlite /work/planted.sqlite",
      `rm /nix/var/nix/db/db.sqlite && ln -s ${join(project, "planted.sqlite")} /nix/var/nix/db/db.sqlite`,
      'echo "$honest"',
    ].join("\n");
    const planted = Bun.file(join(project, "planted.sqlite"));
    const result = await run(script, project);
    const honest = result.stdout.trim();
    expect(result.stderr).not.toContain("promoted 1");
    // inside the volume strategy's helper container the link leads nowhere: no database, nothing to say
    if (!clone.AGENTENV_STORE_CLONE) expect(result.stderr).toContain("db.sqlite is not a regular file: nothing promoted");
    expectNoStackTrace(result.stderr);
    expect((await later([honest])).present).toEqual([]);
    expect(await planted.exists()).toBe(true);
  });
});
