# agentenv: the home's own commands first on PATH (~/.local/bin, then the tools
# of ~/flake.nix). The entrypoint puts them there; Debian's /etc/profile resets
# PATH for login shells, so again here.
if [ -r /usr/local/lib/agentenv/session.sh ]; then
	. /usr/local/lib/agentenv/session.sh
	agentenv_path
fi
