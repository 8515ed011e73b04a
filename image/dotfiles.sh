#!/bin/sh
# agentenv-dotfiles [--update]: applies this environment's dotfiles repo and overlay.
#
#   1. clone the repo (shallow, the configured ref) into ~/.dotfiles, or move an
#      unchanged checkout to the ref's new commit;
#   2. set it up. A manager places the repo's files into ~ (lib/dotfiles.py: plain,
#      rcm, stow, chezmoi — agentenv's own, nothing downloaded) when one is chosen
#      (manager=), or setup=none says so, or the repo has no setup script; then the
#      setup command runs: setup= (a program of the repo, or one on PATH, with its
#      arguments), else — no manager chosen — the first that exists of install.sh
#      install bootstrap.sh bootstrap script/bootstrap setup.sh setup script/setup;
#   3. write the overlay's files into ~ (they win over the repo's).
#
# The setup command runs attached to the session's terminal when it has one (its
# questions are asked there; `script` keeps its output for the log), else with an
# empty stdin whose reading is noticed: a setup that wanted input then "needs a
# terminal". It is stopped after timeout= seconds (default 600). What the setup
# changed in ~ is counted (lib/dotfiles.py snapshot/diff) and said; a setup that
# changed nothing is a warning. The last result is kept in dotfiles.result (env show).
#
# It does all that only when its inputs changed since the last success: URL, ref,
# the ref's commit, setup, manager, overlay. Their hash is recorded after a success
# only (dotfiles.hash). A setup that failed is not run again with the same inputs for
# a day, except with --update, or in a terminal when it failed for the want of one.
#
# Read from ~/.local/state/agentenv/dotfiles.conf (written by agentenv env
# create/set: url=, ref=, setup=, local=, manager=, timeout=) and from the session's
# handoff directory (overlay/, overlay.hash), which the host fills; a repo on the
# host's disk is mounted read-only where local= says; AGENTENV_HOST_HOSTNAME names
# the machine (rcm's host-* directories). The entrypoint runs this in the background
# and passes its signals on as SIGTERM.
#
# Exit: 0 done or nothing to do; 1 failed (the reason said); 3 the last failure
# stands (said in one line); 130 interrupted at the terminal; 143 stopped by SIGTERM.
# Neither of the last two records anything as applied.
set -eu

state=$HOME/.local/state/agentenv
handoff=/run/agentenv/handoff
repo=$HOME/.dotfiles
log=$state/dotfiles.log
helper=/usr/local/lib/agentenv/dotfiles.py
env_name=${AGENTENV_ENV:-NAME}
retry_after=86400

update=
case ${1:-} in
--update) update=1 ;;
"") ;;
*)
	echo "usage: agentenv-dotfiles [--update]" >&2
	exit 2
	;;
esac

# the terminal, kept on fd 7 for the setup command alone: nothing else reads stdin
exec 7<&0 </dev/null
interactive=
if [ -t 7 ]; then
	interactive=1
fi

tmp=
cleanup() {
	# the decrypted overlay must not outlive this script
	rm -rf "$handoff/overlay" "$handoff/overlay.hash" 2>/dev/null || true
	if [ -n "$tmp" ]; then
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

say() { echo "agentenv: $*" >&2; }
fail() {
	say "$*"
	exit 1
}

# A shell runs a trap only after its foreground command ends: what may take long
# runs in the background and is waited for, so SIGTERM stops it at once.
child=
interruptible() {
	"$@" &
	child=$!
	_status=0
	wait "$child" || _status=$?
	child=
	return "$_status"
}
setup_pid='' tail_pid='' setup_started=''
stopped() {
	trap - TERM HUP INT
	for pid in "$child" "$setup_pid" "$tail_pid"; do
		if [ -n "$pid" ]; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	if [ -n "$setup_started" ]; then
		write_result interrupted "stopped by a signal during the setup; not recorded as applied"
	fi
	exit 143
}
trap stopped TERM HUP INT

url='' ref='' setup='' local='' manager='' timeout=''
if [ -r "$state/dotfiles.conf" ]; then
	while IFS= read -r line; do
		case $line in
		url=*) url=${line#url=} ;;
		ref=*) ref=${line#ref=} ;;
		setup=*) setup=${line#setup=} ;;
		local=*) local=${line#local=} ;;
		manager=*) manager=${line#manager=} ;;
		timeout=*) timeout=${line#timeout=} ;;
		esac
	done <"$state/dotfiles.conf"
fi
case $timeout in
"" | *[!0-9]*) timeout=600 ;;
esac
overlay=none
if [ -r "$handoff/overlay.hash" ]; then
	read -r overlay <"$handoff/overlay.hash" || true
fi
if [ -z "$url" ] && [ "$overlay" = none ]; then
	exit 0
fi

mkdir -p "$state"
tmp=$(mktemp -d)
# git never asks: a session must not hang on a password or a host key prompt
GIT_TERMINAL_PROMPT=0
GIT_SSH_COMMAND=${GIT_SSH_COMMAND:-ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new}
export GIT_TERMINAL_PROMPT GIT_SSH_COMMAND

# The repo's commit for the ref, from the remote (cheap: refs only). A
# repository on the host is reached through its read-only mount.
remote=$url
if [ -n "$local" ]; then
	# not mounted (gone from the host): unreachable, like a remote one offline
	remote=file://$local
fi
# what agentenv last checked out (success or not): a checkout still there is
# agentenv's to move; anything else is the user's
checked_out=
if [ -r "$state/dotfiles.checkout" ]; then
	read -r checked_out <"$state/dotfiles.checkout" || true
fi
commit='' fetchref=${ref:-HEAD}
if [ -n "$url" ]; then
	case $ref in
	*[!0-9a-f]* | "") ;;
	*) if [ ${#ref} -eq 40 ]; then commit=$ref; fi ;;
	esac
	if [ -z "$commit" ]; then
		# an annotated tag's commit is on its peeled line, which only "REF^{}" lists
		if interruptible timeout 30 git ls-remote "$remote" "$fetchref" "$fetchref^{}" >"$tmp/refs" 2>"$state/dotfiles.err"; then
			# a branch before a tag of the same name, as git itself resolves it
			for want in "$fetchref" "refs/heads/$ref" "refs/tags/$ref^{}" "refs/tags/$ref"; do
				commit=$(while read -r sha name; do
					if [ "$name" = "$want" ]; then
						echo "$sha"
						break
					fi
				done <"$tmp/refs")
				if [ -n "$commit" ]; then
					# fetched by its full name, so the fetch gets what ls-remote saw
					fetchref=${want%"^{}"}
					break
				fi
			done
			[ -n "$commit" ] || fail "the dotfiles repo $url has no ${ref:+branch or tag }${ref:-HEAD}"
		elif [ -d "$repo/.git" ] && [ -n "$checked_out" ] && [ -z "$update" ]; then
			# offline: what is checked out stays; only an overlay change is applied
			say "cannot reach the dotfiles repo $url; keeping ~/.dotfiles as it is"
			commit=$checked_out
		else
			cat "$state/dotfiles.err" >&2
			fail "cannot reach the dotfiles repo $url"
		fi
	fi
fi

# rcm's host-* directories follow the machine (AGENTENV_HOST_HOSTNAME, set by the
# host): with them, another machine is another input
host_input() {
	host=
	for dir in "$repo"/host-*; do
		if [ -d "$dir" ]; then
			host=${AGENTENV_HOST_HOSTNAME:-}
			break
		fi
	done
}
host_input
inputs_hash() {
	inputs=$(printf '%s\n' "url=$url" "ref=$ref" "commit=$commit" "setup=$setup" "manager=$manager" "host=$host" "overlay=$overlay" | sha256sum)
	inputs=${inputs%% *}
}
inputs_hash
# unchanged, and the checkout still there: nothing to do (and no lock taken)
unchanged() {
	recorded=
	if [ -r "$state/dotfiles.hash" ]; then
		read -r recorded <"$state/dotfiles.hash" || true
	fi
	[ -z "$update" ] && [ "$inputs" = "$recorded" ] && { [ -z "$url" ] || [ -d "$repo/.git" ]; }
}
# The last result (dotfiles.result: status=, time=, inputs=, message=…): a failure
# with these very inputs, less than a day old, is not retried at every boot. One
# that wanted a terminal is retried as soon as there is one.
last_failure() {
	[ -z "$update" ] && [ -r "$state/dotfiles.result" ] || return 1
	last_status='' last_time=0 last_inputs='' last_message='' last_timeout=''
	while IFS= read -r line; do
		case $line in
		status=*) last_status=${line#status=} ;;
		timeout=*) last_timeout=${line#timeout=} ;;
		time=*) last_time=${line#time=} ;;
		inputs=*) last_inputs=${line#inputs=} ;;
		message=*) last_message=${line#message=} ;;
		esac
	done <"$state/dotfiles.result"
	case $last_status in
	failed) ;;
	# a longer limit is worth another try
	timed-out) [ "$last_timeout" = "$timeout" ] || return 1 ;;
	needs-terminal) [ -z "$interactive" ] || return 1 ;;
	*) return 1 ;;
	esac
	case $last_time in
	"" | *[!0-9]*) return 1 ;;
	esac
	[ "$last_inputs" = "$inputs" ] && [ $(($(date +%s) - last_time)) -lt "$retry_after" ]
}
known_failure() {
	now=
	if [ "$last_status" = needs-terminal ]; then
		now=" in a terminal"
	fi
	say "the last dotfiles setup failed $(date -d "@$last_time" '+%F %H:%M') ($last_message); with the same inputs it runs again after a day — now: agentenv env update $env_name$now; log: ~/.local/state/agentenv/dotfiles.log"
	exit 3
}
if unchanged; then
	exit 0
fi
if last_failure; then
	known_failure
fi
# two sessions of one environment starting together: the second waits, then
# finds the inputs recorded
exec 9>"$state/dotfiles.lock"
if ! flock -n 9; then
	say "waiting for another session of this environment to finish its dotfiles setup…"
	interruptible flock 9
fi
if unchanged; then
	exit 0
fi
if last_failure; then
	known_failure
fi
rm -f "$state/dotfiles.hash"

# The home's own commands for the setup (chezmoi, say), as sessions have them:
# ~/.local/bin, then the tools of ~/flake.nix (installed by an earlier boot).
for bin in "$HOME/.local/bin" "$state/profile/bin"; do
	if [ -d "$bin" ]; then
		PATH=$bin:$PATH
	fi
done
export PATH

# write_overlay [quiet]: the overlay's files into ~ (links and files there replaced).
write_overlay() {
	[ -d "$handoff/overlay" ] || return 0
	count=0
	files=$(cd "$handoff/overlay" && find . -type f)
	while IFS= read -r rel; do
		rel=${rel#./}
		[ -n "$rel" ] || continue
		target=$HOME/$rel
		# a directory linked elsewhere (into ~/.dotfiles, out of HOME) would
		# carry the file there (a linked file itself is replaced below)
		parent=$(realpath -m "${target%/*}")/
		case $parent in
		"$repo"/*)
			say "overlay: ~/$rel is inside ~/.dotfiles (through a link); not written"
			continue
			;;
		"$HOME"/*) ;;
		*)
			say "overlay: ~/$rel leads out of HOME (through a link); not written"
			continue
			;;
		esac
		if [ -d "$target" ] && [ ! -L "$target" ]; then
			say "overlay: ~/$rel is a directory in the home; not replaced"
			continue
		fi
		mkdir -p "${target%/*}"
		rm -f "$target"
		cp -p "$handoff/overlay/$rel" "$target"
		count=$((count + 1))
	done <<EOF
$files
EOF
	[ -n "${1:-}" ] || say "overlay: $count file(s) written"
}

# write_result STATUS MESSAGE: the last result, for the next boot and env show.
ran='' added=0 changed=0 removed=0 links=0
write_result() {
	{
		printf '%s\n' "status=$1" "time=$(date +%s)" "inputs=$inputs" "commit=$commit" "ran=$ran" "timeout=$timeout"
		printf '%s\n' "added=$added" "changed=$changed" "removed=$removed" "links=$links" "message=$2"
	} >"$state/dotfiles.result.tmp"
	mv "$state/dotfiles.result.tmp" "$state/dotfiles.result"
}
# setup_failed STATUS REASON [ADVICE]: kept (the reason) and said; exit 1.
setup_failed() {
	write_result "$1" "$2"
	fail "the dotfiles setup $2${3:-}"
}

# "10 min", "45 s": a time limit for people
duration() {
	if [ $(($1 % 60)) -eq 0 ]; then echo "$(($1 / 60)) min"; else echo "$1 s"; fi
}

# shell-quoted words, for `script -c`
quote() {
	for word; do
		printf "'%s' " "$(printf '%s' "$word" | sed "s/'/'\\\\''/g")"
	done
}

# run_setup ARGV…: runs ARGV from ~/.dotfiles with the time limit; sets $status
# (124: the limit) and $read_stdin (it read the empty stdin it got).
run_setup() {
	setup_started=1
	status=0 read_stdin=''
	if [ -n "$interactive" ]; then
		# on the terminal: `script` gives it a terminal of its own (its Ctrl-C, its
		# questions) and records the output; --foreground keeps it able to read
		SHELL=/bin/sh timeout --foreground -k 10 "$timeout" env --default-signal=INT,QUIT \
			script -q -e -c "cd $(quote "$repo")&& exec $(quote "$@")" --log-out "$tmp/typescript" 0<&7 7<&- 9>&- &
		setup_pid=$!
		wait "$setup_pid" || status=$?
		setup_pid=
		if [ -r "$tmp/typescript" ]; then
			sed -e '1{/^Script started on /d}' -e '/^Script done on /d' -e 's/\r$//' "$tmp/typescript" >>"$log"
		fi
		return
	fi
	# No terminal: an empty stdin whose access time says whether it was read. The
	# output goes to the log, shown as it comes by tail, which stops when the setup
	# ends: a daemon it starts neither holds the session (as a pipe would) nor the
	# lock (fd 9 closed). timeout puts it in a process group of its own, so the limit
	# (and a signal) stop all it started.
	: >"$tmp/stdin"
	touch -a -d @0 "$tmp/stdin"
	offset=$(($(stat -c %s "$log") + 1))
	# shellcheck disable=SC2016 # $1 and $@ are the inner sh's
	timeout -k 10 "$timeout" env --default-signal=INT,QUIT sh -c 'cd "$1" && shift && exec "$@"' sh "$repo" "$@" <"$tmp/stdin" >>"$log" 2>&1 7<&- 9>&- &
	setup_pid=$!
	tail -c +"$offset" -s 0.2 -f --pid="$setup_pid" "$log" >&2 7<&- 9>&- &
	tail_pid=$!
	wait "$setup_pid" || status=$?
	setup_pid=
	wait "$tail_pid" || true
	tail_pid=
	if [ "$(stat -c %X "$tmp/stdin")" != 0 ]; then
		read_stdin=1
	fi
}

if [ -n "$url" ]; then
	fetch() {
		timeout 600 git -C "$1" fetch -q --depth 1 origin "$fetchref" 2>&1 ||
			timeout 600 git -C "$1" fetch -q --depth 1 origin "$commit" 2>&1
	}
	# credentials the overlay carries (~/.netrc, ~/.ssh/…) are in place before the fetch
	write_overlay quiet
	if [ ! -d "$repo/.git" ]; then
		if [ -e "$repo" ] || [ -L "$repo" ]; then
			fail "~/.dotfiles exists and is not a git checkout: move it away, the dotfiles repo is cloned there"
		fi
		say "cloning the dotfiles repo $url${ref:+ ($ref)}…"
		rm -rf "$repo.clone"
		git init -q "$repo.clone"
		git -C "$repo.clone" remote add origin "$remote"
		interruptible fetch "$repo.clone" >&2 || fail "cannot fetch ${ref:-HEAD} from $url"
		git -C "$repo.clone" checkout -q --detach FETCH_HEAD
		mv "$repo.clone" "$repo"
		git -C "$repo" rev-parse HEAD >"$state/dotfiles.checkout"
	else
		head=$(git -C "$repo" rev-parse HEAD 2>/dev/null || true)
		if [ "$head" != "$commit" ]; then
			# only a checkout as agentenv left it moves: the user's own commits and edits
			# to tracked files stay (files a setup script made in the repo do not count)
			if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] || { [ -n "$checked_out" ] && [ "$head" != "$checked_out" ]; }; then
				fail "~/.dotfiles has changes of its own (commit and push them, or discard them); it stays at ${head:-?}, not $commit"
			fi
			say "updating ~/.dotfiles to ${commit:-the latest commit}…"
			git -C "$repo" remote set-url origin "$remote"
			interruptible fetch "$repo" >&2 || fail "cannot fetch ${ref:-HEAD} from $url"
			git -C "$repo" checkout -q --detach FETCH_HEAD
			git -C "$repo" rev-parse HEAD >"$state/dotfiles.checkout"
		fi
	fi
	# a commit pushed since ls-remote may have come with the fetch: record what is checked out
	commit=$(git -C "$repo" rev-parse HEAD)
	host_input
	inputs_hash

	# What sets it up (see the top): a manager places the files, a command runs.
	detected=$(python3 "$helper" detect)
	command_line=$setup place=$manager
	if [ "$setup" = none ]; then
		command_line='' place=${manager:-$detected}
	elif [ -z "$setup" ] && [ -z "$manager" ]; then
		for candidate in install.sh install bootstrap.sh bootstrap script/bootstrap setup.sh setup script/setup; do
			if [ -f "$repo/$candidate" ]; then
				command_line=$candidate
				break
			fi
		done
		if [ -z "$command_line" ]; then
			place=$detected
		fi
	fi
	ran=$(printf '%s' "$place${place:+${command_line:+, then }}$command_line")

	: >"$log"
	python3 "$helper" snapshot "$tmp/before"
	if [ -n "$place" ]; then
		say "placing the dotfiles into ~ as $place would…"
		pstatus=0
		interruptible python3 "$helper" apply "$place" || pstatus=$?
		if [ "$pstatus" -ne 0 ]; then
			setup_failed failed "could not place the files as $place does (exit $pstatus)" "; see ~/.local/state/agentenv/dotfiles.log"
		fi
	fi
	if [ -n "$command_line" ]; then
		# the command line as agentenv wrote it: shell-quoted words, no expansions
		eval "set -- $command_line"
		shown=$command_line
		if [ -f "$repo/$1" ]; then
			script=$1
			shift
			if [ -x "$repo/$script" ]; then
				set -- "./$script" "$@"
			else
				# not marked executable: its #! interpreter, else sh
				interpreter=sh
				IFS= read -r first <"$repo/$script" || true
				case ${first:-} in
				"#!"*) interpreter=${first#??} ;;
				esac
				# shellcheck disable=SC2086 # the interpreter line is words: /usr/bin/env bash
				set -- ${interpreter%"$(printf '\r')"} "./$script" "$@"
			fi
		elif case $1 in */*) false ;; *) command -v "$1" >/dev/null 2>&1 ;; esac; then
			: # a command on PATH (make, stow…), run in ~/.dotfiles
		else
			setup_failed failed "script $1 is not in the dotfiles repo $url (nor a command on PATH)"
		fi
		say "running $shown from the dotfiles repo${interactive:+ (on this terminal)}…"
		started=$(date +%s)
		run_setup "$@"
		if [ "$status" -eq 124 ] || { [ "$status" -eq 137 ] && [ $(($(date +%s) - started)) -ge "$timeout" ]; }; then
			setup_failed timed-out "$shown was stopped after $(duration "$timeout") (its limit, dotfiles.timeout)" "; its output is above and in ~/.local/state/agentenv/dotfiles.log; a longer limit: agentenv env set $env_name dotfiles.timeout=30m"
		fi
		if [ -n "$interactive" ] && [ "$status" -eq 130 ]; then
			write_result interrupted "interrupted at the terminal (Ctrl-C); not recorded as applied"
			say "the dotfiles setup $shown was interrupted; it is not recorded as applied (the next session runs it again)"
			exit 130
		fi
		# no terminal: one that read its stdin (it asked something), or failed saying it
		# wants a terminal, is run again when there is one
		asked=
		if [ -z "$interactive" ]; then
			if [ -n "$read_stdin" ]; then
				asked="it read its input (a question?) in a session without one"
			elif [ "$status" -ne 0 ] && grep -qiE 'not a (tty|terminal)|inappropriate ioctl|/dev/tty|input device is not a tty|no tty' "$log"; then
				asked="it failed (exit $status) for the want of a terminal"
			fi
		fi
		if [ -n "$asked" ]; then
			setup_failed needs-terminal "$shown needs a terminal: $asked" ": run \`agentenv env update $env_name\` in a terminal"
		fi
		if [ "$status" -ne 0 ]; then
			hint=
			if [ -z "$place" ] && [ "$detected" != plain ]; then
				hint=" — the repo is laid out for $detected, which agentenv applies itself with no download: agentenv env set $env_name dotfiles.manager=$detected"
			fi
			setup_failed failed "script $shown failed (exit $status)" "; its output is above and in ~/.local/state/agentenv/dotfiles.log$hint"
		fi
	fi
	setup_started=
	# shellcheck disable=SC2046 # four numbers
	set -- $(python3 "$helper" diff "$tmp/before")
	added=$1 changed=$2 removed=$3 links=$4
fi

write_overlay

# the shell, when nothing chose one: what the dotfiles configure
if [ ! -s "$state/shell" ]; then
	if [ -e "$HOME/.zshrc" ] || [ -e "$HOME/.zshenv" ]; then
		echo zsh >"$state/shell"
	elif [ -e "$HOME/.bashrc" ] || [ -e "$HOME/.bash_profile" ]; then
		echo bash >"$state/shell"
	fi
fi

printf '%s\n' "$commit" >"$state/dotfiles.commit"
printf '%s\n' "$inputs" >"$state/dotfiles.hash"
if [ -n "$url" ]; then
	at="$url${commit:+ at $(printf '%.12s' "$commit")}"
	if [ $((added + changed + removed)) -eq 0 ]; then
		hint=
		if [ "$place" = plain ] && [ -z "$command_line" ]; then
			hint="; the repo has no dotfiles at its top: is it laid out for rcm, stow or chezmoi? agentenv env set $env_name dotfiles.manager=rcm|stow|chezmoi"
		elif [ -z "$place" ] && [ "$detected" != plain ]; then
			hint="; the repo is laid out for $detected, which agentenv applies itself with no download: agentenv env set $env_name dotfiles.manager=$detected"
		fi
		write_result unchanged "$ran changed nothing in ~"
		say "the dotfiles setup ($ran) changed nothing in ~ ($at; its output is in ~/.local/state/agentenv/dotfiles.log)$hint"
	else
		summary="$added added ($links link$(if [ "$links" -ne 1 ]; then echo s; fi)), $changed changed"
		if [ "$removed" -ne 0 ]; then
			summary="$summary, $removed removed"
		fi
		write_result applied "$ran: $summary"
		say "dotfiles applied: $at — $ran: $summary in ~"
	fi
fi
