import { defineCommand } from "citty";
import { checkUsernsMode } from "../config.ts";
import { keepIdRefusal } from "../runtime/oci.ts";
import { prepareSession, runPrepared } from "../session.ts";
import { shellJoin, type SessionMode } from "../plan.ts";
import { envFlag, logFor, sessionArgs, storeFlag } from "./_shared.ts";

interface SessionArgs {
  dir?: string;
  runtime?: string;
  host?: string;
  image?: string;
  /** citty reads `--no-store` as `store: false` */
  store?: string | boolean;
  "no-store"?: boolean;
  userns?: string;
  /** citty reads `--no-env` as `env: false` */
  env?: string | boolean;
  "no-env"?: boolean;
  profile?: string;
  strict?: boolean;
  "dry-run"?: boolean;
  json?: boolean;
  verbose?: boolean;
  quiet?: boolean;
}

async function session(mode: SessionMode, args: SessionArgs, command: string[]): Promise<number> {
  const log = logFor(args);
  const userns = checkUsernsMode(args.userns, "--userns");
  const prepared = await prepareSession({
    dir: args.dir ?? ".",
    mode,
    command,
    runtime: args.runtime,
    host: args.host,
    remote: true,
    image: args.image,
    store: storeFlag(args),
    userns,
    env: envFlag(args),
    profile: args.profile,
    strict: args.strict,
    log,
  });
  const { plan, runtime } = prepared.ctx;
  if (args.json) {
    const plugins = prepared.plugins.map((p) => p.name);
    console.log(JSON.stringify({ runtime: runtime.name, plugins, plan, argv: runtime.argv(plan) }, null, 2));
    return 0;
  }
  if (args["dry-run"]) {
    for (const argv of runtime.argv(plan)) console.log(shellJoin(argv));
    return 0;
  }
  // before anything starts (store clone, handoff): the engine would refuse it only after
  // (a remote Podman alone knows whether it is rootless: its `diagnose` says so)
  const refusal = plan.userns === "keep-id" && !prepared.ctx.config.host ? keepIdRefusal(runtime.name) : undefined;
  if (refusal) throw refusal;
  return runPrepared(prepared);
}

const dirArg = {
  dir: { type: "positional", required: false, default: ".", valueHint: "dir", description: "Project directory, mounted at /work" },
} as const;

export const shell = defineCommand({
  meta: {
    name: "agentenv",
    description: "Open a shell in DIR: `nix develop` when DIR has a flake.nix, else a login shell",
  },
  args: { ...dirArg, ...sessionArgs },
  run: ({ args }) => session("shell", args, []),
});

export const run = defineCommand({
  meta: {
    name: "run",
    description: "Run a command in DIR's session, non-interactively, and exit with its code: run [DIR] -- CMD…",
  },
  args: { ...dirArg, ...sessionArgs },
  run: ({ args, data }) => session("run", args, (data as { command: string[] }).command),
});
