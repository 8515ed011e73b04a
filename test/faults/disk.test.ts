import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace, requireImage } from "../helpers/engine.ts";
import { expectNothingHalfMade, fixture, homeHash, removeVolumes, run, volumeDir, volumeExists } from "./harness.ts";


/** each test's own timeout (and its hooks'): run after disk.test.ts, these files' tests were seen with Bun's 5 s default instead of the preloaded one */
const slow = 180_000;
/**
 * A full disk: agentenv's state and data dirs and the export target on a small tmpfs
 * (mounted here: the suite runs as root). Each command that cannot write fails with one
 * line and keeps the old data.
 */
const prefix = `d${process.pid}`;
const mnt = tempTree({}, "agentenv-fulldisk-");
const env = { XDG_STATE_HOME: join(mnt, "state"), XDG_DATA_HOME: join(mnt, "data") };
const filler = join(mnt, "filler");

function fill(): void {
  Bun.spawnSync(["dd", "if=/dev/zero", `of=${filler}`, "bs=64k"], { stderr: "ignore" });
}

function expectOneLine(result: { code: number | null; stderr: string }, message: string): void {
  expect(result.code).toBe(1);
  expect(result.stderr).toContain(message);
  expect(result.stderr.trim().split("\n").filter((line) => line.startsWith("agentenv:"))).toHaveLength(1);
  expectNoStackTrace(result.stderr);
}

beforeAll(async () => {
  await requireImage();
  if (process.getuid?.() !== 0) throw new Error("the full-disk tests mount a tmpfs: run them as root");
  const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", mnt], { stderr: "pipe" });
  if (mount.exitCode !== 0) throw new Error(`cannot mount a tmpfs at ${mnt}: ${mount.stderr.toString().trim()}`);
  mkdirSync(join(mnt, "out"));
}, slow);

afterAll(() => {
  removeVolumes(prefix);
  Bun.spawnSync(["umount", mnt]);
  rmSync(mnt, { recursive: true, force: true });
});

describe("a full disk", () => {
  test("export, env create and secret set fail in one line and keep the old data; all work again once there is room", async () => {
    const name = `${prefix}-home`;
    expect((await run(["env", "create", name, fixture], { env })).code).toBe(0);
    // an archive bigger than the whole tmpfs: random bytes do not compress
    writeFileSync(join(volumeDir(name), "big.bin"), randomBytes(3 << 20));
    const hash = homeHash(name);
    expect((await run(["secret", "set", "KEPT"], { env, stdin: "one\n" })).code).toBe(0);
    const out = join(mnt, "out", "home.tar.gz");
    writeFileSync(out, "the old archive\n");

    // the archive does not fit: one line, the old one stays, no part of the new one
    const tooBig = await run(["env", "export", name, "-o", out], { env });
    expectOneLine(tooBig, `agentenv: cannot write ${out}: no space left on its disk`);
    expect(readFileSync(out, "utf8")).toBe("the old archive\n");
    expect(readdirSync(join(mnt, "out"))).toEqual(["home.tar.gz"]);

    // nothing left at all
    fill();
    const record = readFileSync(join(mnt, "state", "agentenv", "envs", `podman-${name}.json`), "utf8");
    const created = await run(["env", "create", `${prefix}-new`, fixture], { env });
    expectOneLine(created, "no space left on its disk");
    expect(volumeExists(`${prefix}-new`)).toBe(false);
    expectNothingHalfMade(prefix, { state: env.XDG_STATE_HOME, when: "env create on a full disk" });
    expect(readFileSync(join(mnt, "state", "agentenv", "envs", `podman-${name}.json`), "utf8")).toBe(record);

    const secret = await run(["secret", "set", "LOST"], { env, stdin: "two\n" });
    expectOneLine(secret, "no space left on its disk");
    const secrets = JSON.parse((await run(["secret", "list", "--json"], { env })).stdout);
    expect(secrets.map((s: { name: string }) => s.name)).toEqual(["KEPT"]);

    const exported = await run(["env", "export", name, "-o", out], { env });
    expectOneLine(exported, "no space left on its disk");
    expect(readFileSync(out, "utf8")).toBe("the old archive\n");
    expect(homeHash(name)).toBe(hash);

    // room again: everything works, nothing of the failures is in the way
    rmSync(filler);
    rmSync(join(volumeDir(name), "big.bin"));
    expect((await run(["env", "create", `${prefix}-new`, fixture], { env })).code).toBe(0);
    expect((await run(["secret", "set", "LOST"], { env, stdin: "two\n" })).code).toBe(0);
    expect((await run(["env", "export", name, "-o", out], { env })).code).toBe(0);
    expect(Bun.spawnSync(["tar", "-tzf", out]).exitCode).toBe(0);
    expect(readdirSync(join(mnt, "out"))).toEqual(["home.tar.gz"]);
    expectNothingHalfMade(prefix, { state: env.XDG_STATE_HOME, when: "with room again" });
    expect(existsSync(filler)).toBe(false);
  }, slow);
});
