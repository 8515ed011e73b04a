import type { RuntimeName } from "../config.ts";
import { UserError, formatUserError } from "../errors.ts";
import { containerHome, type Mount, type Plan } from "../plan.ts";
import { homedir } from "node:os";
import { join } from "pathe";
import { hostUid } from "../paths.ts";
import { attached, engineCall, streamed } from "./process.ts";
import { readOrEmpty } from "./rootless.ts";
import type { BuildRequest, Check, ContainerInfo, EngineResult, ExecOptions, Runtime } from "./types.ts";

/**
 * Podman and Docker: one implementation, since their CLIs agree on everything a
 * session uses. Where they differ, `dialect` says so.
 */
export interface OciDialect {
  name: "podman" | "docker";
  /** shown when the engine cannot be reached */
  startHint: string;
  /**
   * remove the container with a second call after `run` instead of `run --rm`: with
   * `--rm` the docker CLI waits for condition "removed", which Podman's Docker API
   * before 4.6 answers with exit code 0 whatever the container exited with
   * (podman issue #18889). A separate `rm` keeps the exit code on every engine.
   */
  removeAfterRun: boolean;
}

export const podmanDialect: OciDialect = {
  name: "podman",
  startHint: "check `podman info` (run bin/setup to install and configure Podman)",
  removeAfterRun: false,
};

export const dockerDialect: OciDialect = {
  name: "docker",
  startHint: "start the Docker daemon, or point DOCKER_HOST at a running engine, or run bin/setup to install Podman",
  removeAfterRun: true,
};

/** Where the docker CLI looked for its daemon: from its own error, else DOCKER_HOST or the default socket. */
export function dockerDaemonAddress(stderr: string, env: Record<string, string | undefined> = process.env): string {
  return /daemon at (\S+?)\.?(\s|$)/.exec(stderr)?.[1] ?? (env.DOCKER_HOST || "unix:///var/run/docker.sock");
}

/**
 * The containers.conf a local Podman reads for this user (CONTAINERS_CONF overrides it):
 * /etc/containers for root, ~/.config/containers for a rootless user.
 */
export function podmanConfFile(env: Record<string, string | undefined> = process.env, uid = hostUid(env)): string {
  if (env.CONTAINERS_CONF) return env.CONTAINERS_CONF;
  if (uid === 0) return "/etc/containers/containers.conf";
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config"), "containers", "containers.conf");
}

/**
 * Podman's "error setting rlimit" means containers.conf asks for more than this host
 * grants (a sandbox can grant less than `ulimit -H` says): what to do about it, which
 * depends on whether bin/setup wrote that file (it then repairs it) or someone else did.
 */
export function rlimitAdvice(stderr: string, conf = podmanConfFile(), text = readOrEmpty(conf)): { detail: string; fix: string } | undefined {
  if (!/setting rlimit|setrlimit/i.test(stderr)) return undefined;
  const detail = `containers cannot get the ulimits they ask for (${stderr.trim().split("\n").pop()})`;
  if (text.startsWith("# written by agentenv bin/setup")) return { detail, fix: `bin/setup (checks ${conf}'s limits with a real container and lowers them)` };
  if (/default_ulimits/.test(text)) return { detail, fix: `lower default_ulimits in ${conf} (e.g. "nproc=32768:32768"; try them with podman run --ulimit), or remove that line` };
  return { detail, fix: `set [containers] default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"] in ${conf}, or run bin/setup (it writes that file, checked with a real container)` };
}

export function mountArg(mount: Mount): string[] {
  if (mount.source.includes(":") || mount.target.includes(":")) {
    throw new UserError(`cannot mount "${mount.source}" at "${mount.target}": the engine's -v syntax does not allow ":" in paths`);
  }
  return ["-v", `${mount.source}:${mount.target}${mount.readonly ? ":ro" : ""}`];
}

const keepIdHint = "run agentenv as your own user (rootless Podman), or drop keep-id (--userns root)";

/**
 * Why ENGINE cannot give a session `userns: "keep-id"`, or undefined when it may: a pure
 * check, made before anything starts. keep-id is rootless Podman's: Docker's --userns
 * knows only "host", Apple `container` has no such mapping, and Podman run as root refuses
 * it ("keep-id is only supported in rootless mode", exit 125). Root is read from our own
 * uid, except inside rootless Podman's user namespace (uid 0 there too, but Podman sets
 * _CONTAINERS_USERNS_CONFIGURED) and for a remote Podman, which only it can tell (`diagnose`).
 */
export function keepIdRefusal(engine: RuntimeName, env: Record<string, string | undefined> = process.env, uid = process.getuid?.()): UserError | undefined {
  if (engine === "docker") return new UserError("--userns keep-id needs rootless Podman: Docker cannot map your uid into the container", keepIdHint);
  if (engine === "container") return new UserError("--userns keep-id needs rootless Podman: Apple container cannot map your uid into the container", keepIdHint);
  const remote = env.CONTAINER_HOST || env.CONTAINER_CONNECTION;
  if (uid === 0 && !env._CONTAINERS_USERNS_CONFIGURED && !remote) return rootfulKeepId();
  return undefined;
}

function rootfulKeepId(): UserError {
  return new UserError("--userns keep-id needs rootless Podman: Podman running as root refuses it", keepIdHint);
}

/** `BIN exec …`: Podman, Docker and Apple `container` take the same flags for it. */
export function execArgv(bin: string, container: string, exec: ExecOptions, command: readonly string[]): string[] {
  const args = [bin, "exec"];
  if (exec.interactive) args.push("-i");
  if (exec.tty) args.push("-t");
  args.push("-w", exec.workdir);
  for (const [key, value] of Object.entries(exec.env)) args.push("-e", `${key}=${value}`);
  return [...args, ...exec.extraArgs, container, ...command];
}

export class OciRuntime implements Runtime {
  readonly name: RuntimeName;
  readonly sharesHostKernel: boolean = true;
  readonly endpoint?: string;

  constructor(
    readonly bin: string,
    readonly dialect: OciDialect,
  ) {
    this.name = dialect.name;
  }

  /**
   * The full command line running the engine CLI with ARGS: the local binary here; a
   * remote runtime (./remote.ts) wraps it in ssh. TTY: the call needs a terminal.
   */
  engineArgv(args: readonly string[], _how: { tty?: boolean } = {}): string[] {
    return [this.bin, ...args];
  }

  runArgs(plan: Plan): string[] {
    const args = ["run"];
    if (plan.remove && !this.dialect.removeAfterRun) args.push("--rm");
    if (plan.detach) args.push("-d");
    if (plan.interactive) args.push("-i");
    if (plan.tty) args.push("-t");
    if (plan.init) args.push("--init");
    // never pull implicitly: a missing image is reported as "run agentenv image build"
    args.push("--pull=never", "--name", plan.name);
    // no hostname: the container's uts namespace is set up otherwise (attach's sidecar)
    if (plan.hostname) args.push("--hostname", plan.hostname);
    args.push("-w", plan.workdir);
    if (plan.entrypoint !== undefined) args.push("--entrypoint", plan.entrypoint);
    if (plan.userns === "keep-id") args.push(...this.keepIdArgs(plan));
    for (const [key, value] of Object.entries(plan.labels)) args.push("--label", `${key}=${value}`);
    for (const mount of plan.mounts) args.push(...mountArg(mount));
    for (const [key, value] of Object.entries(plan.env)) args.push("-e", `${key}=${value}`);
    args.push(...plan.extraArgs, plan.image, ...plan.command);
    return args;
  }

  /**
   * Rootless Podman's keep-id: the host user's uid and gid inside. The passwd line Podman
   * adds for that uid names containerHome as its home (Podman's own choice, the working
   * directory, is the project: ssh and others read it). What the image has only for root
   * is given to the user when nothing is mounted there: HOME (the image's /root is 0700)
   * becomes a tmpfs, and /nix (the image has none, and only root may make it) an anonymous
   * volume, which Podman makes the user's as it is empty and removes with --rm; a
   * container kept after it stops (`up`) gets a tmpfs there too, as `rm` would leave the
   * volume behind.
   */
  private keepIdArgs(plan: Plan): string[] {
    if (this.dialect.name !== "podman") throw keepIdRefusal(this.dialect.name)!;
    const args = ["--userns=keep-id", `--passwd-entry=$USERNAME:*:$UID:$GID:$NAME:${containerHome}:/bin/sh`];
    const mounted = (target: string) => plan.mounts.some((m) => m.target === target);
    if (!mounted(containerHome)) args.push("--tmpfs", `${containerHome}:rw,exec,U`);
    if (!mounted("/nix")) args.push(...(plan.remove ? ["-v", "/nix"] : ["--tmpfs", "/nix:rw,exec,U"]));
    return args;
  }

  removeArgs(plan: Plan): string[] | undefined {
    return plan.remove && this.dialect.removeAfterRun && !plan.detach ? ["rm", "--force", plan.name] : undefined;
  }

  execArgv(container: string, exec: ExecOptions, command: readonly string[]): string[] {
    return this.engineArgv(execArgv(this.bin, container, exec, command).slice(1), { tty: exec.tty });
  }

  exec(container: string, exec: ExecOptions, command: readonly string[]): Promise<number> {
    return attached(this.execArgv(container, exec, command), { signalExit: true });
  }

  argv(plan: Plan): string[][] {
    const remove = this.removeArgs(plan);
    return [this.engineArgv(this.runArgs(plan), { tty: plan.tty }), ...(remove ? [this.engineArgv(remove)] : [])];
  }

  async run(plan: Plan): Promise<number> {
    if (plan.detach) {
      const result = await this.call(this.runArgs(plan));
      if (result.code !== 0) process.stderr.write(result.stderr);
      return result.code;
    }
    const code = await attached(this.engineArgv(this.runArgs(plan), { tty: plan.tty }));
    const remove = this.removeArgs(plan);
    if (remove) await this.call(remove);
    return code;
  }

  async capture(plan: Plan, io: { stdin?: string; stdout?: string } = {}): Promise<EngineResult> {
    const args = this.runArgs({ ...plan, interactive: io.stdin !== undefined, tty: false });
    const remove = this.removeArgs(plan);
    // removed by a second call: if agentenv dies before it, the next session removes it (../record.ts)
    const registration = remove ? await tryRegister(this.name, plan.name, this.endpoint) : undefined;
    try {
      const result = io.stdin === undefined && io.stdout === undefined ? await this.call(args) : await streamed(this.engineArgv(args), io);
      if (remove) await this.call(remove);
      return result;
    } finally {
      registration?.release();
    }
  }

  call(args: string[], options: { stdin?: Blob | string } = {}): Promise<EngineResult> {
    return engineCall(this.engineArgv(args), options);
  }

  async version(): Promise<string | undefined> {
    const result = await this.call(["version", "--format", "{{.Client.Version}}"]);
    return result.code === 0 ? result.stdout.trim() : undefined;
  }

  async imageExists(ref: string): Promise<boolean> {
    return (await this.imageLabels(ref)) !== undefined;
  }

  async imageLabels(ref: string): Promise<Record<string, string> | undefined> {
    const result = await this.call(["image", "inspect", "--format", "{{json .Config.Labels}}", ref]);
    if (result.code !== 0) return undefined;
    return (JSON.parse(result.stdout.trim() || "null") as Record<string, string> | null) ?? {};
  }

  async volumeExists(name: string): Promise<boolean> {
    return (await this.call(["volume", "inspect", name])).code === 0;
  }

  async volumeCreate(name: string, labels: Record<string, string>): Promise<void> {
    const args = ["volume", "create"];
    for (const [key, value] of Object.entries(labels)) args.push("--label", `${key}=${value}`);
    const result = await this.call([...args, name]);
    if (result.code !== 0) throw new UserError(`${this.name} could not create volume ${name}: ${result.stderr.trim()}`);
  }

  /**
   * Users first, then the volume, without `volume rm --force`: Podman 4.3 deadlocks when
   * that meets a `run` still creating a container on the volume (volume lock, then
   * container lock, against the reverse). A user that appears meanwhile is removed on
   * the next round. A volume already gone counts as removed.
   */
  async volumeRemove(name: string): Promise<void> {
    let why = "";
    for (let round = 0; round < 20; round++) {
      const users = await this.volumeUsers(name).catch(() => []);
      if (users.length) await this.call(["rm", "--force", ...users.map((u) => u.name)]);
      const result = await this.call(["volume", "rm", name]);
      if (result.code === 0 || /no such volume|no volume with name/i.test(result.stderr)) return;
      why = result.stderr.trim();
      if (!/in use|being used/i.test(why)) break;
      await Bun.sleep(100);
    }
    throw new UserError(`${this.name} could not remove volume ${name}: ${why}`);
  }

  async volumeList(label: string): Promise<Array<{ name: string; mountpoint?: string }>> {
    const rows = await this.table(["volume", "ls", "--filter", `label=${label}`, "--format", "{{.Name}}\t{{.Mountpoint}}"], "list volumes");
    return rows.map(([name, mountpoint]) => ({ name: name!, mountpoint: mountpoint || undefined }));
  }

  async volumeUsers(name: string): Promise<Array<{ name: string; running: boolean }>> {
    // .Status is "Up …" for a running container on both engines (.State differs between them)
    const rows = await this.table(["ps", "--all", "--filter", `volume=${name}`, "--format", "{{.Names}}\t{{.Status}}"], "list containers");
    return rows.map(([container, status]) => ({ name: container!, running: /^up\b/i.test(status ?? "") }));
  }

  /** An engine listing formatted as tab-separated columns, one row per line. */
  private async table(args: string[], what: string): Promise<string[][]> {
    const result = await this.call(args);
    if (result.code !== 0) throw new UserError(`${this.name} could not ${what}: ${result.stderr.trim() || `exit ${result.code}`}`);
    return result.stdout
      .split("\n")
      .filter(Boolean)
      .map((line) => line.split("\t"));
  }

  async volumeMountpoint(name: string): Promise<string | undefined> {
    const result = await this.call(["volume", "inspect", "--format", "{{.Mountpoint}}", name]);
    return result.code === 0 ? result.stdout.trim() || undefined : undefined;
  }

  async containerStatus(name: string): Promise<"running" | "stopped" | "absent"> {
    const info = await this.inspectContainer(name);
    return info ? (info.running ? "running" : "stopped") : "absent";
  }

  async inspectContainer(name: string): Promise<ContainerInfo | undefined> {
    return (await this.inspectContainers([name]))[0];
  }

  /** One `inspect` for NAMES; the ones that do not exist are left out. */
  private async inspectContainers(names: string[]): Promise<ContainerInfo[]> {
    const result = await this.call(["container", "inspect", "--format", "{{.Name}}\t{{.State.Running}}\t{{.State.ExitCode}}\t{{json .Config.Labels}}\t{{json .State.FinishedAt}}", ...names]);
    // with several names, podman and docker still print the ones that exist
    if (result.code !== 0 && !result.stdout.trim() && !/no such container/i.test(result.stderr)) {
      throw new UserError(`${this.name} could not inspect container ${names.join(" ")}: ${result.stderr.trim() || `exit ${result.code}`}`);
    }
    return result.stdout
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [name = "", running, exitCode, labels, finished] = line.split("\t");
        const finishedAt = Date.parse(JSON.parse(finished || "null") ?? "");
        return {
          name: name.replace(/^\//, ""),
          running: running === "true",
          labels: (JSON.parse(labels || "null") ?? {}) as Record<string, string>,
          exitCode: running === "true" ? undefined : Number(exitCode),
          // "0001-01-01T00:00:00Z": never stopped
          finishedAt: running !== "true" && finishedAt > 0 ? finishedAt : undefined,
        };
      });
  }

  async listContainers(label: string): Promise<ContainerInfo[]> {
    const names = (await this.table(["ps", "--all", "--filter", `label=${label}`, "--format", "{{.Names}}"], "list containers")).map(([n]) => n!);
    return names.length ? this.inspectContainers(names) : [];
  }

  async removeContainer(name: string, options: { stopSeconds?: number } = {}): Promise<void> {
    if (options.stopSeconds !== undefined) await this.call(["stop", "--time", String(options.stopSeconds), name]);
    const removed = await this.call(["rm", "--force", name]);
    if (removed.code !== 0 && !/no such container|no container with/i.test(removed.stderr)) {
      throw new UserError(`${this.name} could not remove ${name}: ${removed.stderr.trim()}`);
    }
  }

  logsArgv(name: string): string[] {
    return this.engineArgv(["logs", "-f", name]);
  }

  pullArgv(ref: string): string[] {
    return this.engineArgv(["pull", ref]);
  }

  buildArgv(request: BuildRequest): string[] {
    const argv = [this.bin, "build", "-t", request.tag];
    for (const [key, value] of Object.entries(request.buildArgs)) argv.push("--build-arg", `${key}=${value}`);
    for (const [key, value] of Object.entries(request.labels)) argv.push("--label", `${key}=${value}`);
    return [...argv, "-f", request.file, request.context];
  }

  async checks(): Promise<Check[]> {
    const version = await this.version();
    if (!version) {
      const why = (await this.call(["version"])).stderr.trim();
      if (this.dialect.name === "docker") {
        return [{ name: "engine", status: "fail", detail: `docker is installed but no daemon answers at ${dockerDaemonAddress(why)}`, fix: "bin/setup (installs Podman, which agentenv then uses), or start the Docker daemon, or point DOCKER_HOST at one" }];
      }
      return [{ name: "engine", status: "fail", detail: `${this.name} at ${this.bin} does not answer: ${why.split("\n").pop()}`, fix: "bin/setup" }];
    }
    const checks: Check[] = [{ name: "engine", status: "ok", detail: `${this.name} ${version} (${this.bin})` }];
    if (this.dialect.name !== "podman") return checks;
    const info = await this.call(["info", "--format", "{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} {{.Host.Security.Rootless}} {{.Host.ServiceIsRemote}}"]);
    const [ociRuntime, driver, rootless, remote] = info.stdout.trim().split(" ");
    if (ociRuntime === "crun") checks.push({ name: "oci runtime", status: "warn", detail: "crun fails on hybrid-cgroup hosts such as this kind", fix: 'bin/setup (sets runtime = "runc" in containers.conf)' });
    else if (ociRuntime) checks.push({ name: "oci runtime", status: "ok", detail: ociRuntime });
    // this host's ids, helpers and devices matter only when the engine runs rootless here
    if (rootless === "true" && remote !== "true" && process.platform === "linux") {
      const { rootlessChecks, thisHost } = await import("./rootless.ts");
      checks.push(...rootlessChecks(thisHost()));
    }
    if (driver === "vfs") checks.push({ name: "storage", status: "warn", detail: "vfs driver: every session copies the whole image (seconds instead of ≈0.25 s)", fix: rootless !== "true" ? 'set driver = "overlay" under [storage] in /etc/containers/storage.conf' : 'put [storage] driver = "overlay" in ~/.config/containers/storage.conf, then podman system reset (it drops your images)' });
    else if (driver) checks.push({ name: "storage", status: "ok", detail: driver });
    return checks;
  }

  /** Only called after `run` failed with the engine's own error code. */
  async diagnose(plan: Plan): Promise<string | undefined> {
    const info = await this.call(["version"]);
    if (info.code !== 0) {
      const why = info.stderr.trim().split("\n").pop() ?? "";
      return `${this.name} is not working (${why}) — ${this.dialect.startHint}`;
    }
    if (!(await this.imageExists(plan.image))) {
      return `image ${plan.image} not found in ${this.name} — run \`agentenv image build\` (or \`agentenv image pull REF\` for one pushed from another machine)`;
    }
    if (plan.userns === "keep-id") {
      // `run` and the shell check a local Podman before starting; `up` and a remote one get here
      const rootless = await this.call(["info", "--format", "{{.Host.Security.Rootless}}"]);
      if (rootless.stdout.trim() === "false") return formatUserError(rootfulKeepId());
    }
    return undefined;
  }
}

/** A helper container's registration for the cleanup after a crash; none when the state dir is not writable. */
async function tryRegister(runtime: string, container: string, endpoint?: string): Promise<{ release(): void } | undefined> {
  try {
    const { registerContainer } = await import("../record.ts");
    return registerContainer(runtime, container, undefined, endpoint);
  } catch {
    return undefined;
  }
}
