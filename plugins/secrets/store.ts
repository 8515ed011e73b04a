import { checkEnvName } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { mkdirSync } from "node:fs";
import { dirname } from "pathe";
import { lockFile } from "../../core/linux.ts";
import { readVault, writeVault } from "../../core/vault.ts";
import { secretsFile } from "./index.ts";

/**
 * Secrets: values the user gives once (`agentenv secret set`) that every session gets as
 * environment variables, for all environments or for one. They live encrypted in one
 * file (see core/vault.ts) and reach a container only through its handoff directory.
 */
export interface SecretStore {
  version: 1;
  /** scope → NAME → value; the scope is an environment's name, or "*" for all */
  scopes: Record<string, Record<string, string>>;
}

export const allScope = "*";
const purpose = "secrets";

export function readSecrets(): SecretStore {
  return readVault<SecretStore>(secretsFile(), purpose) ?? { version: 1, scopes: Object.create(null) };
}

export function writeSecrets(store: SecretStore): void {
  for (const [scope, names] of Object.entries(store.scopes)) if (!Object.keys(names).length) delete store.scopes[scope];
  writeVault(secretsFile(), purpose, store);
}

/**
 * Reads, changes and writes the secrets under an exclusive lock: two `secret set` at once
 * both land (without it the last writer wins and the other's secret is lost).
 */
export function updateSecrets<T>(change: (store: SecretStore) => T): T {
  mkdirSync(dirname(secretsFile()), { recursive: true, mode: 0o700 });
  const lock = lockFile(`${secretsFile()}.lock`, "exclusive")!;
  try {
    const store = readSecrets();
    const result = change(store);
    writeSecrets(store);
    return result;
  } finally {
    lock.release();
  }
}

/** What a session of environment ENV (none: undefined) gets: all-environment secrets, overridden by its own. */
export function secretsFor(store: SecretStore, env: string | undefined): Record<string, string> {
  const scope = (name: string) => (Object.hasOwn(store.scopes, name) ? store.scopes[name] : undefined);
  return { ...scope(allScope), ...(env ? scope(env) : undefined) };
}

/** Variables a secret must not replace: the session's own. */
const reserved = new Set(["HOME", "PATH", "SHELL", "USER", "TERM", "PWD", "HOSTNAME", "LANG"]);

export function checkSecretName(name: string | undefined): string {
  if (!name) throw new UserError("a secret name is needed", "e.g. agentenv secret set GITHUB_TOKEN < token.txt");
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UserError(`${name}: a secret's name is an environment variable name (letters, digits, _; not starting with a digit)`);
  if (reserved.has(name) || name.startsWith("AGENTENV_")) throw new UserError(`${name}: sessions set this variable themselves; choose another name`);
  return name;
}

export function scopeOf(env: string | undefined): string {
  return env ? checkEnvName(env, "--env")! : allScope;
}

export function describeScope(scope: string): string {
  return scope === allScope ? "all environments" : `environment ${scope}`;
}
