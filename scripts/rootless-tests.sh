#!/usr/bin/env bash
# The rootless part of the suite (`bun run test:rootless`, run as root, after bin/setup):
# makes a normal user as a new machine would have one, sets agentenv up for them with
# bin/setup in their own clone, and runs the marked tests as them on rootless Podman.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
user=${AGENTENV_TEST_USER:-agentenv-test}
[ "$(id -u)" -eq 0 ] || { echo "rootless-tests: run as root (it creates the user $user)" >&2; exit 1; }
say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

# a normal user; Debian's useradd gives it subordinate id ranges itself
if ! id "$user" >/dev/null 2>&1; then
  say "creating user $user"
  useradd --create-home --shell /bin/bash "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
grep -q "^$user:" /etc/subuid || usermod --add-subuids 200000-265535 --add-subgids 200000-265535 "$user"
# rootless networking and fuse-overlayfs open these; udev makes them 0666 on a desktop,
# a bare machine leaves them root-only
for dev in /dev/net/tun /dev/fuse; do [ -e "$dev" ] && chmod 666 "$dev"; done

# the user's own copy of this working tree (what git tracks or would track: uncommitted
# changes included), set up by bin/setup as the user; Bun and the dependencies are copied
# from this checkout (no second download), the rest is bin/setup's own work
clone="$home/agentenv"
rm -rf "$clone"
mkdir -p "$clone"
git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$clone"
cp -a "$repo/.tools" "$repo/node_modules" "$clone/"
chown -R "$user:" "$clone"
# bin/setup first (it writes the user's Podman storage config before Podman's first use,
# which fixes the storage driver), then the images, then bin/setup again: nothing to do
say "bin/setup as $user"
su - "$user" -c "cd '$clone' && AGENTENV_SETUP_IMAGE=skip bin/setup"
# the images the tests boot, from root's store (building them again would take minutes)
# (again when root's differs: a rebuilt image, e.g. with attach's helper, must reach the user)
for image in localhost/agentenv:latest localhost/agentenv-base:bookworm; do
  if podman image exists "$image" && [ "$(podman image inspect --format '{{.Id}}' "$image")" != "$(su - "$user" -c "podman image inspect --format '{{.Id}}' $image" 2>/dev/null)" ]; then
    say "loading $image into $user's rootless store"
    podman save "$image" | su - "$user" -c "podman load -q" >/dev/null
  fi
done
su - "$user" -c "cd '$clone' && bin/setup"

say "rootless tests as $user"
su - "$user" -c "cd '$clone' && PATH=\"$clone/.tools/bin:\$PATH\" bun test --timeout 180000 \
  test/integration/rootless.test.ts test/integration/session.test.ts test/integration/store.test.ts \
  test/integration/env.test.ts test/integration/up.test.ts test/integration/userns.test.ts \
  test/integration/attach.test.ts test/integration/registry.test.ts"
