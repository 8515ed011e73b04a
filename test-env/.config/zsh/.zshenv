# ~/.config/zsh/.zshenv: environment for every zsh, scripts included.
# Read via ~/.zshenv. Keep it to variables: no output, nothing slow.

# XDG base directories: the standard defaults, spelled out so that tools and
# this configuration agree on where config, caches and state go.
export XDG_CONFIG_HOME="${XDG_CONFIG_HOME:-$HOME/.config}"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}"
export XDG_DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
export XDG_STATE_HOME="${XDG_STATE_HOME:-$HOME/.local/state}"

# Locale. C.UTF-8 is built into glibc, so it exists in the image and for
# programs from Nix alike. The image has no other locales generated: with
# en_US.UTF-8 and the like, programs warn and fall back to plain C.
export LANG=C.UTF-8

# Editor for git commit messages, crontab -e, and so on.
export EDITOR=nvim
export VISUAL=nvim

# Pager. LESS options: -F quit when the text fits on one screen, -R show
# colours (git, bat, rg), -i search case-insensitively unless the pattern
# has capitals. git uses $LESS too.
export PAGER=less
export LESS=-FRi

# Your own scripts: ~/.local/bin goes first on PATH once you create it.
# (typeset -U drops duplicate entries, keeping the first.)
typeset -U path
path=("$HOME/.local/bin"(N-/) $path)
