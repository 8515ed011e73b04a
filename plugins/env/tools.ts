import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "pathe";
import { messageOf } from "../../core/errors.ts";
import { withFileLock } from "../../core/linux.ts";
import { containerHome, helperPlan } from "../../core/plan.ts";
import type { BaseContext, SessionContext } from "../../core/plugins.ts";
import { writeAtomic } from "../../core/volumes.ts";
import { envLabel, readHomeBytes, stateValue, toolsStorePath, type Home } from "./home.ts";
import { hostToolsDir } from "./record.ts";

/**
 * An environment's own tools (its ~/flake.nix) in an untrusted project's session.
 *
 * Such a session's store clone is thrown away, so tools it builds are built again at its
 * next boot; and what it leaves in its clone is never kept. So the host keeps a copy of
 * the tools flake as the user last had it — taken when `env create`, `import` or `reset`
 * made the home, and when a trusted session ends — and before an untrusted session's
 * container starts, that copy (never the home's own files, which the project's code may
 * have edited) is built in a container of its own: the image, the home, a golden-store
 * clone, no project. That clone is promoted like a trusted session's, so the next
 * untrusted session finds the tools in the golden store and makes no Nix call.
 *
 * A home whose ~/flake.nix differs from the copy (edited in an untrusted session) is
 * built by the session itself and not kept: one line says so.
 */

interface ToolsFlake {
  nix: Buffer;
  lock?: Buffer;
  /** as the entrypoint hashes them: sha256 of flake.nix then flake.lock, hex */
  hash: string;
}

/** The golden store's API, loaded only when a tools step is considered: a trusted session's exit, which keeps the flake's copy, needs none of it (nor its SQLite). */
const goldenApi = () => import("../golden/api.ts");

const flakeLimit = 1 << 20;
const lockLimit = 16 << 20;

function flakeOf(nix: Buffer | undefined, lock: Buffer | undefined): ToolsFlake | undefined {
  if (!nix) return undefined;
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(nix);
  if (lock) hasher.update(lock);
  return { nix, lock, hash: hasher.digest("hex") };
}

/** The home's tools flake, read as hostile input (no link followed, sizes bounded). */
function homeFlake(dir: string): ToolsFlake | undefined {
  return flakeOf(readHomeBytes(dir, "flake.nix", flakeLimit), readHomeBytes(dir, "flake.lock", lockLimit));
}

function readOptional(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** The host's copy: the tools flake as the user last had it. */
function hostFlake(ctx: BaseContext, name: string): ToolsFlake | undefined {
  const dir = hostToolsDir(ctx, name);
  return flakeOf(readOptional(join(dir, "flake.nix")), readOptional(join(dir, "flake.lock")));
}

function withToolsLock<T>(ctx: BaseContext, name: string, fn: () => T | Promise<T>): Promise<T> {
  return withFileLock(`${hostToolsDir(ctx, name)}.lock`, "exclusive", fn);
}

/**
 * Keeps the home's tools flake as the user's own (after `env create`, `import`, `reset`,
 * and a trusted session): later untrusted sessions build this copy. Never fails its caller:
 * a copy not kept only means those sessions build the tools themselves.
 */
export async function keepToolsFlake(ctx: BaseContext, home: Home): Promise<void> {
  if (!home.readable || !home.dir) return;
  const dir = home.dir;
  try {
    await withToolsLock(ctx, home.name, () => {
      const flake = homeFlake(dir);
      const copy = hostToolsDir(ctx, home.name);
      if (!flake) return rmSync(copy, { recursive: true, force: true });
      if (hostFlake(ctx, home.name)?.hash === flake.hash) return;
      mkdirSync(copy, { recursive: true, mode: 0o700 });
      // the lock first: a reader between the two writes sees a pair that hashes to neither
      if (flake.lock) writeAtomic(join(copy, "flake.lock"), flake.lock, 0o600);
      else rmSync(join(copy, "flake.lock"), { force: true });
      writeAtomic(join(copy, "flake.nix"), flake.nix, 0o600);
    });
  } catch (error) {
    ctx.log.debug(`environment ${home.name}: could not keep a copy of its ~/flake.nix: ${messageOf(error)}`);
  }
}

/** The home's installed tools are those of FLAKE, and the golden store has them (or cannot tell). */
async function installed(ctx: BaseContext, dir: string, flake: ToolsFlake): Promise<boolean> {
  if (stateValue(dir, "tools.hash") !== flake.hash) return false;
  const path = toolsStorePath(dir);
  return path !== undefined && (await (await goldenApi()).storeHasPath(ctx, path)) !== false;
}

/**
 * Before an untrusted project's session: its environment's tools, from the host's copy,
 * built and promoted in a step of their own when the golden store does not have them yet.
 * Never fails the session: when the step cannot run, the session builds them (and keeps nothing).
 */
export async function prepareTools(ctx: SessionContext, home: Home): Promise<void> {
  if (!home.readable || !home.dir) return;
  const dir = home.dir;
  const flake = homeFlake(dir);
  if (!flake || (await installed(ctx, dir, flake))) return;
  const kept = hostFlake(ctx, home.name);
  if (kept?.hash !== flake.hash) {
    const why = kept ? "changed since a trusted session last saw it" : "was never seen by a trusted session";
    ctx.log.warn(`environment ${home.name}: its ~/flake.nix ${why} — this untrusted session builds its tools and keeps nothing; a trusted session of ${home.name} keeps them`);
    return;
  }
  await withToolsLock(ctx, home.name, async () => {
    // another session may have built them while this one waited
    if (await installed(ctx, dir, flake)) return;
    const copy = hostToolsDir(ctx, home.name);
    if (!existsSync(join(copy, "flake.nix"))) return;
    ctx.log.start(`environment ${home.name}: installing its ~/flake.nix tools into the golden store, before the project's code runs…`);
    const plan = helperPlan({
      image: ctx.config.image,
      purpose: "env-tools",
      mounts: [
        { type: "volume", source: home.volume, target: containerHome },
        { type: "bind", source: copy, target: "/run/agentenv/tools", readonly: true },
      ],
      // the session's own stdout is the user's: Nix's output goes to stderr
      script: "exec 1>&2; exec agentenv-install-tools --from /run/agentenv/tools",
    });
    // no Nix config, flake registry or fetcher cache from the home: a session may have planted
    // a substituter, a hook or a redirected input there (the user's own go in extraEnv.NIX_CONFIG)
    plan.env = {
      ...ctx.config.extraEnv,
      HOME: containerHome,
      XDG_CONFIG_HOME: "/run/agentenv/tools-config",
      XDG_CACHE_HOME: "/run/agentenv/tools-cache",
      NIX_USER_CONF_FILES: "/run/agentenv/tools-config/nix/nix.conf",
    };
    plan.labels[envLabel] = home.name;
    plan.extraArgs = [...ctx.config.extraRunArgs];
    if (ctx.plan.userns) plan.userns = ctx.plan.userns;
    try {
      const code = await (await goldenApi()).runPromoted(ctx, plan);
      if (code !== 0) ctx.log.warn(`environment ${home.name}: installing its tools failed (exit ${code}); this session builds them and keeps nothing`);
    } catch (error) {
      ctx.log.warn(`environment ${home.name}: could not install its tools before the session: ${messageOf(error)}`);
    }
  });
}
