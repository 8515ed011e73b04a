import { defineCommand } from "citty";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { defaultImage, loadConfig } from "../config.ts";
import { UserError } from "../errors.ts";
import { buildImage, hashLabel, imageHash } from "../image.ts";
import { createRuntime } from "../runtime/index.ts";
import type { Runtime } from "../runtime/types.ts";
import { globalArgs, logFor, runtimeArgs } from "./_shared.ts";

const build = defineCommand({
  meta: { name: "build", description: "Build the default image from image/ (bootstraps a Debian base when no registry is reachable)" },
  args: {
    base: { type: "string", valueHint: "ref", description: "Base image to build FROM (default: debian:bookworm-slim, else Debian bootstrapped locally with mmdebstrap)" },
    tag: { type: "string", valueHint: "ref", description: "Image name to build (default: the configured image)" },
    force: { type: "boolean", description: "Rebuild even when the image is up to date" },
    ...runtimeArgs,
    ...globalArgs,
  },
  async run({ args }) {
    const log = logFor(args);
    // the image is no project's: the user's config only
    const config = await loadConfig({ flags: { runtime: args.runtime } });
    const runtime = createRuntime(config.runtime);
    const tag = args.tag || config.image || defaultImage;
    const labels = await runtime.imageLabels(tag);
    if (!args.force && !args.base && labels?.[hashLabel] === imageHash()) {
      log.success(`image ${tag} is up to date (use --force to rebuild)`);
      return 0;
    }
    await buildImage({ runtime, tag, base: args.base, log });
    return 0;
  },
});

/** REGISTRY/REPO[:TAG|@DIGEST], as the engines take it: a name, no scheme, no spaces. */
function checkRef(ref: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._:/@-]*$/.test(ref) || ref.includes("//")) throw new UserError(`${JSON.stringify(ref)} is no image reference`, "give REGISTRY/REPOSITORY[:TAG], e.g. ghcr.io/me/agentenv:latest");
  return ref;
}

function tlsVerify(value: string | boolean | undefined): boolean {
  if (value === undefined || value === true || value === "" || value === "true") return true;
  if (value === false || value === "false") return false;
  throw new UserError(`--tls-verify=${value}: give true or false`);
}

/** One engine call, output captured (the engines print progress there; an error's last line is the message). */
async function engine(runtime: Runtime, args: string[], what: string): Promise<string> {
  const result = await runtime.call(args);
  if (result.code !== 0) throw new UserError(`${what} failed: ${result.stderr.trim().split("\n").pop() || `exit ${result.code}`}`, "check the reference and your login (podman login / docker login REGISTRY)");
  return result.stdout;
}

function ociEngine(runtime: Runtime, what: string): "podman" | "docker" {
  if (runtime.name === "podman" || runtime.name === "docker") return runtime.name;
  throw new UserError(`${what} needs Podman or Docker; ${runtime.name} cannot`, "push or pull the image with the engine's own CLI");
}

const transferArgs = {
  "tls-verify": { type: "string", valueHint: "true|false", description: "--tls-verify=false: a registry of your own over plain HTTP or with a self-signed certificate (Podman; Docker takes this from its daemon's insecure-registries)" },
  json: { type: "boolean", description: "Print the image, the reference and the digest as JSON" },
  ...runtimeArgs,
  ...globalArgs,
} as const;

const push = defineCommand({
  meta: { name: "push", description: "Push the image sessions boot to a registry, so other machines pull it instead of building it" },
  args: {
    ref: { type: "positional", required: true, valueHint: "registry/repo[:tag]", description: "Where: REGISTRY/REPOSITORY[:TAG]" },
    image: { type: "string", valueHint: "ref", description: "The local image to push (default: the configured image)" },
    ...transferArgs,
  },
  async run({ args }) {
    const log = logFor(args);
    const config = await loadConfig({ flags: { runtime: args.runtime } });
    const runtime = createRuntime(config.runtime);
    const kind = ociEngine(runtime, "image push");
    const ref = checkRef(args.ref);
    const source = args.image || config.image || defaultImage;
    if (!(await runtime.imageExists(source))) throw new UserError(`image ${source} is not here`, "build it first: agentenv image build");
    log.start(`pushing ${source} to ${ref}…`);
    let digest: string | undefined;
    if (kind === "podman") {
      const dir = mkdtempSync(join(tmpdir(), "agentenv-push-"));
      try {
        const file = join(dir, "digest");
        await engine(runtime, ["push", "--digestfile", file, ...(tlsVerify(args["tls-verify"]) ? [] : ["--tls-verify=false"]), source, `docker://${ref}`], `pushing ${source} to ${ref}`);
        digest = readFileSync(file, "utf8").trim();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    } else {
      await engine(runtime, ["tag", source, ref], `tagging ${source} as ${ref}`);
      const out = await engine(runtime, ["push", ref], `pushing ${source} to ${ref}`);
      digest = /digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1];
    }
    log.success(`image ${source} pushed to ${ref}${digest ? `@${digest}` : ""} — on another machine: agentenv image pull ${ref}`);
    if (args.json) console.log(JSON.stringify({ image: source, ref, digest }, null, 2));
    return 0;
  },
});

const pull = defineCommand({
  meta: { name: "pull", description: "Pull an image pushed with image push and make it the image sessions boot (no local build)" },
  args: {
    ref: { type: "positional", required: true, valueHint: "registry/repo[:tag|@digest]", description: "What: REGISTRY/REPOSITORY[:TAG] or @sha256:…" },
    tag: { type: "string", valueHint: "ref", description: "The local name it gets (default: the configured image)" },
    ...transferArgs,
  },
  async run({ args }) {
    const log = logFor(args);
    const config = await loadConfig({ flags: { runtime: args.runtime } });
    const runtime = createRuntime(config.runtime);
    const kind = ociEngine(runtime, "image pull");
    const ref = checkRef(args.ref);
    const tag = args.tag || config.image || defaultImage;
    log.start(`pulling ${ref}…`);
    await engine(runtime, ["pull", ...(kind === "podman" && !tlsVerify(args["tls-verify"]) ? ["--tls-verify=false"] : []), ref], `pulling ${ref}`);
    const labels = await runtime.imageLabels(ref);
    if (!labels?.[hashLabel]) log.warn(`${ref} is not an image agentenv built (no ${hashLabel} label): sessions may not start with it`);
    await engine(runtime, ["tag", ref, tag], `tagging ${ref} as ${tag}`);
    const current = labels?.[hashLabel] === imageHash();
    log.success(`image ${ref} pulled as ${tag}${current ? "" : labels?.[hashLabel] ? " (built from other sources than this agentenv's: agentenv image build says so)" : ""}`);
    if (args.json) console.log(JSON.stringify({ ref, image: tag, current }, null, 2));
    return 0;
  },
});

export default defineCommand({
  meta: { name: "image", description: "Manage the default image" },
  subCommands: { build, push, pull },
});
