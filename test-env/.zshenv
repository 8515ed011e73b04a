# ~/.zshenv: the only zsh file that has to sit at the top of your home.
#
# zsh reads it first, for every zsh (interactive or not). It moves the rest
# of the zsh configuration to ~/.config/zsh by setting ZDOTDIR: after this
# file zsh reads .zprofile, .zshrc and .zlogin from $ZDOTDIR rather than
# from $HOME.
export ZDOTDIR="${XDG_CONFIG_HOME:-$HOME/.config}/zsh"

# zsh has already read its .zshenv (this one) when ZDOTDIR changes, so it
# never reads $ZDOTDIR/.zshenv by itself: do that here. (A zsh started from
# this one inherits ZDOTDIR, reads $ZDOTDIR/.zshenv directly and never gets
# here, so that file is read exactly once either way.)
if [[ -r $ZDOTDIR/.zshenv ]]; then
  source "$ZDOTDIR/.zshenv"
fi
