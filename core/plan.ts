import { existsSync, statSync } from "node:fs";
import { basename, isAbsolute, resolve } from "pathe";
import { expandHome, type MountConfig, type ResolvedConfig } from "./config.ts";
import { UserError } from "./errors.ts";

/** shell and run: a session for one project at /work; up: a long-running environment container (plugins/wrap) */
export type SessionMode = "shell" | "run" | "up";

export type Mount =
  | { type: "bind"; source: string; target: string; readonly?: boolean }
  | { type: "volume"; source: string; target: string; readonly?: boolean };

/**
 * Everything a session is, as plain data, before anything runs. Plugins edit it;
 * a runtime turns it into engine argv. `--json` prints it.
 */
export interface Plan {
  image: string;
  /** container name */
  name: string;
  /** the container's hostname: the project's name, so prompts say where you are */
  hostname: string;
  workdir: string;
  mounts: Mount[];
  env: Record<string, string>;
  labels: Record<string, string>;
  /** empty: the image's entrypoint opens the shell */
  command: string[];
  /** keep stdin attached */
  interactive: boolean;
  /** allocate a terminal */
  tty: boolean;
  /** remove the container when it ends */
  remove: boolean;
  /** start it in the background (`run -d`) and return once the engine has started it */
  detach?: boolean;
  /**
   * run a tiny init as PID 1: the kernel ignores default-action signals sent to
   * PID 1, so without it Ctrl-C, SIGTERM and `kill` would not stop the command
   */
  init: boolean;
  /** extra engine `run` arguments, placed before the image */
  extraArgs: string[];
  /** replaces the image's entrypoint (helper containers) */
  entrypoint?: string;
  /**
   * "keep-id": the command runs as the host user's own uid and gid instead of root, HOME
   * still containerHome (rootless Podman only: the runtime adds what that takes)
   */
  userns?: "keep-id";
}

export const projectMountPoint = "/work";
/** HOME inside the container, for root and under `userns: "keep-id"` alike (an environment volume is mounted here) */
export const containerHome = "/root";

/** DIR must exist and be a directory; returns its absolute path. */
export function resolveProjectDir(dir: string, cwd = process.cwd()): string {
  const abs = resolve(cwd, dir);
  if (!existsSync(abs)) throw new UserError(`${dir}: no such directory`, "pass an existing project directory");
  if (!statSync(abs).isDirectory()) throw new UserError(`${dir}: not a directory`, "pass a project directory, not a file");
  return abs;
}

export function configMount(mount: MountConfig, project: string): Mount {
  if (!isAbsolute(mount.target)) throw new UserError(`mount target "${mount.target}" must be an absolute path`);
  if (mount.type === "volume") return { type: "volume", source: mount.source, target: mount.target, readonly: mount.readonly };
  return { type: "bind", source: resolve(project, expandHome(mount.source)), target: mount.target, readonly: mount.readonly };
}

function projectSlug(project: string): string {
  const slug = basename(project).toLowerCase().replace(/[^a-z0-9-]+/g, "-").slice(0, 40).replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return slug || "project";
}

function containerName(slug: string): string {
  const suffix = crypto.getRandomValues(new Uint8Array(4)).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "");
  return `agentenv-${slug}-${suffix}`;
}

export interface BasePlanOptions {
  project: string;
  mode: SessionMode;
  command: string[];
  config: ResolvedConfig;
  stdinIsTTY: boolean;
  /** mode "up": its container name and the host directories mounted at their own paths */
  up?: { name: string; hostname: string; roots: string[] };
  /** the container's name, when not one made from the project's (attach's sidecar) */
  name?: string;
}

/**
 * `userns: "keep-id"`: HOME must be said, since Podman would make it the working
 * directory (the project) for a uid the image does not know; config's extraEnv may still
 * choose another.
 */
function userPlan(config: ResolvedConfig): Pick<Plan, "userns" | "env"> {
  return config.userns === "keep-id" ? { userns: "keep-id", env: { HOME: containerHome, ...config.extraEnv } } : { env: { ...config.extraEnv } };
}

/** The plan before plugins: the image, the project at /work (or `up`'s roots), config's extras. */
export function basePlan({ project, mode, command, config, stdinIsTTY, up, name }: BasePlanOptions): Plan {
  const user = userPlan(config);
  if (mode === "up") {
    if (!up?.roots.length) throw new Error("an up plan needs its roots");
    return {
      image: config.image,
      name: up.name,
      hostname: up.hostname,
      workdir: up.roots[0]!,
      // the same absolute path inside as outside: paths an agent prints are valid on both sides
      mounts: [...up.roots.map((root): Mount => ({ type: "bind", source: root, target: root })), ...config.mounts.map((m) => configMount(m, project))],
      env: { ...user.env, AGENTENV_UP: "1" },
      labels: { "agentenv.session": mode, "agentenv.roots": JSON.stringify(up.roots) },
      command: ["agentenv-keepalive"],
      interactive: false,
      tty: false,
      remove: false,
      detach: true,
      init: true,
      extraArgs: [...config.extraRunArgs],
      ...(user.userns ? { userns: user.userns } : {}),
    };
  }
  return {
    image: config.image,
    name: name ?? containerName(projectSlug(project)),
    hostname: projectSlug(project),
    workdir: projectMountPoint,
    mounts: [
      { type: "bind", source: project, target: projectMountPoint },
      ...config.mounts.map((m) => configMount(m, project)),
    ],
    env: user.env,
    labels: { "agentenv.session": mode, "agentenv.project": project },
    command,
    // a shell always reads stdin; `run` only when something is piped in
    interactive: mode === "shell" || !stdinIsTTY,
    tty: mode === "shell" && stdinIsTTY,
    remove: true,
    init: true,
    extraArgs: [...config.extraRunArgs],
    ...(user.userns ? { userns: user.userns } : {}),
  };
}

/**
 * A short-lived container agentenv runs for itself (seeding a volume, copying files):
 * no project, no terminal, `/bin/sh -c SCRIPT` instead of the entrypoint, removed after.
 */
export function helperPlan(options: { image: string; purpose: string; mounts: Mount[]; script: string }): Plan {
  return {
    image: options.image,
    name: containerName(options.purpose),
    hostname: options.purpose,
    workdir: "/",
    mounts: options.mounts,
    env: {},
    labels: { "agentenv.helper": options.purpose },
    command: ["-c", options.script],
    entrypoint: "/bin/sh",
    interactive: false,
    tty: false,
    remove: true,
    init: false,
    extraArgs: [],
  };
}

/** POSIX shell quoting: safe words stay bare, everything else is single-quoted. */
export function shellQuote(word: string): string {
  if (word !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}
