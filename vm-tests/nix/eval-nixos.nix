# Evaluates nix/module.nix with nixpkgs' own module system (`lib.evalModules` of nixpkgs' lib)
# and nixpkgs' own `security` module, the one that renders `lsm=` from `security.lsm`. Used by
# vm-tests/tests/packaging.rs; nothing of nixpkgs is in this repository: `nixpkgs` is the folder
# described in shared/nixpkgs/README.md (its `lib/`, `nixos/modules/security/default.nix` of
# master and `nixos-25.05/modules/security/default.nix`), found through ENFORCER_NIXPKGS.
#
# The other NixOS options the module touches (systemd, environment, boot.kernelParams, docker,
# the release) are declared here, as NixOS declares them, minus what the module does not use;
# `pkgs` holds only the functions the module calls, returning inspectable attribute sets
# instead of derivations (nothing is built).
{
  nixpkgs,
  # "master", "25.05", or "none" (a NixOS before 25.05, without security.lsm).
  security,
  # system.nixos.release
  release,
  # The configuration under test: a NixOS module.
  configuration,
  # The module under test.
  module,
}:
let
  lib = import (nixpkgs + "/lib");
  inherit (lib) mkOption types;

  securityModule =
    if security == "master" then
      [ (nixpkgs + "/nixos/modules/security/default.nix") ]
    else if security == "25.05" then
      [ (nixpkgs + "/nixos-25.05/modules/security/default.nix") ]
    else if security == "none" then
      [ ]
    else
      throw "security must be master, 25.05 or none";

  drv = name: attrs: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  } // attrs;

  pkgs = {
    enforcer = drv "enforcer-0.1.0" { meta.mainProgram = "enforcer"; };
    docker = drv "docker-27.5.1" { };
    # pkgs.formats.toml: the real option type is approximated by JSON-able values; generate
    # keeps the value so that the test can render it and check it with the enforcer binary.
    formats.toml =
      { }:
      {
        type = types.attrsOf types.anything;
        generate = name: value: drv name { settingsValue = value; };
      };
    runCommand = name: env: buildCommand: drv name (env // { inherit buildCommand; });
    callPackage = fn: args: drv "enforcer-callPackage" { meta.mainProgram = "enforcer"; };
  };

  # What NixOS itself declares, reduced to what nix/module.nix uses.
  nixosDeclarations = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      meta = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      system.nixos.release = mkOption {
        type = types.str;
        default = release;
      };
      boot.kernelParams = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment.etc = mkOption {
        type = types.attrsOf (
          types.submodule {
            options = {
              text = mkOption {
                type = types.nullOr types.lines;
                default = null;
              };
              source = mkOption { type = types.unspecified; };
              mode = mkOption {
                type = types.str;
                default = "symlink";
              };
            };
          }
        );
        default = { };
      };
      # Units: freeform here; the test compares what the module defines with the contrib unit.
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule { freeformType = types.attrsOf types.anything; });
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf (types.submodule { freeformType = types.attrsOf types.anything; });
        default = { };
      };
      systemd.tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      virtualisation.docker = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        package = mkOption {
          type = types.package;
          default = pkgs.docker;
        };
      };
    };
  };

  evaluated = lib.evalModules {
    # NixOS's own modules first, then the user's, as nixosSystem lists them.
    modules = [
      nixosDeclarations
      { _module.args.pkgs = pkgs; }
    ]
    ++ securityModule
    ++ [
      module
      configuration
    ];
  };
  config = evaluated.config;
in
{
  inherit config lib pkgs;
  options = evaluated.options;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  lsmParams = builtins.filter (lib.hasPrefix "lsm=") config.boot.kernelParams;
}
