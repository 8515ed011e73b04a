import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "pathe";

/**
 * A remote host as separate as this box allows (test/integration/remote.test.ts,
 * bench/remote.ts): sshd on a free loopback port with a host key made here, logging in
 * as a dedicated user (scripts/remote-test-host.sh) who has their own rootless Podman,
 * storage and home and cannot read root's files. Run as root.
 */
export const remoteUser = "agentenv-remote";

export interface RemoteHost {
  port: number;
  /** holds id (the client key), known_hosts, hostkey */
  keys: string;
  /** `ssh://agentenv-remote@127.0.0.1:PORT` */
  url: string;
  /** the `host add` arguments after NAME */
  addArgs: string[];
  /** a plain ssh to the remote user (no shared connection): SCRIPT on its sh */
  onRemote(script: string): { code: number; stdout: string; stderr: string };
  /** a second sshd for the same user, with extra sshd options (e.g. SetEnv=PATH=…); its known_hosts file */
  extraServer(options: string[]): Promise<{ port: number; knownHosts: string; stop(): void }>;
  stop(): void;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function sshd(keys: string, port: number, extra: string[] = []) {
  return Bun.spawn(
    ["/usr/sbin/sshd", "-D", "-e", "-p", String(port), "-o", "ListenAddress=127.0.0.1", "-h", join(keys, "hostkey"), "-o", "UsePAM=no", "-o", "StrictModes=no", "-o", `AuthorizedKeysFile=${join(keys, "authorized_keys")}`, "-o", "PidFile=none", "-o", `AllowUsers=${remoteUser}`, ...extra.flatMap((o) => ["-o", o])],
    { stdout: "ignore", stderr: "ignore" },
  );
}

function knownHostsLine(keys: string, port: number): string {
  return `[127.0.0.1]:${port} ${readFileSync(join(keys, "hostkey.pub"), "utf8").split(" ").slice(0, 2).join(" ")}\n`;
}

export async function startRemoteHost(repoRoot: string): Promise<RemoteHost> {
  const setup = Bun.spawnSync(["bash", join(repoRoot, "scripts/remote-test-host.sh")]);
  if (setup.exitCode !== 0) throw new Error(`scripts/remote-test-host.sh failed: ${setup.stderr.toString()}`);
  const keys = mkdtempSync(join(tmpdir(), "agentenv-remote-keys-"));
  // sshd reads authorized_keys as the remote user
  chmodSync(keys, 0o755);
  for (const file of ["hostkey", "id"]) Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(keys, file)]);
  writeFileSync(join(keys, "authorized_keys"), readFileSync(join(keys, "id.pub")));
  chmodSync(join(keys, "authorized_keys"), 0o644);
  const port = await freePort();
  writeFileSync(join(keys, "known_hosts"), knownHostsLine(keys, port));
  const server = sshd(keys, port);
  const onRemote = (script: string, p = port, knownHosts = join(keys, "known_hosts")) => {
    const out = Bun.spawnSync(["ssh", "-i", join(keys, "id"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", `UserKnownHostsFile=${knownHosts}`, "-o", "StrictHostKeyChecking=yes", "-p", String(p), "-l", remoteUser, "-T", "127.0.0.1", "sh"], { stdin: new Blob([script]) });
    return { code: out.exitCode, stdout: out.stdout.toString(), stderr: out.stderr.toString() };
  };
  const up = async (p: number, knownHosts: string) => {
    for (let i = 0; i < 50 && onRemote("true", p, knownHosts).code !== 0; i++) await Bun.sleep(100);
  };
  await up(port, join(keys, "known_hosts"));
  return {
    port,
    keys,
    url: `ssh://${remoteUser}@127.0.0.1:${port}`,
    addArgs: [`ssh://${remoteUser}@127.0.0.1:${port}`, "--identity", join(keys, "id"), "--known-hosts", join(keys, "known_hosts")],
    onRemote: (script) => onRemote(script),
    async extraServer(options) {
      const extraPort = await freePort();
      const knownHosts = join(keys, `known_hosts_${extraPort}`);
      writeFileSync(knownHosts, knownHostsLine(keys, extraPort));
      const extra = sshd(keys, extraPort, options);
      await up(extraPort, knownHosts);
      return { port: extraPort, knownHosts, stop: () => extra.kill() };
    },
    stop: () => server.kill(),
  };
}
