# ~/.config/zsh/.zshrc: interactive zsh.
#
# This file does the whole setup itself. Debian's zsh runs the image's
# defaults (/etc/zsh/zshrc) before it, but the zsh from ~/flake.nix reads
# /etc/zshrc, which does not exist in the image, so nothing runs before this
# file there. Every part below checks that its tool is installed, so the
# shell still starts when a tool is missing.

# --- History, kept in the home so it survives sessions.
HISTFILE="${XDG_STATE_HOME:-$HOME/.local/state}/zsh/history"
[[ -d ${HISTFILE:h} ]] || mkdir -p "${HISTFILE:h}"
HISTSIZE=50000
SAVEHIST=50000
setopt share_history        # every shell appends at once and picks up the others' commands
setopt extended_history     # with timestamps (see `history -i`)
setopt hist_ignore_dups     # do not repeat the previous line
setopt hist_ignore_space    # a command typed with a leading space is not saved
setopt hist_reduce_blanks
setopt hist_verify          # !! and friends expand for review before running

setopt interactive_comments # allow `# comments` at the prompt
setopt no_beep

# --- Keys: emacs style (Ctrl-A, Ctrl-E, ...). For vi style: bindkey -v
bindkey -e
# Home, End, Delete and Ctrl-Left/Right, in the forms terminals and tmux send.
for key widget in \
    '^[[H' beginning-of-line  '^[OH' beginning-of-line  '^[[1~' beginning-of-line \
    '^[[F' end-of-line        '^[OF' end-of-line        '^[[4~' end-of-line \
    '^[[3~' delete-char       '^[[1;5D' backward-word   '^[[1;5C' forward-word; do
  bindkey "$key" "$widget"
done
unset key widget

# --- Colours for ls and the completion menu.
if [[ -z $LS_COLORS ]] && (( $+commands[dircolors] )); then
  eval "$(dircolors -b)"
fi

# --- Completion.
# Completion functions come with the tools in ~/flake.nix; the Debian
# directory holds those of the image's packages. Missing directories are
# skipped (N-/), duplicates dropped (typeset -U).
typeset -U fpath
fpath=(
  "$HOME/.local/state/agentenv/profile/share/zsh/site-functions"(N-/)
  $fpath
  /usr/share/zsh/vendor-completions(N-/)
)
autoload -Uz compinit
zstyle ':completion:*' menu select                     # arrow keys in the list
zstyle ':completion:*' matcher-list 'm:{a-z}={A-Z}'    # lower case matches upper case
zstyle ':completion:*' list-colors ${(s.:.)LS_COLORS}
# The dump (a cache that makes startup fast) lives under ~/.cache. Its name
# differs from the one the image's /etc/zsh/zshrc uses: both run in Debian's
# zsh with different $fpath, and sharing one file would rebuild it every time.
# -u: use completion files owned by other users (mounted directories) without
# asking; in a one-user container that is safe.
_dump="${XDG_CACHE_HOME:-$HOME/.cache}/zsh/compdump-home-$ZSH_VERSION"
[[ -d ${_dump:h} ]] || mkdir -p "${_dump:h}"
compinit -u -d "$_dump"
unset _dump

# --- Prompt:  user@host ~/dir (branch) [exit code if not 0] %
# "[nix]" in front inside a `nix develop` shell. %# is # for root, % otherwise.
autoload -Uz vcs_info add-zsh-hook
zstyle ':vcs_info:*' enable git
zstyle ':vcs_info:git:*' formats ' %F{magenta}(%b)%f'
zstyle ':vcs_info:git:*' actionformats ' %F{magenta}(%b|%a)%f'  # e.g. (main|rebase)
add-zsh-hook precmd vcs_info
setopt prompt_subst
PROMPT='%F{green}%n@%m%f %F{blue}%~%f${vcs_info_msg_0_}%(?.. %F{red}[%?]%f) %# '
if [[ -n $IN_NIX_SHELL ]]; then
  PROMPT="%F{yellow}[nix]%f $PROMPT"
fi

# --- Aliases.
alias ls='ls --color=auto'
alias grep='grep --color=auto'
# ll/la: eza (from ~/flake.nix), else exa (the image's Debian package), else ls.
# `ls` itself stays GNU ls, so flags such as `ls -ltr` keep working.
if (( $+commands[eza] )); then
  alias ll='eza -l --git --group-directories-first' la='ll -a'
elif (( $+commands[exa] )); then
  alias ll='exa -l --git --group-directories-first' la='ll -a'
else
  alias ll='ls -lh' la='ls -lhA'
fi
if (( $+commands[nvim] )); then
  alias vi=nvim vim=nvim
fi
# Debian renames fd and bat; the names from ~/flake.nix win when installed.
if (( $+commands[fdfind] && ! $+commands[fd] )); then
  alias fd=fdfind
fi
if (( $+commands[batcat] && ! $+commands[bat] )); then
  alias bat=batcat
fi

# --- zoxide: `z part-of-a-dir` jumps to a directory you have visited.
# Skipped when /etc/zsh/zshrc has set it up already.
if (( $+commands[zoxide] && ! $+functions[z] && ! $+aliases[z] )); then
  eval "$(zoxide init zsh)"
fi

# --- fzf: Ctrl-R searches history, Ctrl-T inserts a file, Alt-C changes
# directory, `**<Tab>` completes with fzf. Only on a terminal: without one
# (zsh -i -c from a tool) the scripts fail with "can't change option: zle".
# fzf >= 0.48 prints its own setup (`fzf --zsh`); the image's Debian fzf is
# older and ships the scripts as files.
if [[ -t 0 ]] && (( $+commands[fzf] )); then
  if _fzf_setup=$(fzf --zsh 2>/dev/null); then
    eval "$_fzf_setup"
  else
    for _fzf_file in /usr/share/doc/fzf/examples/{key-bindings,completion}.zsh; do
      [[ -r $_fzf_file ]] && source "$_fzf_file"
    done
  fi
  unset _fzf_setup _fzf_file
fi

# Add your own settings below. This file's exit status becomes $? at the
# first prompt, so the last command here should succeed.
