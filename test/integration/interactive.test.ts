import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, realpathSync } from "node:fs";
import { join } from "pathe";
import { entry, isolatedEnv, isolatedHome, tempTree } from "../helpers/cli.ts";
import { terminal } from "../helpers/terminal.ts";
import { devShellFlake, requireImage } from "../helpers/engine.ts";

/** A real terminal: `agentenv DIR` inside tmux, driven with send-keys, read with capture-pane. */
const session = `agentenv-test-${process.pid}`;
const { tmux, waitFor } = terminal(session);

function start(project: string, resultFile: string, flags: string[] = []) {
  const command = `HOME=${isolatedHome} XDG_CONFIG_HOME=${isolatedEnv().XDG_CONFIG_HOME} ${process.execPath} ${entry} ${flags.join(" ")} ${project}; echo $? > ${resultFile}; echo AGENTENV-DONE; sleep 600`;
  tmux("kill-session", "-t", session);
  const started = tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", command);
  if (started.exitCode !== 0) throw new Error(`tmux failed: ${started.stderr}`);
}

beforeAll(async () => {
  await requireImage();
  if (!Bun.which("tmux")) throw new Error("tmux is missing: .ci/run installs it");
});

afterAll(() => {
  tmux("kill-session", "-t", session);
});

describe("agentenv DIR in a terminal", () => {
  test("the prompt appears, commands run, Ctrl-C reaches the container, and exit returns its code", async () => {
    const project = tempTree({ "marker.txt": "" });
    const resultFile = join(project, ".exit-code");
    start(project, resultFile);
    await waitFor(/\/work/); // the prompt shows the working directory
    tmux("send-keys", "-t", session, "echo tty=$(tty | cut -c1-8) sum=$((6*7))", "Enter");
    await waitFor(/tty=\/dev\/pts sum=42/);
    // Ctrl-C interrupts the foreground command in the container, not agentenv
    tmux("send-keys", "-t", session, "sleep 30; echo not-interrupted", "Enter");
    await Bun.sleep(500);
    tmux("send-keys", "-t", session, "C-c", "");
    tmux("send-keys", "-t", session, "echo after-ctrl-c", "Enter");
    const afterInterrupt = await waitFor(/^after-ctrl-c/m);
    expect(afterInterrupt).not.toMatch(/^not-interrupted/m);
    expect(afterInterrupt).toContain("[130]"); // the prompt shows the interrupted command's code
    tmux("send-keys", "-t", session, "exit 5", "Enter");
    await waitFor(/AGENTENV-DONE/);
    expect(readFileSync(resultFile, "utf8").trim()).toBe("5");
  });

  test("agentenv exec: a TTY in the environment container, Ctrl-C reaches the command, the exit code comes back", async () => {
    const project = realpathSync(tempTree({ "marker.txt": "" }));
    const resultFile = join(project, ".exit-code");
    const command = `cd ${project} && HOME=${isolatedHome} ${process.execPath} ${entry} exec --no-env -- sh; echo $? > ${resultFile}; echo AGENTENV-DONE; sleep 600`;
    tmux("kill-session", "-t", session);
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", command);
    try {
      tmux("send-keys", "-t", session, "echo tty=$(tty | cut -c1-8) in=$(pwd)", "Enter");
      await waitFor(new RegExp(`tty=/dev/pts in=${project}$`, "m"));
      tmux("send-keys", "-t", session, "sleep 30; echo not-interrupted", "Enter");
      await Bun.sleep(500);
      tmux("send-keys", "-t", session, "C-c", "");
      tmux("send-keys", "-t", session, "echo after-ctrl-c", "Enter");
      expect(await waitFor(/^after-ctrl-c/m)).not.toMatch(/^not-interrupted/m);
      tmux("send-keys", "-t", session, "exit 4", "Enter");
      await waitFor(/AGENTENV-DONE/);
      expect(readFileSync(resultFile, "utf8").trim()).toBe("4");
    } finally {
      Bun.spawnSync([process.execPath, entry, "down", "--no-env"], { env: { ...process.env, ...isolatedEnv() } });
    }
  });

  test("a flake project opens its dev shell", async () => {
    const project = tempTree({ "flake.nix": devShellFlake });
    const resultFile = join(project, ".exit-code");
    start(project, resultFile);
    await waitFor(/\/work/);
    tmux("send-keys", "-t", session, "echo dev=$HELLO_FROM_SHELL", "Enter");
    await waitFor(/^dev=yes/m);
    tmux("send-keys", "-t", session, "exit", "Enter");
    await waitFor(/AGENTENV-DONE/);
    expect(readFileSync(resultFile, "utf8").trim()).toBe("0");
  });

  test("an environment keeps shell history across sessions (zsh, with the home's own ZDOTDIR)", async () => {
    const name = `t${process.pid}-history`;
    const template = tempTree({
      ".zshenv": 'export ZDOTDIR="$HOME/.config/zsh"\n',
      ".config/zsh/.zshrc": "PROMPT='history-test %~ %# '\n",
    });
    try {
      expect(Bun.spawnSync([process.execPath, entry, "env", "create", name, template], { env: { ...process.env, ...isolatedEnv() } }).exitCode).toBe(0);
      for (const [i, line] of ["echo first-session-marker", "fc -ln -5"].entries()) {
        const project = tempTree();
        const resultFile = join(project, ".exit-code");
        start(project, resultFile, ["--env", name]);
        await waitFor(/history-test \/work/);
        tmux("send-keys", "-t", session, line, "Enter");
        if (i === 1) await waitFor(/^echo first-session-marker$/m);
        tmux("send-keys", "-t", session, "exit", "Enter");
        await waitFor(/AGENTENV-DONE/);
        expect(readFileSync(resultFile, "utf8").trim()).toBe("0");
      }
    } finally {
      Bun.spawnSync(["podman", "volume", "rm", "--force", `agentenv-env-${name}`]);
    }
  });
});

describe("agentenv secret set in a terminal", () => {
  test("prompts for the value without echoing it, and stores it", async () => {
    const data = tempTree({}, "agentenv-data-");
    const env = `HOME=${isolatedHome} XDG_CONFIG_HOME=${join(isolatedHome, ".config")} XDG_DATA_HOME=${data}`;
    const resultFile = join(data, ".exit-code");
    tmux("kill-session", "-t", session);
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", `${env} ${process.execPath} ${entry} secret set TYPED_TOKEN; echo $? > ${resultFile}; echo AGENTENV-DONE; sleep 600`);
    await waitFor(/value of TYPED_TOKEN \(not shown\):/);
    tmux("send-keys", "-t", session, "typed-secret-value", "Enter");
    const after = await waitFor(/AGENTENV-DONE/);
    expect(readFileSync(resultFile, "utf8").trim()).toBe("0");
    expect(after).toContain("secret TYPED_TOKEN set for all environments");
    expect(after).not.toContain("typed-secret-value");
    const cliEnv = { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config"), XDG_DATA_HOME: data };
    const list = Bun.spawnSync([process.execPath, entry, "secret", "list", "--json"], { env: cliEnv });
    expect(JSON.parse(list.stdout.toString())).toEqual([{ name: "TYPED_TOKEN", scope: "all", sessions: "sessions of trusted projects, any environment or none" }]);
    // exactly what was typed, without the newline
    const typed = Bun.spawnSync([process.execPath, entry, "run", "--no-env", tempTree(), "--", "sh", "-c", 'printf "[%s]" "$TYPED_TOKEN"'], { env: cliEnv });
    expect(typed.stdout.toString()).toBe("[typed-secret-value]");
  });

  test("Ctrl-C at the prompt: the terminal echoes again, exit 130, nothing set", async () => {
    const data = tempTree({}, "agentenv-data-");
    const env = `HOME=${isolatedHome} XDG_CONFIG_HOME=${join(isolatedHome, ".config")} XDG_DATA_HOME=${data}`;
    const resultFile = join(data, ".exit-code");
    tmux("kill-session", "-t", session);
    // the shell waits for agentenv, then shows whether its terminal echoes
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", `${env} ${process.execPath} ${entry} secret set CANCELLED_TOKEN; echo $? > ${resultFile}; stty -a | grep -o -- '-\\?echo ' | head -n1 | sed 's/^/stty:/'; echo AGENTENV-DONE; sleep 600`);
    await waitFor(/value of CANCELLED_TOKEN \(not shown\):/);
    tmux("send-keys", "-t", session, "half-typ", "");
    tmux("send-keys", "-t", session, "C-c", "");
    const after = await waitFor(/AGENTENV-DONE/);
    expect(readFileSync(resultFile, "utf8").trim()).toBe("130");
    expect(after).toContain("agentenv: CANCELLED_TOKEN not set: interrupted at the prompt");
    expect(after).toMatch(/^stty:echo *$/m); // not "-echo"
    expect(after).not.toContain("half-typ");
    const list = Bun.spawnSync([process.execPath, entry, "secret", "list", "--json"], { env: { ...process.env, HOME: isolatedHome, XDG_CONFIG_HOME: join(isolatedHome, ".config"), XDG_DATA_HOME: data } });
    expect(JSON.parse(list.stdout.toString())).toEqual([]);
  });
});
