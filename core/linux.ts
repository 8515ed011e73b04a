import { closeSync, openSync } from "node:fs";

/**
 * The few system calls agentenv needs and Bun does not expose: advisory locks (released
 * by the kernel when the holder dies, however it dies; Linux and macOS) and overlay
 * mounts (Linux). The C library is opened on first use, so commands that never lock pay
 * nothing.
 */
type Locks = {
  flock(fd: number, operation: number): number;
  errno(): number;
  /** EWOULDBLOCK: 11 on Linux, 35 on macOS */
  wouldBlock: number;
};
type Mounts = {
  mount(source: Buffer, target: Buffer, type: Buffer, flags: bigint, data: Buffer): number;
  umount2(target: Buffer, flags: number): number;
  syncfs(fd: number): number;
  errno(): number;
};

let locks: Locks | undefined;
let mounts: Mounts | undefined;

// required lazily: bun:ffi is only there when a command needs it
const ffi = () => require("bun:ffi") as typeof import("bun:ffi");

function loadLocks(): Locks {
  if (locks) return locks;
  const { dlopen, FFIType, read } = ffi();
  // on macOS errno lives behind __error(), on glibc behind __errno_location()
  const darwin = process.platform === "darwin";
  if (!darwin && process.platform !== "linux") throw new Error(`file locks are not supported on ${process.platform}`);
  const errnoSymbol = darwin ? "__error" : "__errno_location";
  const { symbols } = dlopen(darwin ? "/usr/lib/libSystem.B.dylib" : "libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    [errnoSymbol]: { args: [], returns: FFIType.ptr },
  });
  const errnoPointer = symbols[errnoSymbol]!;
  locks = {
    flock: (fd, op) => symbols.flock(fd, op) as number,
    errno: () => read.i32(errnoPointer()!, 0),
    wouldBlock: darwin ? 35 : 11,
  };
  return locks;
}

function loadMounts(): Mounts {
  if (mounts) return mounts;
  if (process.platform !== "linux") throw new Error("overlay mounts need Linux");
  const { dlopen, FFIType, read } = ffi();
  const { symbols } = dlopen("libc.so.6", {
    mount: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    syncfs: { args: [FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  mounts = {
    mount: (s, t, ty, f, d) => symbols.mount(s, t, ty, f, d) as number,
    umount2: (t, f) => symbols.umount2(t, f) as number,
    syncfs: (fd) => symbols.syncfs(fd) as number,
    errno: () => read.i32(symbols.__errno_location()!, 0),
  };
  return mounts;
}

const cstr = (s: string) => Buffer.from(`${s}\0`);

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EINTR = 4;

export class SystemError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
    detail: string,
  ) {
    super(`${call} failed (errno ${errno}${errnoNames[errno] ? ` ${errnoNames[errno]}` : ""}): ${detail}`);
  }
}

const errnoNames: Record<number, string> = { 1: "EPERM", 2: "ENOENT", 13: "EACCES", 16: "EBUSY", 22: "EINVAL", 38: "ENOSYS" };

/** An open lock file holding an flock; `release` (or process death) lets go. */
export interface FileLock {
  release(): void;
}

/**
 * flock(2) on FILE (created if missing, unless `create: false`). `wait: false` returns
 * undefined instead of blocking when someone else holds it.
 */
export function lockFile(file: string, mode: "shared" | "exclusive", wait = true, create = true): FileLock | undefined {
  const c = loadLocks();
  const fd = openSync(file, create ? "a" : "r");
  const op = (mode === "shared" ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB);
  while (c.flock(fd, op) !== 0) {
    const errno = c.errno();
    if (errno === EINTR) continue;
    closeSync(fd);
    if (!wait && errno === c.wouldBlock) return undefined;
    throw new SystemError("flock", errno, file);
  }
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      c.flock(fd, LOCK_UN);
      closeSync(fd);
    },
  };
}

/** Runs FN holding a lock on FILE in MODE. */
export async function withFileLock<T>(file: string, mode: "shared" | "exclusive", fn: () => T | Promise<T>): Promise<T> {
  const lock = lockFile(file, mode)!;
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

/** Whether anyone holds a lock on FILE right now (takes and drops it when free); throws ENOENT when FILE is gone. */
export function isLocked(file: string): boolean {
  const lock = lockFile(file, "exclusive", false, false);
  lock?.release();
  return lock === undefined;
}

export function mountOverlay(target: string, layers: { lower: string[]; upper?: string; work?: string }): void {
  const c = loadMounts();
  // a session writes its upper dir: overlay metadata there (redirects, metacopy xattrs)
  // must never make a later mount of that layer show something else than its files
  const options = [`lowerdir=${layers.lower.join(":")}`, "redirect_dir=nofollow", "metacopy=off"];
  if (layers.upper) options.push(`upperdir=${layers.upper}`, `workdir=${layers.work}`);
  const data = options.join(",");
  // the kernel reads mount data from one page
  if (data.length >= 4096) throw new SystemError("mount", 7, `overlay options too long (${data.length} bytes): ${target}`);
  if (c.mount(cstr("overlay"), cstr(target), cstr("overlay"), 0n, cstr(data)) !== 0) {
    throw new SystemError("mount", c.errno(), `overlay on ${target}`);
  }
}

const MNT_DETACH = 2;
const EBUSY = 16;

/**
 * Unmounts TARGET; false when nothing was mounted there (EINVAL). `detachWhenBusy`
 * falls back to a lazy unmount when something still uses it.
 */
export function unmount(target: string, options: { detachWhenBusy?: boolean } = {}): boolean {
  const c = loadMounts();
  if (c.umount2(cstr(target), 0) === 0) return true;
  let errno = c.errno();
  if (errno === EBUSY && options.detachWhenBusy) {
    if (c.umount2(cstr(target), MNT_DETACH) === 0) return true;
    errno = c.errno();
  }
  if (errno === 22 || errno === 2) return false;
  throw new SystemError("umount", errno, target);
}

/** Flushes the filesystem holding PATH to disk: what was written before survives a power cut. */
export function syncFilesystem(path: string): void {
  const c = loadMounts();
  const fd = openSync(path, "r");
  try {
    if (c.syncfs(fd) !== 0) throw new SystemError("syncfs", c.errno(), path);
  } finally {
    closeSync(fd);
  }
}

/** Mount points under PREFIX (from /proc/self/mountinfo), deepest first. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await Bun.file("/proc/self/mountinfo").text();
  const points = text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => !!p && (p === prefix || p.startsWith(`${prefix}/`)))
    .map((p) => p.replace(/\\(\d{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))));
  return points.sort((a, b) => b.length - a.length);
}

/**
 * Replaces this process with ARGV (execve(2)): the same pid, terminal and signals, and no
 * parent left waiting, as a shell's `exec`. ARGV[0] is looked up on PATH. Returns only by
 * throwing.
 */
export function replaceProcess(argv: readonly string[], env: Record<string, string | undefined>): never {
  if (process.platform !== "linux") throw new Error("replaceProcess needs Linux");
  const { dlopen, FFIType, ptr, read } = ffi();
  const { symbols } = dlopen("libc.so.6", {
    execve: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
  const path = argv[0]?.includes("/") ? argv[0] : Bun.which(argv[0] ?? "");
  if (!path) throw new SystemError("execve", 2, `${argv[0]} not found on PATH`);
  // the strings must outlive the call: keep them referenced here
  const args = argv.map(cstr);
  const vars = Object.entries(env)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([key, value]) => cstr(`${key}=${value}`));
  const table = (strings: Buffer[]) => BigUint64Array.from([...strings.map((s) => BigInt(ptr(s))), 0n]);
  symbols.execve(cstr(path), table(args), table(vars));
  throw new SystemError("execve", read.i32(symbols.__errno_location()!, 0), path);
}
