import { constants } from "node:os";
import type { EngineResult } from "./types.ts";

/** How every runtime spawns its engine CLI: captured, streamed to files, or attached to this terminal. */

/** 128+N when the engine process itself died of a signal, as a shell reports it. */
export function exitCodeOf(proc: { exitCode: number | null; signalCode: string | number | null }): number {
  if (proc.exitCode !== null) return proc.exitCode;
  if (typeof proc.signalCode === "number") return 128 + proc.signalCode;
  const signal = proc.signalCode as keyof typeof constants.signals | null;
  return 128 + (signal ? constants.signals[signal] ?? 0 : 0);
}

/** One captured engine call. */
export async function engineCall(argv: string[], options: { stdin?: Blob | string } = {}): Promise<EngineResult> {
  const child = Bun.spawn(argv, {
    stdin: options.stdin === undefined ? "ignore" : new Blob([options.stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  await child.exited;
  return { code: exitCodeOf(child), stdout, stderr };
}

/** An engine call whose stdin and/or stdout are host files ("-": agentenv's own), not buffered. */
export async function streamed(argv: string[], io: { stdin?: string; stdout?: string }): Promise<EngineResult> {
  const child = Bun.spawn(argv, {
    stdin: io.stdin === undefined ? "ignore" : io.stdin === "-" ? "inherit" : Bun.file(io.stdin),
    stdout: io.stdout === undefined ? "pipe" : io.stdout === "-" ? "inherit" : Bun.file(io.stdout),
    stderr: "pipe",
  });
  const [stdout, stderr] = await Promise.all([
    child.stdout instanceof ReadableStream ? new Response(child.stdout).text() : "",
    new Response(child.stderr).text(),
  ]);
  await child.exited;
  return { code: exitCodeOf(child), stdout, stderr };
}

export interface AttachOptions {
  /** a signal that stopped agentenv is the exit code (the engine's exec passes none on) */
  signalExit?: boolean;
  /** rewrites the engine's stderr line by line (its own errors); without it stderr is inherited */
  stderrLine?: (line: string) => string;
}

/** An engine command attached to this terminal; resolves to its exit code. */
export async function attached(argv: string[], options: AttachOptions = {}): Promise<number> {
  const { stderrLine } = options;
  const child = Bun.spawn(argv, { stdio: ["inherit", "inherit", stderrLine ? "pipe" : "inherit"] });
  // a relay that fails (agentenv's stderr closed) must not end agentenv under a running session
  const relayed = stderrLine && child.stderr instanceof ReadableStream ? relayLines(child.stderr, stderrLine).catch(() => {}) : Promise.resolve();
  // On a terminal, Ctrl-C reaches the engine through the terminal's process group
  // (or, with -t, the container's TTY): agentenv itself must outlive it to report the
  // exit code. Signals sent to agentenv alone (a supervisor's kill) are passed on.
  let forwarded: NodeJS.Signals | undefined;
  const forward = (signal: NodeJS.Signals) => () => {
    forwarded = signal;
    child.kill(signal);
  };
  const handlers: Array<[NodeJS.Signals, () => void]> = [
    ["SIGINT", process.stdin.isTTY ? () => {} : forward("SIGINT")],
    ["SIGTERM", forward("SIGTERM")],
    ["SIGHUP", forward("SIGHUP")],
  ];
  for (const [signal, handler] of handlers) process.on(signal, handler);
  try {
    await child.exited;
    await relayed;
  } finally {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  }
  // the engine's exec passes no signal on (podman and docker alike): the command may
  // outlive this, so a signal agentenv was stopped with is its exit code, never a 0
  if (forwarded && options.signalExit) return 128 + (constants.signals[forwarded] ?? 0);
  return exitCodeOf(child);
}

/** how an engine CLI built on Swift ArgumentParser (Apple `container`) prints its errors */
const enginePrefix = "Error: ";

/** Copies STREAM to agentenv's stderr as it comes, each complete line passed through REWRITE. */
async function relayLines(stream: ReadableStream<Uint8Array>, rewrite: (line: string) => string): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    const end = pending.lastIndexOf("\n");
    if (end >= 0) {
      const lines = pending.slice(0, end).split("\n");
      pending = pending.slice(end + 1);
      process.stderr.write(`${lines.map(rewrite).join("\n")}\n`);
    }
    // a prompt without a newline must not wait; only what may become an engine error does
    if (pending && !pending.startsWith(enginePrefix) && !enginePrefix.startsWith(pending)) {
      process.stderr.write(pending);
      pending = "";
    }
  }
  pending += decoder.decode();
  if (pending) process.stderr.write(rewrite(pending));
}
