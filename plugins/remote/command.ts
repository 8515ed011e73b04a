import { defineCommand } from "citty";
import { globalArgs } from "../../core/commands/_shared.ts";
import { defaultImage } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { addHost, checkHostFile, checkHostName, getHost, parseSshUrl, readHosts, removeHost, sshUrl } from "../../core/hosts.ts";
import { createLog } from "../../core/log.ts";

const nameArg = { name: { type: "positional", required: true, valueHint: "NAME", description: "The host's name in agentenv (--host NAME, NAME:/path)" } } as const;

const add = defineCommand({
  meta: { name: "add", description: "Add a remote machine: add NAME ssh://[USER@]HOST[:PORT] [--identity FILE]" },
  args: {
    ...nameArg,
    url: { type: "positional", required: true, valueHint: "ssh://[USER@]HOST[:PORT]", description: "How ssh reaches it" },
    identity: { type: "string", valueHint: "file", description: "Private key to log in with (default: ssh's own choice: agent, ~/.ssh/id_*)" },
    "known-hosts": { type: "string", valueHint: "file", description: "A known_hosts file holding its host key (default: ~/.ssh/known_hosts)" },
    force: { type: "boolean", description: "Replace a host of that name" },
    ...globalArgs,
  },
  run({ args }) {
    const name = checkHostName(args.name, "host add");
    if (!args.url.startsWith("ssh://")) throw new UserError(`"${args.url}" is not an ssh:// address`, `agentenv host add ${name} ssh://[USER@]HOST[:PORT]`);
    const address = parseSshUrl(args.url);
    const identity = args.identity ? checkHostFile(args.identity, "identity file") : undefined;
    const knownHosts = args["known-hosts"] ? checkHostFile(args["known-hosts"], "known_hosts file") : undefined;
    const record = addHost({ name, ...address, ...(identity ? { identity } : {}), ...(knownHosts ? { knownHosts } : {}) }, { replace: args.force });
    if (!args.quiet) console.error(`host ${name}: ${sshUrl(record)} — check it with: agentenv host check ${name}`);
    return 0;
  },
});

const list = defineCommand({
  meta: { name: "list", description: "The remote machines agentenv knows" },
  args: { json: { type: "boolean", description: "Print them as JSON" }, ...globalArgs },
  run({ args }) {
    const hosts = readHosts();
    if (args.json) console.log(JSON.stringify(hosts, null, 2));
    else if (!hosts.length) console.error("no hosts yet: agentenv host add NAME ssh://[USER@]HOST[:PORT]");
    else for (const h of hosts) console.log(`${h.name}\t${sshUrl(h)}${h.identity ? `\tidentity ${h.identity}` : ""}`);
    return 0;
  },
});

const rm = defineCommand({
  meta: { name: "rm", description: "Forget a remote machine and close its shared connection (nothing on it is touched)" },
  args: { ...nameArg, ...globalArgs },
  async run({ args }) {
    const name = checkHostName(args.name, "host rm");
    const host = readHosts().find((h) => h.name === name);
    if (!host) throw new UserError(`no host named ${name}`, "agentenv host list shows the hosts");
    // its shared connection goes with it
    const { closeMaster } = await import("../../core/runtime/ssh.ts");
    await closeMaster(host);
    removeHost(name);
    if (!args.quiet) console.error(`host ${name} removed (its containers, volumes and images there are left as they are)`);
    return 0;
  },
});

const check = defineCommand({
  meta: { name: "check", description: "Check a remote machine: SSH (host key checked), Podman, rootless or root, architecture, free disk, the image, sshfs" },
  args: {
    ...nameArg,
    image: { type: "string", valueHint: "ref", description: `The image sessions there boot (default: ${defaultImage})` },
    json: { type: "boolean", description: "Print the checks as JSON" },
    ship: { type: "boolean", description: "Ship this machine's image there first when it is missing or not the same" },
    ...globalArgs,
  },
  async run({ args }) {
    const host = getHost(args.name);
    const image = args.image ?? process.env.AGENTENV_IMAGE ?? defaultImage;
    const { ensureControlDir } = await import("../../core/runtime/ssh.ts");
    ensureControlDir();
    const { hostChecks } = await import("../../core/runtime/remote-checks.ts");
    let checks = await hostChecks(host, { image });
    const imageCheck = checks.find((c) => c.name === "image");
    if (args.ship && imageCheck && imageCheck.status !== "ok") {
      const { RemoteRuntime } = await import("../../core/runtime/remote.ts");
      const remote = new RemoteRuntime(host);
      remote.log = createLog(args);
      await remote.shipNow(image);
      checks = await hostChecks(host, { image });
    }
    if (args.json) console.log(JSON.stringify(checks, null, 2));
    else {
      const mark = { ok: "✔", warn: "⚠", fail: "✖" } as const;
      for (const c of checks) console.log(`${mark[c.status]} ${c.name}: ${c.detail}${c.fix ? `\n    fix: ${c.fix}` : ""}`);
    }
    createLog(args).debug(`host ${host.name}: ${sshUrl(host)}`);
    return checks.some((c) => c.status === "fail") ? 1 : 0;
  },
});

export default defineCommand({
  meta: { name: "host", description: "Remote machines sessions run on over SSH: add, list, rm, check" },
  subCommands: { add, list, rm, check },
});
