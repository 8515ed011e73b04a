import { defineCommand } from "citty";
import { builtinPlugins } from "../builtins.ts";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "pathe";
import { checkRuntimeName, loadConfig, mergeLayers, type ResolvedConfig } from "../config.ts";
import { basePlan } from "../plan.ts";
import { UserError, formatUserError, messageOf } from "../errors.ts";
import { hashLabel, imageHash } from "../image.ts";
import { createLog } from "../log.ts";
import { trustNotice } from "../trust.ts";
import { callHookEach, loadPlugins, type LoadedPlugin } from "../plugins.ts";
import { createRuntime, type Check, type Runtime } from "../runtime/index.ts";
import { dockerDaemonAddress, rlimitAdvice } from "../runtime/oci.ts";
import { globalArgs, runtimeArgs } from "./_shared.ts";

async function engineChecks(runtime: Runtime, image: string): Promise<Check[]> {
  const checks = await runtime.checks();
  if (checks[0]?.status === "fail") return checks;
  const labels = await runtime.imageLabels(image);
  if (!labels) {
    checks.push({ name: "image", status: "fail", detail: `${image} not found`, fix: "agentenv image build" });
    return checks;
  }
  const stale = labels[hashLabel] !== undefined && labels[hashLabel] !== imageHash();
  checks.push(stale
    ? { name: "image", status: "warn", detail: `${image} was built from an older image/`, fix: "agentenv image build" }
    : { name: "image", status: "ok", detail: image });
  // the real session command (with --init, the project mount…), not a bare run
  const project = await mkdtemp(join(tmpdir(), "agentenv-doctor-"));
  const plan = basePlan({ project, mode: "run", command: ["true"], config: mergeLayers([{ name: "defaults", config: { image } }]), stdinIsTTY: true });
  const [first, ...cleanup] = runtime.argv(plan);
  const started = performance.now();
  const tiny = await runtime.call(first!.slice(1));
  const ms = Math.round(performance.now() - started);
  for (const argv of cleanup) await runtime.call(argv.slice(1));
  await rm(project, { recursive: true, force: true });
  if (tiny.code === 0) {
    checks.push({ name: "container run", status: "ok", detail: `a session running \`true\` took ${ms} ms` });
  } else {
    const limits = runtime.name === "podman" ? rlimitAdvice(tiny.stderr) : undefined;
    checks.push({ name: "container run", status: "fail", ...(limits ?? { detail: tiny.stderr.trim().split("\n").pop() ?? `exit ${tiny.code}`, fix: "agentenv doctor -v, then check the engine's own docs" }) });
  }
  return checks;
}

/** Where a docker CLI on PATH looks for a daemon that does not answer; undefined when none is installed or it answers. */
async function idleDocker(): Promise<string | undefined> {
  if (!Bun.which("docker")) return undefined;
  const docker = createRuntime("docker");
  const answer = await docker.call(["version", "--format", "{{.Server.Version}}"]);
  return answer.code === 0 ? undefined : dockerDaemonAddress(answer.stderr);
}

async function configChecks(): Promise<{ checks: Check[]; config?: ResolvedConfig; plugins?: LoadedPlugin[] }> {
  try {
    const config = await loadConfig({ project: process.cwd() });
    const plugins = await loadPlugins(config, builtinPlugins());
    const files = config.layers.filter((l) => l.file).map((l) => l.file);
    const checks: Check[] = [{ name: "config", status: "ok", detail: `${files.length ? files.join(", ") : "no config files"}; ${plugins.length} plugins` }];
    const notice = config.trust && trustNotice(config.trust);
    if (notice && config.trust?.config) checks.push({ name: "project config", status: "warn", detail: notice.split(" — ")[0]!, fix: `agentenv trust ${config.trust.project}` });
    return { config, checks, plugins };
  } catch (error) {
    const detail = error instanceof UserError ? formatUserError(error) : messageOf(error);
    return { checks: [{ name: "config", status: "fail", detail, fix: "fix the config file named above" }] };
  }
}

export default defineCommand({
  meta: { name: "doctor", description: "Check the engine, the image and the config; say what is wrong and how to fix it" },
  args: { json: { type: "boolean", description: "Print the checks as JSON" }, ...runtimeArgs, ...globalArgs },
  async run({ args }) {
    const { checks, config, plugins } = await configChecks();
    checks.push({ name: "agentenv", status: "ok", detail: `${process.versions.bun ? `bun ${process.versions.bun}` : "node"} on ${process.platform}-${process.arch}` });
    try {
      const runtime = createRuntime(checkRuntimeName(args.runtime, "--runtime") ?? config?.runtime);
      checks.push(...(await engineChecks(runtime, config?.image ?? "localhost/agentenv:latest")));
      if (runtime.name !== "docker") {
        const docker = await idleDocker();
        if (docker) checks.push({ name: "docker", status: "ok", detail: `docker is installed but no daemon answers at ${docker}; agentenv uses ${runtime.name}` });
      }
      // what plugins own (the Nix store…), through their `doctor` hook: a throw is a failed check
      if (config && plugins && checks.every((c) => c.status !== "fail")) {
        const ctx = { config, runtime, log: createLog({ quiet: true }), plugins };
        for (const failure of await callHookEach(plugins, "doctor", ctx, checks)) checks.push({ name: "plugin", status: "fail", detail: formatUserError(failure) });
      }
    } catch (error) {
      const detail = error instanceof UserError ? formatUserError(error) : messageOf(error);
      checks.push({ name: "engine", status: "fail", detail, fix: "bin/setup" });
    }
    if (args.json) {
      console.log(JSON.stringify(checks, null, 2));
    } else {
      const mark = { ok: "✔", warn: "⚠", fail: "✖" } as const;
      for (const c of checks) console.log(`${mark[c.status]} ${c.name}: ${c.detail}${c.fix ? `\n    fix: ${c.fix}` : ""}`);
    }
    return checks.some((c) => c.status === "fail") ? 1 : 0;
  },
});
