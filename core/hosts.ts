import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "pathe";
import { checkHostName, expandHome, hostNamePattern } from "./config.ts";
import { UserError } from "./errors.ts";
import { agentenvDir } from "./paths.ts";
import { writeAtomic } from "./volumes.ts";

/**
 * Remote machines agentenv runs sessions on, over SSH (`agentenv host add …`), kept in
 * `~/.config/agentenv/hosts.json`. Every field reaches an `ssh` command line, so each is
 * checked here, where it comes in and again where it is read: a host, user or file that
 * starts with "-" would be an option to ssh.
 */
export interface HostRecord {
  name: string;
  /** the SSH server's name or address (an IPv6 address without brackets) */
  host: string;
  user?: string;
  port?: number;
  /** a private key file (absolute), passed as `-i` with IdentitiesOnly */
  identity?: string;
  /** a known_hosts file (absolute) used instead of ssh's own (~/.ssh/known_hosts) */
  knownHosts?: string;
  added: string;
}

export { checkHostName };

const dnsName = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/;
const ipv6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/;
const userName = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

/** `ssh://[USER@]HOST[:PORT]` (IPv6: `ssh://[::1]:2222`), checked: no option, no shell word, no path. */
export function parseSshUrl(url: string): { host: string; user?: string; port?: number } {
  const bad = (why: string) => new UserError(`invalid SSH address "${url}": ${why}`, "write it as ssh://[USER@]HOST[:PORT], e.g. ssh://me@build.example.com:2222");
  const match = /^ssh:\/\/(?:([^@/]*)@)?(\[[^\]]*\]|[^:/]*)(?::([^/]*))?\/?$/.exec(url);
  if (!match) throw bad("not an ssh:// URL");
  const [, user, rawHost = "", rawPort] = match;
  const bracketed = rawHost.startsWith("[");
  const host = bracketed ? rawHost.slice(1, -1) : rawHost;
  if (!host) throw bad("no host");
  if (bracketed ? !ipv6.test(host) || !host.includes(":") : !dnsName.test(host)) throw bad(`"${host}" is not a host name or address`);
  if (user !== undefined && !userName.test(user)) throw bad(`"${user}" is not a user name`);
  let port: number | undefined;
  if (rawPort !== undefined) {
    port = Number(rawPort);
    if (!/^\d{1,5}$/.test(rawPort) || port < 1 || port > 65535) throw bad(`"${rawPort}" is not a port`);
  }
  return { host, ...(user ? { user } : {}), ...(port ? { port } : {}) };
}

/** The record written back as its URL. */
export function sshUrl(record: Pick<HostRecord, "host" | "user" | "port">): string {
  const host = record.host.includes(":") ? `[${record.host}]` : record.host;
  return `ssh://${record.user ? `${record.user}@` : ""}${host}${record.port ? `:${record.port}` : ""}`;
}

/** A file a host record names (a key, a known_hosts): made absolute, and it must be a readable file now. */
export function checkHostFile(path: string, what: string): string {
  const abs = resolve(expandHome(path));
  if (!existsSync(abs) || !statSync(abs).isFile()) throw new UserError(`${what} ${path}: no such file`, `pass an existing ${what}`);
  return abs;
}

export function hostsFile(env: Record<string, string | undefined> = process.env): string {
  return join(agentenvDir("config", env), "hosts.json");
}

/** A record as read from disk: every field checked again (the file is the user's, but hand-edited is possible). */
function checkRecord(value: unknown, file: string): HostRecord {
  const record = value as Partial<HostRecord>;
  const fail = (why: string) => new UserError(`${file}: ${why}`, "fix or remove that entry (agentenv host rm NAME)");
  if (typeof record !== "object" || record === null || typeof record.name !== "string" || typeof record.host !== "string") throw fail("an entry without a name and host");
  checkHostName(record.name, file);
  const parsed = parseSshUrl(sshUrl({ host: record.host, user: record.user, port: record.port }));
  for (const key of ["identity", "knownHosts"] as const) {
    const path = record[key];
    if (path !== undefined && (typeof path !== "string" || !path.startsWith("/"))) throw fail(`host ${record.name}: ${key} must be an absolute path`);
  }
  return { name: record.name, ...parsed, ...(record.identity ? { identity: record.identity } : {}), ...(record.knownHosts ? { knownHosts: record.knownHosts } : {}), added: String(record.added ?? "") };
}

export function readHosts(env: Record<string, string | undefined> = process.env): HostRecord[] {
  const file = hostsFile(env);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new UserError(`${file} is not valid JSON`, "fix it, or remove it and add the hosts again");
  }
  const hosts = (data as { hosts?: unknown })?.hosts;
  if (!Array.isArray(hosts)) throw new UserError(`${file} has no "hosts" list`, "fix it, or remove it and add the hosts again");
  return hosts.map((h) => checkRecord(h, file));
}

function writeHosts(hosts: HostRecord[], env: Record<string, string | undefined> = process.env): void {
  const file = hostsFile(env);
  mkdirSync(agentenvDir("config", env), { recursive: true, mode: 0o700 });
  writeAtomic(file, `${JSON.stringify({ hosts }, null, 2)}\n`, 0o600);
}

export function findHost(name: string, env: Record<string, string | undefined> = process.env): HostRecord | undefined {
  return readHosts(env).find((h) => h.name === name);
}

/** The host NAME, or a one-line error naming how to add it. */
export function getHost(name: string, env: Record<string, string | undefined> = process.env): HostRecord {
  checkHostName(name, "--host");
  const found = findHost(name, env);
  if (!found) throw new UserError(`no host named ${name}`, `add it: agentenv host add ${name} ssh://[USER@]HOST[:PORT] (agentenv host list shows the hosts)`);
  return found;
}

export function addHost(record: Omit<HostRecord, "added">, options: { replace?: boolean } = {}, env: Record<string, string | undefined> = process.env): HostRecord {
  checkHostName(record.name, "host name");
  const hosts = readHosts(env);
  if (!options.replace && hosts.some((h) => h.name === record.name)) {
    throw new UserError(`a host named ${record.name} already exists`, `remove it first (agentenv host rm ${record.name}), or pick another name`);
  }
  const added: HostRecord = { ...record, added: new Date().toISOString() };
  writeHosts([...hosts.filter((h) => h.name !== record.name), added], env);
  return added;
}

/** Removes NAME's record; false when there was none. */
export function removeHost(name: string, env: Record<string, string | undefined> = process.env): boolean {
  const hosts = readHosts(env);
  if (!hosts.some((h) => h.name === name)) return false;
  writeHosts(hosts.filter((h) => h.name !== name), env);
  return true;
}

/**
 * `HOST:PATH` as scp writes it: a project directory on host HOST (added with `host add`).
 * Undefined when WORD is not one (no colon, a local path that exists, a name that is no
 * host's). PATH must be absolute: the plan is made before anything asks the remote.
 */
export function parseRemoteDir(word: string, known: (name: string) => boolean): { host: string; path: string } | undefined {
  const colon = word.indexOf(":");
  if (colon < 1 || existsSync(word)) return undefined;
  const host = word.slice(0, colon);
  const path = word.slice(colon + 1);
  if (!hostNamePattern.test(host) || !known(host)) return undefined;
  if (!path.startsWith("/") || path.includes("\0") || path.includes("\n") || path.split("/").includes("..")) {
    throw new UserError(`${word}: the remote directory must be an absolute path with no ".." part`, `e.g. agentenv ${host}:/home/me/project`);
  }
  return { host, path: path.length > 1 ? path.replace(/\/+$/, "") : path };
}

