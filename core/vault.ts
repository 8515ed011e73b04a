import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "pathe";
import { UserError } from "./errors.ts";
import { agentenvDir } from "./paths.ts";
import { writeAtomic } from "./volumes.ts";

/**
 * Files encrypted at rest, for what must never sit on disk in the clear (an environment's
 * overlay, secrets). AES-256-GCM with a fresh random IV per write. A file's purpose
 * ("secrets", "overlay:dev") is authenticated with it, so a file copied over another is
 * refused like a tampered one.
 *
 * The key: AGENTENV_KEY (32 bytes as 64 hex digits or base64), else the key file in the
 * agentenv config dir, created with mode 0600 on the first write.
 *
 *   file = "AEV1" | iv (12 bytes) | tag (16 bytes) | ciphertext
 */
const magic = Buffer.from("AEV1");
const ivBytes = 12;
const tagBytes = 16;

export function keyFile(): string {
  return join(agentenvDir("config"), "key");
}

function describeKey(): string {
  return process.env.AGENTENV_KEY ? "AGENTENV_KEY" : keyFile();
}

function parseKey(text: string, from: string): Buffer {
  const value = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(value) ? Buffer.from(value, "hex") : /^[A-Za-z0-9+/]{43}=$/.test(value) ? Buffer.from(value, "base64") : undefined;
  if (!key || key.length !== 32) throw new UserError(`${from} is not a key: give 32 bytes as 64 hex digits or base64`, "e.g. openssl rand -hex 32");
  return key;
}

/** The key, or undefined when there is none yet and `create` is false. */
function loadKey(create: boolean): Buffer | undefined {
  if (process.env.AGENTENV_KEY) return parseKey(process.env.AGENTENV_KEY, "AGENTENV_KEY");
  const file = keyFile();
  if (!existsSync(file)) {
    if (!create) return undefined;
    // a new key would orphan what the lost one encrypted, and hide that it is lost
    const locked = encryptedFiles();
    if (locked.length) throw new UserError(`the key that encrypted ${locked[0]} is missing (${file})`, "restore the key file, or set AGENTENV_KEY to that key; to start over, remove the encrypted files");
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    try {
      // "wx": a key another agentenv wrote meanwhile is used, never replaced
      const fd = openSync(file, "wx", 0o600);
      try {
        writeSync(fd, `${randomBytes(32).toString("base64")}\n`);
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
  // like ssh with a private key: a key others can read protects nothing
  if (statSync(file).mode & 0o077) throw new UserError(`${file} can be read by other users`, `chmod 600 ${file}`);
  return parseKey(readFileSync(file, "utf8"), file);
}

/** The decrypted content of FILE (JSON), or undefined when FILE does not exist. */
export function readVault<T>(file: string, purpose: string): T | undefined {
  if (!existsSync(file)) return undefined;
  const data = readFileSync(file);
  const key = loadKey(false);
  if (!key) throw new UserError(`${file} is encrypted, but its key is missing (${keyFile()})`, "restore the key file, or set AGENTENV_KEY to the key it was written with");
  if (data.length < magic.length + ivBytes + tagBytes || !data.subarray(0, magic.length).equals(magic)) {
    throw new UserError(`${file} is not an agentenv encrypted file`);
  }
  const iv = data.subarray(magic.length, magic.length + ivBytes);
  const tag = data.subarray(magic.length + ivBytes, magic.length + ivBytes + tagBytes);
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAAD(Buffer.from(purpose));
  decipher.setAuthTag(tag);
  let plain: Buffer;
  try {
    plain = Buffer.concat([decipher.update(data.subarray(magic.length + ivBytes + tagBytes)), decipher.final()]);
  } catch {
    throw new UserError(`cannot decrypt ${file}: wrong key (${describeKey()}) or the file was changed`, "use the key it was written with; a changed file cannot be recovered");
  }
  // objects without a prototype: a name such as "constructor" or "__proto__" is just a name
  return JSON.parse(plain.toString("utf8"), (_key, value) =>
    value && typeof value === "object" && !Array.isArray(value) ? Object.assign(Object.create(null), value) : value,
  ) as T;
}

/** Encrypts VALUE (as JSON) into FILE, atomically, mode 0600. */
export function writeVault(file: string, purpose: string, value: unknown): void {
  const key = loadKey(true)!;
  const iv = randomBytes(ivBytes);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(purpose));
  const body = Buffer.concat([cipher.update(Buffer.from(JSON.stringify(value), "utf8")), cipher.final()]);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeAtomic(file, Buffer.concat([magic, iv, cipher.getAuthTag(), body]), 0o600);
}

/** Every encrypted file agentenv keeps (secrets, overlays): they share the one key. */
function encryptedFiles(): string[] {
  const dir = agentenvDir("data");
  if (!existsSync(dir)) return [];
  return [...new Bun.Glob("**/*.enc").scanSync({ cwd: dir, onlyFiles: true })].map((path) => join(dir, path));
}

export function removeVault(file: string): void {
  rmSync(file, { force: true });
}
