# agentenv: the environment's own tools (~/flake.nix, installed into
# ~/.local/state/agentenv/profile) first on PATH. The entrypoint puts them
# there; Debian's /etc/profile resets PATH for login shells, so again here.
if [ -d "$HOME/.local/state/agentenv/profile/bin" ]; then
	case ":$PATH:" in
	*":$HOME/.local/state/agentenv/profile/bin:"*) ;;
	*) PATH=$HOME/.local/state/agentenv/profile/bin:$PATH ;;
	esac
fi
