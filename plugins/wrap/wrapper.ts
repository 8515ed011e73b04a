import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "pathe";
import { UserError } from "../../core/errors.ts";
import { agentenvDir } from "../../core/paths.ts";
import { shellJoin, shellQuote } from "../../core/plan.ts";
import type { Runtime } from "../../core/runtime/types.ts";
import { writeAtomic } from "../../core/volumes.ts";
import { rootMarker, type EnvContainer } from "./container.ts";
import { execOptions, inContainer, type ExecRequest } from "./exec.ts";

/**
 * A wrapper: a small static shell script named like the command it wraps, so `NAME args…`
 * typed on the host runs `NAME args…` in the environment container, in the same
 * directory. It checks the directory against its roots, then — when the container is
 * alive and serves that root (files agentenv keeps in the container's handoff directory,
 * tested with shell builtins and one `flock`) — execs the engine's `exec` itself; any
 * other case goes through `agentenv exec`, which starts the container.
 */
export interface WrapperSpec extends ExecRequest {
  name: string;
  env?: string;
  /** the container is on this remote host (`wrap --host`): its roots are its own, set by `up --host` */
  host?: string;
  roots: string[];
  runtime: string;
  /** where the script is */
  path: string;
}

/** The line a wrapper carries its spec on: how `wrap --list` knows its own. */
const specPrefix = "# agentenv-wrapper: ";


export interface RenderInputs {
  spec: WrapperSpec;
  container: EnvContainer;
  runtime: Runtime;
  /** absolute path of the engine CLI: a wrapper must not depend on the caller's PATH for it */
  engine: string;
  agentenv: string[];
  /** absolute path of util-linux flock; without it the wrapper always asks agentenv */
  flock?: string;
}

const pwd = "@AGENTENV_PWD@";

/** The engine `exec` line of the fast path, from the runtime's own argv (one source of truth). */
function fastLine(inputs: RenderInputs, tty: boolean): string {
  const { spec, container, runtime, engine } = inputs;
  const argv = runtime.execArgv(container.name, execOptions(spec, pwd, tty), inContainer([spec.name]));
  argv[0] = engine;
  return `exec ${shellJoin(argv).replace(pwd, '"$PWD"')} "$@"`;
}

/** The `agentenv exec …` line a wrapper runs when it does not go straight to the engine. */
function execLine(spec: WrapperSpec, agentenv: string[]): string[] {
  const where = spec.host ? ["--host", spec.host] : ["--runtime", spec.runtime, "--roots", spec.roots.join(",")];
  const line = [...agentenv, "exec", ...(spec.env ? ["--env", spec.env] : ["--no-env"]), ...where, "--nix-develop", spec.nixDevelop];
  if (spec.worktree) line.push("--worktree", spec.worktree);
  for (const [key, value] of Object.entries(spec.set)) line.push("--set", `${key}=${value}`);
  for (const arg of spec.runArgs) line.push(`--run-arg=${arg}`);
  line.push("--", spec.name);
  return line;
}

/**
 * A wrapper for a container on a remote host: always `agentenv exec --host`, whose hot path
 * is one round trip while this machine's record says the container is up there. It runs in
 * the current directory when that is inside a root shared from here, else in the first root.
 */
function renderRemoteWrapper(spec: WrapperSpec, agentenv: string[]): string {
  const where = spec.env ? `environment ${spec.env}'s container` : "the container with no environment";
  return `#!/bin/sh
# ${spec.name}: runs \`${spec.name}\` in ${where} on host ${spec.host} (agentenv up --host ${spec.host} starts it).
# Written by \`agentenv wrap --host\`; \`agentenv unwrap ${spec.name}\` removes it, \`agentenv wrap --list\` lists them.
${specPrefix}${JSON.stringify(spec)}
exec ${shellJoin(execLine(spec, agentenv))} "$@"
`;
}

export function renderWrapper(inputs: RenderInputs): string {
  const { spec, container, agentenv, flock } = inputs;
  if (spec.host) return renderRemoteWrapper(spec, agentenv);
  const h = container.handoff;
  const slow = execLine(spec, agentenv);
  const cases = spec.roots.map((root) => {
    // the root, or any root of the container that holds it
    const ancestors: string[] = [];
    for (let d = root; d !== "/"; d = d.slice(0, d.lastIndexOf("/")) || "/") ancestors.push(`[ -e ${shellQuote(rootMarker(h, d))} ]`);
    return `${shellQuote(`${root}/`)}*) { ${ancestors.join(" || ")}; } && fast=1 ;;`;
  });
  const alive = flock ? `[ -e "$h/up" ] && ! ${shellQuote(flock)} -n "$h/up" true` : "false";
  const where = spec.env ? `environment ${spec.env}` : "a container with no environment";
  return `#!/bin/sh
# ${spec.name}: runs \`${spec.name}\` in ${where} (agentenv). Written by
# \`agentenv wrap\`; \`agentenv unwrap ${spec.name}\` removes it, \`agentenv wrap --list\` lists them.
${specPrefix}${JSON.stringify(spec)}
# the physical directory (symlinks resolved), as the roots are
cd -P . 2>/dev/null || { echo "${spec.name}: cannot read the current directory" >&2; exit 126; }
h=${shellQuote(h)}
fast=
case $PWD/ in
${cases.join("\n")}
*)
	echo ${shellQuote(`${spec.name}: `)}"$PWD"${shellQuote(` is outside the roots of this wrapper: ${spec.roots.join(", ")} (agentenv wrap ${spec.name} --roots … changes them)`)} >&2
	exit 126
	;;
esac
# alive: agentenv-keepalive holds a lock on $h/up for as long as the container runs
if [ -n "$fast" ] && ${alive}; then
	if [ -t 0 ] && [ -t 1 ]; then
		${fastLine(inputs, true)}
	fi
	${fastLine(inputs, false)}
fi
exec ${shellJoin(slow)} "$@"
`;
}

export function readSpec(path: string): WrapperSpec | undefined {
  try {
    const line = readFileSync(path, "utf8").split("\n", 4).find((l) => l.startsWith(specPrefix));
    return line ? (JSON.parse(line.slice(specPrefix.length)) as WrapperSpec) : undefined;
  } catch {
    return undefined;
  }
}

/** Where wrappers were written: `wrap --list` and `unwrap` look there. */
function registryFile(): string {
  return join(agentenvDir("state"), "wrappers.json");
}

function readRegistry(): string[] {
  try {
    return (JSON.parse(readFileSync(registryFile(), "utf8")) as string[]).filter((p) => typeof p === "string");
  } catch {
    return [];
  }
}

function writeRegistry(paths: string[]): void {
  mkdirSync(agentenvDir("state"), { recursive: true });
  writeAtomic(registryFile(), `${JSON.stringify([...new Set(paths)].sort(), null, 2)}\n`);
}

/** Writes the wrapper; a file there that is not one of ours is never replaced. */
export function writeWrapper(path: string, script: string, force: boolean): void {
  if (existsSync(path) && !readSpec(path) && !force) {
    throw new UserError(`${path} exists and is not an agentenv wrapper`, "choose another name or --bin-dir, or pass --force to replace it");
  }
  mkdirSync(join(path, ".."), { recursive: true });
  writeAtomic(path, script, 0o755);
  chmodSync(path, 0o755);
  writeRegistry([...readRegistry(), path]);
}

/** Every wrapper still on disk. */
export function listWrappers(): WrapperSpec[] {
  const specs: WrapperSpec[] = [];
  for (const path of readRegistry()) {
    const spec = readSpec(path);
    if (spec) specs.push({ ...spec, path });
  }
  return specs;
}

/** Removes the wrappers called NAME (in BIN_DIR when given); returns their paths. */
export function removeWrappers(name: string, binDir?: string): string[] {
  const registry = readRegistry();
  const matches = registry.filter((path) => basename(path) === name && (binDir === undefined || path === join(binDir, name)));
  const removed = matches.filter((path) => readSpec(path) !== undefined);
  if (!removed.length) {
    const unregistered = binDir ? join(binDir, name) : undefined;
    if (unregistered && readSpec(unregistered)) removed.push(unregistered);
    else throw new UserError(`no agentenv wrapper named ${name}${binDir ? ` in ${binDir}` : ""}`, "see agentenv wrap --list");
  }
  for (const path of removed) rmSync(path, { force: true });
  writeRegistry(registry.filter((path) => !removed.includes(path) && existsSync(path)));
  return removed;
}
