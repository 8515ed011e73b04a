import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createSign, X509Certificate } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "pathe";

/**
 * A real OCI registry for tests: Debian's `docker-registry` (distribution v2.8) on a free
 * loopback port, with its own config and storage in a temp dir — anonymous, with htpasswd
 * Basic auth, or with the Bearer token flow (a small token service run here, signing JWTs
 * the registry checks against a certificate made for it). Its access log is how tests
 * count the blobs it received. bin/setup installs docker-registry, apache2-utils
 * (htpasswd) and skopeo; a missing one is a failure with the fix, never a skip.
 */

export interface TestRegistry {
  /** host:port */
  address: string;
  dir: string;
  /** the registry's log so far (access log lines and its own) */
  log(): string;
  /** requests of METHOD whose path matches PATTERN in the access log (read once the registry has written it) */
  count(method: string, pattern: RegExp): Promise<number>;
  stop(): void;
}

function need(bin: string, pkg: string): void {
  if (Bun.spawnSync(["sh", "-c", `command -v ${bin}`]).exitCode !== 0) throw new Error(`${bin} is missing: run bin/setup (it installs Debian's ${pkg})`);
}

async function freePort(): Promise<number> {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

async function waitFor(url: string, process: { exitCode: number | null }, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (process.exitCode !== null) throw new Error(`the test registry exited: ${log()}`);
    try {
      const response = await fetch(url, { tls: { rejectUnauthorized: false } } as RequestInit);
      await response.arrayBuffer();
      return;
    } catch {
      await Bun.sleep(25);
    }
  }
  throw new Error(`the test registry did not answer at ${url}: ${log()}`);
}

export interface RegistryOptions {
  /** user → password: htpasswd Basic auth */
  basic?: Record<string, string>;
  /** user → password: the Bearer token flow, with a token service the test runs */
  bearer?: Record<string, string>;
  /** HTTPS with a self-signed certificate made here */
  tls?: boolean;
}

export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  need("docker-registry", "docker-registry");
  const dir = mkdtempSync(join(tmpdir(), "agentenv-registry-"));
  const port = await freePort();
  let auth = "";
  if (options.basic) {
    need("htpasswd", "apache2-utils");
    const file = join(dir, "htpasswd");
    writeFileSync(file, "");
    for (const [user, password] of Object.entries(options.basic)) {
      const made = Bun.spawnSync(["htpasswd", "-B", "-b", file, user, password]);
      if (made.exitCode !== 0) throw new Error(`htpasswd failed: ${made.stderr}`);
    }
    auth = `auth:\n  htpasswd:\n    realm: agentenv-test\n    path: ${file}\n`;
  }
  let tokenServer: ReturnType<typeof Bun.serve> | undefined;
  if (options.bearer) {
    const made = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "token.key"), "-out", join(dir, "token.crt"), "-days", "2", "-subj", "/CN=agentenv-test-token"]);
    if (made.exitCode !== 0) throw new Error(`openssl failed: ${made.stderr}`);
    const key = readFileSync(join(dir, "token.key"), "utf8");
    const cert = new X509Certificate(readFileSync(join(dir, "token.crt")));
    const users = options.bearer;
    const b64 = (data: string | Buffer) => Buffer.from(data).toString("base64url");
    tokenServer = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(request) {
        const url = new URL(request.url);
        const basic = request.headers.get("authorization")?.replace(/^Basic /, "");
        const [user, password] = basic ? Buffer.from(basic, "base64").toString().split(/:(.*)/s) : [];
        if (!user || users[user] !== password) return new Response("unauthorized", { status: 401 });
        const access = url.searchParams.getAll("scope").map((scope) => {
          const [type, name, actions] = scope.split(":");
          return { type, name, actions: (actions ?? "").split(",") };
        });
        const now = Math.floor(Date.now() / 1000);
        const header = { alg: "RS256", typ: "JWT", x5c: [cert.raw.toString("base64")] };
        const claims = { iss: "agentenv-test", sub: user, aud: url.searchParams.get("service"), exp: now + 300, nbf: now - 10, iat: now, jti: crypto.randomUUID(), access };
        const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
        return Response.json({ token: `${input}.${b64(createSign("RSA-SHA256").update(input).sign(key))}` });
      },
    });
    auth = `auth:\n  token:\n    realm: http://127.0.0.1:${tokenServer.port}/token\n    service: agentenv-test-registry\n    issuer: agentenv-test\n    rootcertbundle: ${join(dir, "token.crt")}\n`;
  }
  let tls = "";
  if (options.tls) {
    const made = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "tls.key"), "-out", join(dir, "tls.crt"), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]);
    if (made.exitCode !== 0) throw new Error(`openssl failed: ${made.stderr}`);
    tls = `  tls:\n    certificate: ${join(dir, "tls.crt")}\n    key: ${join(dir, "tls.key")}\n`;
  }
  const config = join(dir, "config.yml");
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "data")}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: agentenv-test-secret\n${tls}${auth}`,
  );
  const logFile = join(dir, "registry.log");
  // one file descriptor for both: two opens of the file would write over each other
  const fd = openSync(logFile, "a");
  const child = Bun.spawn(["docker-registry", "serve", config], { stdout: fd, stderr: fd });
  closeSync(fd);
  const log = () => {
    try {
      return readFileSync(logFile, "utf8");
    } catch {
      return "";
    }
  };
  await waitFor(`${options.tls ? "https" : "http"}://127.0.0.1:${port}/v2/`, child, log);
  return {
    address: `127.0.0.1:${port}`,
    dir,
    log,
    async count(method, pattern) {
      // the access log is written after the response: a moment for the last line
      await Bun.sleep(100);
      return log()
        .split("\n")
        .filter((line) => {
          const request = /"([A-Z]+) (\S+) HTTP\/[\d.]+"/.exec(line);
          return request && request[1] === method && pattern.test(request[2]!);
        }).length;
    },
    stop() {
      child.kill();
      tokenServer?.stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An auth.json (Podman's format) giving USER:PASSWORD for REGISTRY, in a dir of its own. */
export function authFile(registry: string, user: string, password: string): string {
  const dir = mkdtempSync(join(tmpdir(), "agentenv-auth-"));
  const file = join(dir, "auth.json");
  writeFileSync(file, JSON.stringify({ auths: { [registry]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } } }), { mode: 0o600 });
  return file;
}
