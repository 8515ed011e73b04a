#!/bin/sh
# agentenv-install-tools [--force]: installs the default package of ~/flake.nix
# into this environment's own Nix profile, ~/.local/state/agentenv/profile
# (inside the home, so one environment's tools never reach another's PATH).
# The entrypoint runs it when ~/flake.nix or ~/flake.lock changed; run it by
# hand with --force to reinstall anyway.
#
# Only flake.nix and flake.lock are built (copied to a directory of their own):
# building ~ itself would copy the whole home into the Nix store. Keep the
# tools flake self-contained. The content hash is recorded only after a
# successful install, so a failed one is retried by the next session.
set -eu

state=$HOME/.local/state/agentenv
force=
case ${1:-} in
--force) force=1 ;;
"") ;;
*)
	echo "usage: agentenv-install-tools [--force]" >&2
	exit 2
	;;
esac
if [ ! -e "$HOME/flake.nix" ]; then
	echo "agentenv-install-tools: there is no ~/flake.nix to install" >&2
	exit 1
fi
mkdir -p "$state"

# Two sessions of one environment starting together: the second waits, then
# finds the hash recorded and makes no Nix call.
exec 9>"$state/tools.lock"
flock 9

hash=$(cat "$HOME/flake.nix" "$HOME/flake.lock" 2>/dev/null | sha256sum)
hash=${hash%% *}
recorded=
if [ -r "$state/tools.hash" ]; then
	read -r recorded <"$state/tools.hash" || true
fi
if [ -z "$force" ] && [ "$hash" = "$recorded" ] && [ -e "$state/profile" ]; then
	# only touched (or just installed by another session): note it, no Nix call
	printf '%s\n' "$hash" >"$state/tools.hash"
	exit 0
fi

echo "agentenv: installing your tools from ~/flake.nix…" >&2
rm -f "$state/tools.hash"
rm -rf "$state/flake"
mkdir -p "$state/flake"
cp "$HOME/flake.nix" "$state/flake/flake.nix"
if [ -e "$HOME/flake.lock" ]; then
	cp "$HOME/flake.lock" "$state/flake/flake.lock"
fi
nix build --no-link --no-write-lock-file --profile "$state/profile" "path:$state/flake#default"
printf '%s\n' "$hash" >"$state/tools.hash"
echo "agentenv: tools installed ($state/profile)" >&2
