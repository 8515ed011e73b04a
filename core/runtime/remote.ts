import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "pathe";
import { UserError, formatUserError } from "../errors.ts";
import type { HostRecord } from "../hosts.ts";
import { formatBytes, type Log } from "../log.ts";
import { agentenvDir } from "../paths.ts";
import { shellQuote, type Plan } from "../plan.ts";
import { handoffPath, handoffTarget } from "../handoff.ts";
import { writeAtomic } from "../volumes.ts";
import { OciRuntime, podmanDialect } from "./oci.ts";
import { attached, engineCall, exitCodeOf } from "./process.ts";
import { controlPath, ensureControlDir, masterAlive, remoteCommand, remoteScript, sshArgv, sshFailureCode, sshProblem } from "./ssh.ts";
import type { Check, EngineResult, ExecOptions } from "./types.ts";

/** The remote's tmpfs: a session's handoff directory there is `remoteHandoffDir(container)`. */
const remoteHandoffBase = "/dev/shm/agentenv-handoff-";

export function remoteHandoffDir(container: string): string {
  return `${remoteHandoffBase}${container}`;
}

/**
 * Podman on another machine, driven over SSH: the same `podman` command lines as a local
 * Podman (./oci.ts), each sent over the host's one shared connection (./ssh.ts). What
 * differs: bind-mount sources are paths on that machine (the remote plugin maps the
 * project), its volumes are not directories here (`sharesHostKernel` false: the golden
 * store uses engine volumes), the image is shipped there on first use, and a lost
 * connection is told apart from the command's own exit code.
 */
export class RemoteRuntime extends OciRuntime {
  override readonly sharesHostKernel = false;
  override readonly endpoint: string;
  /** images known to be on the remote in this process (the cache file keeps them across runs) */
  private readonly shipped = new Set<string>();
  log?: Log;

  constructor(readonly host: HostRecord) {
    super("podman", podmanDialect);
    this.endpoint = `ssh:${host.name}`;
  }

  /** The container, and the handoff directory its session had there (after a crash, the sweep's only chance). */
  override async removeContainer(name: string, options: { stopSeconds?: number } = {}): Promise<void> {
    await super.removeContainer(name, options);
    await this.removeRemoteDir(remoteHandoffDir(name));
  }

  override engineArgv(args: readonly string[], how: { tty?: boolean } = {}): string[] {
    return sshArgv(this.host, remoteCommand(["podman", ...args]), { tty: how.tty });
  }

  override call(args: string[], options: { stdin?: Blob | string } = {}): Promise<EngineResult> {
    ensureControlDir();
    return super.call(args, options);
  }

  /** A captured call whose ssh failure (exit 255 with ssh's own error) becomes one line with its fix. */
  async callChecked(args: string[], options: { stdin?: Blob | string } = {}): Promise<EngineResult> {
    const result = await this.call(args, options);
    if (result.code === sshFailureCode) {
      const problem = sshProblem(result.stderr, this.host);
      if (problem) throw problem;
    }
    return result;
  }

  override async run(plan: Plan): Promise<number> {
    await this.ensureImage(plan.image);
    const handoff = plan.mounts.find((m) => m.type === "bind" && m.target === handoffTarget);
    if (handoff) {
      await this.sendHandoff(handoffPath(plan.name), handoff.source);
      // a detached container (`up`) keeps its copy there as long as it runs: this machine's is not needed
      if (plan.detach) rmSync(handoffPath(plan.name), { recursive: true, force: true });
    }
    try {
      if (plan.detach) return await super.run(plan);
      return await this.attachedRemote(this.engineArgv(this.runArgs(plan), { tty: plan.tty }), plan.tty, plan.interactive, plan.name, plan.remove);
    } finally {
      // a detached container reads its handoff when it starts; what it left goes with the session's
      if (handoff && !plan.detach) await this.removeRemoteDir(handoff.source);
    }
  }

  /**
   * The session's handoff (secrets, a decrypted overlay) goes to a new 0700 directory on
   * the remote's tmpfs (/dev/shm): streamed as a tar on ssh's stdin — never in an argv, an
   * engine config or the remote's disk — and removed when the session ends.
   */
  private async sendHandoff(local: string, remote: string): Promise<void> {
    if (!remote.startsWith(remoteHandoffBase)) throw new Error(`not a remote handoff directory: ${remote}`);
    const tar = Bun.spawn(["tar", "-C", local, "-cf", "-", "."], { stdout: "pipe", stderr: "pipe" });
    // one left by a container removed behind agentenv's back (an `up` container's name is fixed) goes first; mkdir still refuses another user's
    const script = `rm -rf ${shellQuote(remote)} 2>/dev/null; umask 077 && mkdir -m 700 ${shellQuote(remote)} && tar -xf - -C ${shellQuote(remote)}`;
    const ssh = Bun.spawn(sshArgv(this.host, remoteCommand(["sh", "-c", script])), { stdin: tar.stdout, stdout: "ignore", stderr: "pipe" });
    const [why] = await Promise.all([new Response(ssh.stderr).text(), tar.exited, ssh.exited]);
    if (tar.exitCode !== 0 || ssh.exitCode !== 0) {
      await this.removeRemoteDir(remote);
      throw sshProblem(why, this.host) ?? new UserError(`could not hand the session's secrets to ${this.host.name}: ${why.trim().split("\n").pop() ?? `exit ${ssh.exitCode}`}`);
    }
  }

  private async removeRemoteDir(remote: string): Promise<void> {
    if (!remote.startsWith(remoteHandoffBase)) return;
    await remoteScript(this.host, `rm -rf ${shellQuote(remote)}`).catch(() => {});
  }

  /**
   * Joins a running container (`agentenv exec --host`). With a terminal, as a session's
   * (`ssh -t`: Ctrl-C and the size travel as keystrokes). Without one, as a local exec: a
   * signal agentenv gets ends the client (ssh), the command may outlive it, and the
   * signal is the exit code — never `podman kill`, which would end the container under
   * everything else running in it.
   */
  override async exec(container: string, exec: ExecOptions, command: readonly string[]): Promise<number> {
    const argv = this.execArgv(container, exec, command);
    if (exec.tty) return this.attachedRemote(argv, true, exec.interactive, container, false);
    ensureControlDir();
    const code = await attached(argv, { signalExit: true });
    if (code === sshFailureCode && !(await masterAlive(this.host))) {
      throw new UserError(`the SSH connection to ${this.host.name} was lost while the command ran in ${container}`, "run it again (a new connection is opened); it may have run there in part", sshFailureCode);
    }
    return code;
  }

  override async capture(plan: Plan, io?: { stdin?: string; stdout?: string }): Promise<EngineResult> {
    await this.ensureImage(plan.image);
    ensureControlDir();
    const result = await super.capture(plan, io);
    if (result.code === sshFailureCode) {
      const problem = sshProblem(result.stderr, this.host);
      if (problem) {
        await this.removeAfterLoss(plan.name);
        throw problem;
      }
    }
    return result;
  }

  /**
   * ARGV (an ssh call) attached to this terminal. With a terminal (`ssh -t`) Ctrl-C travels
   * as a keystroke to the remote; without one ssh passes no signal on, so ssh runs in a
   * session of its own (the terminal's Ctrl-C does not end it) and a signal agentenv gets is
   * sent to the container by the engine (`podman kill --signal`): its exit code still comes
   * back through ssh, as locally.
   */
  private async attachedRemote(argv: string[], tty: boolean, interactive: boolean, container: string, remove: boolean): Promise<number> {
    ensureControlDir();
    let code: number;
    if (tty) code = await attached(argv, { signalExit: false });
    else {
      // detached: a session of its own (setsid), out of the terminal's process group
      const child = Bun.spawn(argv, { stdio: [interactive ? "inherit" : "ignore", "inherit", "inherit"], detached: true });
      const forward = (signal: NodeJS.Signals) => () => {
        void (async () => {
          // a container still being created is waited for a moment; one that never shows (or is gone): the ssh call itself ends
          for (let attempt = 0; attempt < 10 && child.exitCode === null; attempt++) {
            if ((await this.call(["kill", "--signal", signal, container])).code === 0) return;
            await Bun.sleep(200);
          }
          if (child.exitCode === null) child.kill(signal);
        })();
      };
      const handlers: Array<[NodeJS.Signals, () => void]> = (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((s) => [s, forward(s)]);
      for (const [signal, handler] of handlers) process.on(signal, handler);
      try {
        await child.exited;
      } finally {
        for (const [signal, handler] of handlers) process.off(signal, handler);
      }
      code = exitCodeOf(child);
    }
    if (code === sshFailureCode && !(await masterAlive(this.host))) {
      // the connection went, not the command: what it ran there must not stay behind
      if (remove) await this.removeAfterLoss(container);
      throw new UserError(`the SSH connection to ${this.host.name} was lost during the session${remove ? ` (its container ${container} was removed)` : ""}`, "run the command again: a new connection is opened", sshFailureCode);
    }
    return code;
  }

  /** After a lost connection: remove CONTAINER over a new one, if the host answers. */
  private async removeAfterLoss(container: string): Promise<void> {
    await this.call(["rm", "--force", "--ignore", container]).catch(() => {});
  }

  /** per way of reaching the host (a name given to another machine starts a new one) */
  private cacheFile(): string {
    return join(agentenvDir("cache"), "hosts", `${this.host.name}-${basename(controlPath(this.host))}.json`);
  }

  private cachedImages(): Record<string, string> {
    try {
      const data = JSON.parse(readFileSync(this.cacheFile(), "utf8")) as { images?: Record<string, string> };
      return data.images && typeof data.images === "object" ? data.images : {};
    } catch {
      return {};
    }
  }

  private rememberImage(ref: string, shipped: string | undefined): void {
    const images = { ...this.cachedImages() };
    if (shipped === undefined) delete images[ref];
    else images[ref] = shipped;
    try {
      mkdirSync(join(agentenvDir("cache"), "hosts"), { recursive: true });
      writeAtomic(this.cacheFile(), `${JSON.stringify({ images }, null, 2)}\n`);
    } catch {
      // a cache: the next session asks the host again
    }
  }

  /**
   * The image must be on the remote before anything runs there. Known to be there (this
   * process, or the cache under ~/.cache/agentenv/hosts/): no call at all. Else one
   * `image exists` there; when missing, it is shipped from this machine's engine
   * (`podman save | ssh … podman load`), with progress, said once.
   */
  async ensureImage(ref: string): Promise<void> {
    if (this.shipped.has(ref)) return;
    if (this.cachedImages()[ref]) {
      this.shipped.add(ref);
      return;
    }
    const there = await this.callChecked(["image", "exists", ref]);
    if (there.code === 0) {
      this.rememberImage(ref, "found");
      this.shipped.add(ref);
      return;
    }
    if (there.code !== 1) throw new UserError(`podman on ${this.host.name} does not answer: ${there.stderr.trim().split("\n").pop() ?? `exit ${there.code}`}`, `agentenv host check ${this.host.name}`);
    await shipImage(this, ref, this.log);
    this.rememberImage(ref, "shipped");
    this.shipped.add(ref);
  }

  /** Ships REF now, whatever the remote has (`host check --ship`: an image rebuilt here). */
  async shipNow(ref: string): Promise<{ bytes: number; seconds: number }> {
    const moved = await shipImage(this, ref, this.log, "is not this machine's there");
    this.rememberImage(ref, "shipped");
    this.shipped.add(ref);
    return moved;
  }

  /** Forgets that REF is on the remote (it was not, after all). */
  forgetImage(ref: string): void {
    this.shipped.delete(ref);
    this.rememberImage(ref, undefined);
  }

  override async diagnose(plan: Plan): Promise<string | undefined> {
    const version = await this.call(["version", "--format", "{{.Client.Version}}"]);
    if (version.code === sshFailureCode) return formatUserError(sshProblem(version.stderr, this.host) ?? new UserError(`cannot reach ${this.host.name}: ${version.stderr.trim()}`));
    if (version.code !== 0) return `podman on ${this.host.name} is not working (${version.stderr.trim().split("\n").pop()}) — agentenv host check ${this.host.name}`;
    if (!(await this.imageExists(plan.image))) {
      this.forgetImage(plan.image);
      return `image ${plan.image} is not on ${this.host.name} any more — run again: it is shipped from this machine`;
    }
    return super.diagnose(plan);
  }

  override async checks(): Promise<Check[]> {
    const { hostChecks } = await import("./remote-checks.ts");
    return hostChecks(this.host, { image: undefined });
  }
}

/** The local engine that holds images to ship: Podman, else Docker (both `save` a docker-archive). */
function localEngine(): string {
  const engine = Bun.which("podman") ?? Bun.which("docker");
  if (!engine) throw new UserError("no local container engine to ship the image from (podman or docker)", "install Podman here, or load the image on the remote yourself");
  return engine;
}

/** `podman save REF | ssh HOST podman load`, streamed, with a progress line; resolves once the remote has it. */
export async function shipImage(runtime: RemoteRuntime, ref: string, log?: Log, why = "is not on"): Promise<{ bytes: number; seconds: number }> {
  const engine = localEngine();
  const size = await engineCall([engine, "image", "inspect", "--format", "{{.Size}}", ref]);
  if (size.code !== 0) {
    throw new UserError(`image ${ref} is neither on ${runtime.host.name} nor on this machine`, "build it here (agentenv image build), then run again: it is shipped to the remote");
  }
  const total = Number(size.stdout.trim()) || 0;
  const say = (line: string) => (log ? log.info(line) : process.stderr.write(`${line}\n`));
  say(`image ${ref} ${why === "is not on" ? `is not on ${runtime.host.name}` : `${why.replace(" there", "")} on ${runtime.host.name}`}: shipping it from this machine (${engine.split("/").pop()} save | podman load${total ? `, ≈${formatBytes(total)}` : ""})…`);
  const started = performance.now();
  const save = Bun.spawn([engine, "save", ref], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const load = Bun.spawn(runtime.engineArgv(["load", "--quiet"]), { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  let bytes = 0;
  let lastReport = performance.now();
  const progress = Boolean(process.stderr.isTTY) && (log?.level ?? 3) >= 3;
  const pump = (async () => {
    try {
      for await (const chunk of save.stdout as ReadableStream<Uint8Array>) {
        load.stdin.write(chunk);
        await load.stdin.flush();
        bytes += chunk.length;
        if (progress && performance.now() - lastReport > 500) {
          lastReport = performance.now();
          process.stderr.write(`\r  ${formatBytes(bytes)}${total ? ` / ${formatBytes(total)}` : ""} sent`);
        }
      }
    } finally {
      await load.stdin.end();
    }
  })();
  const [, saveErr, loadErr] = await Promise.all([pump.catch(() => {}), new Response(save.stderr).text(), new Response(load.stderr).text(), new Response(load.stdout).text()]);
  await Promise.all([save.exited, load.exited]);
  if (progress) process.stderr.write("\r\x1b[K");
  if (save.exitCode !== 0) throw new UserError(`could not save image ${ref} here: ${saveErr.trim().split("\n").pop()}`);
  if (load.exitCode !== 0) {
    const problem = load.exitCode === sshFailureCode ? sshProblem(loadErr, runtime.host) : undefined;
    throw problem ?? new UserError(`${runtime.host.name} could not load image ${ref}: ${loadErr.trim().split("\n").pop() ?? `exit ${load.exitCode}`}`, `agentenv host check ${runtime.host.name} (free disk?)`);
  }
  const seconds = (performance.now() - started) / 1000;
  say(`image ${ref} shipped to ${runtime.host.name}: ${formatBytes(bytes)} in ${seconds.toFixed(1)} s`);
  return { bytes, seconds };
}

