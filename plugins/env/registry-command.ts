import { defineCommand } from "citty";
import { globalArgs, runtimeArgs } from "../../core/commands/_shared.ts";
import { UserError } from "../../core/errors.ts";
import { formatBytes } from "../../core/log.ts";
import { commandContext } from "../../core/session.ts";
import { checkName } from "./home.ts";
import { pullEnv, pushEnv, type TransferResult } from "./registry.ts";

const transferArgs = {
  "no-tools": { type: "boolean", description: "Push: leave out the closure of the environment's tools; pull: do not import it into the golden store" },
  "tls-verify": { type: "string", valueHint: "true|false", description: "--tls-verify=false: accept the registry's certificate unchecked, and plain HTTP (only for a registry of your own)" },
  json: { type: "boolean", description: "Print the result as JSON: reference, digest, size, layers" },
  ...runtimeArgs,
  ...globalArgs,
} as const;

function tlsVerify(value: string | boolean | undefined): boolean | undefined {
  if (value === undefined || value === true || value === "" || value === "true") return undefined;
  if (value === false || value === "false") return false;
  throw new UserError(`--tls-verify=${value}: give true or false`);
}

/** citty reads --no-tools as tools: false */
function withTools(args: { "no-tools"?: boolean; tools?: unknown }): boolean {
  return !(args["no-tools"] || args.tools === false);
}

function print(result: TransferResult, json: boolean | undefined): void {
  if (json) console.log(JSON.stringify(result, null, 2));
}

export const push = defineCommand({
  meta: { name: "push", description: "Push an environment to an OCI registry as an artifact (settings and home; unchanged parts are not uploaded again)" },
  args: {
    name: { type: "positional", required: true, valueHint: "name", description: "Environment name" },
    ref: { type: "positional", required: true, valueHint: "registry/repo[:tag]", description: "Where: REGISTRY/REPOSITORY[:TAG] (default tag: latest)" },
    force: { type: "boolean", alias: "f", description: "Replace the tag even when it points at an artifact this environment did not come from" },
    ...transferArgs,
  },
  async run({ args }) {
    const name = checkName(args.name);
    const options = { tlsVerify: tlsVerify(args["tls-verify"]), force: Boolean(args.force), tools: withTools(args) };
    const ctx = await commandContext(args);
    const result = await pushEnv(ctx, name, args.ref, options);
    ctx.log.success(`environment ${name} pushed to ${result.ref}@${result.digest} (${formatBytes(result.size)}, ${formatBytes(result.transferred)} sent)`);
    print(result, args.json);
    return 0;
  },
});

export const pull = defineCommand({
  meta: { name: "pull", description: "Create an environment from an artifact made by env push (REGISTRY/REPO[:TAG|@DIGEST])" },
  args: {
    ref: { type: "positional", required: true, valueHint: "registry/repo[:tag|@digest]", description: "What: REGISTRY/REPOSITORY[:TAG] or REGISTRY/REPOSITORY@sha256:…" },
    name: { type: "positional", required: false, valueHint: "name", description: "The environment (default: the repository's last part); an existing one is updated only when it came from a registry and has no changes since its last pull or push" },
    force: { type: "boolean", alias: "f", description: "Update an existing environment even while sessions use it" },
    merge: { type: "boolean", description: "An existing environment with changes since its last pull or push: merge three-way (a file changed on both sides keeps yours, theirs beside it)" },
    ...transferArgs,
  },
  async run({ args }) {
    const options = { tlsVerify: tlsVerify(args["tls-verify"]), force: Boolean(args.force), tools: withTools(args), merge: Boolean(args.merge) };
    const ctx = await commandContext(args);
    const result = await pullEnv(ctx, args.ref, args.name, options);
    ctx.log.success(`environment ${result.name} pulled from ${result.ref} (${result.digest}, ${formatBytes(result.size)}) — use it: agentenv --env ${result.name} [DIR]`);
    print(result, args.json);
    return 0;
  },
});
