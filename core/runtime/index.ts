import type { RuntimeName } from "../config.ts";
import { UserError } from "../errors.ts";
import type { AppleContainerRuntime } from "./apple.ts";
import { OciRuntime, dockerDialect, podmanDialect } from "./oci.ts";
import type { Runtime } from "./types.ts";

export type { Check, ContainerInfo, Runtime, EngineResult, ExecOptions } from "./types.ts";

const installHints: Record<RuntimeName, string> = {
  podman: "run bin/setup, or install it: sudo apt-get install podman runc",
  docker: "install Docker, or use --runtime podman",
  container: "install Apple's container CLI (github.com/apple/container) on macOS",
};

/**
 * Which engine to use when none is configured: Apple `container` on macOS, then Podman,
 * then Docker. A PATH lookup only — no engine call on the hot path.
 */
export function detectRuntime(platform = process.platform): RuntimeName {
  if (platform === "darwin" && Bun.which("container")) return "container";
  if (Bun.which("podman")) return "podman";
  if (Bun.which("docker")) return "docker";
  throw new UserError("no container engine found (looked for podman and docker on PATH)", installHints.podman);
}

/**
 * The engine sessions use: NAME (else detected) on this machine, or HOST's Podman over
 * SSH (a host from `agentenv host add`; then NAME must be podman or unset).
 */
export function createRuntime(name: RuntimeName | undefined, host?: string): Runtime {
  if (host) {
    if (name && name !== "podman") throw new UserError(`--host ${host} runs sessions on that machine's Podman, not ${name}`, "drop --runtime (or runtime in config) for remote sessions");
    // loaded only for a remote session: local ones do not parse it
    const { getHost } = require("../hosts.ts") as typeof import("../hosts.ts");
    const { RemoteRuntime } = require("./remote.ts") as typeof import("./remote.ts");
    return new RemoteRuntime(getHost(host));
  }
  const chosen = name ?? detectRuntime();
  const bin = Bun.which(chosen);
  if (!bin) throw new UserError(`${chosen} is not installed (not found on PATH)`, installHints[chosen]);
  // spawn by name: dry-run output stays copy-pasteable and PATH decides, as it did just now
  if (chosen === "container") {
    // loaded only for that engine: Podman and Docker sessions do not parse it
    const { AppleContainerRuntime: Apple } = require("./apple.ts") as { AppleContainerRuntime: typeof AppleContainerRuntime };
    return new Apple(chosen);
  }
  return new OciRuntime(chosen, chosen === "podman" ? podmanDialect : dockerDialect);
}
