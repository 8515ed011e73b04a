import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "pathe";
import { UserError } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";

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

/** Directories under HOME/Code holding a `.git` file, up to DEPTH levels below each project. */
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
    try {
      if (!statSync(path).isDirectory()) continue;
    } catch {
      continue;
    }
    const git = join(path, ".git");
    if (existsSync(git) && statSync(git).isFile()) found.push(path);
    else if (depth > 1) found.push(...worktreeDirs(path, depth - 1));
  }
  return found;
}

/** The worktrees in a home whose files are at HOME_DIR on this host. */
export function listWorktrees(homeDir: string): Worktree[] {
  const rows: Worktree[] = [];
  const code = join(homeDir, codeDir);
  for (const project of existsSync(code) ? readdirSync(code).sort() : []) {
    for (const dir of worktreeDirs(join(code, project), 6).sort()) {
      const gitdir = /^gitdir: (.*)$/m.exec(readFileSync(join(dir, ".git"), "utf8"))?.[1]?.trim();
      const marker = gitdir?.lastIndexOf("/.git/worktrees/") ?? -1;
      if (!gitdir || marker < 0) continue;
      let head = "?";
      try {
        const text = readFileSync(join(gitdir, "HEAD"), "utf8").trim();
        head = text.startsWith("ref: refs/heads/") ? text.slice("ref: refs/heads/".length) : text.slice(0, 12);
      } catch {
        // the repository is not on this host (or not at that path any more)
      }
      const branch = relative(join(code, project), dir);
      rows.push({ project, branch, path: join(containerHome, codeDir, project, branch), repo: gitdir.slice(0, marker), head });
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
