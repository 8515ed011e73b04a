/**
 * A real terminal for tests: a tmux session driven with send-keys and read with
 * capture-pane (joined lines, so a long line is matched whole).
 */
export function terminal(session: string) {
  const tmux = (...args: string[]) => Bun.spawnSync(["tmux", ...args]);
  const screen = () => tmux("capture-pane", "-p", "-J", "-t", session).stdout.toString();
  /** The screen once PATTERN shows on it; the screen in the error when it does not in time. */
  async function waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const text = screen();
      if (pattern.test(text)) return text;
      await Bun.sleep(100);
    }
    throw new Error(`timed out waiting for ${pattern}; screen:\n${screen()}`);
  }
  return { tmux, screen, waitFor };
}
