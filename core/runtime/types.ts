import type { RuntimeName } from "../config.ts";
import type { Plan } from "../plan.ts";

export interface EngineResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How a command runs in a container that is already running (`exec`). */
export interface ExecOptions {
  workdir: string;
  /** plain settings only: a secret here would show in the engine's process list */
  env: Record<string, string>;
  interactive: boolean;
  tty: boolean;
  /** extra engine `exec` arguments, placed before the container */
  extraArgs: string[];
}

/** A container as the engine reports it. */
export interface ContainerInfo {
  name: string;
  running: boolean;
  labels: Record<string, string>;
  /** a stopped container's exit code, where the engine reports one */
  exitCode?: number;
  /** when a stopped container stopped (ms since the epoch, the engine's clock), where the engine reports it */
  finishedAt?: number;
}

/** One line of `agentenv doctor`. */
export interface Check {
  name: string;
  status: "ok" | "warn" | "fail";
  detail: string;
  /** the one command (or step) that fixes it */
  fix?: string;
}

/** What `image build` asks the engine to build. */
export interface BuildRequest {
  tag: string;
  context: string;
  file: string;
  buildArgs: Record<string, string>;
  labels: Record<string, string>;
}

/**
 * One container engine. `argv` is pure (golden-tested); everything else spawns the
 * engine CLI. The session hot path uses exactly one call: `run`.
 */
export interface Runtime {
  name: RuntimeName;
  /** the engine CLI, as found on PATH */
  bin: string;
  /**
   * which engine instance, when it is not this machine's default one (`ssh:NAME` for a
   * remote host): what agentenv records about its containers is that instance's alone
   */
  endpoint?: string;
  /**
   * false when containers run in their own VM (Apple \`container\`): a lock a container
   * takes on a bind-mounted file is not seen from the host, nor a host lock from it
   */
  sharesHostKernel: boolean;
  /** the engine command lines a session runs, each a full argv including `bin` */
  argv(plan: Plan): string[][];
  /**
   * runs the session attached to this terminal; resolves to its exit code (128+N for
   * signals). A `detach` plan resolves once the engine started it (its error on stderr).
   */
  run(plan: Plan): Promise<number>;
  /** the engine command line running COMMAND in a running container, including `bin` (pure) */
  execArgv(container: string, exec: ExecOptions, command: readonly string[]): string[];
  /** runs COMMAND in a running container, attached to this terminal; resolves to its exit code */
  exec(container: string, exec: ExecOptions, command: readonly string[]): Promise<number>;
  /**
   * runs a helper container to its end with output captured (no terminal), removing it
   * after; `io` streams a host file in as stdin and/or the container's stdout out to one
   * ("-": agentenv's own stdin/stdout), binary-safe (archives); `stdout` in the result is
   * then empty
   */
  capture(plan: Plan, io?: { stdin?: string; stdout?: string }): Promise<EngineResult>;
  /** one captured engine call, e.g. `call(["volume", "ls"])` */
  call(args: string[], options?: { stdin?: Blob | string }): Promise<EngineResult>;
  version(): Promise<string | undefined>;
  imageExists(ref: string): Promise<boolean>;
  /** image labels, or undefined when the image is missing */
  imageLabels(ref: string): Promise<Record<string, string> | undefined>;
  volumeExists(name: string): Promise<boolean>;
  volumeCreate(name: string, labels: Record<string, string>): Promise<void>;
  /** removes the volume and any container still using it */
  volumeRemove(name: string): Promise<void>;
  /** volumes carrying label KEY (any value), with their directories on the engine's host */
  volumeList(label: string): Promise<Array<{ name: string; mountpoint?: string }>>;
  /** containers (running or not) that mount the volume */
  volumeUsers(name: string): Promise<Array<{ name: string; running: boolean }>>;
  /** where the volume's files are on the engine's host; undefined when it does not exist */
  volumeMountpoint(name: string): Promise<string | undefined>;
  /**
   * an engine-specific constant-time copy of volume SRC's content into volume DST (both
   * exist; neither attached): Apple `container` clones the disk image (APFS `cp -c`).
   * `{ cloned: false, why }` when it cannot here; absent when the engine has no such way.
   * Callers then copy through a helper container.
   */
  cloneVolume?(src: string, dst: string): Promise<{ cloned: true } | { cloned: false; why: string }>;
  /** the container, or undefined when there is none; throws when the engine cannot say */
  inspectContainer(name: string): Promise<ContainerInfo | undefined>;
  /** containers (running or not) carrying LABEL ("key=value") */
  listContainers(label: string): Promise<ContainerInfo[]>;
  /** stops the container (SIGTERM, then SIGKILL after STOPSECONDS) and removes it; none is fine */
  removeContainer(name: string, options?: { stopSeconds?: number }): Promise<void>;
  /** the engine command line following a container's output until it ends (pure) */
  logsArgv(name: string): string[];
  /** the engine command lines pulling and building an image (pure) */
  pullArgv(ref: string): string[];
  buildArgv(request: BuildRequest): string[];
  /** the engine's own health, for \`agentenv doctor\`: the first check says whether it answers */
  checks(): Promise<Check[]>;
  /** a container's state; throws when the engine cannot say (so callers never mistake a hiccup for "gone") */
  containerStatus(name: string): Promise<"running" | "stopped" | "absent">;
  /** why a session failed to start, when the engine (not the command) failed */
  diagnose(plan: Plan): Promise<string | undefined>;
}
