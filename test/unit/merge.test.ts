import { describe, expect, test } from "bun:test";
import { chmodSync, lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { applyChanges, conflictStamp, manifestOf, matches, mergeManifests, neededFrom, type Manifest } from "../../plugins/env/merge.ts";
import { tempTree } from "../helpers/cli.ts";

const date = new Date("2026-12-05T13:15:00.123Z");
const f = (hash: string, mode = 0o644) => ({ hash, mode });
const merge = (base: Manifest, local: Manifest, other: Manifest) => mergeManifests(base, local, other, { otherName: "box", date });

describe("three-way merge of manifests", () => {
  test("nothing changed: nothing to do, the result is the base", () => {
    const base = { "a.txt": f("1"), "d/b": f("2", 0o755) };
    const plan = merge(base, { ...base }, { ...base });
    expect(plan).toEqual({ local: [], other: [], conflicts: [], result: base });
  });

  test("a change on one side only goes to the other: added, changed, mode changed, deleted", () => {
    const base = { keep: f("k"), edit: f("1"), chmod: f("c"), gone: f("g") };
    const local = { keep: f("k"), edit: f("2"), chmod: f("c", 0o755), new: f("n") };
    const plan = merge(base, local, base);
    expect(plan.local).toEqual([]);
    expect(plan.other).toEqual([
      { op: "write", path: "chmod", from: "chmod", entry: f("c", 0o755) },
      { op: "write", path: "edit", from: "edit", entry: f("2") },
      { op: "delete", path: "gone" },
      { op: "write", path: "new", from: "new", entry: f("n") },
    ]);
    expect(plan.conflicts).toEqual([]);
    expect(plan.result).toEqual(local);
    // the mirror image
    const back = merge(base, base, local);
    expect(back.other).toEqual([]);
    expect(back.local).toEqual(plan.other);
    expect(back.result).toEqual(local);
  });

  test("the same change on both sides is no conflict", () => {
    const plan = merge({ a: f("1") }, { a: f("2"), b: f("3") }, { a: f("2"), b: f("3") });
    expect(plan.local).toEqual([]);
    expect(plan.other).toEqual([]);
    expect(plan.conflicts).toEqual([]);
    expect(plan.result).toEqual({ a: f("2"), b: f("3") });
  });

  test("changed on both sides: local's at PATH on both, the other's beside it as PATH.agentenv-conflict-HOST-DATE on both", () => {
    const plan = merge({ a: f("1") }, { a: f("L") }, { a: f("O") });
    const copy = "a.agentenv-conflict-box-20261205-131500Z";
    expect(plan.conflicts).toEqual([{ path: "a", kind: "both", copy }]);
    expect(plan.local).toEqual([{ op: "write", path: copy, from: "a", entry: f("O") }]);
    // the other side moves its own aside before local's takes PATH
    expect(plan.other).toEqual([
      { op: "rename", path: "a", to: copy },
      { op: "write", path: "a", from: "a", entry: f("L") },
    ]);
    expect(plan.result).toEqual({ a: f("L"), [copy]: f("O") });
    // both added the same path differently: a conflict too (no base)
    expect(merge({}, { n: f("x") }, { n: f("y") }).conflicts).toEqual([{ path: "n", kind: "both", copy: "n.agentenv-conflict-box-20261205-131500Z" }]);
  });

  test("deleted on one side, changed on the other: the changed file is kept and listed", () => {
    const plan = merge({ a: f("1"), b: f("1") }, { b: f("2") }, { a: f("2") });
    expect(plan.conflicts).toEqual([
      { path: "a", kind: "deleted-local" },
      { path: "b", kind: "deleted-other" },
    ]);
    expect(plan.local).toEqual([{ op: "write", path: "a", from: "a", entry: f("2") }]);
    expect(plan.other).toEqual([{ op: "write", path: "b", from: "b", entry: f("2") }]);
    expect(plan.result).toEqual({ a: f("2"), b: f("2") });
    // deleted on both: gone, nothing to do
    expect(merge({ a: f("1") }, {}, {})).toEqual({ local: [], other: [], conflicts: [], result: {} });
  });

  test("a conflict copy never takes a name either side has", () => {
    const copy = "a.agentenv-conflict-box-20261205-131500Z";
    const plan = merge({ a: f("1") }, { a: f("L"), [copy]: f("x") }, { a: f("O"), [copy]: f("x") });
    expect(plan.conflicts[0]!.copy).toBe(`${copy}-2`);
    expect(plan.result[copy]).toEqual(f("x"));
    // the name is made path-safe
    expect(mergeManifests({}, { a: f("1") }, { a: f("2") }, { otherName: "../evil host", date }).conflicts[0]!.copy).toBe("a.agentenv-conflict-.._evil_host-20261205-131500Z");
  });

  test("hostile paths are refused", () => {
    for (const bad of ["../x", "/etc/passwd", "a/../../b", "a//b", "", "a/./b", "x\0y"]) {
      expect(() => merge({}, { [bad]: f("1") }, {})).toThrow(/not a plain relative path/);
    }
  });

  test("conflictStamp is sortable and colon-free", () => {
    expect(conflictStamp(date)).toBe("20261205-131500Z");
  });
});

describe("applying a merge to directories", () => {
  test("both sides end identical, every version kept, links never followed", () => {
    const base = tempTree({ "same.txt": "same", "edit.txt": "base", "both.txt": "base", "gone.txt": "bye" });
    const local = tempTree({ "same.txt": "same", "edit.txt": "local edit", "both.txt": "local", "gone.txt": "bye", "new/deep.txt": "new" });
    const other = tempTree({ "same.txt": "same", "edit.txt": "base", "both.txt": "other", "theirs.sh": "#!/bin/sh\n" });
    chmodSync(join(other, "theirs.sh"), 0o755);
    symlinkSync("same.txt", join(local, "link"));
    const plan = mergeManifests(manifestOf(base), manifestOf(local), manifestOf(other), { otherName: "box", date });
    expect(neededFrom(plan.other).sort()).toEqual(["both.txt", "edit.txt", "link", "new/deep.txt"]);
    // each side applies its part, the files it needs taken from the other as it was
    const localBefore = tempTree();
    Bun.spawnSync(["cp", "-a", `${local}/.`, localBefore]);
    applyChanges(local, plan.local, other);
    applyChanges(other, plan.other, localBefore);
    expect(manifestOf(local)).toEqual(manifestOf(other));
    expect(manifestOf(local)).toEqual(plan.result);
    expect(matches(local, plan.result)).toBe(true);
    expect(readFileSync(join(other, "both.txt"), "utf8")).toBe("local");
    const copy = join(local, "both.txt.agentenv-conflict-box-20261205-131500Z");
    expect(readFileSync(copy, "utf8")).toBe("other");
    expect(readFileSync(join(other, "edit.txt"), "utf8")).toBe("local edit");
    expect(readFileSync(join(other, "new/deep.txt"), "utf8")).toBe("new");
    expect(lstatSync(join(local, "theirs.sh")).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(other, "link"))).toBe("same.txt");
    expect(lstatSync(join(other, "gone.txt"), { throwIfNoEntry: false })).toBeUndefined();
  });

  test("a write under a link is refused; a file that changed since its manifest is refused", () => {
    const outside = tempTree();
    const root = tempTree();
    symlinkSync(outside, join(root, "escape"));
    const incoming = tempTree({ "escape/x": "payload" });
    const entry = manifestOf(incoming)["escape/x"]!;
    expect(() => applyChanges(root, [{ op: "write", path: "escape/x", from: "escape/x", entry }], incoming)).toThrow(/not a directory/);
    expect(manifestOf(outside)).toEqual({});
    mkdirSync(join(root, "d"));
    writeFileSync(join(incoming, "y"), "changed after");
    expect(() => applyChanges(root, [{ op: "write", path: "d/y", from: "y", entry: f("0".repeat(64)) }], incoming)).toThrow(/changed while/);
    expect(manifestOf(root)).toEqual({ escape: manifestOf(root).escape! });
  });
});
