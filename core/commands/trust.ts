import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { resolve } from "pathe";
import { loadConfig } from "../config.ts";
import { UserError } from "../errors.ts";
import { resolveProjectDir } from "../plan.ts";
import { projectTrust, readTrust, trustFile, trustProject, untrustProject } from "../trust.ts";
import { globalArgs, logFor } from "./_shared.ts";

const dirArg = { type: "positional", required: false, default: ".", valueHint: "dir", description: "A directory of the project (default: the current one)" } as const;

/** `trust --list`: the recorded projects and the user config's trees. */
async function list(json: boolean | undefined): Promise<number> {
  const config = await loadConfig({});
  const userLayer = config.layers.find((l) => l.name === "user");
  const trees = (userLayer?.config.trust ?? []).map((tree) => ({ tree, from: userLayer!.file! }));
  const records = readTrust().map((r) => {
    const now = r.config && existsSync(r.config.file) ? projectTrust(r.dir, r.config.file, [], readTrust()).config?.status : undefined;
    return { dir: r.dir, config: r.config?.file, configStatus: r.config ? (now ?? "missing") : undefined, trustedAt: r.trustedAt };
  });
  if (json) {
    console.log(JSON.stringify({ projects: records, trees }, null, 2));
    return 0;
  }
  if (!records.length && !trees.length) {
    console.log("no trusted projects — agentenv trust DIR trusts one");
    return 0;
  }
  for (const r of records) {
    const config = r.config ? `  ${r.config}${r.configStatus === "trusted" ? "" : ` (${r.configStatus === "changed" ? "changed since: not loaded" : "gone"})`}` : "";
    console.log(`${r.dir}${config}`);
  }
  for (const t of trees) console.log(`${t.tree}/…  (every project in it: trust in ${t.from})`);
  return 0;
}

export const trust = defineCommand({
  meta: {
    name: "trust",
    description: "Trust a project: its agentenv.config.ts (as it is now) is loaded, its sessions get secrets and keep what they build in the golden store",
  },
  args: {
    dir: dirArg,
    list: { type: "boolean", description: "List trusted projects (and the trees your user config trusts)" },
    json: { type: "boolean", description: "With --list: print as JSON" },
    ...globalArgs,
  },
  async run({ args }) {
    if (args.list) return list(args.json);
    if (args.json) throw new UserError("--json goes with --list", "agentenv trust --list --json");
    const record = trustProject(resolveProjectDir(args.dir));
    const config = record.config ? `, with its ${record.config.file} as it is now (sha256 ${record.config.sha256.slice(0, 12)}…)` : "";
    logFor(args).success(`trusted ${record.dir}${config} — recorded in ${trustFile()}`);
    return 0;
  },
});

export const untrust = defineCommand({
  meta: { name: "untrust", description: "Stop trusting a project: its config is not loaded, its sessions get no secrets and keep nothing in the golden store" },
  args: { dir: dirArg, ...globalArgs },
  async run({ args }) {
    // a project deleted since can be forgotten too
    const { dir, removed } = untrustProject(resolve(args.dir));
    if (!removed) throw new UserError(`${dir} is not a trusted project`, "agentenv trust --list shows them (a tree in your user config's trust stays trusted)");
    logFor(args).success(`${dir} is no longer trusted`);
    return 0;
  },
});
