import { defineCommand } from "citty";
import { builtinPlugins } from "../builtins.ts";
import { loadConfig } from "../config.ts";
import { hookNames, loadPlugins } from "../plugins.ts";
import { resolveProjectDir } from "../plan.ts";
import { trustNotice } from "../trust.ts";
import { globalArgs, logFor } from "./_shared.ts";

export default defineCommand({
  meta: { name: "plugins", description: "List loaded plugins (built-in, user config, project config) and the hooks each uses" },
  args: {
    dir: { type: "positional", required: false, default: ".", valueHint: "dir", description: "Project whose config to load" },
    json: { type: "boolean", description: "Print as JSON" },
    ...globalArgs,
  },
  async run({ args }) {
    const project = resolveProjectDir(args.dir);
    const config = await loadConfig({ project });
    const notice = config.trust && trustNotice(config.trust);
    if (notice && config.trust?.config) logFor(args).warn(notice);
    const plugins = await loadPlugins(config, builtinPlugins());
    const rows = plugins.map((p) => ({
      name: p.name,
      source: p.source,
      hooks: hookNames.filter((h) => p.hooks?.[h]),
      commands: Object.keys(p.commands ?? {}),
    }));
    if (args.json) {
      console.log(JSON.stringify(rows, null, 2));
      return 0;
    }
    const width = Math.max(...rows.map((r) => r.name.length));
    for (const row of rows) {
      const hooks = row.hooks.length ? row.hooks.join(", ") : "(no hooks)";
      const commands = row.commands.length ? `  commands: ${row.commands.join(", ")}` : "";
      console.log(`${row.name.padEnd(width)}  ${hooks}${commands}  [${row.source}]`);
    }
    return 0;
  },
});
