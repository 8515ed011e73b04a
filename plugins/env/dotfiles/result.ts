import { stateDir, readHomeFile } from "../home.ts";

/**
 * The last dotfiles setup of a home, as image/dotfiles.sh keeps it in
 * ~/.local/state/agentenv/dotfiles.result (`key=value` lines). A session can rewrite that
 * file, so it is read as hostile input: known keys only, known statuses, numbers as
 * numbers, text stripped of control characters and cut short.
 */
export const setupStatuses = ["applied", "unchanged", "failed", "needs-terminal", "timed-out", "interrupted"] as const;
export type SetupStatus = (typeof setupStatuses)[number];

export interface SetupResult {
  status: SetupStatus;
  /** when it ended (ISO) */
  time?: string;
  commit?: string;
  /** what ran: "install.sh", "rcm links", "stow links, then make" */
  ran?: string;
  /** files and links of the home added, changed, removed by it; links among the added */
  added: number;
  changed: number;
  removed: number;
  links: number;
  /** its one-line report */
  message?: string;
}

export const resultPath = `${stateDir}/dotfiles.result`;
export const logPath = `~/${stateDir}/dotfiles.log`;

function text(value: string | undefined): string | undefined {
  const clean = value?.replace(/[\u0000-\u001f\u007f]/g, "").slice(0, 500);
  return clean || undefined;
}

export function parseResult(content: string | undefined): SetupResult | undefined {
  if (content === undefined) return undefined;
  const fields = new Map<string, string>();
  for (const line of content.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0 && !fields.has(line.slice(0, eq))) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const status = fields.get("status") as SetupStatus | undefined;
  if (!status || !setupStatuses.includes(status)) return undefined;
  const count = (key: string) => {
    const n = Number(fields.get(key));
    return Number.isSafeInteger(n) && n >= 0 ? n : 0;
  };
  const seconds = Number(fields.get("time"));
  const commit = fields.get("commit");
  return {
    status,
    time: Number.isSafeInteger(seconds) && seconds > 0 ? new Date(seconds * 1000).toISOString() : undefined,
    commit: commit && /^[0-9a-f]{40}$/.test(commit) ? commit : undefined,
    ran: text(fields.get("ran")),
    added: count("added"),
    changed: count("changed"),
    removed: count("removed"),
    links: count("links"),
    message: text(fields.get("message")),
  };
}

/** The last setup of the home at DIR (its files readable here); undefined when there was none. */
export function readResult(dir: string): SetupResult | undefined {
  return parseResult(readHomeFile(dir, resultPath, 16_384));
}

/** One line for people: what happened and what it changed, or why it failed and where the log is. */
export function describeResult(result: SetupResult, ago: (iso: string | undefined) => string): string {
  const when = result.time ? ` ${ago(result.time)}` : "";
  switch (result.status) {
    case "applied":
    case "unchanged": {
      const changes = `${result.added} added (${result.links} link${result.links === 1 ? "" : "s"}), ${result.changed} changed${result.removed ? `, ${result.removed} removed` : ""}`;
      const what = result.status === "applied" ? changes : "nothing in ~ changed";
      return `${result.status}${when}${result.ran ? ` — ${result.ran}` : ""}: ${what}`;
    }
    default:
      return `${result.status}${when}: ${result.message ?? "see the log"} (log: ${logPath})`;
  }
}
