import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { checkArchives } from "../../plugins/env/archive.ts";
import { join } from "pathe";
import { authFiles, authKeys, findCredentials, parseChallenge, redact } from "../../plugins/registry/auth.ts";
import { formatReference, manifestType, parseReference } from "../../plugins/registry/client.ts";
import { artifactType, configType, parseArtifact, partAnnotation, splitHome, toolsType } from "../../plugins/env/registry.ts";
import { tempTree } from "../helpers/cli.ts";

describe("registry references", () => {
  test("REGISTRY/REPO[:TAG|@DIGEST] as Podman reads them", () => {
    const digest = `sha256:${"a".repeat(64)}`;
    expect(parseReference("ghcr.io/me/dev-env")).toEqual({ registry: "ghcr.io", repository: "me/dev-env", tag: "latest", digest: undefined });
    expect(parseReference("localhost:5000/envs/dev:v2")).toEqual({ registry: "localhost:5000", repository: "envs/dev", tag: "v2", digest: undefined });
    expect(parseReference(`127.0.0.1:5000/a/b/c@${digest}`)).toEqual({ registry: "127.0.0.1:5000", repository: "a/b/c", tag: undefined, digest });
    expect(parseReference("me/dev")).toMatchObject({ registry: "docker.io", repository: "me/dev" });
    expect(parseReference("ubuntu")).toMatchObject({ registry: "docker.io", repository: "library/ubuntu" });
    expect(parseReference("docker://quay.io/x/y:1")).toMatchObject({ registry: "quay.io", repository: "x/y", tag: "1" });
    expect(formatReference(parseReference(`r.example/x@${digest}`))).toBe(`r.example/x@${digest}`);
  });

  test("bad references are one line each", () => {
    for (const [text, why] of [
      ["ghcr.io/Me/Env", /not a valid repository name/],
      ["ghcr.io/me/env:bad tag", /not a valid tag/],
      ["ghcr.io/me/env@sha256:xyz", /the digest is not sha256/],
      ["ghcr.io/", /not a valid repository name/],
    ] as const) {
      expect(() => parseReference(text)).toThrow(why);
    }
  });
});

describe("registry auth", () => {
  test("the files Podman reads, in its order, then Docker's", () => {
    expect(authFiles({ HOME: "/h", XDG_RUNTIME_DIR: "/run/user/1" })).toEqual(["/run/user/1/containers/auth.json", "/h/.config/containers/auth.json", "/h/.docker/config.json"]);
    expect(authFiles({ HOME: "/h", REGISTRY_AUTH_FILE: "/a.json", XDG_CONFIG_HOME: "/c", DOCKER_CONFIG: "/d" })).toEqual(["/a.json", "/c/containers/auth.json", "/d/config.json"]);
  });

  test("the most specific key wins; the first file that knows the registry answers; Docker's URL keys", () => {
    expect(authKeys("r.io", "a/b").slice(0, 3)).toEqual(["r.io/a/b", "r.io/a", "r.io"]);
    const dir = tempTree();
    const podman = join(dir, "auth.json");
    const docker = join(dir, "config.json");
    const basic = (user: string, pw: string) => ({ auth: Buffer.from(`${user}:${pw}`).toString("base64") });
    writeFileSync(podman, JSON.stringify({ auths: { "r.io": basic("whole", "p1"), "r.io/team": basic("team", "p2") } }));
    writeFileSync(docker, JSON.stringify({ auths: { "https://index.docker.io/v1/": basic("hub", "p3"), "other.io": { identitytoken: "refresh-me" } } }));
    expect(findCredentials("r.io", "team/env", [podman, docker])).toEqual({ username: "team", password: "p2", from: podman });
    expect(findCredentials("r.io", "solo/env", [podman, docker])).toEqual({ username: "whole", password: "p1", from: podman });
    expect(findCredentials("docker.io", "library/x", [podman, docker])).toEqual({ username: "hub", password: "p3", from: docker });
    expect(findCredentials("other.io", "x", [podman, docker])).toEqual({ identityToken: "refresh-me", from: docker });
    expect(findCredentials("none.io", "x", [podman, join(dir, "missing.json")])).toBeUndefined();
  });

  test("a credential helper is asked as Docker asks it; a broken file is one line naming the file, not its content", () => {
    const dir = tempTree();
    const bin = join(dir, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "docker-credential-fake"), '#!/bin/sh\nread server\n[ "$server" = r.io ] && echo \'{"ServerURL":"r.io","Username":"helper-user","Secret":"helper-secret"}\' && exit 0\necho "credentials not found in native keychain"; exit 1\n');
    chmodSync(join(bin, "docker-credential-fake"), 0o755);
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify({ credHelpers: { "r.io": "fake" } }));
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      expect(findCredentials("r.io", "x", [file])).toMatchObject({ username: "helper-user", password: "helper-secret" });
      writeFileSync(file, JSON.stringify({ credsStore: "fake" }));
      expect(findCredentials("elsewhere.io", "x", [file])).toBeUndefined();
    } finally {
      process.env.PATH = path;
    }
    writeFileSync(file, '{"auths": {"r.io": {"auth": "c2VjcmV0LXZhbHVl"');
    expect(() => findCredentials("r.io", "x", [file])).toThrow(`${file}: not valid JSON`);
    writeFileSync(file, JSON.stringify({ auths: { "r.io": { auth: Buffer.from("no-colon-secret").toString("base64") } } }));
    try {
      findCredentials("r.io", "x", [file]);
      throw new Error("no error");
    } catch (error) {
      expect((error as Error).message).toBe(`${file}: a registry credential there is not in the user:password form`);
      expect((error as Error).message).not.toContain("no-colon-secret");
    }
  });

  test("WWW-Authenticate challenges: Bearer with realm, service, scope; Basic", () => {
    expect(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:a/b:pull,push" },
    });
    expect(parseChallenge('Basic realm="agentenv-test"')).toEqual({ scheme: "basic", params: { realm: "agentenv-test" } });
    expect(parseChallenge(null)).toBeUndefined();
  });

  test("redact replaces passwords, tokens and the Basic encoding", () => {
    const creds = { username: "alice", password: "pw-123", from: "f" };
    const basic = Buffer.from("alice:pw-123").toString("base64");
    expect(redact(`x pw-123 y ${basic} z tok-abc`, creds, ["tok-abc"])).toBe("x *** y *** z ***");
  });
});

describe("env artifacts", () => {
  const digest = (c: string) => `sha256:${c.repeat(64)}`;
  const config = { mediaType: configType, digest: digest("c"), size: 10 };
  const layer = (part: string, mediaType = "application/vnd.oci.image.layer.v1.tar+gzip") => ({ mediaType, digest: digest("a"), size: 5, annotations: { [partAnnotation]: part } });
  const manifest = (extra: Record<string, unknown>) => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: manifestType, artifactType, config, layers: [layer("home")], ...extra }));

  test("a manifest from a registry is hostile: what env pull acts on, or one line why not", () => {
    expect(parseArtifact(manifest({}), "r").layers.map((l) => l.part)).toEqual(["home"]);
    expect(parseArtifact(manifest({ layers: [layer("home"), layer("tools", toolsType)] }), "r").tools?.mediaType).toBe(toolsType);
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from("{"), /its manifest is not JSON/],
      [manifest({ artifactType: "application/x", config: { ...config, mediaType: "application/vnd.oci.image.config.v1+json" } }), /not an agentenv environment/],
      [manifest({ layers: [layer("home"), layer("home")] }), /two layers hold the part home/],
      [manifest({ layers: [layer("../x")] }), /no part of a home agentenv knows/],
      [manifest({ layers: [layer("memory")] }), /it has no home layer/],
      [manifest({ layers: [{ ...layer("home"), digest: "sha256:zz" }] }), /layer 1 has no sha256 digest/],
      [manifest({ layers: [{ ...layer("home"), size: -1 }] }), /layer 1 has no valid size/],
      [manifest({ layers: [layer("home", "application/x-tar")] }), /layer home is application\/x-tar/],
      [manifest({ config: { ...config, size: 2 << 20 } }), /its config is bigger than 1 MiB/],
    ];
    for (const [body, message] of cases) expect(() => parseArtifact(body, "r")).toThrow(message);
  });
});

describe("layers checked as one home", () => {
  test("an entry of a later layer under a link an earlier one made is refused; a link through another layer's link out too", async () => {
    const work = tempTree();
    const tarOf = (name: string, files: Record<string, string>, links: Record<string, string> = {}) => {
      const root = tempTree(files);
      for (const [path, target] of Object.entries(links)) symlinkSync(target, join(root, path));
      const out = join(work, `${name}.tar.gz`);
      Bun.spawnSync(["tar", "-C", root, "-czf", out, ...Object.keys(files), ...Object.keys(links)]);
      return { file: out, gzip: true, shown: name };
    };
    const linkLayer = tarOf("links", {}, { ".claude": "../../etc" });
    const under = tarOf("under", { ".claude/passwd": "x" });
    await expect(checkArchives([linkLayer, under])).rejects.toThrow('under: the entry ".claude/passwd" is inside .claude, a link');
    await expect(checkArchives([under])).resolves.toBeUndefined();
    // its text stays inside (sub/y), its path leaves: sub/up is "..", made by the other layer
    const through = tarOf("through", {}, { escape: "sub/up/../y" });
    await expect(checkArchives([through])).resolves.toBeUndefined();
    await expect(checkArchives([tarOf("inner", { "sub/f": "" }, { "sub/up": ".." }), through])).rejects.toThrow('the entry "escape" is a link out of the home (to sub/up/../y)');
    await expect(checkArchives([tarOf("fine", { "a.txt": "a" }), tarOf("fine2", { "b/c.txt": "c" }, { "b/d": "c.txt" })])).resolves.toBeUndefined();
  });
});

describe("the rest of a home, in pieces", () => {
  /** a listing as packHome gives it: sorted by bytes */
  const sorted = <T extends { path: string }>(entries: T[]) => entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  const home = (n: number, size: (i: number) => number) => sorted(Array.from({ length: n }, (_, i) => ({ path: `./src/d${Math.floor(i / 100)}/f${i}`, size: size(i) })));

  test("every entry once, in order; pieces near the target; a small home is one piece", () => {
    const entries = home(10_000, () => 10_000);
    const pieces = splitHome(entries);
    expect(pieces.flat()).toEqual(entries);
    expect(pieces.length).toBeGreaterThan(10);
    expect(pieces.length).toBeLessThanOrEqual(64);
    for (const piece of pieces.slice(0, -1)) expect(piece.reduce((s, e) => s + e.size, 0)).toBeGreaterThanOrEqual(4 << 20);
    expect(splitHome(home(50, () => 1000))).toHaveLength(1);
    expect(splitHome([])).toEqual([[]]);
    // a huge home: at most about 64 pieces
    expect(splitHome(home(10_000, () => 10 << 20)).length).toBeLessThanOrEqual(64 * 2);
  });

  test("one file that changes size, appears or goes moves only the pieces around it", () => {
    const before = splitHome(home(10_000, () => 10_000));
    const changed = splitHome(home(10_000, (i) => (i === 5000 ? 30_000 : 10_000)));
    const added = splitHome(sorted([...home(10_000, () => 10_000), { path: "./src/d50/f5000-new", size: 10_000 }]));
    const removed = splitHome(home(10_000, () => 10_000).filter((entry) => entry.path !== "./src/d50/f5000"));
    const same = (a: typeof before, b: typeof before) => a.filter((piece) => b.some((other) => JSON.stringify(other) === JSON.stringify(piece))).length;
    expect(same(before, changed)).toBeGreaterThanOrEqual(before.length - 2);
    expect(same(before, added)).toBeGreaterThanOrEqual(before.length - 2);
    expect(same(before, removed)).toBeGreaterThanOrEqual(before.length - 2);
  });
});
