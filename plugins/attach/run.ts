import type { UserError } from "../../core/errors.ts";
import type { Plan } from "../../core/plan.ts";
import { exitCodeOf } from "../../core/runtime/process.ts";
import type { Runtime } from "../../core/runtime/types.ts";

/** The line the helper writes on stderr once the view is built (`--announce 1`, image/attach.c). */
export const readyMarker = "\x1eagentenv-attach: ready\n";

/**
 * Runs the sidecar attached to this terminal. Until the helper says the view is built
 * (readyMarker), what arrives on the engine's stderr is the engine's and is held: when
 * the run fails before that, REFUSAL (an engine call asking why, made only then) may
 * replace the engine's lines — several, differing per engine and version — with one of
 * ours. After the marker stderr passes straight through. With a terminal (`-t`) CMD's
 * output goes to stdout and no marker comes: the engine's stderr is held to the end.
 */
export async function runChecked(runtime: Runtime, plan: Plan, refusal: () => Promise<UserError | undefined>): Promise<number> {
  const [run, remove] = runtime.argv(plan);
  const child = Bun.spawn(run!, { stdio: ["inherit", "inherit", "pipe"] });
  // as core's attached(): on a terminal Ctrl-C reaches the engine (or, with -t, the
  // sidecar's TTY) through the terminal; signals sent to agentenv alone are passed on
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  const handlers: Array<[NodeJS.Signals, () => void]> = [
    ["SIGINT", process.stdin.isTTY ? () => {} : forward("SIGINT")],
    ["SIGTERM", forward("SIGTERM")],
    ["SIGHUP", forward("SIGHUP")],
  ];
  for (const [signal, handler] of handlers) process.on(signal, handler);

  let ready = false;
  let held = "";
  const relayed = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr as ReadableStream<Uint8Array>) {
      if (ready) {
        process.stderr.write(chunk);
        continue;
      }
      held += decoder.decode(chunk, { stream: true });
      const at = held.indexOf(readyMarker);
      if (at >= 0) {
        ready = true;
        process.stderr.write(held.slice(0, at) + held.slice(at + readyMarker.length));
        held = "";
      }
    }
    held += decoder.decode();
  })().catch(() => {});
  try {
    await child.exited;
    await relayed;
  } finally {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  }
  if (remove) await runtime.call(remove.slice(1));
  const code = exitCodeOf(child);
  if (!ready && code !== 0) {
    const why = await refusal().catch(() => undefined);
    if (why) throw why;
  }
  if (held) process.stderr.write(held);
  return code;
}
