#!/usr/bin/env bash
# The remote machine of test/integration/remote.test.ts, as far as one box allows: a
# dedicated user (agentenv-remote) with a password-less but unlocked account (sshd without
# PAM refuses locked ones), subordinate ids and its own rootless Podman (own storage, own
# home, mode 0700; it cannot read root's files). sshd itself is started by the test, on a
# free loopback port with a host key it makes. Idempotent; run as root (the test does).
set -euo pipefail
user=${AGENTENV_REMOTE_TEST_USER:-agentenv-remote}
[ "$(id -u)" -eq 0 ] || { echo "remote-test-host: run as root (it creates the user $user)" >&2; exit 1; }
for tool in /usr/sbin/sshd sshfs podman; do
  command -v "$tool" >/dev/null || { echo "remote-test-host: $tool is missing: run bin/setup (it installs openssh-server and sshfs)" >&2; exit 1; }
done
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
fi
# unlocked without a password: key login only
usermod -p '*' "$user"
# a range of its own, clear of other users' (Debian's useradd may have given one already)
if ! grep -q "^$user:" /etc/subuid; then
  start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' /etc/subuid)
  usermod --add-subuids "$start-$((start + 65535))" --add-subgids "$start-$((start + 65535))" "$user"
fi
grep -q "^$user:" /etc/subgid || { start=$(grep "^$user:" /etc/subuid | cut -d: -f2); usermod --add-subgids "$start-$((start + 65535))" "$user"; }
home=$(getent passwd "$user" | cut -d: -f6)
chmod 700 "$home"
conf="$home/.config/containers"
mkdir -p "$conf"
# before its Podman's first use: overlay storage (else vfs, seconds per run), runc, and
# ulimits this sandbox grants (the same ones bin/setup found for root's Podman)
# a home on overlayfs (this machine is itself a container): the kernel's overlay cannot stack on
# it for a normal user, so Podman mounts its layers with fuse-overlayfs (bin/setup installs it there)
if [ ! -e "$conf/storage.conf" ]; then
  if [ "$(stat -f -c %T "$home")" = overlayfs ]; then
    command -v fuse-overlayfs >/dev/null || { echo "remote-test-host: $home is on overlayfs and fuse-overlayfs is missing: run bin/setup" >&2; exit 1; }
    printf '[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmount_program = "%s"\n' "$(command -v fuse-overlayfs)" > "$conf/storage.conf"
  else
    printf '[storage]\ndriver = "overlay"\n' > "$conf/storage.conf"
  fi
fi
if [ ! -e "$conf/containers.conf" ]; then
  limits=$(grep -h '^default_ulimits' /etc/containers/containers.conf 2>/dev/null | head -n 1)
  printf '[containers]\n%s\n[engine]\nruntime = "runc"\n' "${limits:-default_ulimits = [\"nofile=20000:20000\", \"nproc=20000:20000\"]}" > "$conf/containers.conf"
fi
chown -R "$user:" "$home/.config"
# sshd's privilege separation directory; FUSE and rootless networking for a plain user
mkdir -p /run/sshd && chmod 755 /run/sshd
for dev in /dev/fuse /dev/net/tun; do [ -e "$dev" ] && chmod 666 "$dev"; done
echo "$user"
