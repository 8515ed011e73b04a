# /usr/local/lib/agentenv/session.sh — sourced, never run, by agentenv-entrypoint
# (a session's first process) and agentenv-exec (a process exec'd into a
# long-running environment container): how both put the environment on PATH,
# choose the shell and start the command. POSIX sh, builtins only: no forks.

# Secrets reach a session through the handoff directory (never the engine's
# container config): sourced here. DELETE=1 removes the file once read.
agentenv_secrets() {
	if [ -r /run/agentenv/handoff/secrets.env ]; then
		# shellcheck source=/dev/null
		. /run/agentenv/handoff/secrets.env
		if [ "$1" = delete ]; then
			rm -f /run/agentenv/handoff/secrets.env
		fi
	fi
}

# The home's own commands first: ~/.local/bin (where agent CLIs install
# themselves), then the tools of ~/flake.nix (installed into its profile).
agentenv_path() {
	for _bin in "$HOME/.local/state/agentenv/profile/bin" "$HOME/.local/bin"; do
		if [ -d "$_bin" ]; then
			case ":$PATH:" in
			*":$_bin:"*) ;;
			*) PATH=$_bin:$PATH ;;
			esac
		fi
	done
	unset _bin
	export PATH
}

# Sets $shell to the first executable match of NAME (a path, or looked up in
# PATH) without `command -v` in a subshell (dash forks for $(...)).
agentenv_pick_shell() {
	case $1 in
	*/*)
		[ -x "$1" ] && shell=$1
		return
		;;
	esac
	_ifs=$IFS
	IFS=:
	for _dir in $PATH; do
		if [ -x "${_dir:-.}/$1" ]; then
			shell=${_dir:-.}/$1
			break
		fi
	done
	IFS=$_ifs
	unset _ifs _dir
	[ -n "$shell" ]
}

# Sets $shell and SHELL: AGENTENV_SHELL, else the environment's choice
# (~/.local/state/agentenv/shell), else zsh, else bash, else sh.
agentenv_shell() {
	if [ -z "${AGENTENV_SHELL:-}" ] && [ -r "$HOME/.local/state/agentenv/shell" ]; then
		read -r AGENTENV_SHELL <"$HOME/.local/state/agentenv/shell" || true
	fi
	shell=
	if [ -n "${AGENTENV_SHELL:-}" ]; then
		if ! agentenv_pick_shell "$AGENTENV_SHELL"; then
			echo "agentenv: AGENTENV_SHELL=$AGENTENV_SHELL: not found, using /bin/sh" >&2
			shell=/bin/sh
		fi
	else
		agentenv_pick_shell zsh || agentenv_pick_shell bash || shell=/bin/sh
	fi
	SHELL=$shell
	export SHELL
}

# agentenv_launch DEV [CMD ARG...]: replaces this process with CMD, or with a
# shell when there is none; inside the dev shell of the flake in DEV when DEV
# is not empty.
#
# The dev shell is `nix develop DEV --command ...` done by hand: `nix
# print-dev-env` prints the very script nix develop runs (variables,
# shellHook), bash evaluates it and execs the command. Why not nix develop
# itself: it also looks up nixpkgs#bashInteractive to run that script, and for
# a flake without a nixpkgs input (offline registry) it prints "error
# (ignored): cannot find flake 'flake:nixpkgs'" every time. The dev env sets
# SHELL=bash; env puts the chosen shell back. No CMD: the shell is not a login
# shell there, as /etc/profile would reset the dev PATH.
agentenv_launch() {
	_dev=$1
	shift
	if [ -z "$_dev" ]; then
		if [ "$#" -eq 0 ]; then
			# A login shell reads /etc/profile (PATH) and then the interactive
			# config (zshrc; bash.bashrc via Debian's /etc/profile).
			exec "$shell" -l
		fi
		exec "$@"
	fi
	if [ "$#" -eq 0 ]; then
		set -- "$shell"
	fi
	# shellcheck disable=SC2016 # $0 and $@ belong to the bash script
	exec bash -c '__agentenv_env=$(nix print-dev-env "$0") || exit
eval "$__agentenv_env"
unset __agentenv_env
exec "$@"' "$_dev" env SHELL="$shell" "$@"
}
