import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "pathe";

const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
type Signal = (typeof signals)[number];
const signalNumbers: Record<Signal, number> = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 };

/** What to undo if the user interrupts now, innermost last. */
const pending: Array<() => unknown> = [];
let undoing = false;
const never = new Promise<never>(() => {});

async function onSignal(signal: Signal): Promise<void> {
  // a second Ctrl-C while undoing must not leave the undo half-done
  if (undoing) return;
  undoing = true;
  for (const undo of pending.toReversed()) {
    try {
      await undo();
    } catch {
      // undo what else can be undone
    }
  }
  process.exit(128 + signalNumbers[signal]);
}

/**
 * Runs `work`; if the user interrupts it (Ctrl-C, SIGTERM, SIGHUP) before it settles,
 * runs `undo` (and those of enclosing calls, innermost first) and exits 128+N. Bun ends
 * on those signals without running `finally`, so anything half-made (a volume, a temp
 * dir) would otherwise stay behind.
 */
export async function undoOnInterrupt<T>(undo: () => unknown, work: () => Promise<T>): Promise<T> {
  if (pending.length === 0) for (const signal of signals) process.on(signal, onSignal);
  pending.push(undo);
  try {
    return await work();
  } finally {
    // interrupted: the undo is running and exits the process; the work must not go on
    // to report success (or a failure the undo itself caused)
    if (undoing) await never;
    pending.splice(pending.lastIndexOf(undo), 1);
    if (pending.length === 0 && !undoing) for (const signal of signals) process.off(signal, onSignal);
  }
}

/** Runs `fn` with a fresh temp dir that is removed afterwards, also on Ctrl-C or SIGTERM. */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    return await undoOnInterrupt(remove, () => fn(dir));
  } finally {
    await remove();
  }
}
