# enforcer as a flake: the package and the NixOS module (docs/nixos.md).
#
# There is no flake.lock in the repository yet: the first `nix build` or `nix flake lock`
# writes one (CI has no Nix, so it was never locked here). Building the package from source is
# untested; see nix/package.nix for what it needs, and for using a prebuilt binary instead.
{
  description = "enforcer: denies chosen docker CLI commands to restricted users, in the kernel (BPF LSM)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      packages.${system} = {
        enforcer = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${system}.enforcer;
      };

      # pkgs.enforcer, which services.enforcer.package defaults to (without the overlay the
      # module calls package.nix itself).
      overlays.default = final: prev: { enforcer = final.callPackage ./nix/package.nix { }; };

      # The path, not `import`: NixOS then names this file in its messages (conflicts,
      # option locations) instead of `<unknown-file>`.
      nixosModules = {
        enforcer = ./nix/module.nix;
        default = self.nixosModules.enforcer;
      };
    };
}
