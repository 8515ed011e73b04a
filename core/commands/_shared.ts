import type { ArgsDef } from "citty";
import { UserError } from "../errors.ts";
import { createLog, type Log } from "../log.ts";

/** Flags every command takes. */
export const globalArgs = {
  verbose: { type: "boolean", alias: "v", description: "Show engine commands and more detail" },
  quiet: { type: "boolean", alias: "q", description: "Print only errors" },
} as const satisfies ArgsDef;

export const runtimeArgs = {
  runtime: {
    type: "string",
    valueHint: "podman|docker|container",
    description: "Container engine (default: AGENTENV_RUNTIME, then config, then auto-detect)",
  },
} as const satisfies ArgsDef;

/** `--host NAME`: the session (or command) runs on a remote machine's Podman, over SSH. */
export const hostArgs = {
  host: { type: "string", valueHint: "name", description: "Run on this remote host's Podman over SSH (see `agentenv host`; default: AGENTENV_HOST, then config host)" },
} as const satisfies ArgsDef;

export const sessionArgs = {
  ...runtimeArgs,
  ...hostArgs,
  env: { type: "string", valueHint: "name", description: "Environment whose home is HOME (default: config env.default; see `agentenv env`)" },
  "no-env": { type: "boolean", description: "No environment, even if config names one: HOME is the image's, thrown away" },
  strict: { type: "boolean", description: "Do not open the session when the environment's setup (dotfiles, ~/flake.nix tools) fails" },
  profile: { type: "string", valueHint: "dir", description: "Legacy: mount DIR live under HOME and run its activate.sh first" },
  image: { type: "string", valueHint: "ref", description: "Image to boot (default: localhost/agentenv:latest)" },
  store: {
    type: "string",
    valueHint: "golden|ephemeral|none|host",
    description: "/nix is a clone of the golden store whose new paths are kept (golden, default), a clone thrown away (ephemeral), the image's own (none), or this host's store through its nix-daemon (host)",
  },
  "no-store": { type: "boolean", description: "Same as --store none" },
  nix: { type: "string", valueHint: "host|golden", description: "host: use this host's nix-daemon and /nix/store (same as --store host)" },
  userns: {
    type: "string",
    valueHint: "root|keep-id",
    description: "Who the session runs as: root (default), or keep-id: your own uid and gid, HOME still /root (rootless Podman only)",
  },
  "dry-run": { type: "boolean", description: "Print the engine command line(s) and run nothing" },
  json: { type: "boolean", description: "Print the resolved session plan as JSON and run nothing" },
  ...globalArgs,
} as const satisfies ArgsDef;

/**
 * The store mode the session flags ask for, or undefined (config decides). `--nix host`
 * is `--store host`; `--nix golden` asks for the golden store (`--store golden`), which
 * `--store ephemeral` — a golden store clone too — may refine. citty reads `--no-store`
 * as `store: false`.
 */
export function storeFlag(args: { store?: string | boolean; "no-store"?: boolean; nix?: string }): string | undefined {
  const noStore = args["no-store"] || args.store === false;
  const store = noStore ? "none" : typeof args.store === "string" ? args.store : undefined;
  if (args.nix === undefined) return store;
  const nix = args.nix;
  if (nix !== "host" && nix !== "golden") {
    throw new UserError(`unknown --nix value "${nix}"`, "use --nix host (this host's nix-daemon and /nix/store) or --nix golden (the golden store, the default)");
  }
  if (store === undefined) return nix;
  const compatible = nix === "host" ? store === "host" : store === "golden" || store === "ephemeral";
  if (!compatible) {
    throw new UserError(`--nix ${nix} conflicts with ${noStore ? "--no-store" : `--store ${store}`}`, "pass only one of them");
  }
  return store;
}

/** The environment the flags ask for: a name, "" for `--no-env` (citty reads it as `env: false`), or undefined (config decides). */
export function envFlag(args: { env?: string | boolean; "no-env"?: boolean }): string | undefined {
  return args["no-env"] || args.env === false ? "" : typeof args.env === "string" ? args.env : undefined;
}

export function logFor(args: { verbose?: boolean; quiet?: boolean }): Log {
  return createLog({ verbose: args.verbose, quiet: args.quiet });
}

/**
 * Every value of a flag given more than once (`--keep a --keep b`, `--keep=c`): citty
 * keeps only the last.
 */
export function repeatedFlag(rawArgs: readonly string[], flag: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const word = rawArgs[i]!;
    if (word === "--") break;
    if (word === flag && i + 1 < rawArgs.length) values.push(rawArgs[++i]!);
    else if (word.startsWith(`${flag}=`)) values.push(word.slice(flag.length + 1));
  }
  return values;
}
