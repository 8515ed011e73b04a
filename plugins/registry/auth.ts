import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "pathe";
import { UserError } from "../../core/errors.ts";

/**
 * Registry credentials where Podman and Docker keep them (`podman login`, `docker login`,
 * containers-auth.json(5)): `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
 * `$XDG_CONFIG_HOME/containers/auth.json` (~/.config), `$DOCKER_CONFIG/config.json`
 * (~/.docker). In each file the most specific key wins (`host/ns/repo`, then `host/ns`,
 * then `host`; Docker's `https://host/v1/` form too), a credential helper named for the
 * registry (`credHelpers`) or for all (`credsStore`) is asked as Docker asks it. The first
 * file that knows the registry answers.
 *
 * A credential never leaves this module in a message: errors name the file, never its
 * content; `Credentials.secrets` lists what callers must redact from anything they print.
 */

export interface Credentials {
  /** Basic: user and password (or a token the registry takes as one) */
  username?: string;
  password?: string;
  /** an OAuth2 refresh token (Docker's `identitytoken`) for the Bearer flow */
  identityToken?: string;
  /** where they were found, for messages: a file or a credential helper, never the values */
  from: string;
}

/** The files Podman reads, in its order, then Docker's. */
export function authFiles(env: Record<string, string | undefined> = process.env): string[] {
  const home = env.HOME || homedir();
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, "containers", "auth.json"));
  files.push(join(env.XDG_CONFIG_HOME || join(home, ".config"), "containers", "auth.json"));
  files.push(join(env.DOCKER_CONFIG || join(home, ".docker"), "config.json"));
  return files;
}

interface AuthFile {
  auths?: Record<string, { auth?: string; identitytoken?: string; username?: string; password?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** The keys a file may hold for REGISTRY/REPOSITORY, most specific first. */
export function authKeys(registry: string, repository: string): string[] {
  const keys: string[] = [];
  const parts = repository.split("/");
  for (let n = parts.length; n > 0; n--) keys.push(`${registry}/${parts.slice(0, n).join("/")}`);
  keys.push(registry);
  // Docker Hub's historic key, and Docker's URL-shaped keys
  if (registry === "docker.io") keys.push("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io");
  keys.push(`https://${registry}`, `https://${registry}/`, `https://${registry}/v1/`, `https://${registry}/v2/`, `http://${registry}`);
  return keys;
}

function decodeAuth(auth: string, from: string): Credentials {
  const text = Buffer.from(auth, "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon < 0) throw new UserError(`${from}: a registry credential there is not in the user:password form`, "log in again with podman login (or docker login)");
  return { username: text.slice(0, colon), password: text.slice(colon + 1), from };
}

/** Asks docker-credential-HELPER for REGISTRY's credential (Docker's protocol: the server on stdin, JSON out). */
function askHelper(helper: string, registry: string, file: string): Credentials | undefined {
  if (!/^[A-Za-z0-9_.-]+$/.test(helper)) throw new UserError(`${file}: the credential helper ${JSON.stringify(helper)} is not a helper name`);
  const bin = `docker-credential-${helper}`;
  const from = `${bin} (named in ${file})`;
  const path = Bun.which(bin, { PATH: process.env.PATH ?? "" });
  if (!path) throw new UserError(`${from}: not found on PATH`, `install it, or log in with podman login ${registry}`);
  const out = Bun.spawnSync([path, "get"], { stdin: new TextEncoder().encode(registry === "docker.io" ? "https://index.docker.io/v1/" : registry), stdout: "pipe", stderr: "pipe" });
  if (out.exitCode !== 0) {
    // "credentials not found": the helper does not know this registry
    if (/not found/i.test(out.stdout.toString() + out.stderr.toString())) return undefined;
    throw new UserError(`${from} failed (exit ${out.exitCode})`);
  }
  try {
    const { Username, Secret } = JSON.parse(out.stdout.toString()) as { Username?: string; Secret?: string };
    if (!Secret) return undefined;
    return Username === "<token>" ? { identityToken: Secret, from } : { username: Username ?? "", password: Secret, from };
  } catch {
    throw new UserError(`${from} answered something that is not its JSON`);
  }
}

/** The credentials for REGISTRY/REPOSITORY, or undefined when no file knows them (anonymous access). */
export function findCredentials(registry: string, repository: string, files = authFiles()): Credentials | undefined {
  const keys = authKeys(registry, repository);
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue; // no such file: the next one
    }
    let parsed: AuthFile;
    try {
      parsed = JSON.parse(text) as AuthFile;
    } catch {
      throw new UserError(`${file}: not valid JSON`, "fix it, or log in again with podman login (or docker login)");
    }
    const helper = keys.map((key) => parsed.credHelpers?.[key]).find(Boolean);
    if (helper) {
      const found = askHelper(helper, registry, file);
      if (found) return found;
    }
    for (const key of keys) {
      const entry = parsed.auths?.[key];
      if (!entry) continue;
      if (entry.identitytoken) return { identityToken: entry.identitytoken, from: file };
      if (entry.auth) return decodeAuth(entry.auth, file);
      if (entry.username !== undefined && entry.password !== undefined) return { username: entry.username, password: entry.password, from: file };
    }
    if (parsed.credsStore) {
      const found = askHelper(parsed.credsStore, registry, file);
      if (found) return found;
    }
  }
  return undefined;
}

/** A parsed `WWW-Authenticate` challenge: its scheme and parameters (realm, service, scope…). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** The first challenge of a `WWW-Authenticate` header (RFC 7235: scheme, then key=value or key="quoted" pairs). */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(.*)$/s.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  const pair = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  const rest = match[2]!;
  pair.lastIndex = 0;
  for (let found; (found = pair.exec(rest)); ) {
    params[found[1]!.toLowerCase()] = found[2] !== undefined ? found[2].replace(/\\(.)/g, "$1") : found[3]!;
    if (pair.lastIndex >= rest.length) break;
  }
  return { scheme: match[1]!.toLowerCase(), params };
}

/** TEXT with every secret of CREDENTIALS (and their Basic encoding) replaced: for anything printed. */
export function redact(text: string, credentials: Credentials | undefined, more: string[] = []): string {
  const secrets = [credentials?.password, credentials?.identityToken, ...more].filter((s): s is string => Boolean(s && s.length >= 3));
  if (credentials?.username !== undefined && credentials.password) secrets.push(Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64"));
  let out = text;
  for (const secret of secrets) out = out.split(secret).join("***");
  return out;
}
