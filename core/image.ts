import { join } from "pathe";
import { imageFiles } from "../image/files.ts";
import { writeEmbedded } from "./embedded.ts";
import { UserError } from "./errors.ts";
import { withTempDir } from "./interrupt.ts";
import type { Log } from "./log.ts";
import type { Runtime } from "./runtime/types.ts";

/** Real users pull this; offline machines bootstrap an equivalent locally. */
export const defaultBase = "docker.io/library/debian:bookworm-slim";
export const localBase = "localhost/agentenv-base:bookworm";
export const hashLabel = "agentenv.image.hash";

/** A short content hash of image/: an image built from other sources is stale. */
export function imageHash(files = imageFiles): string {
  const hasher = new Bun.CryptoHasher("sha256");
  for (const path of Object.keys(files).sort()) hasher.update(`${path}\0${files[path]!.content}\0`);
  return hasher.digest("hex").slice(0, 16);
}

async function spawnLogged(argv: string[], log: Log, stdin?: "pipe"): Promise<number> {
  const quiet = log.level < 3;
  const child = Bun.spawn(argv, {
    stdin: stdin ?? "ignore",
    stdout: quiet ? "ignore" : "inherit",
    stderr: "inherit",
  });
  return child.exited;
}

/** debootstrap a minimal Debian and import it: the same base, without a registry. */
async function bootstrapBase(runtime: Runtime, log: Log): Promise<string> {
  if (!Bun.which("debootstrap")) {
    throw new UserError(`cannot pull ${defaultBase} and debootstrap is not installed`, "install debootstrap (apt-get install debootstrap) or pass --base REF");
  }
  if (process.getuid?.() !== 0) {
    throw new UserError(`cannot pull ${defaultBase}; bootstrapping a local base needs root`, "run `sudo agentenv image build` once, or pass --base REF");
  }
  return withTempDir("agentenv-base-", async (root) => {
    log.start(`no registry reachable: bootstrapping a Debian base with debootstrap (≈1 min)…`);
    const mirror = process.env.AGENTENV_DEBIAN_MIRROR || "http://deb.debian.org/debian";
    const code = await spawnLogged(["debootstrap", "--variant=minbase", "bookworm", root, mirror], log);
    if (code !== 0) throw new UserError(`debootstrap failed (exit ${code})`, "check the output above and the network to the Debian mirror");
    const tar = Bun.spawn(["tar", "-C", root, "-c", "."], { stdout: "pipe", stderr: "inherit" });
    const imported = Bun.spawn([runtime.bin, "import", "-", localBase], { stdin: tar.stdout, stdout: "ignore", stderr: "inherit" });
    if ((await imported.exited) !== 0 || (await tar.exited) !== 0) throw new UserError(`importing the bootstrapped base into ${runtime.name} failed`);
    log.success(`base image ${localBase} ready`);
    return localBase;
  });
}

/** The base to build FROM: as asked, else a present default, else pulled, else bootstrapped. */
export async function resolveBase(runtime: Runtime, requested: string | undefined, log: Log): Promise<string> {
  if (requested) {
    if (await runtime.imageExists(requested)) return requested;
    log.start(`pulling ${requested}…`);
    if ((await spawnLogged(runtime.pullArgv(requested), log)) !== 0) {
      throw new UserError(`cannot pull base image ${requested}`, "check the name and your registry access, or omit --base to bootstrap Debian locally");
    }
    return requested;
  }
  for (const ref of [defaultBase, localBase]) if (await runtime.imageExists(ref)) return ref;
  log.start(`pulling ${defaultBase}…`);
  const pulled = await runtime.call(runtime.pullArgv(defaultBase).slice(1));
  if (pulled.code === 0) return defaultBase;
  log.warn(`cannot pull ${defaultBase}: ${pulled.stderr.trim().split("\n").pop()}`);
  return bootstrapBase(runtime, log);
}

export async function buildImage(options: { runtime: Runtime; tag: string; base?: string; log: Log }): Promise<void> {
  const { runtime, tag, log } = options;
  const base = await resolveBase(runtime, options.base, log);
  await withTempDir("agentenv-image-", async (context) => {
    await writeEmbedded(imageFiles, context);
    log.start(`building ${tag} from ${base} with ${runtime.name}…`);
    const argv = runtime.buildArgv({ tag, context, file: join(context, "Containerfile"), buildArgs: { BASE: base }, labels: { [hashLabel]: imageHash() } });
    log.debug(`$ ${argv.join(" ")}`);
    const code = await spawnLogged(argv, log);
    if (code !== 0) throw new UserError(`image build failed (exit ${code})`, "see the build output above");
    log.success(`image ${tag} built`);
  });
}
