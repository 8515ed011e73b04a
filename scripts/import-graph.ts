/**
 * `bun scripts/import-graph.ts [--dot]`: the import graph between agentenv's folders, and
 * the two rules of its layering (docs/architecture.md): core/ imports nothing from
 * plugins/, and no two folders import each other, directly or round a longer cycle —
 * lazy `import()` included. Exits 1 naming each offending edge; `--dot` prints the graph.
 */
import { readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "pathe";

const root = resolve(import.meta.dir, "..");
const sources = [...new Bun.Glob("{bin,core,plugins}/**/*.ts").scanSync({ cwd: root })].filter((f) => !f.endsWith("files.ts") || !f.startsWith("image/"));

/** The folder a file belongs to: `core` (with its sub-folders), `plugins/<name>`, `bin`. */
function folderOf(file: string): string {
  const [top, second] = file.split("/");
  return top === "plugins" && second && !second.endsWith(".ts") ? `plugins/${second}` : top!;
}

/** Relative specifiers a file imports, statically or with `import()`. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(root, file), "utf8");
  const found = new Set<string>();
  for (const match of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)["'](\.{1,2}\/[^"']+)["']/g)) found.add(match[1]!);
  return [...found];
}

/** folder → folders it imports, with one file-level example of each edge */
const edges = new Map<string, Map<string, string>>();
for (const file of sources) {
  const from = folderOf(file);
  for (const spec of importsOf(file)) {
    const target = relative(root, resolve(root, dirname(file), spec));
    if (target.startsWith("..") || target === "package.json") continue;
    const to = folderOf(target);
    if (to === from || !/^(bin|core|plugins)/.test(to)) continue;
    if (!edges.has(from)) edges.set(from, new Map());
    if (!edges.get(from)!.has(to)) edges.get(from)!.set(to, `${file} → ${target}`);
  }
}

const problems: string[] = [];
for (const [from, tos] of edges) {
  for (const [to, example] of tos) {
    if (from === "core" && to.startsWith("plugins")) problems.push(`core imports a plugin: ${example}`);
  }
}

// cycles between folders: strongly connected components of more than one folder (Tarjan)
const index = new Map<string, number>();
const low = new Map<string, number>();
const stack: string[] = [];
const onStack = new Set<string>();
let counter = 0;
function visit(node: string): void {
  index.set(node, counter);
  low.set(node, counter++);
  stack.push(node);
  onStack.add(node);
  for (const next of edges.get(node)?.keys() ?? []) {
    if (!index.has(next)) {
      visit(next);
      low.set(node, Math.min(low.get(node)!, low.get(next)!));
    } else if (onStack.has(next)) low.set(node, Math.min(low.get(node)!, index.get(next)!));
  }
  if (low.get(node) === index.get(node)) {
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1) {
      const inCycle = new Set(component);
      const links = component.flatMap((f) => [...(edges.get(f) ?? [])].filter(([t]) => inCycle.has(t)).map(([, example]) => example));
      problems.push(`a cycle between ${component.sort().join(", ")}: ${links.join("; ")}`);
    }
  }
}
for (const node of [...new Set([...edges.keys(), ...[...edges.values()].flatMap((m) => [...m.keys()])])].sort()) if (!index.has(node)) visit(node);

if (process.argv.includes("--dot")) {
  console.log("digraph agentenv {");
  for (const [from, tos] of [...edges].sort()) for (const to of [...tos.keys()].sort()) console.log(`  "${from}" -> "${to}";`);
  console.log("}");
}
if (problems.length) {
  for (const problem of problems) console.error(`import-graph: ${problem}`);
  process.exit(1);
}
console.error(`import-graph: ${sources.length} files; core imports no plugin; no cycle between folders`);
