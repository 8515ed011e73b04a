import type { HostRecord } from "../hosts.ts";
import { formatBytes } from "../log.ts";
import { shellQuote } from "../plan.ts";
import { remoteScript, sshFailureCode, sshProblem } from "./ssh.ts";
import type { Check } from "./types.ts";

/** Below this, a remote's container storage is a failed check; below `warnFree`, a warning. */
const failFree = 1 << 30;
const warnFree = 5 * (1 << 30);

/** Debian/Ubuntu and Fedora names; shown as the fix when something is missing there. */
const installOn = (host: string, pkg: string) => `on ${host}: sudo apt-get install ${pkg} (Debian/Ubuntu) or sudo dnf install ${pkg} (Fedora)`;

/** `uname -m` → the architecture name images use. */
export function imageArch(machine: string): string {
  return ({ x86_64: "amd64", aarch64: "arm64", arm64: "arm64", armv7l: "arm" } as Record<string, string>)[machine] ?? machine;
}

/** What the probe script prints: `key=value` lines. */
export function parseFacts(stdout: string): Record<string, string> {
  const facts: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) facts[line.slice(0, at)] = line.slice(at + 1);
  }
  return facts;
}

/** The probe: one script on the remote's `sh`, sent on stdin (its login shell does not matter). */
export function probeScript(image?: string): string {
  return [
    'echo "machine=$(uname -m)"',
    'echo "user=$(id -un)"',
    "if command -v podman >/dev/null 2>&1; then",
    "  echo \"podman=$(podman version --format '{{.Client.Version}}' 2>/dev/null)\"",
    "  info=$(podman info --format '{{.Host.Security.Rootless}}|{{.Store.GraphRoot}}|{{.Store.GraphDriverName}}|{{.Host.OCIRuntime.Name}}' 2>&1) && echo \"info=$info\" || echo \"infoerror=$(echo \"$info\" | tail -n 1)\"",
    "  root=$(echo \"$info\" | cut -d'|' -f2)",
    '  [ -d "$root" ] || root=$HOME',
    "  echo \"free=$(df -Pk \"$root\" | awk 'NR==2 {print $4 * 1024}')\"",
    image ? `  id=$(podman image inspect --format '{{.Id}}' ${shellQuote(image)} 2>/dev/null) && echo "image=yes" && echo "imageid=$id" || echo image=no` : "",
    "else echo podman=; fi",
    'command -v sshfs >/dev/null 2>&1 && echo sshfs=yes || echo sshfs=no',
    '[ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ] && echo fuse=yes || echo fuse=no',
  ]
    .filter(Boolean)
    .join("\n");
}

/** Turns the probe's facts into checks, each problem with its fix (pure). */
export function factsToChecks(host: HostRecord, facts: Record<string, string>, local: { arch: string; image?: string; imageId?: string }): Check[] {
  const checks: Check[] = [];
  const name = host.name;
  if (!facts.podman) {
    checks.push({ name: "podman", status: "fail", detail: `Podman is not installed on ${name} (nothing else needs installing there)`, fix: installOn(name, "podman") });
  } else if (facts.infoerror !== undefined) {
    checks.push({ name: "podman", status: "fail", detail: `podman ${facts.podman} on ${name} does not work: ${facts.infoerror}`, fix: `on ${name}: podman info (for a rootless user: a /etc/subuid range, uidmap installed)` });
  } else {
    const [rootless, graphRoot, driver, ociRuntime] = (facts.info ?? "").split("|");
    checks.push({ name: "podman", status: "ok", detail: `podman ${facts.podman} on ${name}, ${rootless === "true" ? `rootless (as ${facts.user})` : "as root"}; ${driver} storage, ${ociRuntime}` });
    if (driver === "vfs") checks.push({ name: "storage", status: "warn", detail: `vfs storage driver on ${name}: every session copies the whole image`, fix: `on ${name}: [storage] driver = "overlay" in ~/.config/containers/storage.conf, then podman system reset` });
    const free = Number(facts.free);
    if (Number.isFinite(free) && facts.free) {
      const detail = `${formatBytes(free)} free for containers on ${name} (${graphRoot})`;
      if (free < failFree) checks.push({ name: "disk", status: "fail", detail, fix: `free space on ${name} (podman system prune there drops unused images)` });
      else if (free < warnFree) checks.push({ name: "disk", status: "warn", detail, fix: `free space on ${name}: an image and a store need a few GiB` });
      else checks.push({ name: "disk", status: "ok", detail });
    }
    if (local.image && facts.image) {
      checks.push(
        facts.image !== "yes"
          ? { name: "image", status: "warn", detail: `${local.image} is not on ${name} yet: the first session ships it from this machine`, fix: `agentenv host check ${name} --ship (ships it now)` }
          : local.imageId && facts.imageid && facts.imageid !== local.imageId
            ? { name: "image", status: "warn", detail: `${local.image} on ${name} is not this machine's (${facts.imageid.slice(0, 12)} there, ${local.imageId.slice(0, 12)} here: rebuilt since it was shipped?)`, fix: `agentenv host check ${name} --ship (ships this machine's)` }
            : { name: "image", status: "ok", detail: `${local.image} is on ${name}${local.imageId ? " (the same as this machine's)" : ""}` },
      );
    }
  }
  const arch = imageArch(facts.machine ?? "");
  if (arch && arch !== local.arch) {
    checks.push({ name: "arch", status: "warn", detail: `${name} is ${arch}, this machine ${local.arch}: an image shipped from here will not run there`, fix: `build the image on ${name}, or use a ${local.arch} host` });
  } else checks.push({ name: "arch", status: "ok", detail: arch || "unknown" });
  checks.push(
    facts.sshfs === "yes" && facts.fuse === "yes"
      ? { name: "sshfs", status: "ok", detail: `sshfs and /dev/fuse on ${name}: local projects are live-shared` }
      : facts.sshfs !== "yes"
        ? { name: "sshfs", status: "warn", detail: `no sshfs on ${name}: a local project cannot be live-shared there (HOST:PATH projects work)`, fix: installOn(name, "sshfs") }
        : { name: "sshfs", status: "warn", detail: `/dev/fuse is not usable by ${facts.user} on ${name}: a local project cannot be live-shared there`, fix: `on ${name}: sudo chmod 666 /dev/fuse` },
  );
  return checks;
}

/** `agentenv host check NAME`: SSH (host key checked), then one probe of everything else. */
/** The local engine's id of IMAGE, when it has it (Podman, else Docker). */
function localImageId(image: string): string | undefined {
  const engine = Bun.which("podman") ?? Bun.which("docker");
  if (!engine) return undefined;
  const out = Bun.spawnSync([engine, "image", "inspect", "--format", "{{.Id}}", image], { stderr: "ignore" });
  return out.exitCode === 0 ? out.stdout.toString().trim().replace(/^sha256:/, "") || undefined : undefined;
}

export async function hostChecks(host: HostRecord, options: { image?: string }): Promise<Check[]> {
  const result = await remoteScript(host, probeScript(options.image));
  const address = `${host.user ? `${host.user}@` : ""}${host.host}${host.port ? `:${host.port}` : ""}`;
  if (result.code === sshFailureCode || (result.code !== 0 && !result.stdout.includes("machine="))) {
    const problem = sshProblem(result.stderr, host);
    return [{ name: "ssh", status: "fail", detail: problem?.message ?? `ssh to ${address} failed: ${result.stderr.trim().split("\n").pop() ?? `exit ${result.code}`}`, fix: problem?.hint ?? `try: ssh -p ${host.port ?? 22} ${address} true` }];
  }
  const facts = parseFacts(result.stdout);
  const arch = imageArch(process.arch === "x64" ? "x86_64" : process.arch);
  return [
    { name: "ssh", status: "ok", detail: `${address} as ${facts.user}, host key checked, one shared connection` },
    ...factsToChecks(host, { ...facts, imageid: facts.imageid?.replace(/^sha256:/, "") ?? "" }, { arch, image: options.image, imageId: options.image ? localImageId(options.image) : undefined }),
  ];
}
