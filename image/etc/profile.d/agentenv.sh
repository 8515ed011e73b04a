# agentenv: the home's own commands first on PATH — ~/.local/bin (where agent
# CLIs install themselves), then the tools of ~/flake.nix (installed into
# ~/.local/state/agentenv/profile). The entrypoint puts them there; Debian's
# /etc/profile resets PATH for login shells, so again here.
for _bin in "$HOME/.local/state/agentenv/profile/bin" "$HOME/.local/bin"; do
	if [ -d "$_bin" ]; then
		case ":$PATH:" in
		*":$_bin:"*) ;;
		*) PATH=$_bin:$PATH ;;
		esac
	fi
done
unset _bin
