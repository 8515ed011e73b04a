import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "pathe";
import pkg from "../../package.json" with { type: "json" };
import { UserError, messageOf } from "../../core/errors.ts";
import { formatBytes } from "../../core/log.ts";
import { agentenvDir } from "../../core/paths.ts";
import type { BaseContext } from "../../core/plugins.ts";
import { crashPoint, newNonce } from "../../core/volumes.ts";
import { Digester, fileDigest, formatReference, manifestType, parseReference, RegistryClient, type Descriptor, type Reference } from "../registry/client.ts";
import { hasOverlay } from "./dotfiles/index.ts";
import { readOverlay } from "./dotfiles/overlay.ts";
import { isLocalRepo, type DotfilesConfig } from "./dotfiles/repo.ts";
import { exportClosure, importClosure } from "../golden/api.ts";
import { checkName, recordPath, stateDir, toolsStorePath, type EnvRecord } from "./home.ts";
import { applyChanges, manifestOf, mergeManifests } from "./merge.ts";
import { existingHome, importLayers, packHome, recordOf, replaceFromLayers, requireHome, type HomeEntry, type HomePart } from "./lifecycle.ts";
import { checkRecord, readHostRecord, withEnvLock, writeHostRecord } from "./record.ts";

/**
 * `env push` and `env pull`: an environment as an OCI artifact in any registry.
 *
 * The artifact is an OCI image manifest with its own `artifactType` and a config blob of
 * its own media type (the environment's settings: shell, dotfiles repo — never its
 * secrets, never its overlay), and the home as layers, one per part, so that a part that
 * did not change is the same blob and is not uploaded again: the agents' memory, agentenv's
 * state (the tools profile, the dotfiles state) and the rest. A pull checks every layer's
 * entries as `env import` checks an archive (one piece of code: archive.ts), all layers
 * as one home, and creates the environment all or nothing (lifecycle.ts importLayers).
 *
 * Divergence: the host record keeps the artifact the environment was last pulled from or
 * pushed to (`synced`: reference, digest, each part's digest, and each part's tar sum as
 * this home packed right after). A push over a tag that points elsewhere now is refused
 * (`--force` replaces it); a pull over an environment that changed since is refused, or
 * merged three-way against that artifact (`--merge`, merge.ts).
 */

export const artifactType = "application/vnd.agentenv.env.v1";
export const configType = "application/vnd.agentenv.env.config.v1+json";
const layerType = "application/vnd.oci.image.layer.v1.tar+gzip";
/** the tools' closure: a gzip-compressed `nix-store --export` stream */
export const toolsType = "application/vnd.agentenv.nix-export.v1+gzip";
/** the layer annotation naming the part of the home a layer holds */
export const partAnnotation = "dev.agentenv.part";

/** Where coding agents keep their memory, sessions and settings: a layer of their own (they change at another pace than dotfiles). */
export const memoryPaths = [".claude", ".claude.json", ".codex", ".gemini", ".config/opencode", ".local/share/opencode", ".cursor"];

/** The parts of a home, in the order they are extracted; the first holds everything the others do not, in pieces (splitHome). */
export const homeParts: readonly HomePart[] = [
  { name: "home" },
  { name: "memory", paths: memoryPaths },
  // the record (env.json) is written from the artifact's settings; last-used changes every session
  { name: "state", paths: [stateDir], skip: [recordPath, `${stateDir}/last-used`] },
];

/** The pieces the rest of a home is cut into aim at this many bytes (before compression), and at most 64 pieces. */
const pieceTarget = 4 << 20;

/** FNV-1a of a path: where pieces may end, by name alone. */
function pathHash(path: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(path)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash;
}

/**
 * Cuts the rest of a home (its sorted listing) into pieces, each a layer of its own, so a
 * change re-uploads one piece, not the whole home. A piece ends after a path whose name
 * hashes to 0 mod 16 once it holds the target size (4 MiB, or a 64th of the home rounded
 * up to a power of two), or at four times the target: the cuts depend on names (and
 * roughly on sizes), so a file that changes, appears or goes moves at most the cut of its
 * own piece, and the others stay the same blobs.
 */
export function splitHome(entries: HomeEntry[]): HomeEntry[][] {
  const total = entries.reduce((sum, entry) => sum + entry.size, 0);
  const target = Math.max(pieceTarget, 2 ** Math.ceil(Math.log2(Math.max(1, total / 64))));
  const pieces: HomeEntry[][] = [];
  let piece: HomeEntry[] = [];
  let size = 0;
  for (const entry of entries) {
    piece.push(entry);
    size += entry.size;
    if ((size >= target && pathHash(entry.path) % 16 === 0) || size >= 4 * target) {
      pieces.push(piece);
      piece = [];
      size = 0;
    }
  }
  if (piece.length || !pieces.length) pieces.push(piece);
  return pieces;
}

/** The artifact's config blob. */
export interface EnvConfig {
  /** the agentenv version that pushed it (the time is the manifest's annotation: the config stays the same blob while the settings do) */
  agentenv: string;
  /** the environment's settings (no secrets, no overlay) */
  settings: { shell?: string; dotfiles?: DotfilesConfig };
  /** the parts of the home, in layer order */
  parts: string[];
  /** the environment's tools profile (a store path) and the number of paths in its closure, when the artifact carries them */
  tools?: { profile: string; paths: number };
}

export interface TransferOptions {
  /** --tls-verify=false */
  tlsVerify?: boolean;
  force?: boolean;
  /** false: no tools closure (push), or not imported (pull) */
  tools?: boolean;
  /** pull into an environment with local changes: merge three-way against the artifact it last synced with */
  merge?: boolean;
}

export interface LayerResult {
  part: string;
  digest: string;
  size: number;
  /** push: uploaded, already in the registry, or mounted from another repository; pull: downloaded */
  status: "uploaded" | "exists" | "mounted" | "downloaded";
}

export interface TransferResult {
  name: string;
  ref: string;
  digest: string;
  /** bytes of all blobs (config and layers) */
  size: number;
  layers: LayerResult[];
  /** bytes sent or received */
  transferred: number;
}

function client(ctx: BaseContext, ref: Reference, options: TransferOptions): RegistryClient {
  return new RegistryClient(ref, { tlsVerify: options.tlsVerify, debug: (line) => ctx.log.debug(`registry: ${line}`) });
}

function short(digest: string): string {
  return digest.slice(0, 19);
}

/** A private directory for one push's layers (a crash leaves it: the next push removes it once its process is gone). */
function spoolDir(): string {
  const root = join(agentenvDir("cache"), "push");
  mkdirSync(root, { recursive: true, mode: 0o700 });
  for (const entry of readdirSync(root)) {
    const pid = Number(/-(\d+)$/.exec(entry)?.[1]);
    let alive = false;
    try {
      alive = pid > 0 && (process.kill(pid, 0), true);
    } catch (error) {
      alive = (error as NodeJS.ErrnoException).code === "EPERM";
    }
    if (!alive) rmSync(join(root, entry), { recursive: true, force: true });
  }
  const dir = join(root, `${newNonce()}-${process.pid}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

/** The overlay's paths: files of this host only, kept out of every layer. */
function overlayPaths(name: string): string[] {
  if (!hasOverlay(name)) return [];
  try {
    return Object.keys(readOverlay(name).files);
  } catch (error) {
    throw new UserError(`environment ${name}: its overlay cannot be read, so agentenv cannot keep its files out of the push: ${messageOf(error)}`);
  }
}

/** Packs NAME's home into DIR (see packHome) and hashes each part: PART → its file, digest and size, and its tar's sha256 (SUM). */
async function packParts(ctx: BaseContext, name: string, dir: string): Promise<Map<string, { file: string; digest: string; size: number; sum: string }>> {
  const { parts } = await packHome(ctx, name, homeParts, dir, { exclude: overlayPaths(name), split: splitHome });
  const packed = new Map<string, { file: string; digest: string; size: number; sum: string }>();
  for (const part of parts) {
    const file = join(dir, `${part}.tar.gz`);
    packed.set(part, { file, ...(await fileDigest(file)), sum: readSum(dir, part) });
  }
  return packed;
}

function readSum(dir: string, part: string): string {
  const sum = readFileSync(join(dir, `${part}.sum`), "utf8").trim();
  if (!/^[0-9a-f]{64}$/.test(sum)) throw new UserError(`packing the home's ${part} failed: no checksum came out`);
  return sum;
}

/** The sha256 of each part's tar as NAME's home packs now (no archive made): what "changed since the last sync" compares. */
async function partSums(ctx: BaseContext, name: string): Promise<Record<string, string>> {
  const dir = spoolDir();
  try {
    const { parts } = await packHome(ctx, name, homeParts, dir, { exclude: overlayPaths(name), compress: false, split: splitHome });
    return Object.fromEntries(parts.map((part) => [part, readSum(dir, part)]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether blobs show their progress as they move: on a terminal, unless -q. */
function live(ctx: BaseContext): boolean {
  return Boolean(process.stderr.isTTY) && ctx.log.level >= 3;
}

/** A blob's progress as it moves, on one line rewritten in place (a terminal only); `report` ends it. */
function progressOf(ctx: BaseContext, part: string, verb: string): ((done: number, total: number) => void) | undefined {
  if (!live(ctx)) return undefined;
  let shown = 0;
  return (done, total) => {
    const now = Date.now();
    if (now - shown < 100 && done < total) return;
    shown = now;
    process.stderr.write(`\r\x1b[K  ${part.padEnd(7)} ${verb} ${formatBytes(done)} of ${formatBytes(total)} (${total ? Math.floor((done / total) * 100) : 100}%)`);
  };
}

/** One line per blob: its part, size and what happened to it. */
function report(ctx: BaseContext, layer: LayerResult): void {
  const what = { uploaded: "uploaded", exists: "already in the registry", mounted: "mounted from another repository", downloaded: "downloaded" }[layer.status];
  if (live(ctx)) process.stderr.write("\r\x1b[K");
  ctx.log.info(`  ${layer.part.padEnd(7)} ${formatBytes(layer.size).padStart(10)}  ${short(layer.digest)}  ${what}`);
}

/** The tag a push writes, and the reference recorded for it (no digest). */
function pushTarget(text: string): Reference {
  const ref = parseReference(text);
  if (ref.digest) throw new UserError(`push to a tag, not a digest: ${text}`, "e.g. agentenv env push dev ghcr.io/me/dev-env:latest");
  return ref;
}

/**
 * Pushes environment NAME to REF (REGISTRY/REPO[:TAG]): the home packed into parts, each
 * blob uploaded only when the registry does not have it, then the manifest. Refused in one
 * line when the tag points at an artifact other than the one NAME was last pulled from
 * or pushed to (FORCE replaces it).
 */
export async function pushEnv(ctx: BaseContext, name: string, refText: string, options: TransferOptions = {}): Promise<TransferResult> {
  const ref = pushTarget(refText);
  const shown = formatReference(ref);
  const found = await requireHome(ctx, name);
  const record = await recordOf(ctx, found);
  if (!record) throw new UserError(`environment ${name} has no record of its source (${recordPath})`, "remove it and create it again");
  const registry = client(ctx, ref, options);
  registry.want(ref.repository, "pull", "push");
  const current = await registry.manifestDigest(ref.tag!);
  // a push that died after moving the tag and before recording it: what it wrote is this environment's
  const synced = record.pushing && record.pushing.ref === shown && record.pushing.digest === current ? record.pushing : record.synced;
  const refuseDiverged = (current: string) =>
    new UserError(
      `${shown} is at ${short(current)}, which environment ${name} was not ${synced ? `last synced with (${short(synced.digest)})` : "pulled from or pushed to"}: refusing to overwrite it`,
      `pull it first (agentenv env pull ${shown} ${name} --merge), or replace it: agentenv env push ${name} ${shown} --force`,
    );
  if (current && current !== synced?.digest && !options.force) throw refuseDiverged(current);

  const dir = spoolDir();
  try {
    ctx.log.start(`packing environment ${name}…`);
    const packed = await packParts(ctx, name, dir);
    crashPoint("push:packed");
    const layers: Descriptor[] = [];
    const results: LayerResult[] = [];
    let transferred = 0;
    // a blob the last synced repository of the same registry has is mounted, not uploaded
    const lastRepo = synced ? parseReference(synced.ref) : undefined;
    const mountFrom = lastRepo && lastRepo.registry === ref.registry && lastRepo.repository !== ref.repository ? lastRepo.repository : undefined;
    ctx.log.start(`pushing environment ${name} to ${shown}…`);
    for (const [part, { file, digest, size }] of packed) {
      const status = await registry.pushBlob(file, digest, size, { mountFrom, progress: progressOf(ctx, part, "uploading") });
      if (status === "uploaded") transferred += size;
      const result: LayerResult = { part, digest, size, status };
      report(ctx, result);
      results.push(result);
      layers.push({ mediaType: layerType, digest, size, annotations: { [partAnnotation]: part, "org.opencontainers.image.title": `${part}.tar.gz` } });
    }
    const config: EnvConfig = { agentenv: pkg.version, settings: { shell: record.shell, dotfiles: record.dotfiles }, parts: [...packed.keys()] };
    // the tools' closure, so a machine that reaches no binary cache has them
    const profile = options.tools === false ? undefined : found.readable && found.dir ? toolsStorePath(found.dir) : undefined;
    if (profile) {
      ctx.log.start(`exporting the closure of its tools (${profile})…`);
      const count = await exportClosure(ctx, [profile], dir, "tools.nar.gz");
      if (count) {
        const file = join(dir, "tools.nar.gz");
        const { digest, size } = await fileDigest(file);
        const status = await registry.pushBlob(file, digest, size, { mountFrom, progress: progressOf(ctx, "tools", "uploading") });
        if (status === "uploaded") transferred += size;
        const result: LayerResult = { part: "tools", digest, size, status };
        report(ctx, result);
        results.push(result);
        layers.push({ mediaType: toolsType, digest, size, annotations: { [partAnnotation]: "tools", "org.opencontainers.image.title": "tools.nar.gz" } });
        config.tools = { profile, paths: count };
      } else {
        ctx.log.warn(`environment ${name}: its tools (${profile}) are not in the golden store: pushed without them (a pull builds them from ~/flake.nix)`);
      }
    }
    const created = new Date().toISOString();
    const configFile = join(dir, "config.json");
    writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);
    const configBlob = await fileDigest(configFile);
    if ((await registry.pushBlob(configFile, configBlob.digest, configBlob.size)) === "uploaded") transferred += configBlob.size;
    const base = record.source.kind === "registry" ? record.source.digest : undefined;
    const annotations: Record<string, string> = { "org.opencontainers.image.created": created, "dev.agentenv.version": pkg.version };
    const from = synced?.digest ?? base;
    if (from) annotations["dev.agentenv.pulled-from"] = from;
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: manifestType, artifactType, config: { mediaType: configType, ...configBlob }, layers, annotations }),
    );
    crashPoint("push:uploaded");
    // checked again just before the tag moves: another push may have landed meanwhile
    const now = await registry.manifestDigest(ref.tag!);
    if (now && now !== current && !options.force) throw refuseDiverged(now);
    const parts = Object.fromEntries(results.map((layer) => [layer.part, layer.digest]));
    const local = Object.fromEntries([...packed].map(([part, { sum }]) => [part, sum]));
    const digester = new Digester();
    digester.update(manifest);
    // recorded before the tag moves: a push that dies between the two is recognised as ours by the next one
    const pushing = { ref: shown, digest: digester.digest(), parts, local, at: created };
    const keep = (change: (kept: EnvRecord) => EnvRecord) => withEnvLock(ctx, name, async () => writeHostRecord(ctx, name, change(readHostRecord(ctx, name) ?? record)));
    await keep((kept) => ({ ...kept, pushing }));
    const digest = await registry.putManifest(ref.tag!, manifestType, manifest);
    crashPoint("push:tagged");
    transferred += manifest.length;
    await keep(({ pushing: _done, ...kept }) => ({ ...kept, synced: { ...pushing, digest } }));
    const size = configBlob.size + results.reduce((sum, layer) => sum + layer.size, 0);
    return { name, ref: shown, digest, size, layers: results, transferred };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Records the digests of NAME's parts as packed now as its synced state's LOCAL (after a pull: its files' times and record are this host's). */
async function recordLocal(ctx: BaseContext, name: string): Promise<void> {
  ctx.log.debug(`environment ${name}: recording the state of its new home`);
  const local = await partSums(ctx, name);
  await withEnvLock(ctx, name, async () => {
    const kept = readHostRecord(ctx, name);
    if (kept?.synced) writeHostRecord(ctx, name, { ...kept, synced: { ...kept.synced, local } });
  });
}

/** A manifest from a registry, read as hostile input: what `env pull` acts on, or one line saying why not. */
export function parseArtifact(body: Buffer, shown: string): { config: Descriptor; layers: Array<Descriptor & { part: string }>; tools?: Descriptor } {
  const bad = (why: string) => new UserError(`${shown}: ${why}`, "pull an artifact made by agentenv env push");
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
  } catch {
    throw bad("its manifest is not JSON");
  }
  if (manifest.mediaType !== manifestType && manifest.mediaType !== undefined) throw bad(`not an OCI image manifest (${String(manifest.mediaType)})`);
  const config = manifest.config as Descriptor | undefined;
  if (manifest.artifactType !== artifactType && config?.mediaType !== configType) {
    throw bad(`not an agentenv environment (its artifact type is ${JSON.stringify(manifest.artifactType ?? config?.mediaType ?? "none")})`);
  }
  const descriptor = (value: unknown, what: string): Descriptor => {
    const d = (value && typeof value === "object" ? value : {}) as Record<string, unknown>;
    if (typeof d.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(d.digest)) throw bad(`${what} has no sha256 digest`);
    if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0) throw bad(`${what} has no valid size`);
    if (typeof d.mediaType !== "string") throw bad(`${what} has no media type`);
    return { mediaType: d.mediaType, digest: d.digest, size: d.size, annotations: (d.annotations ?? {}) as Record<string, string> };
  };
  const configDescriptor = descriptor(config, "its config");
  if (configDescriptor.mediaType !== configType) throw bad(`its config is ${configDescriptor.mediaType}, not ${configType}`);
  if (configDescriptor.size > 1 << 20) throw bad("its config is bigger than 1 MiB");
  if (!Array.isArray(manifest.layers)) throw bad("its manifest lists no layers");
  const known = (part: string) => /^home(?:\.[1-9]\d{0,3})?$/.test(part) || homeParts.some((p) => p.paths && p.name === part);
  const seen = new Set<string>();
  const layers: Array<Descriptor & { part: string }> = [];
  let tools: Descriptor | undefined;
  for (const [i, value] of manifest.layers.entries()) {
    const layer = descriptor(value, `layer ${i + 1}`);
    const part = layer.annotations?.[partAnnotation];
    if (!part || !(known(part) || part === "tools")) throw bad(`layer ${i + 1} is no part of a home agentenv knows (${JSON.stringify(part ?? "none")})`);
    if (seen.has(part)) throw bad(`two layers hold the part ${part}`);
    seen.add(part);
    const type = part === "tools" ? toolsType : layerType;
    if (layer.mediaType !== type) throw bad(`layer ${part} is ${layer.mediaType}, not ${type}`);
    if (part === "tools") tools = layer;
    else layers.push({ ...layer, part });
  }
  if (!seen.has("home")) throw bad("it has no home layer");
  return { config: configDescriptor, layers, tools };
}

/** The settings of an artifact's config, checked as `env import` checks an archive's env.json; a dotfiles repo on the pusher's disk is left out. */
function settingsOf(ctx: BaseContext, text: Buffer, shown: string, source: EnvRecord["source"]): EnvRecord {
  let config: Partial<EnvConfig>;
  try {
    config = JSON.parse(text.toString("utf8")) as Partial<EnvConfig>;
  } catch {
    throw new UserError(`${shown}: its config is not JSON`);
  }
  const settings = (config.settings && typeof config.settings === "object" ? config.settings : {}) as EnvConfig["settings"];
  let dotfiles = settings.dotfiles;
  if (dotfiles && typeof dotfiles === "object" && typeof dotfiles.url === "string" && isLocalRepo(dotfiles.url)) {
    ctx.log.warn(`${shown} names the dotfiles repo ${dotfiles.url}, a directory of the machine it was pushed from: left out (agentenv env set NAME dotfiles.url=… sets one)`);
    dotfiles = undefined;
  }
  try {
    return checkRecord({ version: 1, source, created: new Date().toISOString(), shell: settings.shell, dotfiles });
  } catch (error) {
    if (error instanceof UserError) throw new UserError(`${shown}: its settings: ${error.message}`, error.hint);
    throw error;
  }
}

/** The environment name a pull makes when none is given: the repository's last part. */
function defaultName(ref: Reference): string {
  const last = ref.repository.split("/").pop()!;
  try {
    return checkName(last);
  } catch {
    throw new UserError(`${last} is no environment name`, `name it: agentenv env pull ${formatReference(ref)} NAME`);
  }
}

/** The home layers of the artifact SYNCED names (what a merge is judged against), downloaded into DIR as base-N-PART.tar.gz. */
async function downloadBase(ctx: BaseContext, synced: NonNullable<EnvRecord["synced"]>, dir: string, options: TransferOptions): Promise<string[]> {
  const ref = parseReference(synced.ref);
  const registry = client(ctx, ref, options);
  registry.want(ref.repository, "pull");
  const shown = `${ref.registry}/${ref.repository}@${synced.digest}`;
  const manifest = await registry.getManifest(synced.digest);
  if (!manifest) throw new UserError(`cannot merge: ${shown}, what the environment last synced with, is no longer in the registry`, "pull into a new name and compare by hand");
  const files: string[] = [];
  for (const layer of parseArtifact(manifest.body, shown).layers) {
    const file = `base-${files.length}-${layer.part}.tar.gz`;
    await registry.pullBlob(layer.digest, layer.size, join(dir, file));
    files.push(file);
  }
  return files;
}

/**
 * Merges into the home at HOME (this host's view of its volume) what changed between the
 * BASE layers and the new LAYERS (both in DIR, already checked), three-way against the
 * home as it is (merge.ts): a change on one side only is taken, a file changed on both
 * keeps the home's version and gets the pulled one beside it
 * (PATH.agentenv-conflict-REGISTRY-DATE). Files change one by one, each atomically, never
 * through a link.
 */
async function mergeHome(ctx: BaseContext, name: string, home: string, dir: string, layers: string[], base: string[], otherName: string): Promise<void> {
  const extract = (files: string[], into: string) => {
    mkdirSync(join(dir, into), { mode: 0o700 });
    for (const file of files) {
      const made = Bun.spawnSync(["tar", "-C", join(dir, into), "--no-same-owner", "-p", "-xzf", join(dir, file)], { stderr: "pipe" });
      if (made.exitCode !== 0) throw new UserError(`cannot unpack ${file} to merge it: ${made.stderr.toString().trim()}`);
    }
    return join(dir, into);
  };
  const theirs = extract(layers, "theirs");
  const was = extract(base, "base");
  // what no layer holds: this host's record, the session stamp, the overlay, a reset's stage
  const overlay = new Set(overlayPaths(name));
  const skip = (path: string) => path === recordPath || path === `${stateDir}/last-used` || overlay.has(path) || path.startsWith(".agentenv-reset");
  const plan = mergeManifests(manifestOf(was, skip), manifestOf(home, skip), manifestOf(theirs, skip), { otherName });
  ctx.log.start(`merging: ${plan.local.length} change(s) into environment ${name}, ${plan.conflicts.length} conflict(s)…`);
  applyChanges(home, plan.local, theirs);
  for (const conflict of plan.conflicts) {
    if (conflict.kind === "both") ctx.log.warn(`conflict: ~/${conflict.path} changed here and upstream — yours kept, theirs at ~/${conflict.copy}`);
    else if (conflict.kind === "deleted-local") ctx.log.warn(`conflict: ~/${conflict.path} deleted here, changed upstream — theirs kept`);
    else ctx.log.warn(`conflict: ~/${conflict.path} changed here, deleted upstream — yours kept`);
  }
}

/** The parts of NAME's home that changed since it last synced (packed now and compared with SYNCED's LOCAL). */
async function localChanges(ctx: BaseContext, name: string, synced: NonNullable<EnvRecord["synced"]>): Promise<string[]> {
  const sums = await partSums(ctx, name);
  if (!Object.keys(synced.local).length) {
    // a pull interrupted after its record and before this: the home is taken as it is now
    ctx.log.warn(`environment ${name}: its last pull was interrupted before its state was recorded; the home as it is now counts as unchanged`);
    await withEnvLock(ctx, name, async () => {
      const kept = readHostRecord(ctx, name);
      if (kept?.synced) writeHostRecord(ctx, name, { ...kept, synced: { ...kept.synced, local: sums } });
    });
    return [];
  }
  return Object.entries(sums).filter(([part, sum]) => synced.local[part] !== sum).map(([part]) => part);
}

/**
 * Pulls REF (REGISTRY/REPO[:TAG|@DIGEST]) into environment NAME: the manifest and config
 * checked, every layer downloaded into the command's work directory and checked against
 * its digest while it streams, then all layers' entries checked as one hostile archive,
 * then the home made all or nothing. An existing NAME is replaced only when it came from
 * a registry and has not changed since its last pull or push (else one line says so), and
 * not while a session uses it (FORCE: anyway).
 */
export async function pullEnv(ctx: BaseContext, refText: string, nameArg: string | undefined, options: TransferOptions = {}): Promise<TransferResult> {
  const ref = parseReference(refText);
  const name = nameArg ? checkName(nameArg) : defaultName(ref);
  const shown = formatReference(ref);
  let existing: EnvRecord | undefined;
  const found = await existingHome(ctx, name);
  if (found) {
    existing = await recordOf(ctx, found);
    if (!existing?.synced) {
      throw new UserError(`environment ${name} already exists and did not come from a registry`, `pull into a new name (agentenv env pull ${shown} NEW), or remove it first (agentenv env rm ${name})`);
    }
  }
  const registry = client(ctx, ref, options);
  registry.want(ref.repository, "pull");
  const manifest = await registry.getManifest(ref.digest ?? ref.tag!);
  if (!manifest) throw new UserError(`${shown}: no such ${ref.digest ? "manifest" : "tag"} in ${ref.registry}/${ref.repository}`, "check the name (agentenv env push writes it)");
  const artifact = parseArtifact(manifest.body, shown);
  const source = { kind: "registry" as const, ref: `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}`, digest: manifest.digest };
  const settings = settingsOf(ctx, await registry.blobBytes(artifact.config.digest), shown, source);
  const size = artifact.config.size + [...artifact.layers, ...(artifact.tools ? [artifact.tools] : [])].reduce((sum, layer) => sum + layer.size, 0);
  const results: LayerResult[] = [];
  let transferred = manifest.body.length + artifact.config.size;
  // a push of this environment that died after moving the tag: what it wrote is what the home has
  if (existing?.pushing && existing.pushing.ref === source.ref && existing.pushing.digest === manifest.digest) existing.synced = existing.pushing;
  if (existing?.synced?.digest === manifest.digest) {
    ctx.log.info(`environment ${name} is already at ${short(manifest.digest)}`);
    return { name, ref: shown, digest: manifest.digest, size, layers: [], transferred };
  }
  const download = async (dir: string, record: EnvRecord) => {
    ctx.log.start(`pulling ${shown} (${short(manifest.digest)})…`);
    const layers: string[] = [];
    for (const layer of artifact.layers) {
      const file = `${layers.length}-${layer.part}.tar.gz`;
      await registry.pullBlob(layer.digest, layer.size, join(dir, file), progressOf(ctx, layer.part, "downloading"));
      transferred += layer.size;
      const result: LayerResult = { part: layer.part, digest: layer.digest, size: layer.size, status: "downloaded" };
      report(ctx, result);
      results.push(result);
      layers.push(file);
    }
    let checked: (() => Promise<void>) | undefined;
    const tools = artifact.tools;
    if (tools && options.tools !== false) {
      await registry.pullBlob(tools.digest, tools.size, join(dir, "tools.nar.gz"), progressOf(ctx, "tools", "downloading"));
      transferred += tools.size;
      const result: LayerResult = { part: "tools", digest: tools.digest, size: tools.size, status: "downloaded" };
      report(ctx, result);
      results.push(result);
      // once the home's layers passed their checks: into the golden store, as a trusted session's paths
      checked = async () => {
        ctx.log.start("importing its tools into the golden store…");
        if (!(await importClosure(ctx, dir, "tools.nar.gz"))) ctx.log.warn(`${shown}: its tools could not be imported into the golden store; the first session builds them from ~/flake.nix`);
      };
    }
    crashPoint("pull:downloaded");
    const at = new Date().toISOString();
    const parts = Object.fromEntries(results.map((layer) => [layer.part, layer.digest]));
    return { layers, record: { ...record, synced: { ref: source.ref, digest: manifest.digest, parts, local: {}, at } }, checked };
  };
  if (!existing) {
    await importLayers(ctx, name, shown, (dir) => download(dir, settings));
  } else {
    const synced = existing.synced!;
    await replaceFromLayers(ctx, name, shown, Boolean(options.force), async (dir, found) => {
      // under the lock: what the home holds now against what it held right after its last sync
      const changed = await localChanges(ctx, name, synced);
      const { adopted: _adopted, ...kept } = existing!;
      if (!changed.length) return download(dir, { ...kept, source, shell: settings.shell, dotfiles: settings.dotfiles, reset: new Date().toISOString() });
      if (!options.merge) {
        throw new UserError(
          `environment ${name} changed since it last synced with ${synced.ref} (${changed.join(", ")}): refusing to overwrite its changes`,
          `merge them (agentenv env pull ${shown} ${name} --merge), push them first, or pull into a new name`,
        );
      }
      if (!found.readable || !found.dir) throw new UserError(`--merge needs the files of environment ${name} on this host, and its engine keeps them out of reach (a VM or remote engine)`, `pull into a new name (agentenv env pull ${shown} NEW)`);
      const home = found.dir;
      // the settings stay this environment's; its files get what changed upstream only
      const fetched = await download(dir, { ...kept, source });
      const base = await downloadBase(ctx, synced, dir, options);
      return { ...fetched, base, apply: () => mergeHome(ctx, name, home, dir, fetched.layers, base, `${ref.registry}/${ref.repository}`) };
    });
  }
  // the home as this host packs it now: what "changed since the pull" is judged against
  await recordLocal(ctx, name);
  return { name, ref: shown, digest: manifest.digest, size, layers: results, transferred };
}
