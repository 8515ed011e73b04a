import { readdirSync } from "node:fs";
import { isAbsolute, join, normalize, relative } from "pathe";
import { UserError, messageOf } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { kindOf, readHomeFile } from "../env/home.ts";
import { checkRoots } from "./roots.ts";

/**
 * Agent threads as folders: `exec --worktree BRANCH` makes a git worktree of the project
 * at ~/Code/<project>/<branch> in the environment's home (image/exec.sh). The project
 * itself is a root, mounted at its own path, so a worktree's `.git` file names a
 * directory the host can read too: listing them needs no container.
 */
export interface Worktree {
  project: string;
  branch: string;
  /** its path inside the container */
  path: string;
  /** the main repository on the host (and at the same path inside) */
  repo: string;
  /** HEAD: a branch, or a commit when detached */
  head: string;
}

const codeDir = "Code";

/** Directories under HOME/Code holding a `.git` file, up to DEPTH levels below each project; links are not followed. */
function worktreeDirs(dir: string, depth: number): string[] {
  const found: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return found;
  }
  for (const entry of entries) {
    const path = join(dir, entry);
    if (kindOf(path) !== "dir") continue;
    if (kindOf(join(path, ".git")) === "file") found.push(path);
    else if (depth > 1) found.push(...worktreeDirs(path, depth - 1));
  }
  return found;
}

/**
 * Where REPO (named by a worktree's `.git` file in the home: hostile) keeps its record of
 * the worktree at PATH in the container, checked before anything mounts REPO: it must pass
 * as a root (not a system path, nor agentenv's own files, not reached through a link), and
 * its own record of that worktree (`.git/worktrees/ID/gitdir`, outside the home) must name
 * it. A session can write its home, but not a repository it was never given. Throws
 * UserError.
 */
export function worktreeRecord(repo: string, path: string): string {
  const refuse = (why: string) => new UserError(`the worktree ${path} names ${repo} as its repository, which ${why}`, "agentenv leaves it alone; remove the directory in a session if it is not yours");
  if (!isAbsolute(repo) || normalize(repo) !== repo) throw refuse("is not an absolute path");
  let root: string | undefined;
  try {
    root = checkRoots([repo])[0];
  } catch (error) {
    throw refuse(`could not be a root (${messageOf(error)})`);
  }
  if (root !== repo) throw refuse(`is reached through a link (to ${root})`);
  const records = join(repo, ".git", "worktrees");
  if (kindOf(join(repo, ".git")) !== "dir" || kindOf(records) !== "dir") throw refuse("has no worktrees");
  const record = readdirSync(records)
    .map((id) => join(records, id))
    .find((dir) => kindOf(dir) === "dir" && readHomeFile(dir, "gitdir", 4096)?.trim() === `${path}/.git`);
  if (!record) throw refuse("does not know that worktree");
  return record;
}

/** The worktrees in a home whose files are at HOME_DIR on this host: those whose repository knows them (see worktreeRecord). */
export function listWorktrees(homeDir: string): Worktree[] {
  const rows: Worktree[] = [];
  const code = join(homeDir, codeDir);
  if (kindOf(code) !== "dir") return rows;
  for (const project of readdirSync(code).sort()) {
    if (kindOf(join(code, project)) !== "dir") continue;
    for (const dir of worktreeDirs(join(code, project), 6).sort()) {
      const branch = relative(join(code, project), dir);
      const path = join(containerHome, codeDir, project, branch);
      const gitdir = /^gitdir: (.*)$/m.exec(readHomeFile(dir, ".git", 4096) ?? "")?.[1]?.trim() ?? "";
      const marker = gitdir.lastIndexOf("/.git/worktrees/");
      if (marker <= 0) continue;
      let record: string;
      const repo = gitdir.slice(0, marker);
      try {
        record = worktreeRecord(repo, path);
      } catch {
        continue;
      }
      const text = readHomeFile(record, "HEAD", 4096)?.trim();
      const head = !text ? "?" : text.startsWith("ref: refs/heads/") ? text.slice("ref: refs/heads/".length) : text.slice(0, 12);
      rows.push({ project, branch, path, repo, head });
    }
  }
  return rows;
}

/**
 * Removes a worktree with git, in a helper container that has the home and the
 * repository (at its own path): the host cannot, as the worktree's path is the
 * container's. The branch stays.
 */
export async function removeWorktree(ctx: BaseContext, homeVolume: string, worktree: Worktree, force: boolean): Promise<void> {
  const { helperPlan, shellJoin } = await import("../../core/plan.ts");
  // checked again where it is mounted
  worktreeRecord(worktree.repo, worktree.path);
  const script = [
    "set -e",
    shellJoin(["git", "-C", worktree.repo, "worktree", "unlock", worktree.path]) + " 2>/dev/null || true",
    shellJoin(["git", "-C", worktree.repo, "worktree", "remove", ...(force ? ["--force"] : []), worktree.path]),
  ].join("\n");
  const plan = helperPlan({
    image: ctx.config.image,
    purpose: "worktree-rm",
    mounts: [
      { type: "volume", source: homeVolume, target: containerHome },
      { type: "bind", source: worktree.repo, target: worktree.repo },
    ],
    script,
  });
  const result = await ctx.runtime.capture(plan);
  if (result.code !== 0) {
    const why = result.stderr.trim().split("\n").pop() ?? `exit ${result.code}`;
    throw new UserError(`could not remove ${worktree.path}: ${why}`, force ? undefined : "it has changes: commit them, or pass --force");
  }
}
