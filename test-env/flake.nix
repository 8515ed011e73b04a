# ~/flake.nix: the tools installed into this environment.
#
# When this file changed since the last boot, agentenv builds `packages.<system>.default`
# into ~/.local/state/agentenv/profile and puts its bin/ first on PATH, so the
# tools here win over the image's Debian ones (nix's `fd` and `bat` go by
# those names; Debian's are called fdfind and batcat).
#
# Only this file and ~/flake.lock are copied into the Nix store for that
# build: keep the flake self-contained (no `./something.nix` imports, no
# reading other files from your home).
#
# To add a tool, add its nixpkgs attribute name to `paths` below and start a
# new session. Names: https://search.nixos.org/packages (choose the same
# channel as the url below).
{
  description = "Tools for my agentenv home";

  # nixos-25.05 because it is the newest nixpkgs that the image's Nix (2.8,
  # from Debian 12) can evaluate: nixos-unstable and every later release
  # require Nix >= 2.18 and stop with "This version of Nixpkgs requires
  # Nix >= 2.18". A stable branch also changes less often than unstable,
  # which matters because without a ~/flake.lock each reinstall (after you
  # edit this file) follows the branch to its latest commit. Only move to a
  # newer branch if your image has a newer Nix.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      # x86_64 for PCs and most servers; aarch64 for Linux VMs on Apple
      # silicon Macs and ARM servers.
      systems = [ "x86_64-linux" "aarch64-linux" ];

      # forAllSystems (pkgs: X) gives { x86_64-linux = X; aarch64-linux = X; },
      # each X made with that system's package set. For unfree packages,
      # use `import nixpkgs { inherit system; config.allowUnfree = true; }`
      # in place of `nixpkgs.legacyPackages.${system}`.
      forAllSystems = f:
        nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        # One package that contains the bin/, share/ and so on of all the tools.
        default = pkgs.buildEnv {
          name = "agentenv-home-tools";
          paths = with pkgs; [
            # shell, editor, multiplexer
            zsh # when this is installed, sessions start this zsh rather than Debian's
            neovim
            tmux

            # finding things
            ripgrep # rg
            fd
            fzf
            zoxide # z DIR

            # reading things
            bat
            eza # used by the ll/la aliases in ~/.config/zsh/.zshrc
            less
            jq

            # everything else
            git
            curl
            htop
          ];
        };
      });
    };
}
