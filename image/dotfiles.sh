#!/bin/sh
# agentenv-dotfiles [--update]: applies this environment's dotfiles repo and overlay.
#
#   1. clone the repo (shallow, the configured ref) into ~/.dotfiles, or move an
#      unchanged checkout to the ref's new commit;
#   2. run its setup script: the configured one, else the first that exists of
#      install.sh install bootstrap.sh bootstrap script/bootstrap setup.sh setup
#      script/setup; with none, symlink the repo's top-level dotfiles into ~
#      (directories that exist on both sides merged; a file already there is
#      moved to ~/.local/state/agentenv/dotfiles-backup/);
#   3. write the overlay's files into ~ (they win over the repo's).
#
# It does all that only when its inputs changed since the last success: URL, ref,
# the ref's commit, setup path, overlay. Their hash is recorded after a success
# only, so a failure is retried by the next session. --update does it anyway.
#
# Read from ~/.local/state/agentenv/dotfiles.conf (written by agentenv env
# create/set: url=, ref=, setup=, local=) and from the session's handoff
# directory (overlay/, overlay.hash), which the host fills; a repo on the
# host's disk is mounted read-only where local= says. The entrypoint runs this.
set -eu

state=$HOME/.local/state/agentenv
handoff=/run/agentenv/handoff
repo=$HOME/.dotfiles
log=$state/dotfiles.log

update=
case ${1:-} in
--update) update=1 ;;
"") ;;
*)
	echo "usage: agentenv-dotfiles [--update]" >&2
	exit 2
	;;
esac

# the decrypted overlay must not outlive this script
trap 'rm -rf "$handoff/overlay" "$handoff/overlay.hash" 2>/dev/null || true' EXIT

say() { echo "agentenv: $*" >&2; }
fail() {
	say "$*"
	exit 1
}

url='' ref='' setup='' local=''
if [ -r "$state/dotfiles.conf" ]; then
	while IFS= read -r line; do
		case $line in
		url=*) url=${line#url=} ;;
		ref=*) ref=${line#ref=} ;;
		setup=*) setup=${line#setup=} ;;
		local=*) local=${line#local=} ;;
		esac
	done <"$state/dotfiles.conf"
fi
overlay=none
if [ -r "$handoff/overlay.hash" ]; then
	read -r overlay <"$handoff/overlay.hash" || true
fi
if [ -z "$url" ] && [ "$overlay" = none ]; then
	exit 0
fi

mkdir -p "$state"
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
		if refs=$(timeout 30 git ls-remote "$remote" "$fetchref" "$fetchref^{}" 2>"$state/dotfiles.err"); then
			# a branch before a tag of the same name, as git itself resolves it
			for want in "$fetchref" "refs/heads/$ref" "refs/tags/$ref^{}" "refs/tags/$ref"; do
				commit=$(printf '%s\n' "$refs" | while read -r sha name; do
					if [ "$name" = "$want" ]; then
						echo "$sha"
						break
					fi
				done)
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

inputs_hash() {
	inputs=$(printf '%s\n' "url=$url" "ref=$ref" "commit=$commit" "setup=$setup" "overlay=$overlay" | sha256sum)
	inputs=${inputs%% *}
}
inputs_hash
recorded=
if [ -r "$state/dotfiles.hash" ]; then
	read -r recorded <"$state/dotfiles.hash" || true
fi
# unchanged, and the checkout still there: nothing to do (and no lock taken)
unchanged() {
	recorded=
	if [ -r "$state/dotfiles.hash" ]; then
		read -r recorded <"$state/dotfiles.hash" || true
	fi
	[ -z "$update" ] && [ "$inputs" = "$recorded" ] && { [ -z "$url" ] || [ -d "$repo/.git" ]; }
}
if unchanged; then
	exit 0
fi
# two sessions of one environment starting together: the second waits, then
# finds the inputs recorded
exec 9>"$state/dotfiles.lock"
if ! flock -n 9; then
	say "waiting for another session of this environment to finish its dotfiles setup…"
	flock 9
fi
if unchanged; then
	exit 0
fi
rm -f "$state/dotfiles.hash"

# The user's own tools (~/flake.nix) for the setup script, when installed.
if [ -d "$state/profile/bin" ]; then
	PATH=$state/profile/bin:$PATH
	export PATH
fi

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

# link_tree DIR UP: links each entry of ~/.dotfiles/DIR (at the top, only
# names starting with "."; never .git) into ~/DIR with a relative link (UP is
# the "../" that climbs from ~/DIR to ~). A directory that is a real directory
# on both sides is merged instead, one level down, so ~/.config or ~/.local
# keep what else they hold (agentenv's own state among it). Whatever is in the
# way is moved to the backup directory, never deleted.
link_tree() {
	local dir=$1 up=$2 path name rel target backup
	if [ -z "$dir" ]; then
		set -- "$repo"/.[!.]* "$repo"/..?*
	else
		set -- "$repo/$dir"* "$repo/$dir".[!.]* "$repo/$dir"..?*
	fi
	for path; do
		[ -e "$path" ] || [ -L "$path" ] || continue
		name=${path##*/}
		rel=$dir$name
		case $rel in
		.git | .local/state/agentenv) continue ;;
		esac
		target=$HOME/$rel
		if [ -d "$path" ] && [ ! -L "$path" ] && [ -d "$target" ] && [ ! -L "$target" ]; then
			link_tree "$rel/" "../$up"
			continue
		fi
		if [ -L "$target" ] && [ "$(readlink "$target")" = "$up.dotfiles/$rel" ]; then
			continue
		fi
		# the overlay owns this path: it is written below, never linked or backed up
		if [ -e "$handoff/overlay/$rel" ]; then
			continue
		fi
		if [ -e "$target" ] || [ -L "$target" ]; then
			backup=$state/dotfiles-backup/$rel
			if [ -e "$backup" ] || [ -L "$backup" ]; then
				backup=$backup.$(date +%Y%m%d%H%M%S)
			fi
			mkdir -p "${backup%/*}"
			mv "$target" "$backup"
			echo "moved ~/$rel to $backup" >>"$log"
		fi
		ln -s "$up.dotfiles/$rel" "$target"
		echo "linked ~/$rel" >>"$log"
	done
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
		fetch "$repo.clone" >&2 || fail "cannot fetch ${ref:-HEAD} from $url"
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
			fetch "$repo" >&2 || fail "cannot fetch ${ref:-HEAD} from $url"
			git -C "$repo" checkout -q --detach FETCH_HEAD
			git -C "$repo" rev-parse HEAD >"$state/dotfiles.checkout"
		fi
	fi
	# a commit pushed since ls-remote may have come with the fetch: record what is checked out
	commit=$(git -C "$repo" rev-parse HEAD)
	inputs_hash

	script=
	if [ -n "$setup" ]; then
		[ -f "$repo/$setup" ] || fail "the setup script $setup is not in the dotfiles repo $url"
		script=$setup
	else
		for candidate in install.sh install bootstrap.sh bootstrap script/bootstrap setup.sh setup script/setup; do
			if [ -f "$repo/$candidate" ]; then
				script=$candidate
				break
			fi
		done
	fi
	if [ -n "$script" ]; then
		say "running $script from the dotfiles repo…"
		# A script not marked executable runs with its #! interpreter, else sh.
		interpreter=
		if [ ! -x "$repo/$script" ]; then
			interpreter=sh
			IFS= read -r first <"$repo/$script" || true
			case ${first:-} in
			"#!"*) interpreter=${first#??} ;;
			esac
		fi
		# Its output goes to the log, shown as it comes by tail, which stops when
		# the script ends: a daemon it starts neither holds the session (as a
		# pipe would) nor the lock (fd 9 closed). No stdin: nobody answers.
		: >"$log"
		# shellcheck disable=SC2086 # the interpreter line is words: /usr/bin/env bash
		(cd "$repo" && exec ${interpreter:-} "./$script") </dev/null >"$log" 2>&1 9>&- &
		pid=$!
		tail -n +1 -s 0.2 -f --pid="$pid" "$log" >&2 9>&- || true
		status=0
		wait "$pid" || status=$?
		if [ "$status" -ne 0 ]; then
			fail "the dotfiles setup script $script failed (exit $status); its output is above and in ~/.local/state/agentenv/dotfiles.log"
		fi
	else
		# no script: link the top-level dotfiles, keeping what was in the way
		: >"$log"
		link_tree "" ""
	fi
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
	say "dotfiles applied: $url${commit:+ at $(printf '%.12s' "$commit")}"
fi
