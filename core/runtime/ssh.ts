import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import type { HostRecord } from "../hosts.ts";
import { UserError } from "../errors.ts";
import { hostUid } from "../paths.ts";
import { engineCall } from "./process.ts";
import type { EngineResult } from "./types.ts";

/**
 * One remote machine, reached with OpenSSH. Every call goes over one multiplexed
 * connection (ControlMaster=auto + ControlPersist: the first call opens it in the
 * background, the next ones reuse it in ≈10 ms instead of a new handshake), with
 * BatchMode (no prompt ever: a missing key is an error, not a hang) and strict host-key
 * checking (an unknown or changed host key is an error with the fix).
 *
 * What runs there is never left to the remote login shell's grammar (bash, zsh, fish and
 * csh disagree): a script goes on stdin to `sh`, and a single command whose stdin is needed
 * (a terminal, a stream) is written in words every shell reads the same (./ssh.ts
 * `remoteCommand`).
 */

/** How long the shared connection outlives its last use. */
export const controlPersistSeconds = 600;

/** The per-user 0700 directory holding the control sockets (short: a socket path has ≈104 bytes). */
export function controlDir(env: Record<string, string | undefined> = process.env): string {
  const base = env.XDG_RUNTIME_DIR || (lstatOk("/dev/shm") ? "/dev/shm" : tmpdir());
  return join(base, `agentenv-ssh-${hostUid(env) ?? "user"}`);
}

function lstatOk(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Makes the control directory, refusing one that is not ours and closed to others (a socket there is a live login). */
export function ensureControlDir(dir = controlDir()): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = lstatSync(dir);
  if (!stat.isDirectory() || stat.uid !== process.getuid?.() || stat.mode & 0o077) {
    throw new UserError(`${dir} must be a directory owned by you with mode 0700 (it holds your SSH connections)`, `remove it, or fix it: chmod 700 ${dir}`);
  }
  return dir;
}

export interface SshCallOptions {
  /** "force": a terminal on the remote (`-t`); default none (`-T`) */
  tty?: boolean;
}

/**
 * The control socket of HOST's shared connection: one per way of reaching it (address,
 * user, key, known_hosts), so a connection whose host key was checked against one
 * known_hosts file is never reused by a record that names another (ssh's own `%C` hashes
 * only the address and user). Short: a socket path holds ≈104 bytes.
 */
export function controlPath(host: HostRecord, dir = controlDir()): string {
  const key = JSON.stringify([host.host, host.user ?? "", host.port ?? 22, host.identity ?? "", host.knownHosts ?? ""]);
  return join(dir, new Bun.CryptoHasher("sha256").update(key).digest("hex").slice(0, 20));
}

/** The ssh options every call uses (pure). */
export function sshOptions(host: HostRecord, dir = controlDir()): string[] {
  const options = [
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", "ControlMaster=auto",
    "-o", `ControlPath=${controlPath(host, dir)}`,
    "-o", `ControlPersist=${controlPersistSeconds}`,
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=3",
    "-o", "LogLevel=ERROR",
  ];
  if (host.knownHosts) options.push("-o", `UserKnownHostsFile=${host.knownHosts}`);
  if (host.identity) options.push("-i", host.identity, "-o", "IdentitiesOnly=yes");
  if (host.port) options.push("-p", String(host.port));
  if (host.user) options.push("-l", host.user);
  return options;
}

/** `ssh … -- HOST COMMAND` (pure): COMMAND is one string, run by the remote login shell. */
export function sshArgv(host: HostRecord, command: string, options: SshCallOptions = {}, dir = controlDir()): string[] {
  return ["ssh", ...sshOptions(host, dir), options.tty ? "-t" : "-T", "--", host.host, command];
}

/** A word every login shell (sh, bash, zsh, fish, csh) reads as itself, unquoted. */
const plainWord = /^[A-Za-z0-9_./-][A-Za-z0-9_+=:,./@-]*$/;
/** What single quotes keep literal in every one of those shells (not `\`, `!`, newlines). */
const quotable = /^[^\\!\n\r\0]*$/;

/**
 * ARGV as one remote command line that the remote login shell runs unchanged, whichever
 * shell it is: plain words bare, others single-quoted when single quotes mean the same
 * everywhere, and else the whole command base64-encoded for `sh` to decode (pure).
 */
export function remoteCommand(argv: readonly string[]): string {
  if (argv.every((word) => quotable.test(word))) {
    return ["exec", ...argv.map((word) => (plainWord.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`))].join(" ");
  }
  const script = `exec ${argv.map((w) => `'${w.replaceAll("'", `'\\''`)}'`).join(" ")}`;
  return `exec sh -c 'eval "$(echo ${Buffer.from(script).toString("base64")} | base64 -d)"'`;
}

/** ssh's own failure (exit 255): the connection, not the remote command. */
export const sshFailureCode = 255;

/**
 * What ssh's own error means, as one line with its fix; undefined when STDERR is no ssh
 * error. HOST names the host as the user knows it.
 */
export function sshProblem(stderr: string, host: HostRecord): UserError | undefined {
  const text = stderr.trim();
  const where = `${host.name} (${host.user ? `${host.user}@` : ""}${host.host}${host.port ? `:${host.port}` : ""})`;
  const scan = host.port ? `ssh-keyscan -p ${host.port} ${host.host}` : `ssh-keyscan ${host.host}`;
  const knownHosts = host.knownHosts ?? "~/.ssh/known_hosts";
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/i.test(text) && /changed/i.test(text)) {
    return new UserError(`the host key of ${where} has CHANGED since it was recorded in ${knownHosts}: someone may be in between, or the machine was reinstalled`, `if you know why, remove the old key (ssh-keygen -R ${host.host} -f ${knownHosts}) and check the new one`);
  }
  if (/No .*host key is known|Host key verification failed|host key for .* not known/i.test(text)) {
    return new UserError(`the host key of ${where} is not known (strict host-key checking is on)`, `check it and add it: ${scan} >> ${knownHosts} (or ssh to it once and answer yes)`);
  }
  if (/Connection refused/i.test(text)) return new UserError(`cannot connect to ${where}: connection refused`, `is sshd running there, and on that port? (agentenv host add ${host.name} … --force to change the address)`);
  if (/Connection timed out|timed out|No route to host|Network is unreachable/i.test(text)) return new UserError(`cannot reach ${where}: ${text.split("\n").pop()}`, "check the address and the network");
  if (/Could not resolve hostname|Name or service not known/i.test(text)) return new UserError(`cannot resolve ${host.host} (host ${host.name})`, "check the name, or use its address");
  if (/Permission denied/i.test(text)) {
    return new UserError(`${where} refused the login: ${text.split("\n").pop()}`, host.identity ? `check that ${host.identity}.pub is in ~/.ssh/authorized_keys there` : "load your key (ssh-add) or pass --identity FILE to agentenv host add; BatchMode means no password prompt");
  }
  if (/Connection closed|Connection reset|Broken pipe|closed by remote host|mux_client|Control socket/i.test(text)) {
    return new UserError(`the SSH connection to ${where} was lost: ${text.split("\n").pop()}`, "run the command again (a new connection is opened)");
  }
  return undefined;
}

/** One captured call on HOST: SCRIPT is run by `sh` on the remote, sent on stdin. */
export function remoteScript(host: HostRecord, script: string): Promise<EngineResult> {
  ensureControlDir();
  return engineCall(sshArgv(host, "sh"), { stdin: script });
}

/** Ends HOST's shared connection, if one is up (`host rm`, tests). */
export async function closeMaster(host: HostRecord): Promise<void> {
  await engineCall(["ssh", "-S", controlPath(host), "-O", "exit", "--", host.host]);
}

/** Whether HOST's shared connection is up (no new one is opened). */
export async function masterAlive(host: HostRecord): Promise<boolean> {
  const result = await engineCall(["ssh", ...sshOptions(host), "-O", "check", "--", host.host]);
  return result.code === 0;
}
