import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import { UserError } from "../../core/errors.ts";
import { fileDigest, manifestType, parseReference, RegistryClient } from "../../plugins/registry/client.ts";
import { tempTree } from "../helpers/cli.ts";
import { authFile, startRegistry, type TestRegistry } from "../helpers/registry.ts";

/** The OCI distribution client against a real registry (Debian's docker-registry, distribution v2.8) on loopback. */

const work = tempTree();
const big = join(work, "big");
const small = join(work, "small");
writeFileSync(big, Buffer.from(Array.from({ length: 3 << 20 }, (_, i) => (i * 7919) % 251)));
writeFileSync(small, "config\n");

async function failure(fn: () => Promise<unknown>): Promise<UserError> {
  try {
    await fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    return error as UserError;
  }
  throw new Error("it did not fail");
}

describe("anonymous registry", () => {
  let registry: TestRegistry;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(() => registry.stop());

  test("monolithic and chunked uploads; a blob it has is not sent again; a cross-repository mount; manifests by tag and digest", async () => {
    const client = new RegistryClient(parseReference(`${registry.address}/me/env:v1`), { chunkSize: 1 << 20 });
    const bigBlob = await fileDigest(big);
    const smallBlob = await fileDigest(small);
    expect(await client.pushBlob(small, smallBlob.digest, smallBlob.size)).toBe("uploaded");
    const progress: number[] = [];
    expect(await client.pushBlob(big, bigBlob.digest, bigBlob.size, { progress: (done) => progress.push(done) })).toBe("uploaded");
    expect(progress).toEqual([1 << 20, 2 << 20, 3 << 20]);
    // 3 chunks, then one PUT each
    expect(await registry.count("PATCH", /^\/v2\/me\/env\/blobs\/uploads\//)).toBe(3);
    expect(await registry.count("PUT", /^\/v2\/me\/env\/blobs\/uploads\//)).toBe(2);
    expect(await client.pushBlob(big, bigBlob.digest, bigBlob.size)).toBe("exists");
    expect(await registry.count("PUT", /^\/v2\/me\/env\/blobs\/uploads\//)).toBe(2);

    const other = new RegistryClient(parseReference(`${registry.address}/other/env:v1`));
    expect(await other.pushBlob(big, bigBlob.digest, bigBlob.size, { mountFrom: "me/env" })).toBe("mounted");
    expect(await registry.count("PUT", /^\/v2\/other\/env\/blobs\/uploads\//)).toBe(0);

    // a stream whose digest is known only at its end: chunked, hashed as it goes
    const streamed = await client.pushStream(Bun.file(big).stream());
    expect(streamed).toEqual(bigBlob);

    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: manifestType,
        artifactType: "application/vnd.agentenv.test.v1",
        config: { mediaType: "application/vnd.agentenv.test.config.v1+json", ...smallBlob },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...bigBlob }],
      }),
    );
    const digest = await client.putManifest("v1", manifestType, manifest);
    expect(await client.manifestDigest("v1")).toBe(digest);
    const got = await client.getManifest(digest);
    expect(got?.body.equals(manifest)).toBe(true);
    expect(got?.mediaType).toBe(manifestType);
    expect(await client.manifestDigest("no-such-tag")).toBeUndefined();

    const out = join(tempTree(), "blob");
    await client.pullBlob(bigBlob.digest, bigBlob.size, out);
    expect(readFileSync(out).equals(readFileSync(big))).toBe(true);
  });

  test("a tampered blob is refused while it streams in; so is a manifest that does not match its digest", async () => {
    const client = new RegistryClient(parseReference(`${registry.address}/tamper/env:v1`));
    const blob = await fileDigest(big);
    await client.pushBlob(big, blob.digest, blob.size);
    const data = join(registry.dir, "data/docker/registry/v2/blobs/sha256", blob.digest.slice(7, 9), blob.digest.slice(7), "data");
    const bytes = readFileSync(data);
    bytes[1000] = bytes[1000]! ^ 1;
    writeFileSync(data, bytes);
    const error = await failure(() => client.pullBlob(blob.digest, blob.size, join(tempTree(), "blob")));
    expect(error.message).toBe(`blob ${blob.digest} from ${registry.address}/tamper/env does not match its digest (tampered with or corrupted): refused, nothing was created`);
    const short = await failure(() => client.pullBlob(blob.digest, blob.size - 1, join(tempTree(), "blob")));
    expect(short.message).toContain("is longer than its");
  });

  test("an unreachable registry is one line", async () => {
    const client = new RegistryClient(parseReference("127.0.0.1:1/me/env:v1"));
    const error = await failure(() => client.manifestDigest("v1"));
    expect(error.message).toMatch(/^cannot reach registry 127\.0\.0\.1:1: /);
    expect(error.message.split("\n")).toHaveLength(1);
  });
});

describe("registry with htpasswd Basic auth", () => {
  let registry: TestRegistry;
  const password = "basic-Secret-42";
  beforeAll(async () => {
    registry = await startRegistry({ basic: { alice: password } });
  });
  afterAll(() => registry.stop());

  test("credentials from auth.json work; a wrong password and none are one line each, without the secret", async () => {
    const blob = await fileDigest(small);
    const good = new RegistryClient(parseReference(`${registry.address}/alice/env:v1`), { authFiles: [authFile(registry.address, "alice", password)] });
    expect(await good.pushBlob(small, blob.digest, blob.size)).toBe("uploaded");

    const wrongFile = authFile(registry.address, "alice", "wrong-Password-7");
    const wrong = await failure(() => new RegistryClient(parseReference(`${registry.address}/alice/env:v1`), { authFiles: [wrongFile] }).blobExists(blob.digest));
    expect(wrong.message).toBe(`registry ${registry.address} refused the credentials from ${wrongFile} for alice/env`);
    const none = await failure(() => new RegistryClient(parseReference(`${registry.address}/alice/env:v1`), { authFiles: [] }).blobExists(blob.digest));
    expect(none.message).toBe(`registry ${registry.address} asks for credentials for alice/env`);
    expect(none.hint).toBe(`log in first: podman login ${registry.address} (or docker login ${registry.address})`);
    for (const error of [wrong, none]) expect(`${error.message} ${error.hint}`).not.toMatch(/basic-Secret-42|wrong-Password-7|YWxpY2/);
  });
});

describe("registry with the Bearer token flow", () => {
  let registry: TestRegistry;
  const password = "bearer-Secret-99";
  beforeAll(async () => {
    registry = await startRegistry({ bearer: { bob: password } });
  });
  afterAll(() => registry.stop());

  test("a token for the repository's scope is fetched with the user's credentials; a wrong password is refused", async () => {
    const blob = await fileDigest(small);
    const client = new RegistryClient(parseReference(`${registry.address}/bob/env:v1`), { authFiles: [authFile(registry.address, "bob", password)] });
    client.want("bob/env", "pull", "push");
    expect(await client.pushBlob(small, blob.digest, blob.size)).toBe("uploaded");
    expect(await client.blobExists(blob.digest)).toBe(blob.size);
    // one token for the whole push: the registry challenged once
    expect(client.requests.filter((r) => r.path === "(token)")).toHaveLength(1);

    const wrongFile = authFile(registry.address, "bob", "nope-Password-1");
    const wrong = await failure(() => new RegistryClient(parseReference(`${registry.address}/bob/env:v1`), { authFiles: [wrongFile] }).blobExists(blob.digest));
    expect(wrong.message).toBe(`registry ${registry.address} refused the credentials from ${wrongFile} for bob/env`);
    expect(`${wrong.message} ${wrong.hint}`).not.toContain("nope-Password-1");
  });
});

describe("registry over HTTPS with a self-signed certificate", () => {
  let registry: TestRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ tls: true });
  });
  afterAll(() => registry.stop());

  test("refused with a hint to --tls-verify=false; accepted only when asked", async () => {
    const blob = await fileDigest(small);
    const checked = await failure(() => new RegistryClient(parseReference(`${registry.address}/tls/env:v1`)).blobExists(blob.digest));
    expect(checked.message).toStartWith(`cannot reach registry ${registry.address}: `);
    expect(checked.message).toMatch(/certificate|self.signed/i);
    expect(checked.hint).toBe("if this is your own registry with a self-signed certificate, pass --tls-verify=false");
    const unchecked = new RegistryClient(parseReference(`${registry.address}/tls/env:v1`), { tlsVerify: false });
    expect(await unchecked.pushBlob(small, blob.digest, blob.size)).toBe("uploaded");
    expect(unchecked.requests[0]).toEqual({ method: "GET", path: "/v2/", status: 200 });
  });
});

