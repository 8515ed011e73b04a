import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "pathe";
import { agentenv, tempTree } from "../helpers/cli.ts";
import { expectNoStackTrace } from "../helpers/engine.ts";
import { authFile, startRegistry, type TestRegistry } from "../helpers/registry.ts";

/**
 * `agentenv image push` / `image pull` through a real registry on loopback (Podman's own
 * push and pull, the same logins): a machine with a registry gets the image without the
 * local bootstrap. A tiny image stands in for agentenv's (400 MB would only slow CI down).
 */

const id = `${process.pid}`;
const tiny = `localhost/agentenv-test-tiny-${id}:1`;
const pulled = `localhost/agentenv-test-pulled-${id}:1`;
let registry: TestRegistry;
const password = "Img-Secret-2718";

beforeAll(async () => {
  registry = await startRegistry({ basic: { dora: password } });
  const root = tempTree({ "hello.txt": "tiny\n" });
  const tar = join(tempTree(), "root.tar");
  Bun.spawnSync(["tar", "-C", root, "-cf", tar, "."]);
  const made = Bun.spawnSync(["podman", "import", "--change", "LABEL agentenv.image.hash=tiny-test", tar, tiny]);
  if (made.exitCode !== 0) throw new Error(made.stderr.toString());
});

afterAll(() => {
  registry?.stop();
  Bun.spawnSync(["podman", "rmi", "--force", tiny, pulled, `${registry?.address}/img/${id}:v1`]);
});

test("image push, then image pull under the configured name; a wrong login and a missing image are one line", async () => {
  const ref = `${registry.address}/img/${id}:v1`;
  const env = { REGISTRY_AUTH_FILE: authFile(registry.address, "dora", password), AGENTENV_IMAGE: tiny };
  const pushed = await agentenv(["image", "push", ref, "--tls-verify=false", "--json"], { env });
  expect(pushed.stderr).toContain(`image ${tiny} pushed to ${ref}@sha256:`);
  expect(pushed.code).toBe(0);
  const { digest } = JSON.parse(pushed.stdout);
  expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  expect(await registry.count("PUT", new RegExp(`^/v2/img/${id}/manifests/v1`))).toBe(1);

  const got = await agentenv(["image", "pull", ref, "--tls-verify=false", "--json"], { env: { ...env, AGENTENV_IMAGE: pulled } });
  expect(got.code).toBe(0);
  expect(JSON.parse(got.stdout)).toEqual({ ref, image: pulled, current: false });
  const labels = Bun.spawnSync(["podman", "image", "inspect", "--format", "{{index .Config.Labels \"agentenv.image.hash\"}}", pulled]).stdout.toString().trim();
  expect(labels).toBe("tiny-test");
  for (const output of [pushed.stdout, pushed.stderr, got.stdout, got.stderr]) expect(output).not.toContain(password);

  const wrong = await agentenv(["image", "push", ref, "--tls-verify=false"], { env: { ...env, REGISTRY_AUTH_FILE: authFile(registry.address, "dora", "Bad-Pass-1") } });
  expect(wrong.code).toBe(1);
  expect(wrong.stderr).toMatch(new RegExp(`^agentenv: pushing ${tiny.replace(/[.]/g, "\\.")} to ${ref.replace(/[.]/g, "\\.")} failed: .*(unauthorized|authentication required)`, "m"));
  expect(wrong.stderr.trim().split("\n").filter((l) => l.startsWith("agentenv:"))).toHaveLength(1);
  expect(wrong.stderr).not.toContain("Bad-Pass-1");
  expectNoStackTrace(wrong.stderr);

  const missing = await agentenv(["image", "push", ref], { env: { ...env, AGENTENV_IMAGE: "localhost/agentenv-no-such-image:0" } });
  expect(missing.stderr).toBe("agentenv: image localhost/agentenv-no-such-image:0 is not here — build it first: agentenv image build\n");
  const bad = await agentenv(["image", "pull", "not a ref"], { env });
  expect(bad.stderr).toBe('agentenv: "not a ref" is no image reference — give REGISTRY/REPOSITORY[:TAG], e.g. ghcr.io/me/agentenv:latest\n');
});
