#!/usr/bin/env bun
/**
 * agentenv's entry. `--version` answers before anything else loads; every command
 * is imported only when it runs. (No top-level await: the compiled binary is built
 * as bytecode, which needs a CommonJS-shaped entry.)
 */
import pkg from "../package.json" with { type: "json" };

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
  console.log(pkg.version);
  process.exit(0);
}
// the composition: core is handed the built-in plugins (it imports nothing from plugins/)
Promise.all([import("../core/cli.ts"), import("../plugins/index.ts")])
  .then(([{ main }, { builtinPlugins }]) => main(argv, builtinPlugins))
  .then((code) => process.exit(code));
