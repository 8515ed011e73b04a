import { closeSync, constants, fsyncSync, openSync, writeSync } from "node:fs";
import { UserError, messageOf } from "../../core/errors.ts";
import { findCredentials, parseChallenge, redact, type Challenge, type Credentials } from "./auth.ts";

/**
 * A small client of the OCI distribution API (distribution-spec v1.1): what `env push`
 * and `env pull` need, against any registry (GHCR, Docker Hub, Harbor, GitLab, ECR, a
 * `registry:2`). Blobs go up from files, monolithically or in chunks, and come down into
 * files, hashed while they stream — never a whole blob in memory. A blob the registry
 * has is not sent again (HEAD first; a cross-repository mount when asked to). Auth is
 * Podman's and Docker's (./auth.ts): Basic, or the Bearer token flow its challenge asks
 * for. Credentials and tokens never appear in a message.
 */

export interface Reference {
  /** host[:port] as written; Docker Hub is docker.io */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export const manifestType = "application/vnd.oci.image.manifest.v1+json";
const acceptManifests = [manifestType, "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.v2+json"].join(", ");

const digestPattern = /^sha256:[0-9a-f]{64}$/;
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const repoPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

/** REGISTRY/REPO[:TAG|@DIGEST] as Podman reads it; the registry is the first part when it has a dot, a colon or is localhost (else Docker Hub). */
export function parseReference(text: string, what = "reference"): Reference {
  const bad = (why: string) => new UserError(`${what} ${JSON.stringify(text)}: ${why}`, "give REGISTRY/REPOSITORY[:TAG] or REGISTRY/REPOSITORY@sha256:DIGEST, e.g. ghcr.io/me/dev-env:latest");
  let rest = text.replace(/^(?:docker|oci):\/\//, "");
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestPattern.test(digest)) throw bad("the digest is not sha256: and 64 hex digits");
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag)) throw bad("not a valid tag");
  }
  const parts = rest.split("/");
  let registry = "docker.io";
  if (parts.length > 1 && (/[.:]/.test(parts[0]!) || parts[0] === "localhost")) registry = parts.shift()!;
  if (registry === "index.docker.io" || registry === "registry-1.docker.io") registry = "docker.io";
  let repository = parts.join("/");
  if (registry === "docker.io" && parts.length === 1) repository = `library/${repository}`;
  if (!repository || !repoPattern.test(repository)) throw bad("not a valid repository name (lower-case letters, digits, . _ - and /)");
  if (!/^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-fA-F:]+\](?::\d{1,5})?$/.test(registry)) throw bad("not a valid registry host");
  return { registry, repository, tag: tag ?? (digest ? undefined : "latest"), digest };
}

export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
}

export interface ClientOptions {
  /** false: accept any TLS certificate, and plain HTTP when HTTPS fails (`--tls-verify=false`) */
  tlsVerify?: boolean;
  /** where credentials are read (default: Podman's and Docker's files, ./auth.ts) */
  authFiles?: string[];
  /** blobs larger than this go up in chunks of this size (default 16 MiB) */
  chunkSize?: number;
  /** one line per HTTP request (method, path, status): -v */
  debug?: (line: string) => void;
}

/** Progress of one blob: bytes moved so far of TOTAL. */
export type Progress = (done: number, total: number) => void;

function isLoopback(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}

/** The digest of a blob, hashed as it is read or written. */
export class Digester {
  private readonly hasher = new Bun.CryptoHasher("sha256");
  size = 0;
  update(data: Uint8Array): void {
    this.hasher.update(data);
    this.size += data.length;
  }
  digest(): string {
    return `sha256:${this.hasher.digest("hex")}`;
  }
}

/** sha256 of FILE, streamed. */
export async function fileDigest(file: string): Promise<{ digest: string; size: number }> {
  const digester = new Digester();
  for await (const chunk of Bun.file(file).stream()) digester.update(chunk);
  return { digest: digester.digest(), size: digester.size };
}

export class RegistryClient {
  readonly ref: Reference;
  private readonly options: ClientOptions;
  private base?: string;
  private credentials?: Credentials;
  private credentialsRead = false;
  private authorization?: string;
  /** tokens the registry handed out: redacted like credentials */
  private readonly tokens: string[] = [];
  private challenge?: Challenge;
  /** repository scopes the token must cover (actions by repository) */
  private readonly scopes = new Map<string, Set<string>>();
  /** what each request did: tests and `-v` read it */
  readonly requests: Array<{ method: string; path: string; status: number }> = [];

  constructor(ref: Reference, options: ClientOptions = {}) {
    this.ref = ref;
    this.options = options;
  }

  get where(): string {
    return `${this.ref.registry}/${this.ref.repository}`;
  }

  private host(): string {
    return this.ref.registry === "docker.io" ? "registry-1.docker.io" : this.ref.registry;
  }

  private creds(): Credentials | undefined {
    if (!this.credentialsRead) {
      this.credentials = findCredentials(this.ref.registry, this.ref.repository, this.options.authFiles);
      this.credentialsRead = true;
    }
    return this.credentials;
  }

  /** MESSAGE with every credential and token this client holds replaced by ***. */
  safe(message: string): string {
    return redact(message, this.credentials, this.tokens);
  }

  private fail(message: string, hint?: string): UserError {
    return new UserError(this.safe(message), hint && this.safe(hint));
  }

  private async fetchRaw(url: string, init: RequestInit & { tls?: unknown }): Promise<Response> {
    const tls = this.options.tlsVerify === false ? { rejectUnauthorized: false } : undefined;
    return fetch(url, { ...init, redirect: "manual", ...(tls ? { tls } : {}) } as RequestInit);
  }

  /** The API's base URL: HTTPS, or plain HTTP for a loopback registry or with --tls-verify=false when HTTPS does not answer. */
  private async baseUrl(): Promise<string> {
    if (this.base) return this.base;
    const host = this.host();
    const plainAllowed = this.options.tlsVerify === false || isLoopback(host);
    let firstError: unknown;
    for (const scheme of plainAllowed ? ["https", "http"] : ["https"]) {
      try {
        const response = await this.fetchRaw(`${scheme}://${host}/v2/`, { method: "GET", headers: { "user-agent": "agentenv" } });
        await response.arrayBuffer().catch(() => {});
        this.note("GET", "/v2/", response.status);
        // the API's base answers 200, or 401 with its challenge; anything else (plain HTTP to
        // an HTTPS server: 400) is not the registry speaking
        if (response.status !== 200 && response.status !== 401) {
          firstError ??= new Error(`${scheme}://${host}/v2/ answered ${response.status}, not as a registry`);
          continue;
        }
        this.base = `${scheme}://${host}`;
        if (response.status === 401) this.challenge = parseChallenge(response.headers.get("www-authenticate"));
        return this.base;
      } catch (error) {
        firstError ??= error;
      }
    }
    const why = messageOf(firstError);
    const tlsHint = /certificate|self.signed|tls|ssl/i.test(why) ? "if this is your own registry with a self-signed certificate, pass --tls-verify=false" : "check the name and that it is up";
    throw this.fail(`cannot reach registry ${this.ref.registry}: ${why}`, tlsHint);
  }

  private note(method: string, path: string, status: number): void {
    this.requests.push({ method, path, status });
    this.options.debug?.(`${method} ${path} → ${status}`);
  }

  /** Asks the token for ACTIONS (pull, push) on REPOSITORY to cover it (before the requests that need it). */
  want(repository: string, ...actions: string[]): void {
    const set = this.scopes.get(repository) ?? new Set<string>();
    const before = set.size;
    for (const action of actions) set.add(action);
    this.scopes.set(repository, set);
    if (set.size !== before && this.challenge?.scheme === "bearer") this.authorization = undefined;
  }

  /** The Authorization header the registry's challenge asks for (fetching a token for the Bearer flow). */
  private async authorize(challenge: Challenge | undefined): Promise<string | undefined> {
    const creds = this.creds();
    if (!challenge) return undefined;
    if (challenge.scheme === "basic") {
      if (!creds?.password && creds?.username === undefined) throw this.needCredentials();
      return `Basic ${Buffer.from(`${creds!.username ?? ""}:${creds!.password ?? ""}`).toString("base64")}`;
    }
    if (challenge.scheme !== "bearer") throw this.fail(`registry ${this.ref.registry} asks for ${challenge.scheme} authentication, which agentenv does not speak`);
    const realm = challenge.params.realm;
    if (!realm || !/^https?:\/\//.test(realm)) throw this.fail(`registry ${this.ref.registry} names no token service to authenticate with`);
    const scopes = [...this.scopes].map(([repo, actions]) => `repository:${repo}:${[...actions].sort().join(",")}`);
    if (challenge.params.scope) for (const scope of challenge.params.scope.split(" ")) if (!scopes.includes(scope)) scopes.push(scope);
    const params = new URLSearchParams();
    if (challenge.params.service) params.set("service", challenge.params.service);
    for (const scope of scopes) params.append("scope", scope);
    let response: Response;
    try {
      if (creds?.identityToken) {
        params.set("grant_type", "refresh_token");
        params.set("refresh_token", creds.identityToken);
        params.set("client_id", "agentenv");
        response = await this.fetchRaw(realm, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: params.toString() });
      } else {
        params.set("client_id", "agentenv");
        const headers: Record<string, string> = {};
        if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username ?? ""}:${creds.password ?? ""}`).toString("base64")}`;
        response = await this.fetchRaw(`${realm}${realm.includes("?") ? "&" : "?"}${params}`, { method: "GET", headers });
      }
    } catch (error) {
      throw this.fail(`cannot reach the token service of registry ${this.ref.registry}: ${messageOf(error)}`);
    }
    this.note(creds?.identityToken ? "POST" : "GET", "(token)", response.status);
    if (response.status === 401 || response.status === 403) {
      await response.arrayBuffer().catch(() => {});
      throw creds ? this.refused() : this.needCredentials();
    }
    if (!response.ok) throw this.fail(`the token service of registry ${this.ref.registry} answered ${response.status}`);
    let body: { token?: string; access_token?: string };
    try {
      body = (await response.json()) as typeof body;
    } catch {
      throw this.fail(`the token service of registry ${this.ref.registry} answered something that is not a token`);
    }
    const token = body.token ?? body.access_token;
    if (!token) throw this.fail(`the token service of registry ${this.ref.registry} gave no token`);
    this.tokens.push(token);
    return `Bearer ${token}`;
  }

  private needCredentials(): UserError {
    return this.fail(`registry ${this.ref.registry} asks for credentials for ${this.ref.repository}`, `log in first: podman login ${this.ref.registry} (or docker login ${this.ref.registry})`);
  }

  private refused(): UserError {
    const from = this.credentials?.from ?? "your auth file";
    return this.fail(`registry ${this.ref.registry} refused the credentials from ${from} for ${this.ref.repository}`, `log in again: podman login ${this.ref.registry}`);
  }

  /**
   * One API request (PATH under the API's base, or an absolute URL a registry handed out),
   * authorised, retried once after a 401 with the registry's challenge. BODY is a factory
   * so a retried request sends it again (a file is reopened).
   */
  async request(method: string, path: string, init: { headers?: Record<string, string>; body?: () => BodyInit | undefined } = {}): Promise<Response> {
    const base = await this.baseUrl();
    const url = /^https?:\/\//.test(path) ? path : `${base}${path}`;
    const shown = url.startsWith(base) ? url.slice(base.length).replace(/\?.*$/, "") : new URL(url).pathname;
    for (let attempt = 0; ; attempt++) {
      if (this.authorization === undefined && this.challenge) this.authorization = await this.authorize(this.challenge);
      const headers: Record<string, string> = { "user-agent": "agentenv", ...init.headers };
      // never sent to another host (a redirect to storage), only to the registry
      if (this.authorization && url.startsWith(base)) headers.authorization = this.authorization;
      let response: Response;
      try {
        response = await this.fetchRaw(url, { method, headers, body: init.body?.() });
      } catch (error) {
        throw this.fail(`registry ${this.ref.registry}: ${method} ${shown} failed: ${messageOf(error)}`);
      }
      this.note(method, shown, response.status);
      if (response.status === 401 && attempt === 0) {
        await response.arrayBuffer().catch(() => {});
        const challenge = parseChallenge(response.headers.get("www-authenticate"));
        // the challenge asked again while credentials were sent: they were refused
        if (this.authorization && challenge?.scheme === "basic") throw this.refused();
        this.challenge = challenge;
        this.authorization = undefined;
        if (!challenge) throw this.needCredentials();
        continue;
      }
      if (response.status === 401) {
        await response.arrayBuffer().catch(() => {});
        throw this.creds() ? this.refused() : this.needCredentials();
      }
      if ([301, 302, 303, 307, 308].includes(response.status) && (method === "GET" || method === "HEAD")) {
        const location = response.headers.get("location");
        await response.arrayBuffer().catch(() => {});
        if (!location) throw this.fail(`registry ${this.ref.registry} redirected ${shown} nowhere`);
        // a blob may live in object storage: fetched there without the registry's credentials
        const target = new URL(location, url).toString();
        const redirected = await this.fetchRaw(target, { method, headers: { "user-agent": "agentenv" } });
        this.note(method, `(redirect) ${new URL(target).host}`, redirected.status);
        return redirected;
      }
      return response;
    }
  }

  /** The registry's error for RESPONSE: its first error code and message, shortened. */
  private async errorOf(response: Response): Promise<string> {
    let text = "";
    try {
      text = await response.text();
      const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
      const first = body.errors?.[0];
      if (first) return `${response.status} ${first.code ?? ""}${first.message ? `: ${first.message}` : ""}`.trim();
    } catch {
      // not the API's JSON
    }
    return `${response.status}${text ? ` ${text.trim().split("\n")[0]!.slice(0, 200)}` : ""}`;
  }

  private async failed(what: string, response: Response): Promise<UserError> {
    if (response.status === 403) return this.fail(`registry ${this.ref.registry} denied ${what} (${await this.errorOf(response)})`, `check that your login may ${what.startsWith("push") || what.startsWith("upload") ? "push to" : "read"} ${this.ref.repository}`);
    return this.fail(`registry ${this.ref.registry}: ${what} failed: ${await this.errorOf(response)}`);
  }

  /** The blob's size when the repository has it; undefined when not. */
  async blobExists(digest: string): Promise<number | undefined> {
    const response = await this.request("HEAD", `/v2/${this.ref.repository}/blobs/${digest}`);
    if (response.status === 404) return undefined;
    if (!response.ok) throw await this.failed(`checking blob ${digest}`, response);
    return Number(response.headers.get("content-length") ?? -1);
  }

  /** Mounts DIGEST from the repository FROM of the same registry; false when the registry would not (it then has nothing to do with it). */
  async mountBlob(digest: string, from: string): Promise<boolean> {
    this.want(from, "pull");
    const response = await this.request("POST", `/v2/${this.ref.repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`);
    await response.arrayBuffer().catch(() => {});
    if (response.status === 201) return true;
    if (response.status === 202) {
      // the registry opened an upload instead: closed again, unused
      const location = response.headers.get("location");
      if (location) await this.request("DELETE", this.resolve(location)).then((r) => r.arrayBuffer()).catch(() => {});
      return false;
    }
    return false;
  }

  private resolve(location: string): string {
    return new URL(location, this.base).toString();
  }

  private async startUpload(): Promise<string> {
    const response = await this.request("POST", `/v2/${this.ref.repository}/blobs/uploads/`, { headers: { "content-length": "0" } });
    await response.arrayBuffer().catch(() => {});
    if (response.status !== 202) throw await this.failed("starting an upload", response);
    const location = response.headers.get("location");
    if (!location) throw this.fail(`registry ${this.ref.registry} started an upload without saying where to send it`);
    return this.resolve(location);
  }

  private static withDigest(location: string, digest: string): string {
    const url = new URL(location);
    url.searchParams.set("digest", digest);
    return url.toString();
  }

  /**
   * Sends FILE (of DIGEST and SIZE) unless the repository has it: HEAD first, then a mount
   * from MOUNTFROM (a repository of the same registry that has it), else an upload —
   * monolithic up to the chunk size, in chunks above it. Resolves to what it did.
   */
  async pushBlob(file: string, digest: string, size: number, options: { mountFrom?: string; progress?: Progress; chunked?: boolean } = {}): Promise<"exists" | "mounted" | "uploaded"> {
    if ((await this.blobExists(digest)) !== undefined) {
      options.progress?.(size, size);
      return "exists";
    }
    if (options.mountFrom && options.mountFrom !== this.ref.repository && (await this.mountBlob(digest, options.mountFrom))) {
      options.progress?.(size, size);
      return "mounted";
    }
    const chunk = this.options.chunkSize ?? 16 << 20;
    let location = await this.startUpload();
    if (!(options.chunked ?? size > chunk)) {
      const response = await this.request("PUT", RegistryClient.withDigest(location, digest), {
        headers: { "content-type": "application/octet-stream", "content-length": String(size) },
        body: () => Bun.file(file),
      });
      await this.closeUpload(response, digest);
      options.progress?.(size, size);
      return "uploaded";
    }
    for (let start = 0; start < size; start += chunk) {
      const end = Math.min(size, start + chunk);
      const response = await this.request("PATCH", location, {
        headers: { "content-type": "application/octet-stream", "content-length": String(end - start), "content-range": `${start}-${end - 1}` },
        body: () => Bun.file(file).slice(start, end),
      });
      await response.arrayBuffer().catch(() => {});
      if (response.status !== 202) throw await this.failed(`uploading blob ${digest}`, response);
      const next = response.headers.get("location");
      if (next) location = this.resolve(next);
      options.progress?.(end, size);
    }
    const response = await this.request("PUT", RegistryClient.withDigest(location, digest), { headers: { "content-length": "0" } });
    await this.closeUpload(response, digest);
    return "uploaded";
  }

  /**
   * Sends a blob read from STREAM, whose digest is not known before (it is hashed while
   * it streams), in chunks; resolves to its digest and size.
   */
  async pushStream(stream: ReadableStream<Uint8Array>, progress?: (done: number) => void): Promise<{ digest: string; size: number }> {
    const chunk = this.options.chunkSize ?? 16 << 20;
    const digester = new Digester();
    let location = await this.startUpload();
    let pending: Uint8Array[] = [];
    let pendingSize = 0;
    const flush = async () => {
      if (!pendingSize) return;
      const body = Buffer.concat(pending, pendingSize);
      const start = digester.size - pendingSize;
      pending = [];
      pendingSize = 0;
      const response = await this.request("PATCH", location, {
        headers: { "content-type": "application/octet-stream", "content-length": String(body.length), "content-range": `${start}-${start + body.length - 1}` },
        body: () => body,
      });
      await response.arrayBuffer().catch(() => {});
      if (response.status !== 202) throw await this.failed("uploading a blob", response);
      const next = response.headers.get("location");
      if (next) location = this.resolve(next);
      progress?.(digester.size);
    };
    for await (const data of stream) {
      digester.update(data);
      pending.push(data);
      pendingSize += data.length;
      if (pendingSize >= chunk) await flush();
    }
    await flush();
    const digest = digester.digest();
    const response = await this.request("PUT", RegistryClient.withDigest(location, digest), { headers: { "content-length": "0" } });
    await this.closeUpload(response, digest);
    return { digest, size: digester.size };
  }

  private async closeUpload(response: Response, digest: string): Promise<void> {
    if (response.status !== 201) throw await this.failed(`uploading blob ${digest}`, response);
    await response.arrayBuffer().catch(() => {});
    const said = response.headers.get("docker-content-digest");
    if (said && said !== digest) throw this.fail(`registry ${this.ref.registry} stored blob ${digest} as ${said}`);
  }

  /**
   * Downloads blob DIGEST of SIZE bytes into FILE (created exclusively, never through a
   * link), hashed while it streams: a blob that is longer than its descriptor says, or
   * whose content does not match its digest, is refused (FILE is then removed by the caller's work directory).
   */
  async pullBlob(digest: string, size: number, file: string, progress?: Progress): Promise<void> {
    const response = await this.request("GET", `/v2/${this.ref.repository}/blobs/${digest}`);
    if (response.status === 404) throw this.fail(`registry ${this.ref.registry}: ${this.ref.repository} has no blob ${digest}`);
    if (!response.ok || !response.body) throw await this.failed(`downloading blob ${digest}`, response);
    const digester = new Digester();
    const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      for await (const data of response.body) {
        digester.update(data);
        if (digester.size > size) throw this.fail(`blob ${digest} from ${this.where} is longer than its ${size} bytes: refused, nothing was created`);
        for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done);
        progress?.(digester.size, size);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (digester.size !== size) throw this.fail(`blob ${digest} from ${this.where} came ${digester.size} of ${size} bytes: refused, nothing was created`);
    if (digester.digest() !== digest) throw this.fail(`blob ${digest} from ${this.where} does not match its digest (tampered with or corrupted): refused, nothing was created`);
  }

  /** A small blob (a config) of at most LIMIT bytes, checked against its digest. */
  async blobBytes(digest: string, limit = 4 << 20): Promise<Buffer> {
    const response = await this.request("GET", `/v2/${this.ref.repository}/blobs/${digest}`);
    if (!response.ok) throw await this.failed(`downloading blob ${digest}`, response);
    const body = await readLimited(response, limit, () => this.fail(`blob ${digest} from ${this.where} is bigger than ${limit} bytes`));
    const digester = new Digester();
    digester.update(body);
    if (digester.digest() !== digest) throw this.fail(`blob ${digest} from ${this.where} does not match its digest (tampered with or corrupted): refused, nothing was created`);
    return body;
  }

  /** The manifest REFERENCE (a tag or digest) points at, checked against its digest; undefined when there is none. */
  async getManifest(reference: string): Promise<{ digest: string; mediaType: string; body: Buffer } | undefined> {
    const response = await this.request("GET", `/v2/${this.ref.repository}/manifests/${reference}`, { headers: { accept: acceptManifests } });
    if (response.status === 404) {
      await response.arrayBuffer().catch(() => {});
      return undefined;
    }
    if (!response.ok) throw await this.failed(`reading manifest ${reference}`, response);
    const body = await readLimited(response, 4 << 20, () => this.fail(`the manifest ${reference} of ${this.where} is bigger than 4 MiB`));
    const digester = new Digester();
    digester.update(body);
    const digest = digester.digest();
    if (digestPattern.test(reference) && digest !== reference) throw this.fail(`manifest ${reference} from ${this.where} does not match its digest (tampered with or corrupted): refused, nothing was created`);
    return { digest, mediaType: (response.headers.get("content-type") ?? "").split(";")[0]!.trim(), body };
  }

  /** The digest TAG points at now; undefined when the tag does not exist. */
  async manifestDigest(reference: string): Promise<string | undefined> {
    const response = await this.request("HEAD", `/v2/${this.ref.repository}/manifests/${reference}`, { headers: { accept: acceptManifests } });
    if (response.status === 404) return undefined;
    if (!response.ok) throw await this.failed(`checking manifest ${reference}`, response);
    const said = response.headers.get("docker-content-digest");
    if (said && digestPattern.test(said)) return said;
    return (await this.getManifest(reference))?.digest;
  }

  /** Stores BODY (MEDIATYPE) as REFERENCE (a tag, or its digest); resolves to its digest. */
  async putManifest(reference: string, mediaType: string, body: Uint8Array): Promise<string> {
    const response = await this.request("PUT", `/v2/${this.ref.repository}/manifests/${reference}`, { headers: { "content-type": mediaType, "content-length": String(body.length) }, body: () => new Blob([Uint8Array.from(body)]) });
    if (response.status !== 201) throw await this.failed(`pushing manifest ${reference}`, response);
    await response.arrayBuffer().catch(() => {});
    const digester = new Digester();
    digester.update(body);
    return digester.digest();
  }
}

/** RESPONSE's body, at most LIMIT bytes (else TOOBIG's error). */
async function readLimited(response: Response, limit: number, tooBig: () => Error): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (!response.body) return Buffer.alloc(0);
  for await (const data of response.body) {
    size += data.length;
    if (size > limit) throw tooBig();
    chunks.push(data);
  }
  return Buffer.concat(chunks, size);
}
