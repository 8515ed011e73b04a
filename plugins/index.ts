import type { Plugin } from "../core/plugins.ts";
import attach from "./attach/index.ts";
import dotfiles from "./env/dotfiles/index.ts";
import env from "./env/index.ts";
import golden from "./golden/index.ts";
import nix from "./nix/index.ts";
import profile from "./profile/index.ts";
import remote from "./remote/index.ts";
import secrets from "./secrets/index.ts";
import wrap from "./wrap/index.ts";

/**
 * The built-in plugins, in the order their hooks run (before any user plugin). env starts
 * before golden: an untrusted project's session installs its environment's tools into the
 * golden store (plugins/env/tools.ts) before its own clone of that store is made. remote
 * starts first: a session on a remote host gets its image, home and tools there before the
 * others start (its hooks do nothing for a session on this machine).
 */
export const builtinPlugins: readonly Plugin[] = [remote, env, golden, profile, dotfiles, secrets, nix, wrap, attach];
