import { describe, expect, test } from "bun:test";
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { droppedWarnings, expectedNar, isStorePath, screen, type Registration } from "../../plugins/golden/nixdb.ts";
import { narOf } from "../../plugins/golden/promote.ts";

/** What promotion lets a session publish (plugins/golden/nixdb.ts) and how it measures a path on the host. */

const h = (c: string) => c.repeat(32);
const sha = `sha256:${"ab".repeat(32)}`;
function reg(path: string, references: Array<string | undefined> = [], extra: Partial<Registration> = {}): Registration {
  return { path, hash: sha, narSize: 8, deriver: null, ca: null, references, ...extra };
}

describe("isStorePath", () => {
  test("takes Nix's own rule: 32 base-32 characters, a dash, a name of allowed characters not starting with a dot", () => {
    for (const ok of [`/nix/store/${h("a")}-hello-2.12`, `/nix/store/${h("0")}-x`, `/nix/store/${h("z")}-a+b=c?d_e.drv`, `/nix/store/${h("v")}-${"n".repeat(211)}`]) {
      expect(isStorePath(ok)).toBe(true);
    }
    for (const bad of [
      "/nix/store/..",
      "/nix/store/.foo",
      `/nix/store/${h("e")}-x`, // e, o, u, t are not in Nix's base 32
      `/nix/store/${h("o")}-x`,
      `/nix/store/${h("t")}-x`,
      `/nix/store/${h("A")}-x`,
      `/nix/store/${h("a")}-`,
      `/nix/store/${h("a")}-.hidden`,
      `/nix/store/${h("a")}-a/b`,
      `/nix/store/${h("a")}-a b`,
      `/nix/store/${h("a")}-a\nb`,
      `/nix/store/${h("a")}-${"n".repeat(212)}`,
      `/nix/store/${h("a").slice(1)}-x`,
      `/tmp/${h("a")}-x`,
      `/nix/store/${h("a")}x`,
      42,
    ]) {
      expect(isStorePath(bad)).toBe(false);
    }
  });
});

describe("screen", () => {
  const [a, b, c, d, g] = ["a", "b", "c", "d", "g"].map((x) => `/nix/store/${h(x)}-${x}`) as [string, string, string, string, string];
  const inGolden = (path: string) => path === g;

  test("keeps what is well formed and closed over the golden store, references first", () => {
    const { kept, dropped } = screen([reg(c, [b, g, c]), reg(b, [a]), reg(a)], inGolden);
    expect(kept.map((r) => r.path)).toEqual([a, b, c]);
    expect(dropped.size).toBe(0);
  });

  test("drops invalid names, malformed registrations, failures, and whatever references them", () => {
    const bad = "/nix/store/..";
    const regs = [
      reg(bad),
      reg(a, [bad]),
      reg(b, [], { hash: "sha256:00" }),
      reg(c, [b]),
      reg(d, [], { deriver: "/etc/passwd" }),
      reg(`/nix/store/${h("f")}-f`, [], { ca: "fixed:r:sha256:x y" }),
      reg(`/nix/store/${h("i")}-i`, [], { narSize: null }),
    ];
    const { kept, dropped } = screen(regs, inGolden);
    expect(kept).toEqual([]);
    expect(Object.fromEntries(dropped)).toEqual({
      [bad]: "name",
      [a]: "reference",
      [b]: "registration",
      [c]: "reference",
      [d]: "registration",
      [`/nix/store/${h("f")}-f`]: "registration",
      [`/nix/store/${h("i")}-i`]: "registration",
    });
  });

  test("a reference to no registered path, or outside both sets, drops the path and its referrers", () => {
    const { kept, dropped } = screen([reg(a, [undefined]), reg(b, [a]), reg(c, [`/nix/store/${h("x")}-gone`]), reg(d)], inGolden);
    expect(kept.map((r) => r.path)).toEqual([d]);
    expect(Object.fromEntries(dropped)).toEqual({ [a]: "reference", [b]: "reference", [c]: "reference" });
  });

  test("FAILED (measured by the caller) drops too; a path registered twice or a reference cycle is malformed", () => {
    const failed = new Map([[a, "content" as const]]);
    const { kept, dropped } = screen([reg(a), reg(b, [a]), reg(c), reg(c), reg(d, [g])], inGolden, failed);
    expect(kept.map((r) => r.path)).toEqual([d]);
    expect(Object.fromEntries(dropped)).toEqual({ [a]: "content", [b]: "reference", [c]: "registration" });
    const cycle = screen([reg(a, [b]), reg(b, [a]), reg(c, [a]), reg(d)], inGolden);
    expect(cycle.kept.map((r) => r.path)).toEqual([d]);
    expect([...cycle.dropped.keys()].sort()).toEqual([a, b, c]);
  });

  test("outputs come before derivations where references allow, so copies batch", () => {
    const drv = `/nix/store/${h("d")}-x.drv`;
    const src = `/nix/store/${h("s")}-builder.sh`;
    const { kept } = screen([reg(drv, [src]), reg(a), reg(src), reg(b, [a])], inGolden);
    expect(kept.map((r) => r.path)).toEqual([a, src, b, drv]);
  });

  test("warnings: one line per reason, names made printable", () => {
    const lines = droppedWarnings(new Map([["/nix/store/\u001b[31mred", "name"], [a, "content"], [b, "content"]]), ["/nix/store/.hidden"]);
    expect(lines).toEqual([
      "not promoted (not a valid store path): /nix/store/\\u{1b}[31mred",
      `not promoted (content does not match the hash the session registered): ${a} ${b}`,
      "not promoted (in the session's store but not registered in its Nix database): /nix/store/.hidden",
    ]);
  });
});

describe("narOf", () => {
  function tree(): string {
    const root = mkdtempSync(join(tmpdir(), "agentenv-nar-"));
    mkdirSync(join(root, "dir/empty"), { recursive: true });
    writeFileSync(join(root, "dir/plain"), "hello\n");
    writeFileSync(join(root, "dir/seven b"), "1234567");
    writeFileSync(join(root, "dir/eight"), "12345678");
    writeFileSync(join(root, "empty"), "");
    writeFileSync(join(root, "run"), "#!/bin/sh\necho hi\n");
    chmodSync(join(root, "run"), 0o4755);
    writeFileSync(join(root, "Zed"), "upper case sorts first");
    writeFileSync(join(root, "é"), "not ascii");
    symlinkSync("/etc", join(root, "escape"));
    symlinkSync("dir/plain", join(root, "inside"));
    symlinkSync("nowhere", join(root, "dangling"));
    chmodSync(join(root, "dir"), 0o777);
    return root;
  }

  /** What Nix itself says: the NAR `nix-store --dump` writes, hashed and counted. */
  function nixNar(path: string): string {
    const dump = Bun.spawnSync(["nix-store", "--dump", path]);
    expect(dump.exitCode).toBe(0);
    return `${new Bun.CryptoHasher("sha256").update(dump.stdout).digest("hex")} ${dump.stdout.length}`;
  }

  test("is Nix's NAR of a tree (files, executables, symlinks never followed, byte-ordered names), a single file and a symlink", () => {
    const root = tree();
    expect(narOf(root)).toBe(nixNar(root));
    expect(narOf(join(root, "dir/seven b"))).toBe(nixNar(join(root, "dir/seven b")));
    expect(narOf(join(root, "escape"))).toBe(nixNar(join(root, "escape")));
  });

  test("canonicalising clears setuid and write bits, and leaves the hash alone", () => {
    const root = tree();
    const before = narOf(root);
    expect(narOf(root, true)).toBe(before);
    expect(lstatSync(join(root, "run")).mode & 0o7777).toBe(0o555);
    expect(lstatSync(join(root, "dir/plain")).mode & 0o7777).toBe(0o444);
    expect(lstatSync(join(root, "dir")).mode & 0o7777).toBe(0o555);
    expect(lstatSync("/etc").mode & 0o7777).toBe(0o755); // through no symlink
    chmodSync(join(root, "dir"), 0o755); // so the temp dir can be cleaned
  });

  test("expectedNar reads the hash as Nix records it, base 16 or base 32", () => {
    const hex = "8af8c35d6c8c0f276ca8d3fc81cbd5100e673dd89f843626915c1349d5ffee71";
    expect(expectedNar(reg(`/nix/store/${h("a")}-a`, [], { hash: `sha256:${hex}`, narSize: 456 }))).toBe(`${hex} 456`);
    expect(expectedNar(reg(`/nix/store/${h("a")}-a`, [], { hash: "sha256:0wgfzzalj4swj4k3d14zv0ynf3hhsp5q3z6km1n2f3wcdifw7y4a", narSize: 456 }))).toBe(`${hex} 456`);
  });
});
