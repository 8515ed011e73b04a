import { createReadStream } from "node:fs";
import { createGunzip } from "node:zlib";
import { UserError, messageOf } from "../../core/errors.ts";
import { containerHome } from "../../core/plan.ts";
import { linkLeaves, recordPath } from "./home.ts";

/**
 * An archive to fill a home from (`env import`, `env reset` of an imported environment)
 * is hostile input: anyone may have written it, and a session wrote the home it was
 * exported from. Before anything is made from it, every entry is read here (a tar is
 * 512-byte headers, each followed by its content rounded up to 512 bytes): no absolute
 * name, no ".." part, no entry under a link, no link leading out of the home, only files,
 * directories, links and FIFOs.
 */

/** Links may lead here out of the home: the Nix store every session mounts (a tools profile's links). */
const storeMount = "/nix/";
/** An env.json bigger than this is not one agentenv wrote. */
const recordLimit = 1 << 20;

/** Reads exactly N bytes at a time from a stream of chunks, or skips them. */
class Reader {
  private chunks: Buffer[] = [];
  private have = 0;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.have < n) {
      const next = await this.source.next();
      if (next.done) return false;
      this.chunks.push(next.value);
      this.have += next.value.length;
    }
    return true;
  }

  /** N bytes, or undefined when the stream ends first. */
  async read(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill(n))) return undefined;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.have -= n;
    return all.subarray(0, n);
  }

  /** Skips N bytes without keeping them; false when the stream ends first. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      if (!this.have && !(await this.fill(1))) return false;
      const first = this.chunks[0]!;
      const taken = Math.min(n, first.length);
      if (taken === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(taken);
      this.have -= taken;
      n -= taken;
    }
    return true;
  }
}

function text(header: Buffer, start: number, length: number): string {
  const field = header.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString("utf8");
}

/** A numeric field: octal text, or (GNU, for big values) base-256 when its first bit is set. */
function number(header: Buffer, start: number, length: number): number {
  const field = header.subarray(start, start + length);
  if (field[0]! & 0x80) return field.subarray(1).reduce((value, byte) => value * 256 + byte, field[0]! & 0x7f);
  const digits = text(header, start, length).trim();
  return digits ? Number.parseInt(digits, 8) : 0;
}

function validChecksum(header: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  return number(header, 148, 8) === sum;
}

/** A pax extended header's records: "LENGTH KEY=VALUE\n" each. */
function paxRecords(data: Buffer): Record<string, string> {
  const records: Record<string, string> = {};
  for (let at = 0; at < data.length; ) {
    const space = data.indexOf(0x20, at);
    const length = Number.parseInt(data.subarray(at, space).toString(), 10);
    if (space < 0 || !(length > 0)) break;
    const record = data.subarray(space + 1, at + length - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq > 0) records[record.slice(0, eq)] = record.slice(eq + 1);
    at += length;
  }
  return records;
}

/** NAME as a path inside the home ("" is the home itself), or why it is not one. */
function homePath(name: string): { path: string } | { why: string } {
  if (name.startsWith("/")) return { why: "an absolute path" };
  const parts = name.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) return { why: 'a path with ".."' };
  return { path: parts.join("/") };
}

/**
 * Whether the link at NAME → TARGET leads out of the home, followed through the archive's
 * other LINKS as the container would follow it: an absolute target is a container path
 * (/root/… is the home; the store may be named).
 */
function leavesHome(name: string, target: string, links: Map<string, string>): boolean {
  return linkLeaves(name, target, (parts) => links.get(parts.join("/")), (to) => {
    if (to.startsWith(storeMount)) return "allowed";
    if (to !== containerHome && !to.startsWith(`${containerHome}/`)) return "out";
    return to.slice(containerHome.length).split("/");
  });
}

/** The directories above PATH, top first: a/b/c → a, a/b. */
function ancestors(path: string): string[] {
  const parts = path.split("/");
  return parts.slice(1).map((_, depth) => parts.slice(0, depth + 1).join("/"));
}

/** tar's types of plain files */
const files = ["0", "\0", "7"];

/**
 * Checks the tar archive FILE (gzip-compressed when GZIP) entry by entry; SHOWN names it
 * in messages. Returns the content of its ~/.local/state/agentenv/env.json when that is a
 * plain file. Throws UserError at the first entry that would leave the home.
 */
export function checkArchive(file: string, gzip: boolean, shown: string): Promise<string | undefined> {
  return checkArchives([{ file, gzip, shown }]);
}

/**
 * Checks ARCHIVES as one home extracted from them in turn (an `env pull`'s layers): an
 * entry of a later one under a link an earlier one made counts as under a link, and every
 * link is followed through all of them. Returns the last env.json, as checkArchive.
 */
export async function checkArchives(archives: ReadonlyArray<{ file: string; gzip: boolean; shown: string }>): Promise<string | undefined> {
  const links = new Map<string, string>();
  /** the first directory above PATH that the archive made a link */
  const linkAbove = (path: string) => ancestors(path).find((parent) => links.has(parent));
  /** directories entries were found in: none of them may be a link */
  const parents = new Set<string>();
  let record: string | undefined;
  let shown = archives[0]?.shown ?? "";
  const refuse = (name: string, why: string) => new UserError(`${shown}: the entry ${JSON.stringify(name)} is ${why}`, "agentenv imports only archives whose entries stay inside the home");
  for (const archive of archives) {
    shown = archive.shown;
    const { file, gzip } = archive;
    const stream = gzip ? createReadStream(file).pipe(createGunzip()) : createReadStream(file);
    const reader = new Reader(stream[Symbol.asyncIterator]());
    const notArchive = () => new UserError(`${shown}: not a tar archive`, "give an archive made by agentenv env export (a .tar.gz or .tar)");
    const truncated = () => new UserError(`${shown}: the archive ends in the middle of an entry`);
    let pax: Record<string, string> = {};
    try {
      for (let first = true; ; first = false) {
        const header = await reader.read(512);
        if (!header) throw first ? notArchive() : truncated();
        if (header.every((byte) => byte === 0)) break;
        if (!validChecksum(header)) throw notArchive();
        const type = String.fromCharCode(header[156]!);
        const size = pax.size !== undefined ? Number(pax.size) : number(header, 124, 12);
        if (!Number.isSafeInteger(size) || size < 0) throw notArchive();
        const padded = Math.ceil(size / 512) * 512;
        if (["L", "K", "x", "g"].includes(type)) {
          // what the next entry is called (GNU long names, pax records), not an entry itself
          if (size > recordLimit) throw refuse(text(header, 0, 100), `${size} bytes of metadata`);
          const data = (await reader.read(padded))?.subarray(0, size);
          if (!data) throw truncated();
          if (type === "L") pax = { ...pax, path: data.toString("utf8").replace(/\0+$/, "") };
          else if (type === "K") pax = { ...pax, linkpath: data.toString("utf8").replace(/\0+$/, "") };
          else if (type === "x") pax = { ...pax, ...paxRecords(data) };
          else if (Object.keys(paxRecords(data)).some((key) => key === "path" || key === "linkpath")) throw refuse(text(header, 0, 100), "a global header renaming entries");
          continue;
        }
        const prefix = header.subarray(257, 263).toString("latin1") === "ustar\0" ? text(header, 345, 155) : "";
        const name = pax.path ?? (prefix ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100));
        const target = pax.linkpath ?? text(header, 157, 100);
        pax = {};

        const where = homePath(name);
        if ("why" in where) throw refuse(name, where.why);
        const { path } = where;
        const above = linkAbove(path);
        if (above) throw refuse(name, `inside ${above}, a link`);
        if (!path && type !== "5") throw refuse(name, "the home itself, as something other than a directory");
        for (const parent of ancestors(path)) parents.add(parent);
        links.delete(path);
        if (type === "2") {
          if (parents.has(path)) throw refuse(name, "a link where the archive has a directory");
          links.set(path, target);
        } else if (type === "1") {
          const linked = homePath(target);
          if ("why" in linked) throw refuse(name, `a hard link to ${linked.why}`);
          if (linkAbove(linked.path)) throw refuse(name, "a hard link through a link");
          // a hard link to a symbolic link is that link again, here: checked from here
          const symbolic = links.get(linked.path);
          if (symbolic !== undefined) links.set(path, symbolic);
        } else if (type === "3" || type === "4") {
          throw refuse(name, "a device");
        } else if (![...files, "5", "6"].includes(type)) {
          throw refuse(name, `of a kind agentenv does not import (tar type ${JSON.stringify(type)})`);
        }
        if (path === recordPath) record = undefined;
        if (path === recordPath && files.includes(type) && size <= recordLimit) {
          const data = await reader.read(padded);
          if (!data) throw truncated();
          record = data.subarray(0, size).toString("utf8");
        } else if (!(await reader.skip(padded))) {
          throw truncated();
        }
      }
    } catch (error) {
      if (error instanceof UserError) throw error;
      throw new UserError(`${shown}: not a tar archive (${messageOf(error)})`, "give an archive made by agentenv env export (a .tar.gz or .tar)");
    } finally {
      stream.destroy();
    }
  }
  for (const [path, target] of links) {
    if (leavesHome(path, target, links)) throw refuse(path, `a link out of the home (to ${target})`);
  }
  return record;
}
