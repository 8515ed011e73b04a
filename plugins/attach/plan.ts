import { UserError } from "../../core/errors.ts";
import type { Plan } from "../../core/plan.ts";

/** Where the image keeps attach's in-container half (image/Containerfile, stage `attach`). */
export const helperDir = "/usr/local/lib/agentenv/attach";
export const helperPath = `${helperDir}/agentenv-attach`;

/** The label the sidecar carries: which container it is attached to. */
export const attachLabel = "agentenv.attach";

/** Container names and ids as Podman and Docker accept them (and nothing a flag could be). */
export function checkTarget(target: string): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(target) || target.length > 253) {
    throw new UserError(`"${target}" is not a container name or id`, "pass the name or id `podman ps` / `docker ps` shows", 2);
  }
  return target;
}

/** Apple `container` runs each container in its own VM: there are no namespaces to share. */
export function appleRefusal(): UserError {
  return new UserError(
    "agentenv attach is not supported on Apple container: each container is its own VM, with no namespaces another container can join",
    "attach works with Podman and Docker (--runtime podman|docker)",
  );
}

/** The sidecar's name: the target's, so `podman ps` says what it is attached to. */
export function sidecarName(target: string): string {
  const suffix = crypto.getRandomValues(new Uint8Array(4)).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "");
  return `agentenv-attach-${target.slice(0, 40).replace(/[^a-zA-Z0-9_.-]/g, "-")}-${suffix}`;
}

/**
 * The sidecar, made from a session's plan named with sidecarName (its /nix and home
 * mounts, as the golden store and environment plugins put them there): the project is
 * not mounted, the helper is the entrypoint, and it shares the target's pid namespace,
 * where the helper finds the target's PID 1 and joins the rest (ipc, network, uts, mount)
 * itself: an engine asked to share the network (`--network container:`) sets the
 * sidecar up in it — Podman rewrites the target's /etc/hosts for it — and the docker CLI
 * refuses `--uts container:`. So the sidecar's own network is none. It needs
 * CAP_SYS_ADMIN (namespaces and mounts), CAP_SYS_PTRACE (the namespaces of a process of
 * another user), CAP_SYS_CHROOT, and no AppArmor confinement (docker-default and
 * containers-default deny mount). Podman refuses --init with a shared pid namespace: the
 * helper is its own subreaper.
 */
export function sidecarPlan(session: Plan, target: string, command: string[], stdinIsTTY: boolean): Plan {
  const shell = command.length === 0;
  return {
    ...session,
    // the helper joins the target's uts namespace; docker refuses --hostname with --network container:
    hostname: "",
    workdir: "/",
    mounts: session.mounts.filter((m) => m.target !== "/work"),
    labels: { ...withoutProject(session.labels), "agentenv.session": "attach", [attachLabel]: target },
    entrypoint: helperPath,
    // the helper marks on stderr where the engine's output ends (plugins/attach/run.ts)
    command: ["--announce", "1", "--", ...command],
    interactive: shell || !stdinIsTTY,
    tty: shell && stdinIsTTY,
    remove: true,
    detach: false,
    init: false,
    userns: undefined,
    extraArgs: [
      "--pid", `container:${target}`,
      "--network", "none",
      "--cap-add", "SYS_ADMIN",
      "--cap-add", "SYS_PTRACE",
      "--cap-add", "SYS_CHROOT",
      "--security-opt", "apparmor=unconfined",
    ],
  };
}

function withoutProject(labels: Record<string, string>): Record<string, string> {
  const { "agentenv.project": _, ...rest } = labels;
  return rest;
}
