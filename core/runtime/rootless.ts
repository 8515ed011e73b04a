import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { userInfo } from "node:os";
import { hostUid } from "../paths.ts";
import type { Check } from "./types.ts";

/**
 * What rootless Podman needs from the host, for `agentenv doctor`: each problem named with
 * the one step that fixes it. Gathering (files, PATH) is apart from judging, so the
 * judgement is tested on any machine.
 */
export interface RootlessHost {
  uid: number;
  user: string;
  /** /etc/subuid and /etc/subgid, "" when missing */
  subuid: string;
  subgid: string;
  newuidmap: boolean;
  xdgRuntimeDir?: string;
  /** the owner of XDG_RUNTIME_DIR, undefined when it is not a directory */
  xdgOwner?: number;
  /** /dev/net/tun: missing, or whether this user may open it read-write */
  tun: "missing" | "ok" | "denied";
  /** agentenv runs inside Podman's user namespace (./userns.ts joined it) */
  joined: boolean;
}

/** The user's line of /etc/subuid or /etc/subgid with a non-empty range. */
function rangeOf(table: string, host: RootlessHost): string | undefined {
  return table
    .split("\n")
    .map((line) => line.trim())
    .find((line) => {
      const [who, , count] = line.split(":");
      return (who === host.user || who === String(host.uid)) && Number(count) > 0;
    });
}

export function rootlessChecks(host: RootlessHost): Check[] {
  const checks: Check[] = [];
  const subuid = rangeOf(host.subuid, host);
  const missing = [subuid ? "" : "/etc/subuid", rangeOf(host.subgid, host) ? "" : "/etc/subgid"].filter(Boolean);
  checks.push(missing.length
    ? { name: "rootless ids", status: "fail", detail: `no subordinate id range for ${host.user} in ${missing.join(" and ")}: containers cannot map root`, fix: `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${host.user} && podman system migrate` }
    : { name: "rootless ids", status: "ok", detail: `subordinate ids for ${host.user} (/etc/subuid: ${subuid})` });
  if (!host.newuidmap) checks.push({ name: "newuidmap", status: "fail", detail: "newuidmap/newgidmap not found: Podman cannot map more than your own uid", fix: "sudo apt-get install uidmap" });
  if (!host.xdgRuntimeDir) {
    checks.push({ name: "runtime dir", status: "warn", detail: "XDG_RUNTIME_DIR is not set (no login session): Podman falls back to /tmp/podman-run-UID, and may lose track of containers when /tmp is cleaned", fix: `export XDG_RUNTIME_DIR=/run/user/${host.uid} (systemd: loginctl enable-linger ${host.user} keeps it after logout)` });
  } else if (host.xdgOwner !== host.uid) {
    checks.push({ name: "runtime dir", status: "fail", detail: `XDG_RUNTIME_DIR=${host.xdgRuntimeDir} is ${host.xdgOwner === undefined ? "not a directory" : `owned by uid ${host.xdgOwner}`}, not by you`, fix: `unset it, or log in as ${host.user} (su - / sudo -i keep the caller's)` });
  }
  checks.push(host.joined
    ? { name: "user namespace", status: "ok", detail: "agentenv runs inside rootless Podman's namespace: golden store clones are overlay mounts" }
    : { name: "user namespace", status: "warn", detail: "agentenv could not join rootless Podman's namespace (-v says why): the golden store falls back to engine volumes, ≈1 s more per session", fix: "install nsenter (apt-get install util-linux) and check that `podman unshare true` works" });
  if (host.tun === "denied") checks.push({ name: "network", status: "fail", detail: "/dev/net/tun cannot be opened: rootless networking (slirp4netns) fails for every container", fix: "sudo chmod 666 /dev/net/tun (udev does this on most distributions)" });
  if (host.tun === "missing") checks.push({ name: "network", status: "warn", detail: "no /dev/net/tun: rootless networking (slirp4netns) cannot start", fix: "sudo modprobe tun" });
  return checks;
}

/** FILE's text, "" when it cannot be read. */
export function readOrEmpty(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** This host, as rootlessChecks reads it. */
export function thisHost(): RootlessHost {
  // inside rootless Podman's namespace (where agentenv runs its commands) getuid() says 0
  const uid = hostUid() ?? 0;
  const xdgRuntimeDir = process.env.XDG_RUNTIME_DIR || undefined;
  let xdgOwner: number | undefined;
  try {
    const stat = xdgRuntimeDir ? statSync(xdgRuntimeDir) : undefined;
    xdgOwner = stat?.isDirectory() ? stat.uid : undefined;
  } catch {
    xdgOwner = undefined;
  }
  let tun: RootlessHost["tun"] = "ok";
  if (!existsSync("/dev/net/tun")) tun = "missing";
  else {
    try {
      accessSync("/dev/net/tun", constants.R_OK | constants.W_OK);
    } catch {
      tun = "denied";
    }
  }
  return {
    uid,
    user: process.env.USER || (uid === process.getuid?.() ? userInfo().username : String(uid)),
    subuid: readOrEmpty("/etc/subuid"),
    subgid: readOrEmpty("/etc/subgid"),
    newuidmap: Boolean(Bun.which("newuidmap") ?? (existsSync("/usr/bin/newuidmap") ? "/usr/bin/newuidmap" : undefined)),
    xdgRuntimeDir,
    xdgOwner,
    tun,
    joined: Boolean(process.env._CONTAINERS_USERNS_CONFIGURED),
  };
}
