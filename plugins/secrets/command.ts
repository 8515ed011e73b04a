import { defineCommand } from "citty";
import { globalArgs, logFor, runtimeArgs } from "../../core/commands/_shared.ts";
import { commandContext } from "../../core/session.ts";
import { volumeName } from "../env/home.ts";
import { UserError, messageOf } from "../../core/errors.ts";
import type { Log } from "../../core/log.ts";
import { allScope, checkSecretName, describeScope, readSecrets, scopeOf, updateSecrets } from "./store.ts";

const nameArg = { name: { type: "positional", required: true, valueHint: "NAME", description: "The variable sessions get, e.g. GITHUB_TOKEN" } } as const;
const envArg = { ...runtimeArgs, env: { type: "string", valueHint: "env", description: "Only for sessions of this environment (default: all sessions)" } } as const;

/** A secret's value: piped in, or typed at a prompt that does not echo. Never from the command line. */
async function readValue(name: string): Promise<string> {
  let value: string;
  if (process.stdin.isTTY) {
    process.stderr.write(`value of ${name} (not shown): `);
    // Ctrl-C reaches the prompt too: it puts echo back before it goes (else the terminal
    // stays silent), and agentenv waits for that, then ends with nothing changed
    const child = Bun.spawn(["sh", "-c", "trap 'stty echo; exit 130' INT TERM HUP; stty -echo; IFS= read -r v; status=$?; stty echo; printf '%s' \"$v\"; exit $status"], {
      stdin: "inherit",
      stdout: "pipe",
      stderr: "inherit",
    });
    const ignore = () => {};
    process.on("SIGINT", ignore);
    try {
      value = await new Response(child.stdout).text();
      await child.exited;
    } finally {
      process.off("SIGINT", ignore);
    }
    process.stderr.write("\n");
    if (child.exitCode === 130 || child.signalCode) throw new UserError(`${name} not set: interrupted at the prompt`, undefined, 130);
  } else {
    // `echo token | agentenv secret set` adds one newline: it is not part of the value
    value = (await Bun.stdin.text()).replace(/\r?\n$/, "");
  }
  if (!value) throw new UserError(`no value for ${name}: pipe it in (agentenv secret set ${name} < file) or type it at the prompt`);
  if (value.includes("\0")) throw new UserError(`the value of ${name} contains a NUL byte, which an environment variable cannot hold`);
  return value;
}

/**
 * A running `up` container read its secrets when it started (the handoff's secrets.env,
 * which every exec into it sources): one line per container of SCOPE saying when it
 * sees the change. Engine trouble only loses the notice.
 */
async function tellRunningContainers(args: { runtime?: string; verbose?: boolean; quiet?: boolean }, scope: string, log: Log): Promise<void> {
  try {
    const ctx = await commandContext(args);
    const running = (await ctx.runtime.listContainers("agentenv.session=up")).filter((c) => c.running && (scope === allScope || c.labels["agentenv.env"] === scope));
    for (const c of running) {
      const env = c.labels["agentenv.env"];
      const flag = env ? ` --env ${env}` : "";
      log.warn(`${c.name} is running: its commands see this change after agentenv down${flag} and agentenv up${flag}`);
    }
  } catch (error) {
    log.debug(`could not look for running environment containers: ${messageOf(error)}`);
  }
}

const set = defineCommand({
  meta: { name: "set", description: "Set a secret from stdin (or a hidden prompt): sessions get it as $NAME" },
  args: { ...nameArg, ...envArg, ...globalArgs },
  async run({ args }) {
    const name = checkSecretName(args.name);
    const scope = scopeOf(args.env);
    const value = await readValue(name);
    updateSecrets((store) => {
      (store.scopes[scope] ??= Object.create(null) as Record<string, string>)[name] = value;
    });
    const log = logFor(args);
    log.success(`secret ${name} set for ${describeScope(scope)}`);
    if (scope !== allScope) {
      // a misspelt --env: say so (the secret still waits for an environment of that name)
      const ctx = await commandContext(args);
      if (!(await ctx.runtime.volumeExists(volumeName(scope)))) log.warn(`there is no environment ${scope} (yet): its sessions get ${name} once it exists`);
    }
    await tellRunningContainers(args, scope, log);
    return 0;
  },
});

/** Who gets a secret of SCOPE: only sessions of projects the user trusted (agentenv trust). */
function sessionsGetting(scope: string): string {
  return scope === allScope ? "sessions of trusted projects, any environment or none" : `sessions of trusted projects with --env ${scope}`;
}

const list = defineCommand({
  meta: { name: "list", description: "List secrets by name and scope (never their values)" },
  args: { ...envArg, json: { type: "boolean", description: "Print as JSON" }, ...globalArgs },
  async run({ args }) {
    const wanted = args.env === undefined ? undefined : scopeOf(args.env);
    const rows = Object.entries(readSecrets().scopes)
      .filter(([scope]) => wanted === undefined || scope === wanted || scope === allScope)
      .flatMap(([scope, names]) => Object.keys(names).map((name) => ({ name, scope: scope === allScope ? "all" : scope, sessions: sessionsGetting(scope) })))
      .sort((a, b) => a.name.localeCompare(b.name) || a.scope.localeCompare(b.scope));
    if (args.json) {
      console.log(JSON.stringify(rows, null, 2));
      return 0;
    }
    if (!rows.length) {
      console.log("no secrets — set one: agentenv secret set NAME < file");
      return 0;
    }
    const width = Math.max(4, ...rows.map((r) => r.name.length));
    const scopeWidth = Math.max(5, ...rows.map((r) => (r.scope === "all" ? 16 : r.scope.length)));
    console.log(`${"NAME".padEnd(width)}  ${"SCOPE".padEnd(scopeWidth)}  SESSIONS THAT GET IT`);
    for (const row of rows) console.log(`${row.name.padEnd(width)}  ${(row.scope === "all" ? "all environments" : row.scope).padEnd(scopeWidth)}  ${row.sessions}`);
    return 0;
  },
});

const rm = defineCommand({
  meta: { name: "rm", description: "Remove a secret" },
  args: { ...nameArg, ...envArg, ...globalArgs },
  async run({ args }) {
    const name = checkSecretName(args.name);
    const scope = scopeOf(args.env);
    updateSecrets((store) => {
      if (store.scopes[scope]?.[name] === undefined) {
        const elsewhere = Object.keys(store.scopes).filter((s) => store.scopes[s]![name] !== undefined);
        const hint = elsewhere.length ? `it is set for ${elsewhere.map(describeScope).join(", ")}${elsewhere[0] === allScope ? "" : ` (--env ${elsewhere[0]})`}` : undefined;
        throw new UserError(`no secret ${name} for ${describeScope(scope)}`, hint);
      }
      delete store.scopes[scope]![name];
    });
    const log = logFor(args);
    log.success(`secret ${name} removed from ${describeScope(scope)}`);
    await tellRunningContainers(args, scope, log);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "secret", description: "Secrets sessions get as environment variables, stored encrypted (~/.local/share/agentenv/secrets.enc)" },
  subCommands: { set, list, rm },
});
