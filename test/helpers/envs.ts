/** The environments a test file makes on real Podman: fresh names, their volumes, their clean-up. */

/** `PREFIX-WHAT` names, each remembered in `made` so the file's afterAll can remove them. */
export function envNames(prefix: string): { envName: (what: string) => string; made: string[] } {
  const made: string[] = [];
  return {
    made,
    envName(what: string): string {
      const name = `${prefix}-${what}`;
      made.push(name);
      return name;
    },
  };
}

export function volumeExists(name: string): boolean {
  return Bun.spawnSync(["podman", "volume", "exists", `agentenv-env-${name}`]).exitCode === 0;
}

/** The host directory of environment NAME's home volume. */
export function volumeDir(name: string): string {
  return Bun.spawnSync(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", `agentenv-env-${name}`]).stdout.toString().trim();
}
