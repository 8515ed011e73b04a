import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "pathe";

/** Files embedded in the binary as text (image/files.ts, plugins/env/template-files.ts). */
export type EmbeddedFiles = Record<string, { content: string; mode: number }>;

/** Writes embedded files into DIR, with their modes. */
export async function writeEmbedded(files: EmbeddedFiles, dir: string): Promise<void> {
  for (const [path, file] of Object.entries(files)) {
    const target = join(dir, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, file.content, { mode: file.mode });
  }
}
