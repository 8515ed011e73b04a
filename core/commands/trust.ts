import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { resolve } from "pathe";
import { loadConfig } from "../config.ts";
import { UserError } from "../errors.ts";
import { resolveProjectDir } from "../plan.ts";
import { hostNamePattern } from "../config.ts";
import { findHost, getHost, sshUrl } from "../hosts.ts";
import { projectConfigName, projectTrust, readRemoteTrust, readTrust, trustFile, trustProject, trustRemote, untrustProject, untrustRemote, type RemoteTrustRecord } from "../trust.ts";
import { globalArgs, logFor } from "./_shared.ts";

const dirArg = { type: "positional", required: false, default: ".", valueHint: "dir", description: "A directory of the project (default: the current one), or HOST:PATH for a project on a remote host (trusted as named; its config there is never loaded)" } as const;

/**
 * `HOST:PATH` (a project on a remote host), or undefined for a local DIR: a word whose part
 * before the first colon is a host name and which is no path here. KNOWN: the host must be
 * one `host add` made (trust); untrust forgets a removed host's records too.
 */
function remoteWord(word: string, known: boolean): { host: string; path: string } | undefined {
  const colon = word.indexOf(":");
  if (colon < 1 || existsSync(word) || !hostNamePattern.test(word.slice(0, colon))) return undefined;
  const host = word.slice(0, colon);
  if (known) getHost(host);
  return { host, path: word.slice(colon + 1) };
}

/** How a remote record's host stands now: reached at the same address, another one, or no such host. */
function hostStatus(record: RemoteTrustRecord): "same" | "changed" | "gone" {
  const host = findHost(record.host);
  return !host ? "gone" : sshUrl(host) === record.url ? "same" : "changed";
}

/** `trust --list`: the recorded projects (here and on remote hosts) and the user config's trees. */
async function list(json: boolean | undefined): Promise<number> {
  const config = await loadConfig({});
  const userLayer = config.layers.find((l) => l.name === "user");
  const trees = (userLayer?.config.trust ?? []).map((tree) => ({ tree, from: userLayer!.file! }));
  const records = readTrust().map((r) => {
    const now = r.config && existsSync(r.config.file) ? projectTrust(r.dir, r.config.file, [], readTrust()).config?.status : undefined;
    return { dir: r.dir, config: r.config?.file, configStatus: r.config ? (now ?? "missing") : undefined, trustedAt: r.trustedAt };
  });
  const remote = readRemoteTrust().map((r) => ({ host: r.host, path: r.path, url: r.url, hostStatus: hostStatus(r), trustedAt: r.trustedAt }));
  if (json) {
    console.log(JSON.stringify({ projects: records, remote, trees }, null, 2));
    return 0;
  }
  if (!records.length && !remote.length && !trees.length) {
    console.log("no trusted projects — agentenv trust DIR (or HOST:PATH) trusts one");
    return 0;
  }
  for (const r of records) {
    const config = r.config ? `  ${r.config}${r.configStatus === "trusted" ? "" : ` (${r.configStatus === "changed" ? "changed since: not loaded" : "gone"})`}` : "";
    console.log(`${r.dir}${config}`);
  }
  for (const r of remote) {
    const now = r.hostStatus === "same" ? "" : r.hostStatus === "gone" ? `; no host ${r.host} any more: not trusted` : `; host ${r.host} is now another address: not trusted until trusted again`;
    console.log(`${r.host}:${r.path}  (on ${r.url}, as named; its config there is never loaded${now})`);
  }
  for (const t of trees) console.log(`${t.tree}/…  (every project in it: trust in ${t.from})`);
  return 0;
}

export const trust = defineCommand({
  meta: {
    name: "trust",
    description:
      "Trust a project: its agentenv.config.ts (as it is now) is loaded, its sessions get secrets and keep what they build in the golden store; HOST:PATH: a project on a remote host, whose sessions get secrets and keep store changes there (its config is never loaded)",
  },
  args: {
    dir: dirArg,
    list: { type: "boolean", description: "List trusted projects, here and on remote hosts (HOST:PATH), and the trees your user config trusts" },
    json: { type: "boolean", description: "With --list: print as JSON" },
    ...globalArgs,
  },
  async run({ args }) {
    if (args.list) return list(args.json);
    if (args.json) throw new UserError("--json goes with --list", "agentenv trust --list --json");
    const remote = remoteWord(args.dir, true);
    if (remote) {
      const record = trustRemote(remote.host, sshUrl(getHost(remote.host)), remote.path);
      logFor(args).success(
        `trusted ${record.host}:${record.path} on ${record.url}, as named: its sessions get secrets and keep their store changes (in ${record.host}'s own golden store); its ${projectConfigName} there is never loaded — recorded in ${trustFile()}`,
      );
      return 0;
    }
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
    const remote = remoteWord(args.dir, false);
    if (remote) {
      const { project, removed, coveredBy } = untrustRemote(remote.host, remote.path);
      if (!removed) throw new UserError(`${project} is not a trusted project${coveredBy ? ` by itself: ${coveredBy} is, and covers it` : ""}`, coveredBy ? `agentenv untrust ${coveredBy}` : "agentenv trust --list shows them");
      logFor(args).success(`${project} is no longer trusted${coveredBy ? ` by itself (${coveredBy} still is, and covers it)` : ""}`);
      return 0;
    }
    // a project deleted since can be forgotten too
    const { dir, removed } = untrustProject(resolve(args.dir));
    if (!removed) throw new UserError(`${dir} is not a trusted project`, "agentenv trust --list shows them (a tree in your user config's trust stays trusted)");
    logFor(args).success(`${dir} is no longer trusted`);
    return 0;
  },
});
