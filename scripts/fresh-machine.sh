#!/usr/bin/env bash
# The README's two commands on a brand-new machine of this project's kind, from nothing.
#
# The "machine" is a throwaway container built from a minimal Debian bookworm holding only
# what a new machine of this kind has: Node + npm, git, the docker client with no daemon
# behind it, and this host's CA bundle and npm settings (how this kind reaches its
# registries). No Podman, no runc, no Nix, no containers.conf, no Bun. It runs privileged,
# so the Podman that bin/setup installs inside can run containers of its own, with its
# storage on a fresh volume. In it, a clean clone of this repository's HEAD runs:
#   bin/setup && agentenv run . -- true     (README, command 1)
#   bun run test                            (README, command 2)
#   bin/setup                               (again: must change nothing)
# and the times of each are printed. Run as root after bin/setup (it needs this host's
# Podman and the Debian base image that `agentenv image build` made or pulled).
# Usage: scripts/fresh-machine.sh [--keep]   (--keep: keep the machine's image and storage)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'fresh-machine: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: the machine is a privileged container"
command -v podman >/dev/null || die "no podman here: run bin/setup first"
keep=
[ "${1:-}" = --keep ] && keep=1

base=
for ref in docker.io/library/debian:bookworm-slim localhost/agentenv-base:bookworm; do
  podman image exists "$ref" && { base=$ref; break; }
done
[ -n "$base" ] || die "no Debian bookworm base image here: run bin/setup (agentenv image build makes one)"

machine=localhost/agentenv-fresh-machine:latest
storage="agentenv-fresh-machine-$$"
context=$(mktemp -d)
cleanup() {
  rm -rf "$context"
  podman rm -f "agentenv-fresh-machine-$$" >/dev/null 2>&1 || true
  podman volume rm -f "$storage" >/dev/null 2>&1 || true
  [ -n "$keep" ] || podman rmi -f "$machine" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the machine: minimal Debian + what this kind starts with ---------------------------
cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
[ -f "$HOME/.npmrc" ] && cp "$HOME/.npmrc" "$context/npmrc" || : > "$context/npmrc"
docker=$(command -v docker || true)
if [ -n "$docker" ]; then cp "$docker" "$context/docker"; else printf '#!/bin/sh\necho "docker: no such engine" >&2; exit 1\n' > "$context/docker"; fi
cat > "$context/Containerfile" <<EOF
FROM $base
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      nodejs npm git ca-certificates python3 make g++ procps >/dev/null && rm -rf /var/lib/apt/lists/*
# this kind reaches its registries through a TLS-inspecting proxy: its CA bundle and npm settings
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY npmrc /root/.npmrc
COPY docker /usr/local/bin/docker
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt GIT_SSL_CAINFO=/etc/ssl/certs/ca-certificates.crt
WORKDIR /root
EOF
say "building the new machine ($machine) from $base"
podman build -q -t "$machine" "$context" >/dev/null

# --- the README's commands, inside ---------------------------------------------------------
say "on the new machine: a clean clone of HEAD ($(git rev-parse --short HEAD)), bin/setup, agentenv run, bun run test, bin/setup again"
podman volume create "$storage" >/dev/null
# slirp4netns: a network of its own, not Podman's 10.88.0.0/16, which the Podman inside uses too
podman run --rm --privileged --network slirp4netns --name "agentenv-fresh-machine-$$" --hostname fresh-machine \
  -v "$storage:/var/lib/containers" -v "$repo:/src:ro" "$machine" bash -euo pipefail -c '
    say() { printf "\033[1m[fresh machine]\033[0m %s\n" "$*" >&2; }
    for gone in podman runc nix-daemon bun agentenv; do ! command -v $gone >/dev/null || { echo "not a new machine: $gone is installed" >&2; exit 1; }; done
    [ ! -e /etc/containers/containers.conf ] && [ ! -e /nix ] || { echo "not a new machine: engine config or /nix present" >&2; exit 1; }
    ! docker version >/dev/null 2>&1 || { echo "not a new machine: a docker daemon answers" >&2; exit 1; }
    git clone -q /src agentenv && cd agentenv
    t0=$(date +%s)
    bin/setup
    agentenv run . -- true
    t1=$(date +%s)
    say "bin/setup && agentenv run . -- true: $((t1 - t0)) s"
    bun run test
    t2=$(date +%s)
    say "bun run test: $((t2 - t1)) s"
    fingerprint() { cat /etc/containers/containers.conf; readlink /usr/local/bin/agentenv /usr/local/bin/bun; stat -c %Y dist/agentenv; podman images --format "{{.Id}} {{.Repository}}:{{.Tag}}" | sort; dpkg -l | sha256sum; }
    before=$(fingerprint)
    second=$( { time -p bin/setup; } 2>&1 )
    printf "%s\n" "$second" | grep -v "^\(real\|user\|sys\) " >&2
    changed=$(printf "%s\n" "$second" | grep -E "==>.*(installing|writing|lowered|get at most|linked|building)" || true)
    [ -z "$changed" ] || { echo "the second bin/setup changed something: $changed" >&2; exit 1; }
    [ "$before" = "$(fingerprint)" ] || { echo "the second bin/setup changed the machine" >&2; exit 1; }
    say "second bin/setup changed nothing: $(printf "%s\n" "$second" | sed -n "s/^real //p") s"
  '
say "the README's two commands pass on a new machine"
