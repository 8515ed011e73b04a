import { defineCommand, type ArgsDef } from "citty";
import { envFlag, globalArgs, logFor, runtimeArgs, sessionArgs, storeFlag } from "../../core/commands/_shared.ts";
import { UserError } from "../../core/errors.ts";
import { shellJoin, type Plan } from "../../core/plan.ts";
import type { Runtime } from "../../core/runtime/types.ts";
import { prepareSession, runPrepared } from "../../core/session.ts";
import { appleRefusal, checkTarget, sidecarName, sidecarPlan } from "./plan.ts";
import { runChecked } from "./run.ts";

const attachArgs = {
  // shown in help; the CLI hands TARGET and what follows over as words (parseWords)
  container: { type: "positional", required: false, valueHint: "container", description: "A running container's name or id; then [-- CMD…] (no CMD: a shell)" },
  ...runtimeArgs,
  env: sessionArgs.env,
  "no-env": sessionArgs["no-env"],
  image: sessionArgs.image,
  store: {
    type: "string",
    valueHint: "ephemeral|none|host",
    description: "Our /nix in the view: a clone of the golden store, read-only (ephemeral, the default; golden means the same here), the image's own (none), or this host's store (host)",
  },
  "no-store": sessionArgs["no-store"],
  "dry-run": sessionArgs["dry-run"],
  json: sessionArgs.json,
  ...globalArgs,
} as const satisfies ArgsDef;

interface AttachFlags {
  runtime?: string;
  env?: string | boolean;
  "no-env"?: boolean;
  image?: string;
  store?: string | boolean;
  "no-store"?: boolean;
  "dry-run"?: boolean;
  json?: boolean;
  verbose?: boolean;
  quiet?: boolean;
}

const valueFlags = new Set(["--runtime", "--env", "--image", "--store"]);
const booleanFlags: Record<string, keyof AttachFlags> = {
  "--no-env": "no-env",
  "--no-store": "no-store",
  "--dry-run": "dry-run",
  "--dryRun": "dry-run",
  "--json": "json",
  "--verbose": "verbose",
  "-v": "verbose",
  "--quiet": "quiet",
  "-q": "quiet",
};

/**
 * `attach [FLAGS] TARGET [FLAGS] [--] [CMD…]`: the CLI hands over every word from TARGET
 * on; flags right after TARGET are attach's own, up to `--` or the first other word
 * (CMD's, flags and all).
 */
export function parseWords(words: readonly string[], flags: AttachFlags): { target: string; command: string[]; flags: AttachFlags } {
  const [target, ...rest] = words;
  if (target === undefined || target === "--") throw new UserError("attach needs a container: agentenv attach CONTAINER [-- CMD…]", undefined, 2);
  const merged: AttachFlags = { ...flags };
  let i = 0;
  for (; i < rest.length; i++) {
    const word = rest[i]!;
    if (word === "--") {
      i++;
      break;
    }
    if (!word.startsWith("-")) break;
    const [flag, inline] = word.includes("=") ? [word.slice(0, word.indexOf("=")), word.slice(word.indexOf("=") + 1)] : [word, undefined];
    if (valueFlags.has(flag)) {
      const value = inline ?? rest[++i];
      if (value === undefined || value === "--") throw new UserError(`${flag} needs a value`, undefined, 2);
      (merged as Record<string, string>)[flag.slice(2)] = value;
    } else if (booleanFlags[flag] && inline === undefined) {
      (merged as Record<string, boolean>)[booleanFlags[flag]] = true;
    } else {
      throw new UserError(`unknown option ${flag} for attach`, "a command's own options go after `--`: agentenv attach CONTAINER -- CMD…", 2);
    }
  }
  return { target: checkTarget(target), command: rest.slice(i), flags: merged };
}

/** Our /nix in the view: a throwaway clone unless asked otherwise (the view mounts it read-only: nothing to promote). */
function attachStore(flags: AttachFlags): string {
  const store = storeFlag(flags);
  return store === undefined || store === "golden" ? "ephemeral" : store;
}

/** Why TARGET cannot be attached to, in one line, or undefined when it can. */
async function targetRefusal(runtime: Runtime, target: string): Promise<UserError | undefined> {
  const result = await runtime.call(["container", "inspect", "--format", "{{.State.Running}}\t{{.HostConfig.PidMode}}", target]);
  if (result.code !== 0) {
    if (/no such (container|object)|no container with/i.test(result.stderr)) {
      return new UserError(`no container named ${target} in ${runtime.name}`, `see \`${runtime.name} ps\``);
    }
    const version = await runtime.version();
    if (!version) return new UserError(`${runtime.name} does not answer: ${result.stderr.trim().split("\n").pop()}`, "check `agentenv doctor`");
    return new UserError(`${runtime.name} could not inspect ${target}: ${result.stderr.trim().split("\n").pop()}`);
  }
  const [running, pidMode] = result.stdout.trim().split("\t");
  if (running !== "true") return new UserError(`container ${target} is not running`, `start it first (${runtime.name} start ${target})`);
  if (pidMode === "host") {
    return new UserError(`container ${target} shares the host's PID namespace (--pid host): attach would see the host, not the container`);
  }
  return undefined;
}

export async function runAttach(words: readonly string[], cliFlags: AttachFlags): Promise<number> {
  const { target, command, flags } = parseWords(words, cliFlags);
  const log = logFor(flags);
  // before anything starts (config may still choose it: then after the plan, still before any run)
  if ((flags.runtime ?? process.env.AGENTENV_RUNTIME) === "container") throw appleRefusal();
  const stdinIsTTY = Boolean(process.stdin.isTTY);
  const prepared = await prepareSession({
    // no project: nothing of the current directory is mounted and no project config
    // applies; "/" is an untrusted project, so no secrets and nothing kept in the store
    dir: "/",
    trustNotice: false,
    mode: "run",
    command: [],
    name: sidecarName(target),
    runtime: flags.runtime,
    image: flags.image,
    store: attachStore(flags),
    env: envFlag(flags),
    stdinIsTTY,
    log,
  });
  const { runtime } = prepared.ctx;
  if (runtime.name === "container") throw appleRefusal();
  const plan = sidecarPlan(prepared.ctx.plan, target, command, stdinIsTTY);
  prepared.ctx.plan = plan;
  if (flags.json) {
    console.log(JSON.stringify({ runtime: runtime.name, target, plan, argv: runtime.argv(plan) }, null, 2));
    return 0;
  }
  if (flags["dry-run"]) {
    for (const argv of runtime.argv(plan)) console.log(shellJoin(argv));
    return 0;
  }
  // the target is asked about only when the sidecar fails (./run.ts): no engine call more on the way
  const checked: Runtime = Object.create(runtime, { run: { value: (p: Plan) => runChecked(runtime, p, () => targetRefusal(runtime, target)) } });
  return runPrepared({ ...prepared, ctx: { ...prepared.ctx, runtime: checked } });
}

export const attach = Object.assign(
  defineCommand({
    meta: {
      name: "attach",
      description: "Your environment layered onto a running container, leaving no trace: attach CONTAINER [-- CMD…] (no CMD: a shell)",
    },
    args: attachArgs,
    run: ({ args, data }) => runAttach((data as { command: string[] }).command, args as AttachFlags),
  }),
  { takesCommand: "plain" as const },
);
