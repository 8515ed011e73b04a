#!/bin/sh
# agentenv-entrypoint: the in-container half of a session.
#
#   (no arguments)  interactive shell
#   CMD [ARG...]    run CMD in place of this script (exit code, signals and
#                   the terminal pass straight through: everything ends in exec)
#
# Environment, set by the host side:
#   AGENTENV_NIX_DEVELOP=DIR  run inside the dev shell of the flake in DIR
#                             (what `nix develop DIR --command ...` gives)
#   AGENTENV_SHELL=SHELL      shell for interactive sessions and $SHELL
#                             (default: the environment's choice, else zsh,
#                             else bash, else sh)
#   AGENTENV_ACTIVATE=FILE    a legacy profile's activate.sh: run in HOME
#                             before anything else (agentenv --profile DIR)
#   AGENTENV_STRICT=1         a failed home setup (dotfiles, tools) ends the
#                             session instead of a warning
#   AGENTENV_DOTFILES=update  pull the dotfiles repo and set it up again now
#                             (agentenv env update)
#   AGENTENV_UP=1             a long-running environment container (agentenv
#                             up): secrets.env stays in the handoff directory
#                             for agentenv-exec, and CMD is agentenv-keepalive
#
# The handoff directory, /run/agentenv/handoff, holds what the host passes
# outside the container's configuration: secrets.env (sourced, then deleted,
# before anything else; kept with AGENTENV_UP) and the decrypted overlay
# (agentenv-dotfiles deletes it).
#
# The environment (HOME): agentenv's own state in it lives in
# ~/.local/state/agentenv/ — `shell` (the environment's shell), `last-used`
# (touched here), and what agentenv-dotfiles and agentenv-install-tools keep.
# With a dotfiles repo or an overlay, agentenv-dotfiles applies them when they
# changed. Then, when the content of ~/flake.nix (and ~/flake.lock) differs
# from the last install, or the installed profile is gone,
# agentenv-install-tools installs it; otherwise no Nix call is made. The
# profile's bin/ comes first on PATH. A home with a ~/.bashrc but no
# ~/.bash_profile, ~/.bash_login or ~/.profile gets a ~/.bash_profile that
# sources it, so login shells read it.
#
# Hooks: every /etc/agentenv/entrypoint.d/*.sh is sourced first, in name
# order, by this POSIX sh with `set -eu` in force. Hooks may export variables
# or change AGENTENV_* but must not exit or exec.
#
# This runs on every session: keep it to shell builtins (no forks), except
# where a home's ~/flake.nix needs its hash checked. What it shares with
# agentenv-exec (PATH, the shell, the dev shell) is in lib/session.sh.
set -eu

for hook in /etc/agentenv/entrypoint.d/*.sh; do
	# An unmatched glob stays literal; skip it.
	[ -e "$hook" ] || continue
	# shellcheck source=/dev/null
	. "$hook"
done
unset hook

# shellcheck source=lib/session.sh
. /usr/local/lib/agentenv/session.sh
handoff=/run/agentenv/handoff
if [ -n "${AGENTENV_UP:-}" ]; then
	# a long-running container: every agentenv-exec into it reads them again
	agentenv_secrets keep
else
	agentenv_secrets delete
fi

# A failed setup step: a warning, or with AGENTENV_STRICT the end of the session.
# $2: what happens next time, for the warning.
setup_failed() {
	if [ -n "${AGENTENV_STRICT:-}" ]; then
		echo "agentenv: $1 failed; not opening the session (strict)" >&2
		exit 1
	fi
	echo "agentenv: $1 failed; this session runs without it ($2)" >&2
}

# agentenv-dotfiles runs in the background and is waited for: init passes a signal
# to this shell alone, and a shell runs its trap only once its foreground command
# has ended. The trap passes the signal on as SIGTERM; the session then ends with
# 128+N, nothing recorded as applied. Its stdin is this shell's (through fd 8: a
# background command's own would be /dev/null), so a setup can ask its questions
# on the session's terminal.
run_dotfiles() {
	exec 8<&0
	agentenv-dotfiles "$@" 0<&8 8<&- &
	_dotfiles=$!
	_signal=
	trap '_signal=130; kill -TERM "$_dotfiles" 2>/dev/null || true' INT
	trap '_signal=143; kill -TERM "$_dotfiles" 2>/dev/null || true' TERM
	trap '_signal=129; kill -TERM "$_dotfiles" 2>/dev/null || true' HUP
	_status=0
	wait "$_dotfiles" || _status=$?
	# a trap cut the wait short: wait for it to stop
	while [ -n "$_signal" ] && kill -0 "$_dotfiles" 2>/dev/null; do
		_status=0
		wait "$_dotfiles" || _status=$?
	done
	trap - INT TERM HUP
	exec 8<&-
	if [ -n "$_signal" ]; then
		echo "agentenv: stopped during the dotfiles setup (signal $((_signal - 128))); nothing of it is recorded as applied" >&2
		exit "$_signal"
	fi
	unset _dotfiles _signal
	return "$_status"
}

if [ -n "${AGENTENV_ACTIVATE:-}" ]; then
	# its output goes to stderr: `agentenv run` output stays the command's own
	if [ -x "$AGENTENV_ACTIVATE" ]; then
		(cd "$HOME" && "$AGENTENV_ACTIVATE") >&2 || echo "agentenv: $AGENTENV_ACTIVATE failed (exit $?); continuing" >&2
	elif [ -r "$AGENTENV_ACTIVATE" ]; then
		(cd "$HOME" && sh "$AGENTENV_ACTIVATE") >&2 || echo "agentenv: $AGENTENV_ACTIVATE failed (exit $?); continuing" >&2
	fi
fi

state=$HOME/.local/state/agentenv
if [ -d "$state" ]; then
	# a redirection of a regular builtin: no fork, and a read-only home only skips it
	true 2>/dev/null >"$state/last-used" || true
fi
if [ -r "$state/dotfiles.conf" ] || [ -e "$handoff/overlay.hash" ]; then
	_update=
	if [ "${AGENTENV_DOTFILES:-}" = update ]; then
		_update=--update
	fi
	_status=0
	run_dotfiles $_update || _status=$?
	case $_status in
	0) ;;
	# interrupted at the terminal (agentenv-dotfiles said so): the session ends as Ctrl-C ends it
	130) exit 130 ;;
	*)
		if [ -n "$_update" ]; then
			# agentenv env update: its whole point, so a failure ends it (strict or not)
			echo "agentenv: the dotfiles update failed" >&2
			exit 1
		fi
		if [ "$_status" -eq 3 ] && [ -z "${AGENTENV_STRICT:-}" ]; then
			: # the last failure stands, said in one line already
		else
			setup_failed "the dotfiles setup" "not run again with the same inputs for a day; agentenv env update ${AGENTENV_ENV:-NAME} runs it now"
		fi
		;;
	esac
	unset _update _status
fi
if [ -d "$state" ] && [ -e "$HOME/.bashrc" ] && [ ! -e "$HOME/.bash_profile" ] && [ ! -e "$HOME/.bash_login" ] && [ ! -e "$HOME/.profile" ]; then
	printf '%s\n' '# written by agentenv: login shells read this file, not ~/.bashrc' '[ -r ~/.bashrc ] && . ~/.bashrc' 2>/dev/null >"$HOME/.bash_profile" || true
fi
if [ -e "$HOME/flake.nix" ]; then
	# The one fork on this path: a content hash (file times miss a restored
	# backup, and an edit made while another session installs).
	hash=$(cat "$HOME/flake.nix" "$HOME/flake.lock" 2>/dev/null | sha256sum)
	recorded=
	if [ -r "$state/tools.hash" ]; then
		read -r recorded <"$state/tools.hash" || true
	fi
	if [ "${hash%% *}" != "$recorded" ] || [ ! -e "$state/profile" ]; then
		agentenv-install-tools || setup_failed "installing the tools of ~/flake.nix" "the next session retries"
	fi
	unset hash recorded
fi
agentenv_path
agentenv_shell
agentenv_launch "${AGENTENV_NIX_DEVELOP:-}" "$@"
