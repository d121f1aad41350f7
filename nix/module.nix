# NixOS module for enforcer: the BPF LSM daemon that denies chosen docker CLI commands to
# restricted users. Documentation: docs/nixos.md.
#
#   services.enforcer = {
#     enable = true;
#     settings.rule = [ { name = "ai-worker-docker"; users = [ "ai-worker" ]; deny = [ "exec" ]; } ];
#     before = [ "ai-agent.service" ];
#   };
#
# What is tested (tests/tests/packaging.rs, offline, without nixpkgs): this file parses, and it
# evaluates against a stub `lib` (tests/nix/stub-lib.nix) to the expected policy text, lsm=
# parameter, unit and ordering. It has not been evaluated by the real NixOS module system or
# booted in a NixOS VM in CI.
{
  config,
  lib,
  pkgs,
  options,
  ...
}:

let
  cfg = config.services.enforcer;
  inherit (lib) types mkOption;

  # The README's default policy (the wrapper script's blacklist for the agent's account), with
  # NixOS's docker binaries named (see dockerBinaries).
  defaultSettings = {
    mode = "enforce";
    rule = [
      {
        name = "ai-worker-docker";
        users = [ "ai-worker" ];
        binaries = if cfg.dockerBinaries == [ ] then null else cfg.dockerBinaries;
        deny = [
          "exec"
          "cp"
          "commit"
          "diff"
          "export"
          "import"
          "load"
          "save"
          "attach"
          "push"
          "tag"
          # Same power, other commands (docs/commands.md).
          "system dial-stdio"
          "compose watch"
          "checkpoint create"
        ];
      }
    ];
  };

  # ---- The policy file, rendered in pure Nix --------------------------------------------
  # Only the policy's shape: top-level keys whose values are strings, integers or booleans,
  # then arrays of tables (`rule = [ { ... } ]` becomes `[[rule]]`) whose values are strings,
  # integers, booleans or lists of strings and integers. Anything else is an evaluation error
  # naming the setting. null values are left out. (Not pkgs.formats.toml: that one builds the
  # file with a derivation, and this one can be evaluated, and tested, without nixpkgs.)

  # A bare key when TOML allows one, else a quoted key.
  tomlKey = key: if builtins.match "[A-Za-z0-9_-]+" key != null then key else builtins.toJSON key;

  # JSON's string escapes (\" \\ \n \t \uXXXX ...) are all valid in a TOML basic string.
  tomlScalar =
    where: value:
    if builtins.isString value then
      builtins.toJSON value
    else if builtins.isBool value then
      (if value then "true" else "false")
    else if builtins.isInt value then
      toString value
    else
      throw "services.enforcer.settings.${where}: a ${builtins.typeOf value} cannot go into the policy (strings, integers, booleans and lists of strings or integers only)";

  tomlValue =
    where: value:
    if builtins.isList value then
      "[" + lib.concatMapStringsSep ", " (tomlScalar where) value + "]"
    else
      tomlScalar where value;

  isTableArray = value: builtins.isList value && value != [ ] && builtins.all builtins.isAttrs value;

  # `key = value` lines of one table: the policy's keys in the README's order, then any other
  # key in alphabetical order.
  keyOrder = [
    "mode"
    "name"
    "users"
    "cgroups"
    "binaries"
    "sockets"
    "hosts"
    "deny"
    "allow"
  ];
  keyValueLines =
    where: attrs:
    let
      keys = builtins.filter (key: attrs.${key} != null) (builtins.attrNames attrs);
      ordered =
        builtins.filter (key: builtins.elem key keys) keyOrder
        ++ builtins.filter (key: !(builtins.elem key keyOrder)) keys;
    in
    map (key: "${tomlKey key} = ${tomlValue "${where}${key}" attrs.${key}}") ordered;

  toTOML =
    settings:
    let
      keys = builtins.attrNames settings;
      tableKeys = builtins.filter (key: isTableArray settings.${key}) keys;
      topLevel = lib.filterAttrs (key: value: !(isTableArray value)) settings;
      table =
        key: index: attrs:
        "\n[[${tomlKey key}]]\n" + lib.concatStringsSep "\n" (keyValueLines "${key}.${toString index}." attrs) + "\n";
      tables =
        key: lib.concatStrings (lib.imap0 (index: attrs: table key index attrs) settings.${key});
    in
    "# Written by the NixOS module services.enforcer from services.enforcer.settings.\n"
    + lib.concatMapStrings (line: line + "\n") (keyValueLines "" topLevel)
    + lib.concatMapStrings tables tableKeys;

  policyText = toTOML cfg.settings;
  policyPath = "/etc/enforcer/policy.toml";

  # ---- lsm= -------------------------------------------------------------------------------
  # NixOS 25.05 and later have security.lsm and render the one lsm= parameter from it; before
  # that, this module writes lsm= itself. Two lsm= parameters would be a bug: the kernel keeps
  # only the last one.
  nixosHasSecurityLsm = options ? security.lsm;
  # "bpf" exactly once, last; the others in the given order.
  lsmsWithBpf = builtins.filter (lsm: lsm != "bpf") cfg.lsms ++ [ "bpf" ];
  lsmParams = builtins.filter (lib.hasPrefix "lsm=") config.boot.kernelParams;
  lsmParamHasBpf = param: builtins.elem "bpf" (lib.splitString "," (lib.removePrefix "lsm=" param));

  # Rules that leave `binaries` to the daemon's search, which finds NixOS's wrapper script and
  # not the real CLI behind it (see dockerBinaries).
  rulesWithoutBinaries = builtins.filter (rule: (rule.binaries or null) == null) (
    if isTableArray (cfg.settings.rule or null) then cfg.settings.rule else [ ]
  );

  enforcer = "${cfg.package}/bin/enforcer";
  serviceName = unit: lib.removeSuffix ".service" unit;
in
{
  options.services.enforcer = {
    enable = lib.mkEnableOption "enforcer, which denies chosen docker CLI commands to restricted users in the kernel (BPF LSM)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      example = lib.literalExpression "pkgs.callPackage ./nix/package.nix { prebuilt = ./enforcer; }";
      description = ''
        The enforcer package. The default builds it from this repository's source, which needs
        a nightly Rust with rust-src and bpf-linker (see nix/package.nix; untested). A binary
        built by `cargo xtask build` can be used instead:
        `pkgs.callPackage ./nix/package.nix { prebuilt = ./enforcer; }`.
      '';
    };

    settings = mkOption {
      type =
        let
          scalar = types.oneOf [
            types.str
            types.int
            types.bool
          ];
          ruleValue = types.oneOf [
            scalar
            (types.listOf (types.either types.str types.int))
          ];
        in
        types.attrsOf (
          types.nullOr (
            types.oneOf [
              scalar
              (types.listOf (types.attrsOf (types.nullOr ruleValue)))
            ]
          )
        );
      default = defaultSettings;
      defaultText = lib.literalExpression ''
        {
          mode = "enforce";
          rule = [
            {
              name = "ai-worker-docker";
              users = [ "ai-worker" ];
              binaries = config.services.enforcer.dockerBinaries; # left out when empty
              deny = [ "exec" "cp" "commit" "diff" "export" "import" "load" "save" "attach" "push" "tag" "system dial-stdio" "compose watch" "checkpoint create" ];
            }
          ];
        }
      '';
      example = lib.literalExpression ''
        {
          mode = "enforce";
          rule = [
            {
              name = "ai-worker-docker";
              users = [ "ai-worker" ];
              binaries = config.services.enforcer.dockerBinaries;
              deny = [ "exec" "cp" "commit" "diff" "export" "import" "load" "save" "attach" "push" "tag" "system dial-stdio" "compose watch" "checkpoint create" ];
            }
          ];
        }
      '';
      description = ''
        The policy, written to ${policyPath} (format: README.md, "The policy"): `mode`, and
        `rule`, a list of rules with `name`, `users` (names or uids) and/or `cgroups`
        (cgroup v2 paths such as "/system.slice/ai-agent.service"), optional `binaries`
        (absolute paths), `sockets` and `hosts` (the docker API endpoints only vetted
        binaries may connect to), and `deny` or `allow`. Rules from several definitions are concatenated.
        The default is the embedded default policy, with `binaries` set to
        `services.enforcer.dockerBinaries` when docker is enabled. The daemon checks the file at
        start and on reload (file:line:column errors); a bad file at reload keeps the old policy.
      '';
    };

    lsms = mkOption {
      type = types.listOf types.str;
      default =
        if nixosHasSecurityLsm then
          [ "bpf" ]
        else
          [
            "landlock"
            "lockdown"
            "yama"
            "integrity"
            "apparmor"
            "bpf"
          ];
      defaultText = lib.literalExpression ''
        if options ? security.lsm then [ "bpf" ]
        else [ "landlock" "lockdown" "yama" "integrity" "apparmor" "bpf" ]'';
      description = ''
        The LSMs to activate at boot; "bpf" is added when missing. On NixOS before 25.05 this is
        the whole `lsm=` kernel parameter, so it must list every LSM to keep (compare
        `cat /sys/kernel/security/lsm`). On NixOS 25.05 and later these are added to
        `security.lsm`, which renders the one `lsm=` parameter (the kernel ignores repeated
        names). Takes effect at the next boot.
      '';
    };

    dockerBinaries = mkOption {
      type = types.listOf types.str;
      default =
        let
          docker = config.virtualisation.docker.package;
        in
        lib.optionals (config.virtualisation.docker.enable or false) [
          "${docker}/bin/docker"
          "${docker}/libexec/docker/docker"
        ];
      defaultText = lib.literalExpression ''
        lib.optionals config.virtualisation.docker.enable [
          "''${config.virtualisation.docker.package}/bin/docker"
          "''${config.virtualisation.docker.package}/libexec/docker/docker"
        ]'';
      description = ''
        The docker clients of this system, for a rule's `binaries`
        (`binaries = config.services.enforcer.dockerBinaries;`); the default settings use them.
        In nixpkgs, `bin/docker` is a makeWrapper shell script that execs the real CLI,
        `libexec/docker/docker`; a policy that vetted only the script (what the daemon finds
        through PATH and /run/current-system/sw/bin) would let the real CLI be run directly.
      '';
    };

    before = mkOption {
      type = types.listOf (types.strMatching ".+[.]service");
      default = [ ];
      example = [ "ai-agent.service" ];
      description = ''
        Services that must start only once the policy is enforced: each gets
        `after` and `requires` on enforcer.service, so it waits for READY=1 and does not start
        when enforcer fails to. Requires= also means that stopping or restarting enforcer.service
        stops or restarts them (enforcement itself continues while the daemon is down).
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = builtins.length lsmParams == 1 && lsmParamHasBpf (builtins.head lsmParams);
            message = "services.enforcer: the kernel needs exactly one lsm= parameter listing bpf; boot.kernelParams has ${builtins.toJSON lsmParams}";
          }
          {
            assertion = !(builtins.elem "enforcer.service" cfg.before);
            message = "services.enforcer.before cannot contain enforcer.service itself";
          }
        ];

        warnings = lib.optional (cfg.dockerBinaries != [ ] && rulesWithoutBinaries != [ ]) (
          "services.enforcer: rule(s) ${
            lib.concatMapStringsSep ", " (rule: builtins.toJSON (rule.name or "?")) rulesWithoutBinaries
          } have no `binaries`: the daemon then finds bin/docker, a wrapper script, and not "
          + "libexec/docker/docker, the real CLI, which the restricted user can run directly. "
          + "Set binaries = config.services.enforcer.dockerBinaries;"
        );

        environment.systemPackages = [ cfg.package ];

        environment.etc."enforcer/policy.toml".text = policyText;

        # Same unit as contrib/systemd/enforcer.service; the reasons for each line are there.
        systemd.services.enforcer = {
          description = "enforcer: deny chosen docker CLI commands to restricted users (BPF LSM)";
          wantedBy = [ "multi-user.target" ];
          after = [
            "local-fs.target"
            "sys-fs-bpf.mount"
            "systemd-sysusers.service"
            "userborn.service"
          ];
          before = [
            "basic.target"
            "docker.socket"
            "docker.service"
            "multi-user.target"
            "shutdown.target"
          ];
          conflicts = [ "shutdown.target" ];
          unitConfig = {
            DefaultDependencies = false;
            AssertPathIsMountPoint = "/sys/fs/bpf";
            StartLimitIntervalSec = 30;
            StartLimitBurst = 5;
          };
          # A new policy is applied with `systemctl reload` (no restart) on nixos-rebuild switch.
          reloadTriggers = [ policyText ];
          # A new docker package is a new binary (a new inode): restart to vet it. The old
          # one stays in the Nix store, unvetted: the socket gate refuses its connections.
          restartTriggers = lib.optional (config.virtualisation.docker.enable or false) config.virtualisation.docker.package;
          # Restart after activation instead of stop before / start after: the pins keep
          # enforcing either way, this only shortens the time without denial logging.
          stopIfChanged = false;
          serviceConfig = {
            Type = "notify";
            NotifyAccess = "main";
            ExecStart = "${enforcer} run --config ${policyPath}";
            ExecReload = "${enforcer} reload";
            Restart = "always";
            RestartSec = 1;
            SuccessExitStatus = 3;
            RestartPreventExitStatus = 3;
            StateDirectory = "enforcer";
            StateDirectoryMode = "0700";
            RuntimeDirectory = "enforcer";
            RuntimeDirectoryPreserve = true;
            RuntimeDirectoryMode = "0700";
            UMask = "0077";
            LimitMEMLOCK = "infinity";
            OOMScoreAdjust = -900;

            CapabilityBoundingSet = "CAP_BPF CAP_PERFMON CAP_SYS_ADMIN";
            NoNewPrivileges = true;

            PrivateMounts = true;
            ProtectSystem = "strict";
            ReadWritePaths = "/sys/fs/bpf";
            ProtectHome = "read-only";
            PrivateTmp = true;
            PrivateDevices = true;
            # Not ProtectKernelTunables: it leaves /sys/fs/bpf read-only whatever
            # ReadWritePaths says, and the daemon cannot pin (contrib/systemd/enforcer.service).
            ReadOnlyPaths = "/proc/sys /proc/sysrq-trigger -/proc/latency_stats -/proc/acpi -/proc/timer_stats -/proc/asound -/proc/bus -/proc/fs -/proc/irq /sys";
            InaccessiblePaths = "-/proc/kallsyms -/proc/kcore -/sys/kernel/debug";
            ProtectKernelModules = true;
            ProtectKernelLogs = true;
            ProtectControlGroups = true;
            ProtectClock = true;
            ProtectHostname = true;

            PrivateNetwork = true;
            RestrictAddressFamilies = "AF_UNIX";
            RestrictNamespaces = true;
            LockPersonality = true;
            MemoryDenyWriteExecute = true;
            RestrictRealtime = true;
            RestrictSUIDSGID = true;
            SystemCallArchitectures = "native";
            SystemCallFilter = "@system-service bpf";
            SystemCallErrorNumber = "EPERM";
          };
        };
      }

      # The agent (and any other listed service) starts only once the policy is enforced.
      {
        systemd.services = lib.listToAttrs (
          map (
            unit:
            lib.nameValuePair (serviceName unit) {
              after = [ "enforcer.service" ];
              requires = [ "enforcer.service" ];
            }
          ) cfg.before
        );
      }

      (lib.optionalAttrs nixosHasSecurityLsm { security.lsm = lsmsWithBpf; })

      (lib.optionalAttrs (!nixosHasSecurityLsm) {
        boot.kernelParams = [ "lsm=${lib.concatStringsSep "," lsmsWithBpf}" ];
      })
    ]
  );
}
