#!/bin/sh
# agentenv-exec: the in-container half of `agentenv exec` and of the wrappers
# `agentenv wrap` writes. The engine's `exec` runs it in a long-running
# environment container (agentenv up), in the directory mapped from the host.
#
#   agentenv-exec [CMD [ARG...]]   no CMD: the environment's login shell
#
# A process exec'd into a container does not descend from its entrypoint, so
# this gives CMD what the entrypoint gives a session: the secrets (kept in the
# handoff directory while the container runs), the environment's tools first
# on PATH, its shell as SHELL, and on request a flake's dev shell.
#
# Environment (the engine's exec -e):
#   AGENTENV_NIX_DEVELOP=auto    the dev shell of the nearest flake.nix from
#                                the directory up, when there is one
#                       =always  the same, and no flake.nix is an error
#                       =never   (or unset) no dev shell
#   AGENTENV_WORKTREE=BRANCH     run in a git worktree of BRANCH at
#                                ~/Code/<project>/<BRANCH> in the home, made
#                                (or reused) from the git project holding the
#                                directory; the same subdirectory is entered
set -eu

# shellcheck source=lib/session.sh
. /usr/local/lib/agentenv/session.sh
agentenv_secrets keep
agentenv_path
agentenv_shell

die() {
	echo "agentenv: $1" >&2
	exit 2
}

if [ -n "${AGENTENV_WORKTREE:-}" ]; then
	branch=$AGENTENV_WORKTREE
	unset AGENTENV_WORKTREE
	git check-ref-format --branch "$branch" >/dev/null 2>&1 || die "--worktree $branch: not a valid branch name"
	top=$(git rev-parse --show-toplevel 2>/dev/null) || die "--worktree: $PWD is not in a git project"
	sub=$(git rev-parse --show-prefix)
	# the project's main worktree, also when $PWD is in a linked one
	common=$(git rev-parse --path-format=absolute --git-common-dir)
	case $common in
	*/.git) main=${common%/.git} ;;
	*) die "--worktree: $top is not a project with a .git directory (a bare or unusual repository)" ;;
	esac
	project=${main##*/}
	dir=$HOME/Code/$project/$branch
	if [ -e "$dir/.git" ]; then
		theirs=$(git -C "$dir" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || theirs=
		[ "$theirs" = "$common" ] || die "$dir is a worktree of another repository (${theirs:-unknown}), not of $main"
	else
		mkdir -p "${dir%/*}"
		{
			if git -C "$main" show-ref --verify --quiet "refs/heads/$branch"; then
				git -C "$main" worktree add "$dir" "$branch"
			elif git -C "$main" show-ref --verify --quiet "refs/remotes/origin/$branch"; then
				git -C "$main" worktree add --track -b "$branch" "$dir" "origin/$branch"
			else
				git -C "$main" worktree add -b "$branch" "$dir"
			fi
			# the host sees no directory at this path: locked, so a `git worktree
			# prune` (or gc) there never drops it
			git -C "$main" worktree lock --reason "agentenv: in the home of environment ${AGENTENV_ENV:-(none)}" "$dir"
		} >&2 || die "could not make a worktree of $branch at $dir"
	fi
	if [ -n "$sub" ] && [ -d "$dir/$sub" ]; then
		cd "$dir/$sub"
	else
		cd "$dir"
	fi
	unset branch top sub common main project dir theirs
fi

dev=
case ${AGENTENV_NIX_DEVELOP:-never} in
never | "") ;;
auto | always)
	_d=$PWD
	while :; do
		if [ -e "${_d:-/}/flake.nix" ]; then
			dev=${_d:-/}
			break
		fi
		if [ -z "$_d" ] || [ "$_d" = / ]; then
			break
		fi
		_d=${_d%/*}
	done
	unset _d
	if [ -z "$dev" ] && [ "$AGENTENV_NIX_DEVELOP" = always ]; then
		die "no flake.nix in $PWD or above it (nix-develop: always)"
	fi
	;;
*) die "AGENTENV_NIX_DEVELOP=$AGENTENV_NIX_DEVELOP: use auto, always or never" ;;
esac
unset AGENTENV_NIX_DEVELOP

agentenv_launch "$dev" "$@"
