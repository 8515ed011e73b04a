import { UserError } from "../../core/errors.ts";
import type { ExecOptions } from "../../core/runtime/types.ts";

/** Whether agentenv-exec enters a flake's dev shell (see image/exec.sh). */
export type NixDevelop = "auto" | "always" | "never";
export const nixDevelopModes: readonly NixDevelop[] = ["auto", "always", "never"];

/** How one command joins the environment container; the same for `agentenv exec` and a wrapper. */
export interface ExecRequest {
  nixDevelop: NixDevelop;
  /** run in the worktree of this branch at ~/Code/<project>/<branch> */
  worktree?: string;
  /** plain variables for the command (not secrets: they are on the engine's command line) */
  set: Record<string, string>;
  /** extra arguments for the engine's `exec` */
  runArgs: string[];
}

/** What runs in the container: agentenv-exec, then the command (none: the shell). */
export const inContainer = (command: readonly string[]) => ["agentenv-exec", ...command];

export function execOptions(request: ExecRequest, workdir: string, tty: boolean): ExecOptions {
  const env: Record<string, string> = { AGENTENV_NIX_DEVELOP: request.nixDevelop };
  if (request.worktree) env.AGENTENV_WORKTREE = request.worktree;
  return { workdir, env: { ...env, ...request.set }, interactive: true, tty, extraArgs: request.runArgs };
}

export function checkNixDevelop(value: string | undefined, fallback: NixDevelop): NixDevelop {
  if (value === undefined || value === "") return fallback;
  if (!(nixDevelopModes as readonly string[]).includes(value)) throw new UserError(`--nix-develop ${value}: use auto, always or never`);
  return value as NixDevelop;
}

/** `--set K=V`, each a plain environment variable. */
export function parseSets(values: readonly string[]): Record<string, string> {
  const set: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf("=");
    const key = eq > 0 ? value.slice(0, eq) : "";
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new UserError(`--set ${value}: expected NAME=VALUE`, "secrets belong in `agentenv secret set`, not on a command line");
    set[key] = value.slice(eq + 1);
  }
  return set;
}

/** A branch name git accepts (git check-ref-format --branch repeats this inside). */
export function checkBranch(branch: string): string {
  const bad =
    !/^[A-Za-z0-9._/+-]+$/.test(branch) ||
    branch.startsWith("-") ||
    branch.startsWith("/") ||
    branch.endsWith("/") ||
    branch.endsWith(".") ||
    branch.endsWith(".lock") ||
    branch.includes("..") ||
    branch.includes("//") ||
    branch.split("/").some((part) => part.startsWith("."));
  if (bad) throw new UserError(`--worktree ${branch}: not a branch name git accepts`);
  return branch;
}
