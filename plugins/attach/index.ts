import { definePlugin } from "../../core/plugins.ts";

/**
 * `agentenv attach CONTAINER`: a sidecar container joins a running container's
 * namespaces and its helper (image/attach.c) builds a private view — the target's own
 * filesystems, processes and network, with our /nix, the environment's home and a static
 * shell grafted in — that leaves the target as it was. See docs/attach.md.
 */
export default definePlugin({
  name: "attach",
  commands: {
    attach: () => import("./command.ts").then((m) => m.attach),
  },
});
