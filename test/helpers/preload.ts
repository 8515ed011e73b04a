import { setDefaultTimeout } from "bun:test";

// Integration tests boot real containers and build with real Nix: on a loaded 2-core
// machine one may take minutes (bunfig.toml preloads this for every test file)
setDefaultTimeout(180_000);
