import { defineCommand } from "citty";
import { defaultImage, loadConfig } from "../config.ts";
import { buildImage, hashLabel, imageHash } from "../image.ts";
import { createRuntime } from "../runtime/index.ts";
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

export default defineCommand({
  meta: { name: "image", description: "Manage the default image" },
  subCommands: { build },
});
