import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "pathe";

/**
 * Rootless Podman keeps its images and volumes under HOME (~/.local/share/containers) and
 * reads its config from $XDG_CONFIG_HOME/containers: a throwaway HOME (tests, benchmarks)
 * gets the user's Podman config with the storage pointed at the real one, so the images
 * loaded for the user are there. Only for a normal user: root's storage is not under HOME.
 */
export function sharePodmanStorage(home: string): void {
  const real = join(process.env.XDG_CONFIG_HOME || join(homedir(), ".config"), "containers");
  const mine = join(home, ".config", "containers");
  mkdirSync(mine, { recursive: true });
  for (const name of existsSync(real) ? readdirSync(real) : []) {
    if (name.endsWith(".conf")) writeFileSync(join(mine, name), readFileSync(join(real, name)));
  }
  const graphroot = `graphroot = "${join(process.env.XDG_DATA_HOME || join(homedir(), ".local", "share"), "containers", "storage")}"`;
  const storage = existsSync(join(mine, "storage.conf")) ? readFileSync(join(mine, "storage.conf"), "utf8") : "";
  writeFileSync(join(mine, "storage.conf"), /^\[storage\][ \t]*$/m.test(storage) ? storage.replace(/^\[storage\][ \t]*$/m, `[storage]\n${graphroot}`) : `[storage]\n${graphroot}\n${storage}`);
}
