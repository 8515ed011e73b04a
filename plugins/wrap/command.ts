import { realpathSync } from "node:fs";
import { homedir } from "node:os";
import { defineCommand, type ArgsDef } from "citty";
import { join, resolve } from "pathe";
import { envFlag, globalArgs, hostArgs, logFor, repeatedFlag, runtimeArgs, sessionArgs, storeFlag } from "../../core/commands/_shared.ts";
import { envNamePattern } from "../../core/config.ts";
import { findHost, parseRemoteDir } from "../../core/hosts.ts";
import { UserError } from "../../core/errors.ts";
import { shellJoin } from "../../core/plan.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { loadContext } from "../../core/session.ts";
import { endContainer, ensureUp, envContainer, isServing, readUpState, rootsLabel, withContainerLock, type EnvContainer, type UpState } from "./container.ts";
import { checkBranch, checkNixDevelop, execOptions, inContainer, parseSets, type ExecRequest } from "./exec.ts";
import { checkInside, hostRoots, wantedRoots } from "./roots.ts";

/** What `up` and `exec` take to choose and start the container. */
const containerArgs = {
  ...runtimeArgs,
  ...hostArgs,
  env: sessionArgs.env,
  "no-env": sessionArgs["no-env"],
  image: sessionArgs.image,
  store: sessionArgs.store,
  "no-store": sessionArgs["no-store"],
  nix: sessionArgs.nix,
  strict: sessionArgs.strict,
  roots: {
    type: "string",
    valueHint: "dir,…",
    description: "Host directories the container sees, each at its own path (default: config `roots`, else the current project); with --host, directories there: HOST:/path",
  },
  ...globalArgs,
} as const satisfies ArgsDef;

interface ContainerFlags {
  runtime?: string;
  host?: string;
  env?: string | boolean;
  "no-env"?: boolean;
  image?: string;
  store?: string | boolean;
  "no-store"?: boolean;
  nix?: string;
  strict?: boolean;
  roots?: string;
  verbose?: boolean;
  quiet?: boolean;
}

function configFlags(args: ContainerFlags) {
  return { runtime: args.runtime, host: args.host ?? impliedHost(args.roots), image: args.image, store: storeFlag(args), env: envFlag(args), strict: args.strict };
}

/** `--roots box:/srv/app` names its host, as `agentenv box:/srv/app` does: --host is implied. */
function impliedHost(roots: string | undefined): string | undefined {
  const first = roots?.split(",").find(Boolean);
  return first ? parseRemoteDir(first, (name) => findHost(name) !== undefined)?.host : undefined;
}

/**
 * What `ensureUp` starts a container with. On a host (`--host`) the session is that host's
 * (prepareSession: `remote`), its roots directories there.
 */
function upFlags(ctx: BaseContext, args: ContainerFlags, shared: string[] = []): UpFlags {
  return { ...configFlags(args), ...(ctx.config.host ? { host: ctx.config.host, remote: true, shared } : { host: undefined }) };
}
type UpFlags = ReturnType<typeof configFlags> & { remote?: boolean; shared?: string[] };

/** `--host H` after CMD… words: what the hint of a command on a host says. */
function hostWords(ctx: BaseContext): string {
  return ctx.config.host ? ` --host ${ctx.config.host}` : "";
}

/** The physical current directory: what roots are compared with, and the path inside. */
function currentDir(): string {
  return realpathSync(process.cwd());
}

/** The config for CWD; on a host (`--host`, config `host`, AGENTENV_HOST) no project config here is the container's. */
async function context(args: ContainerFlags, cwd: string): Promise<{ ctx: BaseContext; c: EnvContainer }> {
  const flags = configFlags(args);
  const ctx = await loadContext({ project: flags.host ? undefined : cwd, flags, log: logFor(args), remote: true });
  return { ctx, c: envContainer(ctx, ctx.config.env.name) };
}

function uptime(started: string): string {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(started)) / 1000));
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 90) return `${seconds}s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)}m`;
  if (seconds < 48 * 3600) return `${Math.round(seconds / 360) / 10}h`;
  return `${Math.round(seconds / 8640) / 10}d`;
}

export const up = defineCommand({
  meta: { name: "up", description: "Start (or find) the environment's long-running container, with the roots mounted at their own paths" },
  args: { ...containerArgs, json: { type: "boolean", description: "Print the container's state as JSON" } },
  async run({ args }) {
    const cwd = currentDir();
    const { ctx, c } = await context(args, cwd);
    const { roots, shared } = ctx.config.host ? needRoots(ctx.config.host, args.roots) : { roots: wantedRoots(args.roots, ctx.config.roots, cwd), shared: [] };
    const { state, started } = await ensureUp(ctx, c, { roots, flags: upFlags(ctx, args, shared), quiet: args.quiet || args.json });
    if (args.json) console.log(JSON.stringify(publicState(state, "running", ctx.config.host), null, 2));
    else ctx.log.success(`${c.name} is ${started ? "up" : "already up"}${ctx.config.host ? ` on ${ctx.config.host}` : ""} — roots ${state.roots.join(", ")}; agentenv exec${hostWords(ctx)}${c.env ? ` --env ${c.env}` : ""} -- CMD runs in it`);
    return 0;
  },
});

function publicState(state: UpState, status: string, host?: string) {
  return { name: state.name, env: state.env ?? null, runtime: state.runtime, ...(host ? { host } : {}), status, roots: state.roots, store: state.store, started: state.started || null };
}

/** `up --host H`: its roots, given with --roots: directories on H (H:/path) and on this machine (live-shared there). */
function needRoots(host: string, flag: string | undefined): { roots: string[]; shared: string[] } {
  const roots = hostRoots(flag, host);
  if (!roots) throw new UserError(`an up container on ${host} needs its roots named with --roots: directories there (${host}:/path) or here (live-shared)`, `agentenv up --host ${host} --roots ${host}:/srv/app`);
  return roots;
}

/** Where `exec --host` runs: the current directory when it is inside a root live-shared from here, else the first root. */
function workdirThere(state: UpState, cwd: string): string | undefined {
  const shared = rootsLabel({ "agentenv.roots": state.plan?.labels["agentenv.shared"] ?? "[]" });
  return shared.some((root) => state.roots.includes(root) && (cwd === root || cwd.startsWith(`${root}/`))) ? cwd : state.roots[0];
}

export const exec = Object.assign(
  defineCommand({
    meta: {
      name: "exec",
      description: "Run a command in the environment's container, in the current directory (started first when needed): exec [--] CMD…",
    },
    args: {
      ...containerArgs,
      worktree: { type: "string", valueHint: "branch", description: "Run in a git worktree of BRANCH at ~/Code/<project>/<branch> in the home (made on first use)" },
      "nix-develop": { type: "string", valueHint: "auto|always|never", description: "Run inside the nearest flake.nix's dev shell (default: config autoNixDevelop → auto, else never)" },
      set: { type: "string", valueHint: "K=V", description: "A variable for the command (repeatable; not for secrets)" },
      "run-arg": { type: "string", valueHint: "arg", description: "An extra argument for the engine's exec (repeatable)" },
      "dry-run": { type: "boolean", description: "Print the engine command line and run nothing" },
    },
    async run({ args, rawArgs, data }) {
      const command = (data as { command: string[] }).command;
      const cwd = currentDir();
      const { ctx, c } = await context(args, cwd);
      const request: ExecRequest = {
        nixDevelop: checkNixDevelop(args["nix-develop"], ctx.config.autoNixDevelop ? "auto" : "never"),
        worktree: args.worktree !== undefined ? checkBranch(args.worktree) : undefined,
        set: parseSets(repeatedFlag(rawArgs, "--set")),
        runArgs: repeatedFlag(rawArgs, "--run-arg"),
      };
      if (ctx.config.host) return execThere(ctx, c, args, request, command, cwd);
      // before any engine call: the directory must be one this command may use
      const roots = wantedRoots(args.roots, ctx.config.roots, cwd);
      checkInside(cwd, roots, args.roots !== undefined ? "given with --roots" : "of config `roots`", "cd into one of them, or pass --roots");
      const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
      const options = execOptions(request, cwd, tty);
      const argv = ctx.runtime.execArgv(c.name, options, inContainer(command));
      if (args["dry-run"]) {
        console.log(shellJoin(argv));
        return 0;
      }
      if (!isServing(c, cwd)) await startFor(ctx, c, cwd, roots, args);
      ctx.log.debug(`$ ${shellJoin(argv)}`);
      const asked = Date.now();
      const code = await ctx.runtime.exec(c.name, options, inContainer(command));
      if ((code === 125 || code === 255) && (await engineRefused(ctx, c, asked))) {
        await startFor(ctx, c, cwd, roots, args);
        return ctx.runtime.exec(c.name, options, inContainer(command));
      }
      return code;
    },
  }),
  { takesCommand: "plain" as const },
);

/**
 * `exec --host H`: the container on H, joined with H's engine over the shared connection,
 * in the current directory when it is inside a root shared from here, else in its first
 * root (a directory here is no path there). Started first when `--roots` names its roots
 * (autoStart); else it must be running.
 */
async function execThere(ctx: BaseContext, c: EnvContainer, args: ContainerFlags & { "dry-run"?: boolean }, request: ExecRequest, command: string[], cwd: string): Promise<number> {
  const host = ctx.config.host!;
  const wanted = hostRoots(args.roots, host);
  const roots = wanted?.roots;
  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const upHint = `agentenv up --host ${host}${c.env ? ` --env ${c.env}` : ""} --roots ${host}:/path`;
  if (args["dry-run"]) {
    const known = readUpState(c);
    const workdir = known ? workdirThere(known, cwd) : roots?.[0];
    if (!workdir) throw new UserError(`${c.name} is not up on ${host} (as far as this machine knows): its first root is where the command would run`, upHint);
    console.log(shellJoin(ctx.runtime.execArgv(c.name, execOptions(request, workdir, tty), inContainer(command))));
    return 0;
  }
  const start = Boolean(roots && ctx.config.autoStart);
  const known = start ? undefined : readUpState(c);
  const knownWorkdir = known && workdirThere(known, cwd);
  if (knownWorkdir) {
    // this machine's record says it is up there: straight in, one round trip (the hot path);
    // an engine refusal is looked into afterwards, and nothing is ever run twice
    const options = execOptions(request, knownWorkdir, tty);
    ctx.log.debug(`$ ${shellJoin(ctx.runtime.execArgv(c.name, options, inContainer(command)))}`);
    const code = await ctx.runtime.exec(c.name, options, inContainer(command));
    if (code === 125 && (await ctx.runtime.containerStatus(c.name)) !== "running") throw new UserError(`${c.name} is not running on ${host}`, upHint);
    return code;
  }
  if (!start && (await ctx.runtime.containerStatus(c.name)) !== "running") {
    throw new UserError(`${c.name} is not running on ${host}${roots ? " (autoStart is off)" : ""}`, roots ? `agentenv up --host ${host}${c.env ? ` --env ${c.env}` : ""} --roots ${args.roots}` : upHint);
  }
  const { state } = await ensureUp(ctx, c, { roots: roots ?? [], flags: upFlags(ctx, args, wanted?.shared), quiet: args.quiet });
  const workdir = workdirThere(state, cwd);
  if (!workdir) throw new UserError(`${c.name} on ${host} has no roots that this machine can read`, `agentenv down --host ${host}${c.env ? ` --env ${c.env}` : ""}, then up again`);
  const options = execOptions(request, workdir, tty);
  ctx.log.debug(`$ ${shellJoin(ctx.runtime.execArgv(c.name, options, inContainer(command)))}`);
  const asked = Date.now();
  const code = await ctx.runtime.exec(c.name, options, inContainer(command));
  if (start && code === 125 && (await engineRefused(ctx, c, asked))) {
    await ensureUp(ctx, c, { roots: roots!, flags: upFlags(ctx, args, wanted?.shared), quiet: args.quiet });
    return ctx.runtime.exec(c.name, options, inContainer(command));
  }
  return code;
}

/**
 * Whether an exec that ended with the engine's own failure code (125, 255) never ran the
 * command: the engine's record must show the container stopped before the exec was
 * asked for. The code alone proves nothing — the command may exit 255 itself (ssh does)
 * and the container stop meanwhile — and a command must never run twice. A container
 * that is gone, or one that stopped after ASKED, may have run it: no retry, say so.
 */
async function engineRefused(ctx: BaseContext, c: EnvContainer, asked: number): Promise<boolean> {
  const info = await ctx.runtime.inspectContainer(c.name);
  if (info?.running) return false;
  if (info?.finishedAt !== undefined && info.finishedAt < asked) return true;
  ctx.log.warn(`${c.name} ${info ? "stopped" : "was removed"} while the command ran, or just before: it is not run again (run it again yourself if it did not run)`);
  return false;
}

/** The container is not (known to be) alive and serving CWD: start it, or say why not. */
async function startFor(ctx: BaseContext, c: EnvContainer, cwd: string, roots: string[], args: ContainerFlags): Promise<void> {
  if (!ctx.config.autoStart && (await ctx.runtime.containerStatus(c.name)) !== "running") {
    throw new UserError(`${c.name} is not running (autoStart is off)`, `agentenv up${c.env ? ` --env ${c.env}` : ""}`);
  }
  const { state } = await ensureUp(ctx, c, { roots, flags: upFlags(ctx, args), quiet: args.quiet });
  checkInside(cwd, state.roots, `of the running ${c.name}`, `agentenv down${c.env ? ` --env ${c.env}` : ""}, then up with the roots you need`);
}

export const down = defineCommand({
  meta: { name: "down", description: "Stop and remove the environment's container; its new store paths are promoted" },
  args: {
    ...runtimeArgs,
    ...hostArgs,
    env: { type: "string", valueHint: "name", description: "The environment whose container to stop (default: config env.default)" },
    "no-env": { type: "boolean", description: "The container with no environment (agentenv-up)" },
    all: { type: "boolean", description: "Every environment container" },
    ...globalArgs,
  },
  async run({ args }) {
    const cwd = currentDir();
    const ctx = await loadContext({ project: args.host ? undefined : cwd, flags: { runtime: args.runtime, host: args.host, env: envFlag(args) }, log: logFor(args), remote: true });
    const on = ctx.config.host ? ` on ${ctx.config.host}` : "";
    const targets = args.all ? (await listContainers(ctx)).map((row) => envContainer(ctx, row.env ?? "")) : [envContainer(ctx, ctx.config.env.name)];
    for (const c of targets) {
      await withContainerLock(c, async () => {
        if ((await ctx.runtime.containerStatus(c.name)) === "absent" && !readUpState(c)) {
          if (!args.all) ctx.log.info(`${c.name} is not up${on}`);
          return;
        }
        ctx.log.start(`stopping ${c.name}${on}…`);
        await endContainer(ctx, c);
        ctx.log.success(`${c.name} is down${on}`);
      });
    }
    return 0;
  },
});

interface ContainerRow {
  name: string;
  env: string | null;
  status: "running" | "stopped";
  roots: string[];
  started: string | null;
  uptime: string | null;
}

/**
 * Environment containers, by their labels (the engine lists and inspects them). Labels
 * are what anyone with that engine (on a host, whatever runs there) could have set: a
 * container whose name is not the one agentenv gives its environment is left out, and
 * what reaches the terminal or a path here is checked.
 */
async function listContainers(ctx: BaseContext): Promise<ContainerRow[]> {
  const containers = await ctx.runtime.listContainers("agentenv.session=up");
  return containers.flatMap(({ name, running, labels }) => {
    const env = labels["agentenv.env"] || null;
    if (env !== null && !envNamePattern.test(env)) return [];
    if (name !== (env ? `agentenv-up-${env}` : "agentenv-up")) return [];
    const label = labels["agentenv.started"];
    const started = label && /^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(label) ? label : null;
    return [
      {
        name,
        env,
        status: running ? ("running" as const) : ("stopped" as const),
        roots: rootsLabel(labels).filter((root) => root.startsWith("/") && !/[\0-\x1f\x7f]/.test(root)),
        started,
        uptime: running && started ? uptime(started) : null,
      },
    ];
  });
}

export const ps = defineCommand({
  meta: { name: "ps", description: "List environment containers: environment, status, uptime, roots" },
  args: { ...runtimeArgs, ...hostArgs, json: { type: "boolean", description: "Print as JSON" }, ...globalArgs },
  async run({ args }) {
    const ctx = await loadContext({ project: args.host ? undefined : currentDir(), flags: { runtime: args.runtime, host: args.host }, log: logFor(args), remote: true });
    const rows = await listContainers(ctx);
    if (args.json) {
      console.log(JSON.stringify(rows, null, 2));
      return 0;
    }
    if (!rows.length) {
      ctx.log.info(`no environment containers${ctx.config.host ? ` on ${ctx.config.host}` : ""} (agentenv up${hostWords(ctx)} starts one)`);
      return 0;
    }
    const table = [["ENV", "CONTAINER", "STATUS", "UP", "ROOTS"], ...rows.map((r) => [r.env ?? "-", r.name, r.status, r.uptime ?? "-", r.roots.join(",")])];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
    for (const row of table) console.log(row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  "));
    return 0;
  },
});

export const wrap = defineCommand({
  meta: { name: "wrap", description: "Write a host command NAME that runs NAME inside the environment's container, in the current directory" },
  args: {
    name: { type: "positional", required: false, valueHint: "name", description: "The command to wrap (e.g. claude, pi, codex)" },
    list: { type: "boolean", description: "List the wrappers agentenv wrote" },
    json: { type: "boolean", description: "With --list: print as JSON" },
    ...runtimeArgs,
    env: sessionArgs.env,
    "no-env": sessionArgs["no-env"],
    roots: containerArgs.roots,
    ...hostArgs,
    worktree: { type: "string", valueHint: "branch", description: "Always run in the worktree of BRANCH (see agentenv exec --worktree)" },
    "nix-develop": { type: "string", valueHint: "auto|always|never", description: "Enter the nearest flake.nix's dev shell (default: auto when config autoNixDevelop, else never)" },
    "run-arg": { type: "string", valueHint: "arg", description: "An extra argument for the engine's exec (repeatable)" },
    set: { type: "string", valueHint: "K=V", description: "A variable for the command (repeatable; not for secrets)" },
    "bin-dir": { type: "string", valueHint: "dir", description: "Where to write it (default: ~/.local/bin)" },
    force: { type: "boolean", description: "Replace a file of that name that is not an agentenv wrapper" },
    ...globalArgs,
  },
  async run({ args, rawArgs }) {
    const { listWrappers, renderWrapper, writeWrapper } = await import("./wrapper.ts");
    const { agentenvCommand } = await import("../../core/paths.ts");
    const log = logFor(args);
    if (args.list) {
      const wrappers = listWrappers();
      if (args.json) console.log(JSON.stringify(wrappers, null, 2));
      else if (!wrappers.length) log.info("no wrappers (agentenv wrap NAME writes one)");
      else for (const w of wrappers) console.log(`${w.name}\t${w.path}\tenv ${w.env ?? "-"}\t${w.host ? `host ${w.host}` : `roots ${w.roots.join(",")}`}`);
      return 0;
    }
    const name = args.name;
    if (!name) throw new UserError("wrap needs the NAME of a command", "agentenv wrap claude, or agentenv wrap --list");
    if (!/^[A-Za-z0-9._+-]+$/.test(name) || name.startsWith("-") || name === "." || name === "..") throw new UserError(`${name}: not a command name`);
    const cwd = currentDir();
    const ctx = await loadContext({ project: args.host ? undefined : cwd, flags: { runtime: args.runtime, env: envFlag(args), host: args.host }, log, remote: true });
    const host = ctx.config.host;
    // a container there has the roots its `up --host` gave it: exec --host picks the directory
    if (host && args.roots !== undefined) throw new UserError(`a wrapper for ${host} runs in the roots its container was started with`, `give them to agentenv up --host ${host} --roots …, and wrap without --roots`);
    const c = envContainer(ctx, ctx.config.env.name);
    const spec = {
      name,
      env: c.env,
      ...(host ? { host } : {}),
      roots: host ? [] : wantedRoots(args.roots, ctx.config.roots, cwd),
      runtime: ctx.runtime.name,
      nixDevelop: checkNixDevelop(args["nix-develop"], ctx.config.autoNixDevelop ? "auto" : "never"),
      worktree: args.worktree !== undefined ? checkBranch(args.worktree) : undefined,
      set: parseSets(repeatedFlag(rawArgs, "--set")),
      runArgs: repeatedFlag(rawArgs, "--run-arg"),
      path: join(resolve(args["bin-dir"] ?? join(homedir(), ".local", "bin")), name),
    };
    const engine = Bun.which(ctx.runtime.bin) ?? ctx.runtime.bin;
    const script = renderWrapper({ spec, container: c, runtime: ctx.runtime, engine, agentenv: agentenvCommand(), flock: (c.hostLocks && Bun.which("flock")) || undefined });
    writeWrapper(spec.path, script, Boolean(args.force));
    const where = host ? `on ${host} (agentenv up --host ${host}${c.env ? ` --env ${c.env}` : ""} --roots … starts it)` : `from ${spec.roots.join(", ")}`;
    log.success(`wrote ${spec.path}: \`${name} …\` runs in ${c.env ? `environment ${c.env}` : "a container with no environment"}, ${where}`);
    const onPath = Bun.which(name);
    if (onPath !== spec.path) {
      log.warn(onPath ? `${onPath} comes first on PATH: put ${join(spec.path, "..")} before it to use the wrapper` : `${join(spec.path, "..")} is not on PATH: add it to use \`${name}\``);
    }
    return 0;
  },
});

export const unwrap = defineCommand({
  meta: { name: "unwrap", description: "Remove a wrapper written by agentenv wrap" },
  args: {
    name: { type: "positional", required: true, valueHint: "name", description: "The wrapped command" },
    "bin-dir": { type: "string", valueHint: "dir", description: "Only the one in this directory" },
    ...globalArgs,
  },
  async run({ args }) {
    const { removeWrappers } = await import("./wrapper.ts");
    for (const path of removeWrappers(args.name, args["bin-dir"] ? resolve(args["bin-dir"]) : undefined)) logFor(args).success(`removed ${path}`);
    return 0;
  },
});

export const worktrees = defineCommand({
  meta: { name: "worktrees", description: "List the git worktrees in the environment's home (~/Code/<project>/<branch>), or remove one: worktrees rm BRANCH" },
  args: {
    action: { type: "positional", required: false, valueHint: "ls|rm", description: "ls (default) or rm" },
    branch: { type: "positional", required: false, valueHint: "branch", description: "For rm: the worktree's branch" },
    project: { type: "string", valueHint: "name", description: "For rm: the project, when several have that branch" },
    force: { type: "boolean", description: "For rm: remove it even with uncommitted changes" },
    json: { type: "boolean", description: "Print as JSON" },
    ...runtimeArgs,
    env: sessionArgs.env,
    ...globalArgs,
  },
  async run({ args }) {
    const { listWorktrees, removeWorktree } = await import("./worktrees.ts");
    const { findHome } = await import("../env/home.ts");
    const ctx = await loadContext({ project: currentDir(), flags: { runtime: args.runtime, env: envFlag(args) }, log: logFor(args) });
    const env = ctx.config.env.name;
    if (!env) throw new UserError("worktrees live in an environment's home: pass --env NAME (or set env.default)");
    const home = await findHome(ctx, env);
    if (!home.dir) throw new UserError(`no environment named ${env}`);
    if (!home.readable) {
      throw new UserError(`the home of environment ${env} is not readable from here (${home.dir}: a VM or remote engine keeps it out of reach)`, `look inside: agentenv exec --env ${env} -- git -C ~/Code worktree list`);
    }
    const rows = listWorktrees(home.dir);
    const action = args.action ?? "ls";
    if (action === "ls") {
      if (args.json) console.log(JSON.stringify(rows.map((r) => ({ env, ...r })), null, 2));
      else if (!rows.length) ctx.log.info(`no worktrees in environment ${env} (agentenv exec --worktree BRANCH makes one)`);
      else for (const r of rows) console.log(`${r.project}\t${r.branch}\t${r.path}\t${r.head === r.branch ? "" : `HEAD ${r.head}`}`.trimEnd());
      return 0;
    }
    if (action !== "rm") throw new UserError(`worktrees ${action}: use ls or rm`);
    if (!args.branch) throw new UserError("worktrees rm needs the BRANCH of the worktree");
    const matches = rows.filter((r) => r.branch === args.branch && (!args.project || r.project === args.project));
    if (matches.length !== 1) {
      throw new UserError(
        matches.length ? `${matches.length} projects have a worktree ${args.branch}: ${matches.map((m) => m.project).join(", ")}` : `no worktree ${args.branch}${args.project ? ` in project ${args.project}` : ""} in environment ${env}`,
        matches.length ? "pass --project NAME" : "see agentenv worktrees",
      );
    }
    await removeWorktree(ctx, home.volume, matches[0]!, Boolean(args.force));
    ctx.log.success(`removed worktree ${matches[0]!.path} (the branch ${args.branch} stays in ${matches[0]!.repo})`);
    return 0;
  },
});
