import { describe, expect, test } from "bun:test";
import { mergeLayers } from "../../core/config.ts";
import { UserError } from "../../core/errors.ts";
import { basePlan, helperPlan } from "../../core/plan.ts";
import {
  AppleContainerRuntime,
  compareVersions,
  minimumVersion,
  parseContainers,
  parseImageLabels,
  parseSystemStatus,
  parseVersion,
  parseVolumes,
} from "../../core/runtime/apple.ts";

/**
 * Apple `container` without the engine: its JSON as the CLI prints it (fixtures from
 * captured 0.x and 1.x output, see the runtime's notes) and the argv agentenv builds.
 */

const appRoot = "/Users/me/Library/Application Support/com.apple.container";
const img = (name: string) => `${appRoot}/volumes/${name}/volume.img`;

/** `container ls --format json` on 1.x (ManagedContainer: id, configuration, status {state…}; compact, sorted keys) */
const ls1x = JSON.stringify([
  {
    configuration: {
      creationDate: "2026-08-20T01:47:42Z",
      id: "agentenv-up-dev",
      image: { descriptor: { digest: "sha256:aa", mediaType: "application/vnd.oci.image.index.v1+json", size: 1609 }, reference: "localhost/agentenv:latest" },
      initProcess: { arguments: ["agentenv-keepalive"], executable: "/entrypoint.sh", terminal: false, workingDirectory: "/Users/me/src" },
      labels: { "agentenv.session": "up", "agentenv.env": "dev", "agentenv.roots": '["/Users/me/src"]' },
      mounts: [
        { destination: "/root", options: [], source: img("agentenv-env-dev"), type: { volume: { cache: "auto", format: "ext4", name: "agentenv-env-dev", sync: "full" } } },
        { destination: "/opt/shared", options: ["ro"], source: img("shared"), type: { volume: { format: "ext4", name: "shared" } } },
        { destination: "/Users/me/src", options: [], source: "/Users/me/src", type: { virtiofs: {} } },
        { destination: "/tmp", options: [], source: "", type: { tmpfs: {} } },
      ],
      networks: [{ network: "default", options: { hostname: "agentenv-up-dev", mtu: 1280 } }],
      platform: { architecture: "arm64", os: "linux" },
      publishedPorts: [],
      publishedSockets: [],
      runtimeHandler: "container-runtime-linux",
    },
    id: "agentenv-up-dev",
    status: {
      networks: [{ hostname: "agentenv-up-dev", ipv4Address: "192.168.64.2/24", ipv4Gateway: "192.168.64.1", macAddress: "fa:ce:00:00:00:01", network: "default" }],
      startedDate: "2026-08-20T01:47:43Z",
      state: "running",
    },
  },
  {
    configuration: { creationDate: "2026-08-20T01:40:00Z", id: "qtest", image: { reference: "docker.io/library/alpine:latest" }, labels: {}, mounts: [] },
    id: "qtest",
    status: { networks: [], startedDate: "2026-08-20T01:40:01Z", state: "stopped" },
  },
]);

/** `container inspect` on 0.x (PrintableContainer: status a string, no top-level id; pretty, with " : ") */
const inspect0x = `[
  {
    "configuration" : {
      "id" : "agentenv-proj-0000",
      "image" : { "reference" : "localhost/agentenv:latest" },
      "labels" : { "agentenv.session" : "run" },
      "mounts" : [
        { "destination" : "/root", "options" : [ "ro" ], "source" : "${img("agentenv-env-dev")}", "type" : { "volume" : { "format" : "ext4", "name" : "agentenv-env-dev" } } },
        { "destination" : "/nix", "options" : [], "source" : "${img("agentenv-nix")}", "type" : { "volume" : { "format" : "ext4" } } }
      ]
    },
    "networks" : [ { "network" : "default", "hostname" : "agentenv-proj-0000", "address" : "192.168.64.3/24", "gateway" : "192.168.64.1" } ],
    "status" : "running"
  }
]`;

/** `volume list --format json`: 1.x ({id, configuration}, creationDate) and 0.x (flat, createdAt as reference seconds) */
const volumes1x = JSON.stringify([
  {
    configuration: { creationDate: "2026-08-20T01:47:42Z", driver: "local", format: "ext4", labels: { "agentenv.env": "dev" }, name: "agentenv-env-dev", options: {}, sizeInBytes: 549755813888, source: img("agentenv-env-dev") },
    id: "agentenv-env-dev",
  },
  { configuration: { creationDate: "2026-08-20T01:47:42Z", driver: "local", format: "ext4", labels: {}, name: "qvol", options: {}, sizeInBytes: 549755813888, source: img("qvol") }, id: "qvol" },
]);
const volumes0x = JSON.stringify([
  { createdAt: 791908128.263286, driver: "local", format: "ext4", labels: { "agentenv.env": "dev" }, name: "agentenv-env-dev", options: {}, sizeInBytes: 549755813888, source: img("agentenv-env-dev") },
]);

describe("parsing Apple container's JSON", () => {
  test("1.x listing: id, state under status, labels, named volumes with read-only-ness", () => {
    const [up, stopped] = parseContainers(ls1x);
    expect(up).toEqual({
      id: "agentenv-up-dev",
      state: "running",
      labels: { "agentenv.session": "up", "agentenv.env": "dev", "agentenv.roots": '["/Users/me/src"]' },
      volumes: [
        { name: "agentenv-env-dev", readonly: false },
        { name: "shared", readonly: true },
      ],
      exitCode: undefined,
    });
    expect(stopped).toMatchObject({ id: "qtest", state: "stopped", labels: {}, volumes: [] });
  });

  test("0.x inspect: id from the configuration, status a string; a volume type without a name is named by its volume.img path", () => {
    expect(parseContainers(inspect0x)).toEqual([
      {
        id: "agentenv-proj-0000",
        state: "running",
        labels: { "agentenv.session": "run" },
        volumes: [
          { name: "agentenv-env-dev", readonly: true },
          { name: "agentenv-nix", readonly: false },
        ],
        exitCode: undefined,
      },
    ]);
  });

  test("an exit code where a status has one; empty output is no containers; anything not JSON is a user error", () => {
    expect(parseContainers('[{"id":"x","configuration":{"id":"x"},"status":{"state":"stopped","exitCode":3}}]')[0]?.exitCode).toBe(3);
    expect(parseContainers("")).toEqual([]);
    expect(parseContainers("[]\n")).toEqual([]);
    expect(() => parseContainers("ID  IMAGE  STATE")).toThrow(UserError);
  });

  test("volumes in both shapes", () => {
    const expected = { name: "agentenv-env-dev", source: img("agentenv-env-dev"), labels: { "agentenv.env": "dev" } };
    expect(parseVolumes(volumes1x)).toEqual([expected, { name: "qvol", source: img("qvol"), labels: {} }]);
    expect(parseVolumes(volumes0x)).toEqual([expected]);
    // volume inspect is pretty-printed with " : "
    expect(parseVolumes(JSON.stringify(JSON.parse(volumes0x), null, 2).replaceAll('":', '" :'))).toEqual([expected]);
  });

  test("image labels at variants[].config.config.Labels", () => {
    const detail = [
      {
        index: { digest: "sha256:aa", mediaType: "application/vnd.oci.image.index.v1+json", size: 1609 },
        name: "localhost/agentenv:latest",
        variants: [
          { config: { architecture: "arm64", config: { Env: ["PATH=/bin"] }, os: "linux" }, platform: { architecture: "arm64", os: "linux" }, size: 1 },
          { config: { architecture: "amd64", config: { Labels: { "agentenv.image-hash": "abc" } }, os: "linux" }, platform: { architecture: "amd64", os: "linux" }, size: 1 },
        ],
      },
    ];
    expect(parseImageLabels(JSON.stringify(detail))).toEqual({ "agentenv.image-hash": "abc" });
    expect(parseImageLabels(JSON.stringify([{ name: "x", variants: [{ config: { config: {} } }] }]))).toEqual({});
  });

  test("system status: the flat PrintableStatus, the nested shape, stopped, and text", () => {
    const flat = {
      apiServerAppName: "container-apiserver",
      apiServerBuild: "release",
      apiServerCommit: "6e65319",
      apiServerVersion: "container-apiserver version 1.2.0 (build: release, commit: 6e65319)",
      appRoot: `${appRoot}/`,
      installRoot: "/usr/local/",
      status: "running",
    };
    expect(parseSystemStatus(JSON.stringify(flat))).toEqual({ status: "running", version: flat.apiServerVersion, appRoot: `${appRoot}/` });
    const nested = {
      client: {},
      host: {},
      paths: { appRoot: `${appRoot}/`, installRoot: "/usr/local/" },
      resources: {},
      server: { appName: "container-apiserver", build: "release", commit: "abc", version: "container-apiserver version 1.5.0 (build: release, commit: abc)" },
      status: "running",
    };
    expect(parseSystemStatus(JSON.stringify(nested))).toEqual({ status: "running", version: nested.server.version, appRoot: `${appRoot}/` });
    expect(parseSystemStatus('{"status":"not running"}').status).toBe("not running");
    expect(parseSystemStatus('{"apiServerAppName":"","apiServerBuild":"","apiServerCommit":"","apiServerVersion":"","appRoot":"","installRoot":"","status":"unregistered"}').status).toBe("unregistered");
    expect(parseSystemStatus("apiserver is running")).toEqual({});
  });
});

describe("versions", () => {
  test("parseVersion reads `container --version`", () => {
    expect(parseVersion("container CLI version 0.4.1 (build: release, commit: 4ac18b5)\n")).toBe("0.4.1");
    expect(parseVersion("container CLI version 1.1.0 (build: release, commit: 5973b9c)")).toBe("1.1.0");
    expect(parseVersion("Docker version 27.0.1, build 7fafd33")).toBeUndefined();
    expect(parseVersion("")).toBeUndefined();
  });

  test("compareVersions compares numerically, missing parts as 0", () => {
    expect(compareVersions("0.10.0", "0.9.9")).toBe(1);
    expect(compareVersions("0.4.1", "0.4.1")).toBe(0);
    expect(compareVersions("1.0", "1.0.0")).toBe(0);
    expect(compareVersions("0.4.0", "0.4.1")).toBe(-1);
    expect(compareVersions("1.4.1", "1.10.0")).toBe(-1);
  });

  test("below 0.4.1 (no named volumes) is a user error saying upgrade", () => {
    let error: unknown;
    try {
      new AppleContainerRuntime("container", { version: "0.4.0", platform: "darwin" });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toContain(`needs ${minimumVersion} or later`);
    expect((error as UserError).hint).toMatch(/upgrade/);
    expect(() => new AppleContainerRuntime("container", { version: minimumVersion })).not.toThrow();
    // a version it cannot tell is assumed new
    expect(() => new AppleContainerRuntime("container", { version: undefined })).not.toThrow();
  });
});

describe("argv", () => {
  const config = mergeLayers([{ name: "defaults", config: {} }], {});
  const runtime = (version: string | undefined = "1.2.0") => new AppleContainerRuntime("container", { version, platform: "darwin" });

  test("a session: --rm, -i, --init, the project at /work; no --hostname, no --pull", () => {
    const plan = { ...basePlan({ project: "/Users/me/proj", mode: "run", command: ["echo", "hi there"], config, stdinIsTTY: false }), name: "agentenv-proj-0000" };
    plan.mounts.push({ type: "volume", source: "agentenv-env-dev", target: "/root" }, { type: "volume", source: "agentenv-nix", target: "/nix", readonly: true });
    plan.env.AGENTENV_ENV = "dev";
    expect(runtime().argv(plan)).toEqual([
      [
        "container", "run", "--rm", "-i", "--init",
        "--name", "agentenv-proj-0000", "-w", "/work",
        "--label", "agentenv.session=run", "--label", "agentenv.project=/Users/me/proj",
        "-v", "/Users/me/proj:/work", "-v", "agentenv-env-dev:/root", "-v", "agentenv-nix:/nix:ro",
        "-e", "AGENTENV_ENV=dev",
        "localhost/agentenv:latest", "echo", "hi there",
      ],
    ]);
    // a shell on a terminal: -i -t
    const shell = { ...basePlan({ project: "/p", mode: "shell", command: [], config, stdinIsTTY: true }), name: "n" };
    expect(runtime().runArgs(shell).slice(0, 5)).toEqual(["run", "--rm", "-i", "-t", "--init"]);
  });

  test("--init only from 0.11.0 (and when the version is unknown)", () => {
    const plan = { ...basePlan({ project: "/p", mode: "run", command: ["true"], config, stdinIsTTY: true }), name: "n" };
    expect(runtime("0.10.0").runArgs(plan)).not.toContain("--init");
    expect(runtime("0.11.0").runArgs(plan)).toContain("--init");
    expect(runtime(undefined).runArgs(plan)).toContain("--init");
  });

  test("a helper: its entrypoint, no --init, the script after the image", () => {
    const plan = { ...helperPlan({ image: "localhost/agentenv:latest", purpose: "seed", mounts: [{ type: "volume", source: "agentenv-env-dev", target: "/home" }], script: "cp -a /src/. /home/" }), name: "agentenv-seed-0000" };
    expect(runtime().argv(plan)).toEqual([
      [
        "container", "run", "--rm",
        "--name", "agentenv-seed-0000", "-w", "/",
        "--entrypoint", "/bin/sh",
        "--label", "agentenv.helper=seed",
        "-v", "agentenv-env-dev:/home",
        "localhost/agentenv:latest", "-c", "cp -a /src/. /home/",
      ],
    ]);
  });

  test("a detached up container: -d, --init (>= 0.11), roots at their own paths, no --hostname", () => {
    const plan = basePlan({ project: "/Users/me/src", mode: "up", command: [], config, stdinIsTTY: false, up: { name: "agentenv-up-dev", hostname: "dev", roots: ["/Users/me/src", "/Users/me/notes"] } });
    const expected = (init: boolean) => [
      "container", "run", "-d", ...(init ? ["--init"] : []),
      "--name", "agentenv-up-dev", "-w", "/Users/me/src",
      "--label", "agentenv.session=up", "--label", 'agentenv.roots=["/Users/me/src","/Users/me/notes"]',
      "-v", "/Users/me/src:/Users/me/src", "-v", "/Users/me/notes:/Users/me/notes",
      "-e", "AGENTENV_UP=1",
      "localhost/agentenv:latest", "agentenv-keepalive",
    ];
    expect(runtime().argv(plan)).toEqual([expected(true)]);
    expect(runtime("0.10.2").argv(plan)).toEqual([expected(false)]);
    for (const argv of runtime().argv(plan)) {
      expect(argv.some((a) => a.startsWith("--hostname") || a.startsWith("--pull"))).toBe(false);
    }
  });

  test("exec, logs, pull and build", () => {
    const rt = runtime();
    expect(rt.execArgv("agentenv-up-dev", { workdir: "/Users/me/src/sub", env: { AGENTENV_NIX_DEVELOP: "never", A: "b c" }, interactive: true, tty: true, extraArgs: ["-u", "root"] }, ["agentenv-exec", "make", "-j"])).toEqual([
      "container", "exec", "-i", "-t", "-w", "/Users/me/src/sub", "-e", "AGENTENV_NIX_DEVELOP=never", "-e", "A=b c", "-u", "root", "agentenv-up-dev", "agentenv-exec", "make", "-j",
    ]);
    expect(rt.execArgv("c", { workdir: "/", env: {}, interactive: false, tty: false, extraArgs: [] }, ["true"])).toEqual(["container", "exec", "-w", "/", "c", "true"]);
    expect(rt.logsArgv("agentenv-up-dev")).toEqual(["container", "logs", "--follow", "agentenv-up-dev"]);
    expect(rt.pullArgv("docker.io/library/alpine:latest")).toEqual(["container", "image", "pull", "docker.io/library/alpine:latest"]);
    expect(rt.buildArgv({ tag: "localhost/agentenv:latest", context: "/repo/image", file: "/repo/image/Containerfile", buildArgs: { NIX_VERSION: "2.24" }, labels: { "agentenv.image-hash": "abc" } })).toEqual([
      "container", "build", "--tag", "localhost/agentenv:latest", "--build-arg", "NIX_VERSION=2.24", "--label", "agentenv.image-hash=abc", "--file", "/repo/image/Containerfile", "/repo/image",
    ]);
  });

  test("a path with ':' cannot be mounted with -v: a user error before anything runs", () => {
    const plan = { ...basePlan({ project: "/Users/me/a:b", mode: "run", command: ["true"], config, stdinIsTTY: true }), name: "n" };
    expect(() => runtime().argv(plan)).toThrow(UserError);
  });
});
