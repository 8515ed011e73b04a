import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join } from "pathe";
import { UserError, formatUserError } from "../errors.ts";
import { agentenvDir } from "../paths.ts";
import type { Mount, Plan } from "../plan.ts";
import { writeAtomic } from "../volumes.ts";
import { execArgv, keepIdRefusal, mountArg } from "./oci.ts";
import { attached, engineCall, streamed } from "./process.ts";
import type { BuildRequest, Check, ContainerInfo, EngineResult, ExecOptions, Runtime } from "./types.ts";

/**
 * Apple's `container` CLI (github.com/apple/container) on macOS: each container is its
 * own lightweight VM. What differs from Podman and Docker, and why this is its own runtime:
 *   - listings are JSON only, with no `--filter`: agentenv filters them itself, and reads
 *     both shapes (1.x `{id, configuration, status: {state}}`, 0.x flat with `status` a string);
 *   - a volume is an ext4 disk image (`volumes/<name>/volume.img`), attached to a VM as a
 *     block device: one container at a time when read-write. agentenv checks before it
 *     starts one, and says so in its own words if the engine refuses anyway;
 *   - no `--hostname` and no `--pull`; `--init` since 0.11.
 * Every argv here follows the project's docs/command-reference.md; this runtime cannot run
 * on Linux, so its tests drive a fake `container` that answers as the documented one does.
 */

/** named volumes (`container volume`) arrived in 0.4.1 */
export const minimumVersion = "0.4.1";
/** `run --init` (PR #1244) */
const initVersion = "0.11.0";

export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0);
  const pb = b.split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return Math.sign(d);
  }
  return 0;
}

/** `container CLI version 1.2.0 (build: release, commit: 6e65319)` → "1.2.0" */
export function parseVersion(text: string): string | undefined {
  return /container CLI version (\d+(?:\.\d+)*)/.exec(text)?.[1];
}

/**
 * The CLI's version, asked once per installed binary (`--version` needs no service) and
 * cached by its path, size and mtime, so a session pays a stat, not a process.
 */
function installedVersion(bin: string): string | undefined {
  const path = Bun.which(bin) ?? bin;
  let key: string;
  try {
    const stat = statSync(path);
    key = `${path}|${stat.size}|${stat.mtimeMs}`;
  } catch {
    return undefined;
  }
  const file = join(agentenvDir("cache"), "container-version.json");
  try {
    const cached = JSON.parse(readFileSync(file, "utf8")) as { key: string; version: string };
    if (cached.key === key) return cached.version;
  } catch {
    // not cached yet
  }
  const out = Bun.spawnSync([path, "--version"], { stdout: "pipe", stderr: "pipe" });
  const version = parseVersion(out.stdout.toString());
  if (!version) return undefined; // asked again next time
  try {
    mkdirSync(dirname(file), { recursive: true });
    writeAtomic(file, JSON.stringify({ key, version }));
  } catch {
    // a read-only HOME asks again next time
  }
  return version;
}

type Json = Record<string, any>;

/** A container as either JSON shape has it. */
export interface AppleContainer {
  id: string;
  state: string;
  labels: Record<string, string>;
  /** the named volumes it attaches, and whether read-only */
  volumes: Array<{ name: string; readonly: boolean }>;
  exitCode?: number;
}

function parseArray(text: string, what: string): Json[] {
  let value: unknown;
  try {
    value = JSON.parse(text.trim() || "[]");
  } catch {
    throw new UserError(`container printed something other than JSON for ${what}: ${text.trim().slice(0, 120)}`, "check `container --version`; agentenv reads the 0.x and 1.x formats");
  }
  return (Array.isArray(value) ? value : [value]).filter((v): v is Json => typeof v === "object" && v !== null);
}

/** The name of the volume a mount attaches: `type.volume.name`, else the `volumes/<name>/volume.img` source. */
function volumeOf(mount: Json): string | undefined {
  const named = mount?.type?.volume?.name;
  if (typeof named === "string") return named;
  const source = typeof mount?.source === "string" ? mount.source : "";
  return mount?.type?.volume && basename(source) === "volume.img" ? basename(dirname(source)) : undefined;
}

/** `container ls --format json` / `container inspect`: 1.x `{id, configuration, status:{state}}` or 0.x `{status, configuration}`. */
export function parseContainers(text: string): AppleContainer[] {
  return parseArray(text, "a container listing").map((row) => {
    const config: Json = row.configuration ?? {};
    const status = row.status;
    const mounts: Json[] = Array.isArray(config.mounts) ? config.mounts : [];
    return {
      id: String(row.id ?? config.id ?? ""),
      state: typeof status === "string" ? status : String(status?.state ?? "unknown"),
      labels: { ...(config.labels ?? {}) },
      volumes: mounts.flatMap((m) => {
        const name = volumeOf(m);
        const options: unknown[] = Array.isArray(m.options) ? m.options : [];
        return name ? [{ name, readonly: options.includes("ro") || options.includes("readonly") }] : [];
      }),
      exitCode: typeof status?.exitCode === "number" ? status.exitCode : undefined,
    };
  });
}

export interface AppleVolume {
  name: string;
  /** the disk image on this Mac (`…/volumes/<name>/volume.img`) */
  source: string;
  labels: Record<string, string>;
}

/** `container volume list --format json` / `volume inspect`: 1.x `{id, configuration:{…}}` or 0.x flat. */
export function parseVolumes(text: string): AppleVolume[] {
  return parseArray(text, "a volume listing").map((row) => {
    const config: Json = row.configuration ?? row;
    return { name: String(config.name ?? row.id ?? ""), source: String(config.source ?? ""), labels: { ...(config.labels ?? {}) } };
  });
}

/** `container image inspect`: labels are the OCI config's, per platform variant (`variants[].config.config.Labels`). */
export function parseImageLabels(text: string): Record<string, string> {
  for (const row of parseArray(text, "an image")) {
    const variants: Json[] = row.variants ?? row.configuration?.variants ?? [];
    for (const variant of variants) {
      const labels = variant?.config?.config?.Labels ?? variant?.config?.Labels;
      if (labels && typeof labels === "object") return { ...labels };
    }
  }
  return {};
}

/** `container system status --format json`: `status` is "running", "not running" or "unregistered", old shape or new. */
export function parseSystemStatus(text: string): { status?: string; version?: string; appRoot?: string } {
  try {
    const value = JSON.parse(text) as Json;
    return {
      status: typeof value.status === "string" ? value.status : undefined,
      version: value.apiServerVersion ?? value.server?.version,
      appRoot: value.appRoot ?? value.paths?.appRoot,
    };
  } catch {
    return {};
  }
}

const notFound = /not found|no such/i;
/** Virtualization.framework refusing a second attachment of a read-write volume's disk image */
const busyVolume = /VZErrorDomain Code=2|storage device attachment is invalid/i;

export class AppleContainerRuntime implements Runtime {
  readonly name = "container" as const;
  readonly sharesHostKernel = false;
  /** undefined: could not tell (then the newest behaviour is assumed) */
  readonly cliVersion: string | undefined;

  constructor(
    readonly bin = "container",
    options: { version?: string; platform?: NodeJS.Platform; cp?: string } = {},
  ) {
    this.cliVersion = "version" in options ? options.version : installedVersion(bin);
    this.platform = options.platform ?? process.platform;
    // macOS's own cp: GNU cp (Homebrew coreutils first on PATH) has no clonefile `-c`
    this.cp = options.cp ?? (this.platform === "darwin" ? "/bin/cp" : "cp");
    if (this.cliVersion && compareVersions(this.cliVersion, minimumVersion) < 0) {
      throw new UserError(`Apple container ${this.cliVersion} is too old: agentenv needs ${minimumVersion} or later (named volumes)`, "please upgrade: https://github.com/apple/container/releases");
    }
  }

  private readonly platform: NodeJS.Platform;
  private readonly cp: string;

  private get hasInit(): boolean {
    return !this.cliVersion || compareVersions(this.cliVersion, initVersion) >= 0;
  }

  runArgs(plan: Plan): string[] {
    if (plan.userns) throw keepIdRefusal(this.name)!;
    const args = ["run"];
    if (plan.remove) args.push("--rm");
    if (plan.detach) args.push("-d");
    if (plan.interactive) args.push("-i");
    if (plan.tty) args.push("-t");
    if (plan.init && this.hasInit) args.push("--init");
    // no --hostname (the VM is named after the container) and no --pull (it pulls what is missing)
    args.push("--name", plan.name, "-w", plan.workdir);
    if (plan.entrypoint !== undefined) args.push("--entrypoint", plan.entrypoint);
    for (const [key, value] of Object.entries(plan.labels)) args.push("--label", labelArg(key, value));
    for (const mount of plan.mounts) args.push(...mountArg(mount));
    for (const [key, value] of Object.entries(plan.env)) args.push("-e", `${key}=${value}`);
    args.push(...plan.extraArgs, plan.image, ...plan.command);
    return args;
  }

  argv(plan: Plan): string[][] {
    return [[this.bin, ...this.runArgs(plan)]];
  }

  async run(plan: Plan): Promise<number> {
    await this.checkVolumesFree(plan);
    if (plan.detach) {
      const result = await this.call(this.runArgs(plan));
      if (result.code !== 0) process.stderr.write(this.explain(result.stderr, plan));
      return result.code;
    }
    // stderr is relayed so that the engine's attachment error is explained, never shown raw;
    // without a terminal the session's own stderr passes through the relay too (only a
    // line starting "Error: " is held until its end)
    return attached([this.bin, ...this.runArgs(plan)], { stderrLine: (line) => this.explain(line, plan) });
  }

  execArgv(container: string, exec: ExecOptions, command: readonly string[]): string[] {
    return execArgv(this.bin, container, exec, command);
  }

  exec(container: string, exec: ExecOptions, command: readonly string[]): Promise<number> {
    return attached(this.execArgv(container, exec, command), { signalExit: true });
  }

  async capture(plan: Plan, io: { stdin?: string; stdout?: string } = {}): Promise<EngineResult> {
    await this.checkVolumesFree(plan);
    const args = this.runArgs({ ...plan, interactive: io.stdin !== undefined, tty: false });
    const result = io.stdin === undefined && io.stdout === undefined ? await this.call(args) : await streamed([this.bin, ...args], io);
    return { ...result, stderr: this.explain(result.stderr, plan) };
  }

  call(args: string[], options: { stdin?: Blob | string } = {}): Promise<EngineResult> {
    return engineCall([this.bin, ...args], options);
  }

  /** An engine call that must succeed; its stdout. */
  private async must(args: string[], what: string): Promise<string> {
    const result = await this.call(args);
    if (result.code !== 0) throw new UserError(`container could not ${what}: ${oneLine(result.stderr) || `exit ${result.code}`}`, startHint(result.stderr));
    return result.stdout;
  }

  /**
   * A read-write volume attaches to one VM at a time (and a read-only one only beside
   * other read-only ones): say who holds it before the engine fails with a
   * Virtualization.framework error. One listing, only for plans with named volumes.
   */
  async checkVolumesFree(plan: Plan): Promise<void> {
    const wanted = plan.mounts.filter((m): m is Mount & { type: "volume" } => m.type === "volume");
    if (!wanted.length) return;
    const running = (await this.containers(false)).filter((c) => c.state === "running" && c.id !== plan.name);
    for (const mount of wanted) {
      for (const holder of running) {
        const held = holder.volumes.find((v) => v.name === mount.source);
        if (held && !(held.readonly && mount.readonly)) throw volumeBusy(mount.source, holder.id, held.readonly);
      }
    }
  }

  /** The engine's own words, unless they are the attachment error: then agentenv's. */
  private explain(text: string, plan: Plan): string {
    // only the engine's own error line (the session's output may say anything)
    if (!/^Error: /m.test(text) || !busyVolume.test(text)) return text;
    const volumes = plan.mounts.filter((m) => m.type === "volume" && !m.readonly).map((m) => m.source);
    const error = volumeBusy(volumes.join(", ") || "a volume", undefined);
    // one line, as agentenv prints its own errors; a relayed line gets its newline from the relay
    return `agentenv: ${formatUserError(error)}${text.endsWith("\n") ? "\n" : ""}`;
  }

  private async containers(all: boolean): Promise<AppleContainer[]> {
    return parseContainers(await this.must(["ls", ...(all ? ["--all"] : []), "--format", "json"], "list containers"));
  }

  async version(): Promise<string | undefined> {
    const result = await this.call(["--version"]);
    return result.code === 0 ? parseVersion(result.stdout) : undefined;
  }

  async imageExists(ref: string): Promise<boolean> {
    return (await this.imageLabels(ref)) !== undefined;
  }

  async imageLabels(ref: string): Promise<Record<string, string> | undefined> {
    const result = await this.call(["image", "inspect", ref]);
    return result.code === 0 ? parseImageLabels(result.stdout) : undefined;
  }

  private async volume(name: string): Promise<AppleVolume | undefined> {
    const result = await this.call(["volume", "inspect", name]);
    if (result.code !== 0) {
      if (notFound.test(result.stderr)) return undefined;
      throw new UserError(`container could not inspect volume ${name}: ${oneLine(result.stderr) || `exit ${result.code}`}`, startHint(result.stderr));
    }
    return parseVolumes(result.stdout).find((v) => v.name === name);
  }

  async volumeExists(name: string): Promise<boolean> {
    return (await this.volume(name)) !== undefined;
  }

  async volumeCreate(name: string, labels: Record<string, string>): Promise<void> {
    const args = ["volume", "create"];
    for (const [key, value] of Object.entries(labels)) args.push("--label", labelArg(key, value));
    const result = await this.call([...args, name]);
    if (result.code !== 0) throw new UserError(`container could not create volume ${name}: ${oneLine(result.stderr)}`, startHint(result.stderr));
  }

  /** Its containers first (`volume delete` refuses a volume a container references), then the volume. */
  async volumeRemove(name: string): Promise<void> {
    const users = await this.volumeUsers(name).catch(() => []);
    for (const user of users) await this.removeContainer(user.name);
    const result = await this.call(["volume", "delete", name]);
    if (result.code !== 0 && !notFound.test(result.stderr)) {
      throw new UserError(`container could not remove volume ${name}: ${oneLine(result.stderr)}`);
    }
  }

  async volumeList(label: string): Promise<Array<{ name: string; mountpoint?: string }>> {
    const volumes = parseVolumes(await this.must(["volume", "list", "--format", "json"], "list volumes"));
    return volumes.filter((v) => label in v.labels).map((v) => ({ name: v.name, mountpoint: v.source ? dirname(v.source) : undefined }));
  }

  async volumeUsers(name: string): Promise<Array<{ name: string; running: boolean }>> {
    return (await this.containers(true)).filter((c) => c.volumes.some((v) => v.name === name)).map((c) => ({ name: c.id, running: c.state === "running" }));
  }

  /** The volume's directory on this Mac (it holds `volume.img`; its files are inside the image, out of reach). */
  async volumeMountpoint(name: string): Promise<string | undefined> {
    const volume = await this.volume(name);
    return volume?.source ? dirname(volume.source) : undefined;
  }

  /**
   * An APFS clone of SRC's disk image (`cp -c`, clonefile(2): constant time, blocks shared
   * until written) replaces DST's. Only when both are where this version keeps them — a
   * `volume.img` file in the volume's directory — else the caller copies another way.
   */
  async cloneVolume(src: string, dst: string): Promise<{ cloned: true } | { cloned: false; why: string }> {
    if (this.platform !== "darwin") return { cloned: false, why: `APFS clones need macOS, not ${this.platform}` };
    const [from, to] = await Promise.all([this.volume(src), this.volume(dst)]);
    const layout = (v: AppleVolume | undefined, name: string) => {
      if (!v) return `volume ${name} not found`;
      if (basename(v.source) !== "volume.img") return `volume ${name} is at ${v.source || "(no source)"}, not a volume.img`;
      if (!existsSync(v.source) || !statSync(v.source).isFile()) return `${v.source} is not a file here`;
      return undefined;
    };
    const why = layout(from, src) ?? layout(to, dst);
    if (why) return { cloned: false, why };
    const tmp = `${to!.source}.agentenv-clone`;
    rmSync(tmp, { force: true });
    const child = Bun.spawn([this.cp, "-c", from!.source, tmp], { stdout: "ignore", stderr: "pipe" });
    if ((await child.exited) !== 0) {
      rmSync(tmp, { force: true });
      return { cloned: false, why: `cp -c failed: ${oneLine(await new Response(child.stderr).text())}` };
    }
    renameSync(tmp, to!.source);
    return { cloned: true };
  }

  async inspectContainer(name: string): Promise<ContainerInfo | undefined> {
    const result = await this.call(["inspect", name]);
    if (result.code !== 0) {
      if (notFound.test(result.stderr)) return undefined;
      throw new UserError(`container could not inspect ${name}: ${oneLine(result.stderr) || `exit ${result.code}`}`, startHint(result.stderr));
    }
    const found = parseContainers(result.stdout).find((c) => c.id === name);
    return found && info(found);
  }

  async listContainers(label: string): Promise<ContainerInfo[]> {
    const [key, value] = splitLabel(label);
    return (await this.containers(true)).filter((c) => key in c.labels && (value === undefined || c.labels[key] === value)).map(info);
  }

  async containerStatus(name: string): Promise<"running" | "stopped" | "absent"> {
    const found = await this.inspectContainer(name);
    return found ? (found.running ? "running" : "stopped") : "absent";
  }

  async removeContainer(name: string, options: { stopSeconds?: number } = {}): Promise<void> {
    if (options.stopSeconds !== undefined) await this.call(["stop", "--time", String(options.stopSeconds), name]);
    const removed = await this.call(["delete", "--force", name]);
    if (removed.code !== 0 && !notFound.test(removed.stderr)) throw new UserError(`container could not remove ${name}: ${oneLine(removed.stderr)}`);
  }

  logsArgv(name: string): string[] {
    return [this.bin, "logs", "--follow", name];
  }

  pullArgv(ref: string): string[] {
    return [this.bin, "image", "pull", ref];
  }

  buildArgv(request: BuildRequest): string[] {
    const argv = [this.bin, "build", "--tag", request.tag];
    for (const [key, value] of Object.entries(request.buildArgs)) argv.push("--build-arg", `${key}=${value}`);
    for (const [key, value] of Object.entries(request.labels)) argv.push("--label", `${key}=${value}`);
    return [...argv, "--file", request.file, request.context];
  }

  async checks(): Promise<Check[]> {
    const version = await this.version();
    if (!version) return [{ name: "engine", status: "fail", detail: `${this.bin} --version did not answer as Apple's container CLI does`, fix: "install it from https://github.com/apple/container/releases" }];
    const service = await this.systemStatus();
    if (service.status !== "running") {
      return [{ name: "engine", status: "fail", detail: `container ${version}: the container system service is ${service.status ?? "not running"}`, fix: "container system start" }];
    }
    const checks: Check[] = [{ name: "engine", status: "ok", detail: `Apple container ${version} (${this.bin}); service running${service.version ? ` (${service.version})` : ""}` }];
    if (compareVersions(version, initVersion) < 0) {
      checks.push({ name: "init", status: "warn", detail: `container ${version} has no run --init: Ctrl-C and kill may not stop a session's command`, fix: `upgrade to ${initVersion} or later` });
    }
    return checks;
  }

  /** `system status --format json`; versions before it had `--format` answer by exit code alone. */
  private async systemStatus(): Promise<{ status?: string; version?: string }> {
    const json = await this.call(["system", "status", "--format", "json"]);
    const parsed = parseSystemStatus(json.stdout);
    if (parsed.status) return parsed;
    const plain = await this.call(["system", "status"]);
    return { status: plain.code === 0 ? "running" : "not running" };
  }

  async diagnose(plan: Plan): Promise<string | undefined> {
    const service = await this.systemStatus();
    if (service.status !== "running") return "the container system service is not running — run `container system start`";
    if (!(await this.imageExists(plan.image))) return `image ${plan.image} not found in Apple container — run \`agentenv image build\` (or \`agentenv image pull REF\` for one pushed from another machine)`;
    return undefined;
  }
}

function info(c: AppleContainer): ContainerInfo {
  return { name: c.id, running: c.state === "running", labels: c.labels, exitCode: c.exitCode };
}

/** Its parser takes one "=" per label: a second one (a path holding "=") would fail in the engine. */
function labelArg(key: string, value: string): string {
  if (value.includes("=")) throw new UserError(`cannot label the container ${key}=${value}: Apple container's labels allow one "=" only`, "use a directory whose path has no \"=\"");
  return `${key}=${value}`;
}

function splitLabel(label: string): [string, string | undefined] {
  const at = label.indexOf("=");
  return at < 0 ? [label, undefined] : [label.slice(0, at), label.slice(at + 1)];
}

function oneLine(text: string): string {
  return text.trim().split("\n").pop()?.replace(/^Error: /, "") ?? "";
}

/** The CLI appends this advice when its service is down (an XPC connection error). */
function startHint(stderr: string): string | undefined {
  return /XPC connection|container system start/i.test(stderr) ? "start it: container system start" : undefined;
}

function volumeBusy(volume: string, holder: string | undefined, holderReadonly = false): UserError {
  return new UserError(
    holderReadonly
      ? `volume ${volume} is attached read-only by container ${holder}: Apple container shares a volume's disk between VMs only when all of them attach it read-only`
      : `volume ${volume} is attached read-write by ${holder ? `container ${holder}` : "another container"}: Apple container attaches a volume's disk to one VM at a time`,
    holder?.startsWith("agentenv-up-")
      ? `join that container instead: agentenv exec --env ${holder.slice("agentenv-up-".length)}`
      : "end the other session first (agentenv ps, container ls), or use another environment",
  );
}
