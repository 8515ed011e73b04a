import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "pathe";
import { writeEmbedded } from "../../core/embedded.ts";
import { UserError } from "../../core/errors.ts";
import { refuseSharedPath } from "../../core/hostpaths.ts";
import { linkLeaves } from "./home.ts";

export interface TemplateScan {
  /** absolute path of the template directory */
  dir: string;
  files: number;
  bytes: number;
  /** content hash: paths, modes, contents and link targets */
  hash: string;
  /** the shell the template is configured for, when it says */
  shell?: string;
}

/**
 * Checks a template directory before anything is created, and hashes it: it must be a
 * directory, and every symlink in it must point inside it (a home made from it must not
 * depend on the machine it was made on). Only files, directories and symlinks; never a
 * system path or one holding agentenv's own key and settings (they would be copied into
 * a home every session can read).
 */
export function scanTemplate(path: string): TemplateScan {
  const dir = resolve(path);
  refuseSharedPath(dir, "template");
  if (!existsSync(dir)) throw new UserError(`template ${path}: no such directory`);
  if (!statSync(dir).isDirectory()) throw new UserError(`template ${path}: not a directory`);
  const hasher = new Bun.CryptoHasher("sha256");
  let files = 0;
  let bytes = 0;
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const relPath = rel ? `${rel}/${name}` : name;
      const full = join(dir, relPath);
      const stat = lstatSync(full);
      if (stat.isSymbolicLink()) {
        const target = readlinkSync(full);
        if (isAbsolute(target) || leavesTemplate(dir, relPath, target)) {
          throw new UserError(`template ${path}: the symlink ${relPath} → ${target} points outside the template`, "make it relative and inside the template, or copy the file in");
        }
        hasher.update(`L\0${relPath}\0${target}\0`);
      } else if (stat.isDirectory()) {
        hasher.update(`D\0${relPath}\0${stat.mode & 0o7777}\0`);
        walk(relPath);
      } else if (stat.isFile()) {
        files++;
        bytes += stat.size;
        hasher.update(`F\0${relPath}\0${stat.mode & 0o7777}\0${stat.size}\0`);
        hasher.update(readFileSync(full));
      } else {
        throw new UserError(`template ${path}: ${relPath} is not a file, directory or symlink`);
      }
    }
  };
  try {
    walk("");
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw new UserError(`template ${path}: cannot read it: ${(error as Error).message}`);
  }
  return { dir, files, bytes, hash: hasher.digest("hex").slice(0, 16), shell: guessShell(dir) };
}

/**
 * Whether the link at REL (inside the template DIR) → TARGET leads out of it, followed
 * through the template's other links as the copy would follow them (see linkLeaves). An
 * absolute target leads out.
 */
export function leavesTemplate(dir: string, rel: string, target: string): boolean {
  const linkAt = (parts: readonly string[]) => {
    try {
      return lstatSync(join(dir, ...parts)).isSymbolicLink() ? readlinkSync(join(dir, ...parts)) : undefined;
    } catch {
      // nothing there (yet): the rest of the path is plain names and ".."
      return undefined;
    }
  };
  return linkLeaves(rel, target, linkAt, () => "out");
}

/** zsh when the template configures zsh, bash when it configures only bash; else the image decides. */
export function guessShell(dir: string): string | undefined {
  const has = (p: string) => existsSync(join(dir, p));
  if ([".zshenv", ".zshrc", ".zprofile", ".config/zsh"].some(has)) return "zsh";
  if ([".bashrc", ".bash_profile"].some(has)) return "bash";
  return undefined;
}

/** Writes the template shipped in the binary (test-env/) into DIR. */
export async function writeBuiltinTemplate(dir: string): Promise<void> {
  const { templateFiles } = await import("./template-files.ts");
  await writeEmbedded(templateFiles, dir);
}
