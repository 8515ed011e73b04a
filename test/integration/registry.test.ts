import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { fileDigest, manifestType, parseReference, RegistryClient } from "../../plugins/registry/client.ts";
import { artifactType, configType, partAnnotation } from "../../plugins/env/registry.ts";
import { agentenv, isolatedHome, repoRoot, rootless, tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace, removeStoreVolume, requireImage } from "../helpers/engine.ts";
import { envNames, volumeDir, volumeExists } from "../helpers/envs.ts";
import { authFile, startRegistry, type TestRegistry } from "../helpers/registry.ts";

/**
 * `env push` / `env pull` against a real registry on loopback (Debian's docker-registry,
 * distribution v2.8), with real Podman: the home travels byte for byte, unchanged parts
 * are not uploaded again, hostile artifacts create nothing, credentials never show.
 */

const fixture = join(repoRoot, "test", "fixtures", "env");
const prefix = `rg${process.pid}`;
const { envName, made } = envNames(prefix);
let registry: TestRegistry;
let secured: TestRegistry;
const password = "Reg-Secret-31337";
let auth: string;

beforeAll(async () => {
  await requireImage();
  registry = await startRegistry();
  secured = await startRegistry({ basic: { carol: password } });
  auth = authFile(secured.address, "carol", password);
});

afterAll(() => {
  registry?.stop();
  secured?.stop();
  for (const name of made) Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
});

async function create(name: string): Promise<string> {
  const result = await agentenv(["env", "create", name, fixture]);
  expect(result.code).toBe(0);
  return volumeDir(name);
}

/** The home as files, kinds, modes, link targets and content hashes — what must travel (the record is each host's own; last-used each session's). */
function listing(name: string): string {
  const skip = "! -path ./.local/state/agentenv/env.json ! -path ./.local/state/agentenv/last-used";
  return Bun.spawnSync(["sh", "-c", `cd ${volumeDir(name)} && find . ${skip} -printf '%p %y %m %U %l\\n' | sort && find . -type f ${skip} -exec sha256sum {} + | sort`]).stdout.toString();
}

/** Blob uploads the registry finished (the PUT that closes each upload) for REPO. */
function uploads(reg: TestRegistry, repo: string): Promise<number> {
  return reg.count("PUT", new RegExp(`^/v2/${repo}/blobs/uploads/`));
}

function expectOneLine(result: { code: number; stderr: string }, message: RegExp | string): void {
  expect(result.code).toBe(1);
  const lines = result.stderr.trim().split("\n");
  expect(lines.at(-1)).toMatch(typeof message === "string" ? new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : message);
  expect(lines.filter((line) => line.startsWith("agentenv: "))).toHaveLength(1);
  expectNoStackTrace(result.stderr);
}

describe("env push / env pull", () => {
  test("push then pull into a new name: the home's files, modes and links identical; a second push uploads nothing; a one-file change uploads only its part", async () => {
    const name = envName("src");
    const dir = await create(name);
    mkdirSync(join(dir, ".claude/projects"), { recursive: true });
    writeFileSync(join(dir, ".claude/projects/memory.md"), "remember this\n");
    writeFileSync(join(dir, "big.bin"), Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 31) % 256)));
    symlinkSync("../big.bin", join(dir, "bin/big-link"));
    Bun.spawnSync(["chmod", "0700", join(dir, ".claude")]);
    const ref = `${registry.address}/team/${prefix}-env:v1`;
    const pushed = await agentenv(["env", "push", name, ref, "--json"]);
    expect(pushed.stderr).toContain(`environment ${name} pushed to ${ref}@sha256:`);
    expect(pushed.code).toBe(0);
    const result = JSON.parse(pushed.stdout);
    expect(result.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(result).toMatchObject({ name, ref });
    expect(result.layers.map((l: { part: string; status: string }) => [l.part, l.status])).toEqual([
      ["home", "uploaded"],
      ["memory", "uploaded"],
      ["state", "uploaded"],
    ]);
    const repo = `team/${prefix}-env`;
    expect(await uploads(registry, repo)).toBe(4); // three parts and the config

    // the artifact: its own artifactType and config media type, parts annotated, the annotations the issue names
    const client = new RegistryClient(parseReference(ref));
    const manifest = JSON.parse((await client.getManifest("v1"))!.body.toString());
    expect(manifest).toMatchObject({ schemaVersion: 2, mediaType: manifestType, artifactType, config: { mediaType: configType } });
    expect(manifest.layers.map((l: { annotations: Record<string, string> }) => l.annotations[partAnnotation])).toEqual(["home", "memory", "state"]);
    expect(Object.keys(manifest.annotations).sort()).toEqual(["dev.agentenv.version", "org.opencontainers.image.created"]);
    const config = JSON.parse((await client.blobBytes(manifest.config.digest)).toString());
    expect(config).toEqual({ agentenv: expect.any(String), settings: { shell: "bash" }, parts: ["home", "memory", "state"] });

    const copy = envName("copy");
    const pulled = await agentenv(["env", "pull", ref, copy, "--json"]);
    expect(pulled.stderr).toContain(`environment ${copy} pulled from ${ref}`);
    expect(pulled.code).toBe(0);
    expect(JSON.parse(pulled.stdout)).toMatchObject({ name: copy, digest: result.digest, layers: [{ part: "home", status: "downloaded" }, { part: "memory" }, { part: "state" }] });
    expect(listing(copy)).toBe(listing(name));
    // root inside the container: on rootless Podman, the user outside
    const owner = rootless ? process.getuid!() : 0;
    expect(listing(copy)).toContain(`./bin/big-link l 777 ${owner} ../big.bin`);
    expect(listing(copy)).toContain(`./.claude d 700 ${owner}`);
    const record = JSON.parse(readFileSync(join(volumeDir(copy), ".local/state/agentenv/env.json"), "utf8"));
    expect(record.source).toEqual({ kind: "registry", ref, digest: result.digest });
    const session = await agentenv(["run", "--env", copy, tempTree(), "--", "cat", "/root/.claude/projects/memory.md"]);
    expect(session.stdout).toBe("remember this\n");
    const shown = await agentenv(["env", "show", copy]);
    expect(shown.stdout).toMatch(new RegExp(`^synced +${ref.replace(/[.]/g, "\\.")}@${result.digest.slice(0, 19)} \\(\\d+ s ago\\)$`, "m"));
    // env list names where it came from; a reset has no source on this host: one line
    const listed = JSON.parse((await agentenv(["env", "list", "--json"])).stdout).find((e: { name: string }) => e.name === copy);
    expect(listed.source).toEqual({ kind: "registry", ref, digest: result.digest });
    expectOneLine(await agentenv(["env", "reset", copy]), `agentenv: environment ${copy} was pulled from ${ref}: there is no source on this host to reset it from — pull it again under a new name: agentenv env pull ${registry.address}/${repo}@${result.digest} NEW`);

    // nothing changed: no blob goes up again (only the manifest, for its new time)
    const again = await agentenv(["env", "push", name, ref, "--json"]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).layers.map((l: { status: string }) => l.status)).toEqual(["exists", "exists", "exists"]);
    expect(await uploads(registry, repo)).toBe(4);

    // one file changed: only the part holding it goes up
    writeFileSync(join(dir, ".claude/projects/memory.md"), "remember this, and that\n");
    const third = await agentenv(["env", "push", name, ref, "--json"]);
    expect(third.code).toBe(0);
    expect(JSON.parse(third.stdout).layers.map((l: { part: string; status: string }) => [l.part, l.status])).toEqual([
      ["home", "exists"],
      ["memory", "uploaded"],
      ["state", "exists"],
    ]);
    expect(await uploads(registry, repo)).toBe(5);

    // pull by digest: the first push's content
    const byDigest = envName("bydigest");
    const old = await agentenv(["env", "pull", `${registry.address}/${repo}@${result.digest}`, byDigest]);
    expect(old.stderr).toContain("pulled from");
    expect(old.code).toBe(0);
    expect(readFileSync(join(volumeDir(byDigest), ".claude/projects/memory.md"), "utf8")).toBe("remember this\n");
  });

  test("with Basic auth: credentials from the auth file work and never show, even with -v; a wrong password, an unreachable registry, a missing tag: one line each, nothing created", async () => {
    const name = envName("secured");
    await create(name);
    const ref = `${secured.address}/carol/${prefix}:latest`;
    const env = { REGISTRY_AUTH_FILE: auth };
    const pushed = await agentenv(["env", "push", name, ref, "-v", "--json"], { env });
    expect(pushed.code).toBe(0);
    const target = envName("secured-copy");
    const pulled = await agentenv(["env", "pull", ref, target, "-v", "--json"], { env });
    expect(pulled.code).toBe(0);
    expect(listing(target)).toBe(listing(name));
    const basic = Buffer.from(`carol:${password}`).toString("base64");
    for (const output of [pushed.stdout, pushed.stderr, pulled.stdout, pulled.stderr]) {
      expect(output).not.toContain(password);
      expect(output).not.toContain(basic);
    }

    const wrongFile = authFile(secured.address, "carol", "Not-The-Password-5");
    const cases: Array<[string[], Record<string, string>, string | RegExp]> = [
      [["env", "pull", ref, envName("wrong")], { REGISTRY_AUTH_FILE: wrongFile }, `agentenv: registry ${secured.address} refused the credentials from ${wrongFile} for carol/${prefix} — log in again: podman login ${secured.address}`],
      [["env", "push", name, ref, "--force"], { REGISTRY_AUTH_FILE: wrongFile }, `agentenv: registry ${secured.address} refused the credentials from ${wrongFile} for carol/${prefix}`],
      [["env", "pull", ref, envName("anon")], { REGISTRY_AUTH_FILE: join(tempTree(), "none.json") }, `agentenv: registry ${secured.address} asks for credentials for carol/${prefix} — log in first: podman login ${secured.address}`],
      [["env", "pull", "127.0.0.1:1/x/y:latest", envName("unreachable")], {}, /^agentenv: cannot reach registry 127\.0\.0\.1:1: /],
      [["env", "pull", `${registry.address}/no/such:tag`, envName("missing")], {}, `agentenv: ${registry.address}/no/such:tag: no such tag in ${registry.address}/no/such`],
    ];
    for (const [args, extra, message] of cases) {
      const result = await agentenv(args, { env: extra });
      expectOneLine(result, message);
      expect(result.stderr).not.toContain("Not-The-Password-5");
    }
    for (const what of ["wrong", "anon", "unreachable", "missing"]) expect(volumeExists(`${prefix}-${what}`)).toBe(false);
  });

  test("the Bearer token flow: push and pull with a token the registry's token service gives for the user's credentials; neither shows", async () => {
    const bearerPassword = "Bearer-Secret-1618";
    const tokens = await startRegistry({ bearer: { erin: bearerPassword } });
    try {
      const name = envName("bearer");
      await create(name);
      const ref = `${tokens.address}/erin/${prefix}:v1`;
      const env = { REGISTRY_AUTH_FILE: authFile(tokens.address, "erin", bearerPassword) };
      const pushed = await agentenv(["env", "push", name, ref, "-v", "--json"], { env });
      expect(pushed.code).toBe(0);
      // one token for the whole push: the registry's debug lines show it was asked once
      expect(pushed.stderr.match(/registry: GET \(token\) → 200/g)).toHaveLength(1);
      const copy = envName("bearer-copy");
      const pulled = await agentenv(["env", "pull", ref, copy, "-v"], { env });
      expect(pulled.code).toBe(0);
      expect(listing(copy)).toBe(listing(name));
      for (const output of [pushed.stdout, pushed.stderr, pulled.stdout, pulled.stderr]) {
        expect(output).not.toContain(bearerPassword);
        expect(output).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/); // no JWT
      }
      expectOneLine(await agentenv(["env", "pull", ref, envName("bearer-anon")], { env: { REGISTRY_AUTH_FILE: join(tempTree(), "none.json") } }), `agentenv: registry ${tokens.address} asks for credentials for erin/${prefix}`);
    } finally {
      tokens.stop();
    }
  });

  test("a registry with a self-signed certificate: refused in one line with the hint, used with --tls-verify=false only", async () => {
    const tls = await startRegistry({ tls: true });
    try {
      const name = envName("tls");
      await create(name);
      const ref = `${tls.address}/tls/${prefix}:v1`;
      expectOneLine(await agentenv(["env", "push", name, ref]), /^agentenv: cannot reach registry .*certificate.* — if this is your own registry with a self-signed certificate, pass --tls-verify=false$/i);
      expect((await agentenv(["env", "push", name, ref, "--tls-verify=false"])).code).toBe(0);
      const copy = envName("tls-copy");
      expectOneLine(await agentenv(["env", "pull", ref, copy]), /pass --tls-verify=false$/);
      expect((await agentenv(["env", "pull", ref, copy, "--tls-verify=false"])).code).toBe(0);
      expect(listing(copy)).toBe(listing(name));
    } finally {
      tls.stop();
    }
  });

  test("divergence: a push over a tag that moved since this environment last synced is refused in one line; --force replaces it", async () => {
    const mine = envName("mine");
    const theirs = envName("theirs");
    await create(mine);
    const theirDir = await create(theirs);
    writeFileSync(join(theirDir, "theirs.txt"), "theirs\n");
    const ref = `${registry.address}/shared/${prefix}:main`;
    expect((await agentenv(["env", "push", mine, ref])).code).toBe(0);
    // another environment (another machine) never synced with it: refused
    const refused = await agentenv(["env", "push", theirs, ref]);
    expectOneLine(refused, new RegExp(`^agentenv: ${ref.replace(/[.]/g, "\\.")} is at sha256:[0-9a-f]{12}, which environment ${theirs} was not pulled from or pushed to: refusing to overwrite it — pull it first`));
    expect((await agentenv(["env", "push", theirs, ref, "--force"])).code).toBe(0);
    // now the first one is behind: refused too, naming what it last synced
    const behind = await agentenv(["env", "push", mine, ref]);
    expectOneLine(behind, new RegExp(`which environment ${mine} was not last synced with \\(sha256:[0-9a-f]{12}\\): refusing to overwrite it`));
    // the one that moved it may push again
    expect((await agentenv(["env", "push", theirs, ref])).code).toBe(0);
  });

  test("pull into an existing environment: updated when it has no changes since its last sync, refused when it has (--merge merges three-way), or when it never came from a registry", async () => {
    const source = envName("upstream");
    const sourceDir = await create(source);
    const ref = `${registry.address}/sync/${prefix}:main`;
    expect((await agentenv(["env", "push", source, ref])).code).toBe(0);
    const local = envName("downstream");
    expect((await agentenv(["env", "pull", ref, local])).code).toBe(0);
    const again = await agentenv(["env", "pull", ref, local]);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain(`environment ${local} is already at sha256:`);

    // upstream moves on; downstream has no changes: it follows
    writeFileSync(join(sourceDir, "news.txt"), "v2\n");
    expect((await agentenv(["env", "push", source, ref])).code).toBe(0);
    const updated = await agentenv(["env", "pull", ref, local]);
    expect(updated.stderr).toContain(`replacing the home of environment ${local} with ${ref}`);
    expect(updated.code).toBe(0);
    expect(readFileSync(join(volumeDir(local), "news.txt"), "utf8")).toBe("v2\n");
    expect(listing(local)).toBe(listing(source));

    // downstream changes a file, upstream moves again: refused, downstream untouched
    writeFileSync(join(volumeDir(local), "mine.txt"), "local work\n");
    writeFileSync(join(sourceDir, "news.txt"), "v3\n");
    expect((await agentenv(["env", "push", source, ref])).code).toBe(0);
    const refused = await agentenv(["env", "pull", ref, local]);
    expectOneLine(refused, `agentenv: environment ${local} changed since it last synced with ${ref} (home): refusing to overwrite its changes — merge them (agentenv env pull ${ref} ${local} --merge)`);
    expect(readFileSync(join(volumeDir(local), "mine.txt"), "utf8")).toBe("local work\n");
    expect(readFileSync(join(volumeDir(local), "news.txt"), "utf8")).toBe("v2\n");
    // and its push is refused too: the tag moved since it synced
    expectOneLine(await agentenv(["env", "push", local, ref]), /refusing to overwrite it/);

    // --merge: both sides' changes kept; a file changed on both sides keeps ours, theirs beside it
    writeFileSync(join(volumeDir(local), ".bashrc"), "# ours\n");
    writeFileSync(join(sourceDir, ".bashrc"), "# theirs\n");
    expect((await agentenv(["env", "push", source, ref])).code).toBe(0);
    const merged = await agentenv(["env", "pull", ref, local, "--merge"]);
    expect(merged.stderr).toContain("conflict: ~/.bashrc changed here and upstream — yours kept, theirs at ~/.bashrc.agentenv-conflict-");
    expect(merged.code).toBe(0);
    const home = volumeDir(local);
    expect(readFileSync(join(home, "mine.txt"), "utf8")).toBe("local work\n");
    expect(readFileSync(join(home, "news.txt"), "utf8")).toBe("v3\n");
    expect(readFileSync(join(home, ".bashrc"), "utf8")).toBe("# ours\n");
    const copies = Bun.spawnSync(["sh", "-c", `ls -a ${home} | grep '^\\.bashrc\\.agentenv-conflict-'`]).stdout.toString().trim().split("\n");
    expect(copies).toHaveLength(1);
    expect(readFileSync(join(home, copies[0]!), "utf8")).toBe("# theirs\n");
    // merged with the tag's latest: its push goes through now, and upstream may pull it
    expect((await agentenv(["env", "push", local, ref])).code).toBe(0);
    const back = await agentenv(["env", "pull", ref, source, "--merge"]);
    expect(back.code).toBe(0);
    expect(readFileSync(join(sourceDir, "mine.txt"), "utf8")).toBe("local work\n");

    // an environment that never came from a registry is not overwritten
    const plain = envName("plain");
    await create(plain);
    expectOneLine(await agentenv(["env", "pull", ref, plain]), `agentenv: environment ${plain} already exists and did not come from a registry — pull into a new name`);
  });

  test("a crafted artifact (an entry with .., an absolute path, a link out, an entry through a link of another layer) creates nothing", async () => {
    const client = new RegistryClient(parseReference(`${registry.address}/evil/${prefix}:x`));
    const work = tempTree();
    const tarOf = (label: string, build: (root: string) => string[]) => {
      const root = join(work, label);
      mkdirSync(root, { recursive: true });
      const args = build(root);
      const out = join(work, `${label}.tar.gz`);
      const made = Bun.spawnSync(["tar", "-C", root, "-czf", out, ...args]);
      if (made.exitCode !== 0) throw new Error(made.stderr.toString());
      return out;
    };
    const config = join(work, "config.json");
    writeFileSync(config, JSON.stringify({ agentenv: "0", settings: {}, parts: ["home", "memory", "state"] }));
    const push = async (tag: string, layers: Array<[string, string]>) => {
      const descriptors = [];
      for (const [part, file] of layers) {
        const blob = await fileDigest(file);
        await client.pushBlob(file, blob.digest, blob.size);
        descriptors.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...blob, annotations: { [partAnnotation]: part } });
      }
      const cfg = await fileDigest(config);
      await client.pushBlob(config, cfg.digest, cfg.size);
      await client.putManifest(tag, manifestType, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: manifestType, artifactType, config: { mediaType: configType, ...cfg }, layers: descriptors })));
    };
    const plain = tarOf("plain", (root) => {
      writeFileSync(join(root, "ok.txt"), "ok");
      return ["ok.txt"];
    });
    await push("dotdot", [["home", tarOf("dotdot", (root) => {
      mkdirSync(join(root, "a"));
      writeFileSync(join(root, "evil"), "x");
      return ["--transform=s,^evil,a/../../evil,", "evil"];
    })]]);
    await push("absolute", [["home", tarOf("absolute", (root) => {
      writeFileSync(join(root, "evil"), "x");
      return ["--absolute-names", "--transform=s,^evil,/etc/evil,", "evil"];
    })]]);
    await push("linkout", [["home", tarOf("linkout", (root) => {
      symlinkSync("/etc", join(root, "out"));
      return ["out"];
    })]]);
    // a link in the home layer, an entry beneath it in the memory layer: one home, checked as one
    await push("across", [
      ["home", tarOf("across-home", (root) => {
        symlinkSync("../../etc", join(root, ".claude"));
        return [".claude"];
      })],
      ["memory", tarOf("across-memory", (root) => {
        mkdirSync(join(root, ".claude"));
        writeFileSync(join(root, ".claude/passwd"), "x");
        return [".claude/passwd"];
      })],
    ]);
    await push("fine", [["home", plain]]);
    const cases: Array<[string, RegExp]> = [
      ["dotdot", /the entry "a\/\.\.\/\.\.\/evil" is a path with "\.\."/],
      ["absolute", /the entry "\/etc\/evil" is an absolute path/],
      ["linkout", /the entry "out" is a link out of the home \(to \/etc\)/],
      ["across", /layer 1-memory\.tar\.gz: the entry "\.claude\/passwd" is inside \.claude, a link/],
    ];
    for (const [tag, message] of cases) {
      const name = envName(`evil-${tag}`);
      const result = await agentenv(["env", "pull", `${registry.address}/evil/${prefix}:${tag}`, name]);
      expectOneLine(result, message);
      expect(volumeExists(name)).toBe(false);
      expect(existsSync(join(isolatedHome, ".local/state/agentenv/envs", `podman-${name}.json`))).toBe(false);
    }
    // the same registry, a harmless layer: made
    const fine = envName("evil-fine");
    expect((await agentenv(["env", "pull", `${registry.address}/evil/${prefix}:fine`, fine])).code).toBe(0);
    expect(readFileSync(join(volumeDir(fine), "ok.txt"), "utf8")).toBe("ok");

    // a layer tampered with in the registry's storage: refused while it streams in, nothing made
    const tampered = JSON.parse((await client.getManifest("fine"))!.body.toString()).layers[0].digest.slice(7);
    const data = join(registry.dir, "data/docker/registry/v2/blobs/sha256", tampered.slice(0, 2), tampered, "data");
    const bytes = readFileSync(data);
    bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff;
    writeFileSync(data, bytes);
    const name = envName("tampered");
    const result = await agentenv(["env", "pull", `${registry.address}/evil/${prefix}:fine`, name]);
    expectOneLine(result, `does not match its digest (tampered with or corrupted): refused, nothing was created`);
    expect(volumeExists(name)).toBe(false);

    // not an agentenv artifact at all
    const cfg = await fileDigest(config);
    await client.putManifest("image", manifestType, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: manifestType, config: { mediaType: "application/vnd.oci.image.config.v1+json", ...cfg }, layers: [] })));
    expectOneLine(await agentenv(["env", "pull", `${registry.address}/evil/${prefix}:image`, envName("image")]), /not an agentenv environment \(its artifact type is "application\/vnd\.oci\.image\.config\.v1\+json"\)/);
  });

  test("the tools travel as their closure: a pull into a new golden store runs them without building (no binary cache)", async () => {
    const name = envName("tools");
    await create(name);
    const project = tempTree();
    const first = await agentenv(["run", "--env", name, project, "--", "hello-env"]);
    expect(first.stdout).toBe("hello-env v1\n");
    const ref = `${registry.address}/tools/${prefix}:v1`;
    const pushed = await agentenv(["env", "push", name, ref, "--json"]);
    expect(pushed.code).toBe(0);
    const layers = JSON.parse(pushed.stdout).layers;
    expect(layers.map((l: { part: string }) => l.part)).toEqual(["home", "memory", "state", "tools"]);
    const client = new RegistryClient(parseReference(ref));
    const manifest = JSON.parse((await client.getManifest("v1"))!.body.toString());
    expect(manifest.layers[3].mediaType).toBe("application/vnd.agentenv.nix-export.v1+gzip");
    const config = JSON.parse((await client.blobBytes(manifest.config.digest)).toString());
    expect(config.tools.profile).toMatch(/^\/nix\/store\/[a-z0-9]{32}-fixture-tools$/);

    // another machine: a golden store of its own, no binary cache (the test config sets none)
    const store = `agentenv-test-nix-${prefix}`;
    try {
      const copy = envName("tools-copy");
      const pulled = await agentenv(["env", "pull", ref, copy], { env: { AGENTENV_STORE_VOLUME: store } });
      expect(pulled.stderr).toContain("golden store: promoted 1 new store path");
      expect(pulled.code).toBe(0);
      const session = await agentenv(["run", "--env", copy, tempTree(), "--", "hello-env"], { env: { AGENTENV_STORE_VOLUME: store } });
      expect(session.stdout).toBe("hello-env v1\n");
      expect(session.stderr).not.toContain("installing");
      // --no-tools: the home alone; its first session builds them
      const bare = envName("tools-bare");
      const without = await agentenv(["env", "pull", ref, bare, "--no-tools", "--json"], { env: { AGENTENV_STORE_VOLUME: `${store}-bare` } });
      expect(JSON.parse(without.stdout).layers.map((l: { part: string }) => l.part)).toEqual(["home", "memory", "state"]);
    } finally {
      await removeStoreVolume(store);
      await removeStoreVolume(`${store}-bare`);
    }
  });

  test("interop: skopeo reads the artifact's manifest and copies it to another repository, and env pull works from there", async () => {
    const name = envName("interop");
    await create(name);
    const ref = `${registry.address}/interop/${prefix}:v1`;
    const pushed = JSON.parse((await agentenv(["env", "push", name, ref, "--json"])).stdout);
    // skopeo's own auth lookup must not trip over a runtime dir this user cannot read (su, CI)
    const skopeoEnv = { ...process.env, REGISTRY_AUTH_FILE: join(tempTree({ "auth.json": "{}" }), "auth.json") };
    const inspect = Bun.spawnSync(["skopeo", "inspect", "--raw", "--tls-verify=false", `docker://${ref}`], { env: skopeoEnv });
    expect(inspect.exitCode).toBe(0);
    expect(JSON.parse(inspect.stdout.toString())).toMatchObject({ artifactType, config: { mediaType: configType } });
    const copy = Bun.spawnSync(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${ref}`, `docker://${registry.address}/copied/${prefix}:v2`], { env: skopeoEnv });
    expect(copy.stderr.toString()).toBe("");
    expect(copy.exitCode).toBe(0);
    const target = envName("interop-copy");
    const pulled = await agentenv(["env", "pull", `${registry.address}/copied/${prefix}:v2`, target, "--json"]);
    expect(pulled.code).toBe(0);
    expect(JSON.parse(pulled.stdout).digest).toBe(pushed.digest);
    expect(listing(target)).toBe(listing(name));
  });
});
