import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { UserError } from "../../core/errors.ts";
import type { HostRecord } from "../../core/hosts.ts";
import type { Log } from "../../core/log.ts";
import { shellJoin, shellQuote } from "../../core/plan.ts";
import { remoteCommand, remoteScript, sshArgv } from "../../core/runtime/ssh.ts";

/**
 * A local project live-shared into a session on a remote host: reverse SSHFS over the
 * host's shared SSH connection. This machine's `sftp-server` speaks SFTP on ssh's stdin and
 * stdout; on the remote, `sshfs -o passive` mounts it. Edits on either side are seen by
 * the other at once; nothing is copied, nothing to sync back.
 *
 * A rootless Podman's containers see only mounts made inside its own user and mount
 * namespace ("/" is not a shared mount), so there the mount is made with `podman unshare`.
 * It lives as long as that sshfs process: the unmount at exit ends it, and so does a lost
 * connection (sshfs ends at EOF and its mount goes with it).
 */

/** Where OpenSSH installs sftp-server: Debian/Ubuntu, Fedora/Arch, macOS (Homebrew and system). */
const sftpServerPaths = ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server", "/opt/homebrew/libexec/sftp-server"];

export function localSftpServer(exists: (path: string) => boolean = (p) => Bun.file(p).size > 0): string {
  const found = sftpServerPaths.find(exists);
  if (!found) throw new UserError("no sftp-server on this machine (it serves a local project to a remote session)", "install OpenSSH's server package here (apt-get install openssh-sftp-server), or use a project on the remote: agentenv HOST:/path");
  return found;
}

/**
 * What runs sftp-server confined to the project (Linux): a mount namespace of its own whose
 * root is a tmpfs holding only /usr and the library links (read-only), /dev/null, the user's
 * own passwd and group lines, and the project at its own path — so whatever the remote asks
 * for over SFTP, it can reach nothing else of this machine. Its setup failing, it runs as
 * is (said on stderr). Undefined where no mount namespace can be had (macOS, no `unshare`,
 * no user namespaces): the caller runs it unconfined.
 */
export function confinedServer(sftp: string, dir: string, root: string, probe = (argv: string[]) => Bun.spawnSync(argv, { stderr: "ignore" }).exitCode === 0): string[] | undefined {
  const unshare = process.platform === "linux" ? Bun.which("unshare") : null;
  if (!unshare) return undefined;
  // root (or root of the user namespace agentenv joined) gets a mount namespace as is; a user, one in a user namespace of its own
  const ns = process.getuid?.() === 0 ? ["-m", "--propagation", "private"] : ["-r", "-m", "--propagation", "private"];
  if (!probe([unshare, ...ns, "true"])) return undefined;
  const script = [
    'root=$1 dir=$2 sftp=$3',
    "setup() {",
    '  mkdir -p "$root" && mount -t tmpfs -o mode=755 agentenv-sftp "$root" || return 1',
    '  mkdir -p "$root/usr" "$root/dev" "$root/etc" "$root$dir" || return 1',
    '  getent passwd "$(id -u)" > "$root/etc/passwd"; getent group "$(id -g)" > "$root/etc/group"',
    '  : > "$root/dev/null" && mount --bind /dev/null "$root/dev/null" || return 1',
    '  for d in usr lib lib64 lib32 bin sbin; do',
    '    if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$root/$d" || return 1',
    '    elif [ -d "/$d" ]; then mkdir -p "$root/$d" && mount --rbind "/$d" "$root/$d" && mount -o remount,bind,ro "$root/$d" || return 1; fi',
    "  done",
    '  mount --bind "$dir" "$root$dir"',
    "}",
    'if setup 2>/dev/null; then exec chroot "$root" "$sftp" -e -d "$dir"; fi',
    'echo "agentenv-share-unconfined" >&2',
    'exec "$sftp" -e -d "$dir"',
  ].join("\n");
  return [unshare, ...ns, "sh", "-c", script, "sh", root, dir, sftp];
}

/** The remote directory a session's live-shared project is mounted on (pure: the plan names it). */
export function shareMountPoint(container: string): string {
  return `/tmp/agentenv-share-${container}`;
}

/** The line sshfs's wrapper prints on stderr once the mount is there. */
const readyLine = "agentenv-share-mounted";
const sftpLine = "agentenv-share-sftp=";

/**
 * The remote half (pure): make the mount point (0700, new), then mount with `sshfs -o
 * passive` reading SFTP on stdin — inside Podman's namespace unless the remote user is
 * root — and say so once the mount is there. stdin is the SFTP channel, so the script goes
 * as an argument (`remoteCommand`: read the same by every login shell).
 */
export function remoteShareScript(mountPoint: string, localDir: string): string {
  const mp = shellQuote(mountPoint);
  // a background job of a non-interactive shell gets /dev/null as stdin (dash even under
  // `<&0`): the SFTP channel is kept on fd 3 and given back to sshfs from there
  const mount = (options: string) =>
    [
      "exec 3<&0",
      `sshfs -f -o ${options} :${shellQuote(localDir)} ${mp} <&3 3<&- & pid=$!`,
      "exec 3<&-",
      "i=0",
      `while ! mountpoint -q ${mp}; do kill -0 $pid 2>/dev/null || exit 5; i=$((i+1)); [ $i -lt 400 ] || exit 6; sleep 0.05; done`,
      `echo ${readyLine} >&2`,
      "wait $pid",
    ].join("\n");
  return [
    "command -v sshfs >/dev/null 2>&1 || { echo 'agentenv-share-error: no sshfs' >&2; exit 3; }",
    `mkdir -m 700 ${mp} || exit 4`,
    // root's mount is in the host's namespace, seen by every user there: for its own processes only
    `asroot=${shellQuote(mount("passive,idmap=none"))}`,
    // in Podman's rootless namespace only the user's containers see it; allow_other lets in a
    // `--userns keep-id` container, whose user namespace (a child of that one) runs as someone else
    `inpodman=${shellQuote(mount("passive,idmap=none,allow_other"))}`,
    `if [ "$(id -u)" = 0 ]; then sh -c "$asroot"; else podman unshare sh -c "$inpodman"; fi`,
    `status=$?; rmdir ${mp} 2>/dev/null; exit $status`,
  ].join("\n");
}

export interface Share {
  mountPoint: string;
  /** unmounts (remote), ends the local half, removes the mount point; idempotent */
  close(): Promise<void>;
}

/** Mounts LOCALDIR on HOST at MOUNTPOINT; resolves once the remote sees it. */
export async function openShare(host: HostRecord, localDir: string, mountPoint: string, log: Log): Promise<Share> {
  const sftp = localSftpServer();
  const work = mkdtempSync(join(tmpdir(), "agentenv-share-"));
  const fifo = join(work, "sftp");
  const script = remoteShareScript(mountPoint, localDir);
  const ssh = sshArgv(host, remoteCommand(["sh", "-c", script]));
  // ssh's stdout feeds sftp-server, sftp-server's stdout feeds ssh through a FIFO: one loop, no copy in agentenv
  // sftp-server's pid is said first: ending it is how the share ends (EOF to sshfs, which unmounts and exits)
  const server = confinedServer(sftp, localDir, join(work, "root")) ?? [sftp, "-e", "-d", localDir];
  if (server[0] === sftp) log.debug("share: sftp-server runs unconfined here (no mount namespace to give it): the remote can ask it for any file you can read");
  const pipeline = `${shellJoin(ssh)} <"$1" | ${shellJoin(server)} >"$1" & echo "agentenv-share-sftp=$!" >&2; wait`;
  const child = Bun.spawn(["sh", "-c", `mkfifo -m 600 "$1" || exit 1; ${pipeline}`, "sh", fifo], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  let closed = false;
  let sftpPid = 0;
  const stderr: string[] = [];
  const ready = new Promise<boolean>((resolve) => {
    void (async () => {
      const decoder = new TextDecoder();
      let pending = "";
      for await (const chunk of child.stderr as ReadableStream<Uint8Array>) {
        pending += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line === readyLine) resolve(true);
          else if (line.startsWith(sftpLine)) sftpPid = Number(line.slice(sftpLine.length));
          else if (line === "agentenv-share-unconfined") log.warn(`sftp-server could not be confined to ${localDir} here: ${host.name} can ask it for any file you can read`);
          else if (line.trim()) {
            stderr.push(line);
            log.debug(`share: ${line}`);
          }
        }
      }
      resolve(false);
    })();
  });
  const close = async () => {
    if (closed) return;
    closed = true;
    // the SFTP channel ends: sshfs there reads EOF, unmounts and exits, its script removes the
    // mount point, and ssh ends with it — no further round trip
    if (sftpPid > 0) {
      try {
        process.kill(sftpPid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    const ended = await Promise.race([child.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
    if (!ended) {
      // a remote that did not notice: unmount it there explicitly
      const mp = shellQuote(mountPoint);
      await remoteScript(host, `if [ "$(id -u)" = 0 ]; then fusermount3 -u ${mp} 2>/dev/null || fusermount -u ${mp} 2>/dev/null || umount ${mp}; else podman unshare sh -c 'fusermount3 -u ${mp} 2>/dev/null || umount ${mp}'; fi; rmdir ${mp} 2>/dev/null; true`).catch(() => {});
      child.kill("SIGTERM");
    }
    await child.exited;
    rmSync(work, { recursive: true, force: true });
  };
  const mounted = await Promise.race([ready, child.exited.then(() => false), Bun.sleep(20000).then(() => false)]);
  if (!mounted) {
    await close();
    const why = stderr.join(" ").trim();
    if (/agentenv-share-error: no sshfs/.test(why)) throw new UserError(`${host.name} has no sshfs, which live-shares a local project into its sessions`, `on ${host.name}: sudo apt-get install sshfs (or use a project there: agentenv ${host.name}:/path)`);
    throw new UserError(`could not share ${localDir} with ${host.name}${why ? `: ${why}` : ""}`, `agentenv host check ${host.name}`);
  }
  return { mountPoint, close };
}

/**
 * A share that outlives the agentenv that opened it (`up --host` with a root on this
 * machine): the same loop as `openShare`, in a session of its own (setsid), its stderr in a
 * file of WORK. What `closeDetachedShare` needs to end it, in another agentenv, is plain data.
 */
export interface DetachedShare {
  local: string;
  mountPoint: string;
  /** the loop's shell (a session leader) and the sftp-server whose end ends the share */
  pid: number;
  sftpPid: number;
  /** this machine's directory holding the FIFO and the log */
  work: string;
}

export async function openDetachedShare(host: HostRecord, localDir: string, mountPoint: string, log: Log): Promise<DetachedShare> {
  const sftp = localSftpServer();
  const work = mkdtempSync(join(tmpdir(), "agentenv-share-"));
  const fifo = join(work, "sftp");
  const logFile = join(work, "log");
  const ssh = sshArgv(host, remoteCommand(["sh", "-c", remoteShareScript(mountPoint, localDir)]));
  const server = confinedServer(sftp, localDir, join(work, "root")) ?? [sftp, "-e", "-d", localDir];
  if (server[0] === sftp) log.debug("share: sftp-server runs unconfined here (no mount namespace to give it): the remote can ask it for any file you can read");
  const pipeline = `${shellJoin(ssh)} <"$1" | ${shellJoin(server)} >"$1" & echo "${sftpLine}$!" >&2; wait`;
  const child = Bun.spawn(["sh", "-c", `mkfifo -m 600 "$1" || exit 1; ${pipeline}`, "sh", fifo], { stdin: "ignore", stdout: "ignore", stderr: Bun.file(logFile), detached: true });
  child.unref();
  const lines = () => {
    try {
      return readFileSync(logFile, "utf8").split("\n");
    } catch {
      return [];
    }
  };
  const share: DetachedShare = { local: localDir, mountPoint, pid: child.pid, sftpPid: 0, work };
  for (const deadline = Date.now() + 20_000; Date.now() < deadline && child.exitCode === null; await Bun.sleep(50)) {
    const seen = lines();
    share.sftpPid = Number(seen.find((l) => l.startsWith(sftpLine))?.slice(sftpLine.length)) || 0;
    if (seen.includes(readyLine)) {
      if (seen.includes("agentenv-share-unconfined")) log.warn(`sftp-server could not be confined to ${localDir} here: ${host.name} can ask it for any file you can read`);
      return share;
    }
  }
  const why = lines().filter((l) => l.trim() && !l.startsWith(sftpLine)).join(" ").trim();
  await closeDetachedShare(host, share);
  if (/agentenv-share-error: no sshfs/.test(why)) throw new UserError(`${host.name} has no sshfs, which live-shares a local root into its containers`, `on ${host.name}: sudo apt-get install sshfs (or use a root there: --roots ${host.name}:/path)`);
  throw new UserError(`could not share ${localDir} with ${host.name}${why ? `: ${why}` : ""}`, `agentenv host check ${host.name}`);
}

/** Whether PID is alive and runs WHAT (pids are reused: a record may outlive its process). */
function runs(pid: number, what: RegExp): boolean {
  if (!(pid > 1)) return false;
  try {
    return what.test(readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " "));
  } catch {
    return false;
  }
}

/** Ends a detached share (`down`): sftp-server's end unmounts it there; else an explicit unmount. Idempotent. */
export async function closeDetachedShare(host: HostRecord, share: DetachedShare): Promise<void> {
  if (!share.work.startsWith(join(tmpdir(), "agentenv-share-")) || share.work.includes("..")) throw new Error(`not a share's directory: ${share.work}`);
  const loop = /^sh -c mkfifo /;
  // ended before (a lost connection): what its remote half left there (a dead mount, its mount point) goes too
  const endedBefore = !runs(share.pid, loop);
  if (runs(share.sftpPid, /sftp-server|unshare/)) process.kill(share.sftpPid, "SIGTERM");
  for (let i = 0; i < 100 && runs(share.pid, loop); i++) await Bun.sleep(50);
  if (endedBefore || runs(share.pid, loop)) {
    const mp = shellQuote(share.mountPoint);
    await remoteScript(host, `if [ "$(id -u)" = 0 ]; then fusermount3 -u ${mp} 2>/dev/null || fusermount -u ${mp} 2>/dev/null || umount -l ${mp}; else podman unshare sh -c 'fusermount3 -u ${mp} 2>/dev/null || umount -l ${mp}'; fi 2>/dev/null; rmdir ${mp} 2>/dev/null; true`).catch(() => {});
    if (!endedBefore) {
      try {
        process.kill(-share.pid, "SIGTERM");
      } catch {
        // gone meanwhile
      }
    }
  }
  rmSync(share.work, { recursive: true, force: true });
}
