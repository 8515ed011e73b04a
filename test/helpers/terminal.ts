/**
 * A real terminal for tests: a tmux session driven with send-keys and read with
 * capture-pane (joined lines, so a long line is matched whole).
 */
export function terminal(session: string) {
  // a tmux server of its own (-L): another test's server going away cannot take this one with it
  const socket = `agentenv-test-${process.pid}-${session}`;
  const tmux = (...args: string[]) => {
    let result = Bun.spawnSync(["tmux", "-L", socket, ...args]);
    // a session just killed may be taking its server down as this one starts: start it again
    for (let i = 0; i < 5 && args[0] === "new-session" && result.exitCode !== 0 && /server exited/.test(result.stderr.toString()); i++) {
      Bun.sleepSync(200);
      result = Bun.spawnSync(["tmux", "-L", socket, ...args]);
    }
    return result;
  };
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
