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

/** A tool by name on PATH or in the sbin dirs a normal user's PATH often lacks (debootstrap lives there). */
function findTool(name: string): string | undefined {
  return Bun.which(name, { PATH: `${process.env.PATH ?? ""}:/usr/local/sbin:/usr/sbin:/sbin` }) ?? undefined;
}

/**
 * A minimal Debian bookworm as a tar file, without a registry. mmdebstrap runs as any user
 * (`--mode=unshare` builds inside a user namespace, so a rootless engine gets its base into
 * the user's own store); debootstrap, the older way, only as root.
 */
async function bootstrapTar(out: string, workdir: string, log: Log): Promise<void> {
  const mirror = process.env.AGENTENV_DEBIAN_MIRROR || "http://deb.debian.org/debian";
  const root = process.getuid?.() === 0;
  const mmdebstrap = findTool("mmdebstrap");
  const debootstrap = root ? findTool("debootstrap") : undefined;
  if (!mmdebstrap && !debootstrap) {
    throw new UserError(`cannot pull ${defaultBase} and mmdebstrap is not installed`, "install it (apt-get install mmdebstrap) or pass --base REF");
  }
  if (mmdebstrap) {
    log.start(`no registry reachable: bootstrapping a Debian base with mmdebstrap (≈30 s)…`);
    const code = await spawnLogged([mmdebstrap, `--mode=${root ? "root" : "unshare"}`, "--variant=minbase", "bookworm", out, mirror], log);
    if (code !== 0) throw new UserError(`mmdebstrap failed (exit ${code})`, "check the output above and the network to the Debian mirror");
    return;
  }
  log.start(`no registry reachable: bootstrapping a Debian base with debootstrap (≈1 min)…`);
  const dir = join(workdir, "root");
  const code = await spawnLogged([debootstrap!, "--variant=minbase", "bookworm", dir, mirror], log);
  if (code !== 0) throw new UserError(`debootstrap failed (exit ${code})`, "check the output above and the network to the Debian mirror");
  if ((await spawnLogged(["tar", "-C", dir, "-cf", out, "."], log)) !== 0) throw new UserError("packing the bootstrapped base failed");
}

/** Bootstrap a minimal Debian and import it as `ref`: the same base, without a registry. */
export async function bootstrapBase(runtime: Runtime, log: Log, ref = localBase): Promise<string> {
  return withTempDir("agentenv-base-", async (workdir) => {
    // a finished tar file, not a pipe: a failed bootstrap never leaves a half-imported image
    const tar = join(workdir, "base.tar");
    await bootstrapTar(tar, workdir, log);
    // its stdout is only the new image id
    const imported = Bun.spawn([runtime.bin, "import", tar, ref], { stdin: "ignore", stdout: "ignore", stderr: "inherit" });
    if ((await imported.exited) !== 0) throw new UserError(`importing the bootstrapped base into ${runtime.name} failed`);
    log.success(`base image ${ref} ready`);
    return ref;
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
