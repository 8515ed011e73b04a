#!/bin/sh
# agentenv-install-tools [--force] [--from DIR]: installs the default package of ~/flake.nix
# into this environment's own Nix profile, ~/.local/state/agentenv/profile
# (inside the home, so one environment's tools never reach another's PATH).
# The entrypoint runs it when ~/flake.nix or ~/flake.lock changed; run it by
# hand with --force to reinstall anyway.
#
# Only flake.nix and flake.lock are built (copied to a directory of their own):
# building ~ itself would copy the whole home into the Nix store. Keep the
# tools flake self-contained. The content hash is recorded only after a
# successful install, so a failed one is retried by the next session.
#
# --from DIR builds DIR/flake.nix and DIR/flake.lock instead: agentenv's copy
# of the user's tools flake, installed before an untrusted project's session
# (see plugins/env/tools.ts), whatever that project made of ~/flake.nix.
set -eu

state=$HOME/.local/state/agentenv
force=
from=$HOME
while [ $# -gt 0 ]; do
	case $1 in
	--force) force=1 ;;
	--from)
		[ $# -gt 1 ] || {
			echo "usage: agentenv-install-tools [--force] [--from DIR]" >&2
			exit 2
		}
		from=$2
		shift
		;;
	*)
		echo "usage: agentenv-install-tools [--force] [--from DIR]" >&2
		exit 2
		;;
	esac
	shift
done
if [ ! -e "$from/flake.nix" ]; then
	echo "agentenv-install-tools: there is no $from/flake.nix to install" >&2
	exit 1
fi
mkdir -p "$state"

# Two sessions of one environment starting together: the second waits, then
# finds the same hash recorded and makes no Nix call.
exec 9>"$state/tools.lock"
flock 9

# Build from a copy of the two files, hashed as copied: an edit made while the
# build runs is not recorded as installed, so the next session picks it up.
rm -rf "$state/flake.new"
mkdir -p "$state/flake.new"
cp "$from/flake.nix" "$state/flake.new/flake.nix"
if [ -e "$from/flake.lock" ]; then
	cp "$from/flake.lock" "$state/flake.new/flake.lock"
fi
hash=$(cat "$state/flake.new/flake.nix" "$state/flake.new/flake.lock" 2>/dev/null | sha256sum)
hash=${hash%% *}
recorded=
if [ -r "$state/tools.hash" ]; then
	read -r recorded <"$state/tools.hash" || true
fi
if [ -z "$force" ] && [ "$hash" = "$recorded" ] && [ -e "$state/profile" ]; then
	# installed meanwhile by another session of this environment
	rm -rf "$state/flake.new"
	exit 0
fi

echo "agentenv: installing your tools from ~/flake.nix…" >&2
rm -f "$state/tools.hash"
rm -rf "$state/flake"
mv "$state/flake.new" "$state/flake"
nix build --no-link --no-write-lock-file --profile "$state/profile" "path:$state/flake#default"
printf '%s\n' "$hash" >"$state/tools.hash"
echo "agentenv: tools installed ($state/profile)" >&2
