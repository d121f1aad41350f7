# NixOS module for enforcer: the BPF LSM daemon that denies chosen docker CLI commands to
# restricted users. Documentation: docs/nixos.md.
#
#   services.enforcer = {
#     enable = true;
#     settings.rule = [ { name = "ai-worker-docker"; users = [ "ai-worker" ]; deny = [ "exec" ]; } ];
#     before = [ "ai-agent.service" ];
#   };
#
# Needs NixOS 22.05 or later (asserted). What is tested (vm-tests/tests/packaging.rs, offline):
# this file parses; it evaluates with nixpkgs' own module system and `security` module (master
# and 25.05) to the expected lsm=, policy, unit and assertions; and against a stub `lib`
# (vm-tests/nix/stub-lib.nix). It has not been booted in a NixOS VM in CI.
{
  config,
  lib,
  pkgs,
  options,
  ...
}:

# Before 22.05 `lib` lacks what the options below use: say so, instead of the "attribute
# missing" that evaluation would stop at before the version assertion could run.
assert
  (lib ? mkPackageOption && lib ? getExe)
  || throw "services.enforcer needs NixOS 22.05 or later (this nixpkgs' lib has no mkPackageOption or getExe)";

let
  cfg = config.services.enforcer;
  inherit (lib) types mkOption;

  # The README's default policy (the wrapper script's blacklist for the agent's account), with
  # NixOS's docker binaries named (see dockerBinaries).
  defaultRules = [
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

  # ---- The policy file ---------------------------------------------------------------------
  settingsFormat = pkgs.formats.toml { };

  # null means "not set": left out of the file (TOML has no null).
  withoutNulls = lib.filterAttrs (_: value: value != null);
  policySettings =
    withoutNulls cfg.settings
    // {
      rule = map (rule: withoutNulls (rule // { binaries = mapBinaries rule.binaries; })) cfg.settings.rule;
    };
  mapBinaries =
    binaries:
    if binaries == null then null else map (b: if builtins.isAttrs b then withoutNulls b else b) binaries;

  renderedPolicy = settingsFormat.generate "enforcer-policy-unchecked.toml" policySettings;
  # The package's own parser checks the file at build time, so that a misspelt command or an
  # unknown key fails nixos-rebuild with file:line:column instead of the boot.
  policyFile =
    if cfg.checkPolicy then
      pkgs.runCommand "enforcer-policy.toml"
        {
          rendered = renderedPolicy;
          preferLocalBuild = true;
        }
        ''
          if ! ${lib.getExe cfg.package} validate --config "$rendered"; then
            echo "services.enforcer.settings: the rendered policy is rejected (above); it reads:" >&2
            cat -n "$rendered" >&2
            exit 1
          fi
          cp "$rendered" "$out"
        ''
    else
      renderedPolicy;
  policyPath = "/etc/enforcer/policy.toml";

  # ---- NixOS version ------------------------------------------------------------------------
  # 22.05: systemd.services.<name>.reloadTriggers, lib.mkPackageOption and lib.getExe.
  minimumRelease = "22.05";
  release =
    if options ? system.nixos.release then config.system.nixos.release else lib.trivial.release;
  supported = lib.versionAtLeast (lib.versions.majorMinor release) minimumRelease;

  # ---- lsm= -------------------------------------------------------------------------------
  # NixOS 25.05 and later have security.lsm, render the one lsm= parameter from it and list
  # bpf by default (master: last, with mkAfter, because AppArmor must come before it). A
  # definition of ours would merge ahead of NixOS's own and put bpf first, so there this module
  # defines nothing and only asserts that bpf is there. Before 25.05, this module writes lsm=.
  nixosHasSecurityLsm = options ? security.lsm;
  defaultLsms = [
    "landlock"
    "lockdown"
    "yama"
    "integrity"
    "apparmor"
    "bpf"
  ];
  # "bpf" exactly once, last; the others in the given order.
  lsmsWithBpf =
    builtins.filter (lsm: lsm != "bpf") (if cfg.lsms == null then defaultLsms else cfg.lsms) ++ [ "bpf" ];
  lsmParams = builtins.filter (lib.hasPrefix "lsm=") config.boot.kernelParams;
  lsmParamHasBpf = param: builtins.elem "bpf" (lib.splitString "," (lib.removePrefix "lsm=" param));

  # Rules that leave `binaries` to the daemon's search, which finds NixOS's wrapper script and
  # not the real CLI behind it (see dockerBinaries).
  rulesWithoutBinaries = builtins.filter (rule: rule.binaries == null) cfg.settings.rule;
  rulesByName = builtins.listToAttrs (map (rule: lib.nameValuePair rule.name rule) cfg.settings.rule);
  # gateServices entries whose rule has no gate socket: unknown, or api_gate = false.
  gateServicesWithoutGate = lib.filterAttrs (
    _: rule: !(rulesByName ? ${rule}) || rulesByName.${rule}.api_gate == false
  ) cfg.gateServices;

  enforcer = lib.getExe cfg.package;
  serviceName = unit: lib.removeSuffix ".service" unit;
  # The sandbox the daemon and the metrics service share: root with the BPF capabilities,
  # nothing else (each adds what it writes and how it sees the kernel's tunables).
  commonHardening = {
    CapabilityBoundingSet = "CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_CHOWN CAP_DAC_READ_SEARCH";
    NoNewPrivileges = true;
    PrivateMounts = true;
    ProtectSystem = "strict";
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictNamespaces = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = "@system-service bpf";
    SystemCallErrorNumber = "EPERM";
  };

  metricsService = {
    description = "enforcer: Prometheus metrics of the enforcement counters";
    after = [ "enforcer.service" ];
    # Only reads the pinned maps: the tunables may be read-only the usual way.
    serviceConfig = commonHardening // {
      ProtectHome = true;
      ProtectKernelTunables = true;
    };
  };
in
{
  meta = {
    doc = ../docs/nixos.md;
    # meta.maintainers only takes entries of nixpkgs' lib.maintainers, which has none for this
    # project: see README.md for who maintains it.
    maintainers = [ ];
  };

  options.services.enforcer = {
    enable = lib.mkEnableOption "enforcer, which denies chosen docker CLI commands to restricted users in the kernel (BPF LSM)";

    # pkgs.enforcer when an overlay provides it (the flake's overlays.default), else this
    # repository's nix/package.nix.
    package = lib.mkPackageOption (pkgs // { enforcer = pkgs.enforcer or (pkgs.callPackage ./package.nix { }); }) "enforcer" {
      extraDescription = ''
        Without an overlay that provides `pkgs.enforcer`, this repository's nix/package.nix,
        built from source (needs a nightly Rust with rust-src and bpf-linker; untested). A binary
        built by `cargo xtask build` can be used instead:
        `pkgs.callPackage ./nix/package.nix { prebuilt = ./enforcer; }`.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        The policy, written to ${policyPath} (format: README.md, "The policy"). Checked at
        build time by `enforcer validate` (see `checkPolicy`), and by the daemon at start and on
        reload; a bad file at reload keeps the old policy.
      '';
      type = types.submodule {
        # Keys of later policy versions pass through; `enforcer validate` judges them.
        freeformType = settingsFormat.type;
        options = {
          mode = mkOption {
            type = types.enum [
              "enforce"
              "audit"
            ];
            default = "enforce";
            description = ''"enforce" denies; "audit" logs what would be denied and denies nothing.'';
          };
          rule = mkOption {
            default = defaultRules;
            defaultText = lib.literalExpression ''
              [ {
                name = "ai-worker-docker";
                users = [ "ai-worker" ];
                binaries = config.services.enforcer.dockerBinaries; # left out when empty
                deny = [ "exec" "cp" "commit" "diff" "export" "import" "load" "save" "attach" "push" "tag" "system dial-stdio" "compose watch" "checkpoint create" ];
              } ]
            '';
            description = "The rules (at most 32); definitions from several modules are concatenated.";
            type = types.listOf (
              types.submodule {
                options = {
                  name = mkOption {
                    type = types.str;
                    description = "Names the rule in logs and counters.";
                  };
                  users = mkOption {
                    type = types.nullOr (types.listOf (types.either types.str types.ints.unsigned));
                    default = null;
                    description = "Restricted users, by name or uid (matched by real uid).";
                  };
                  cgroups = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    example = [ "/system.slice/ai-agent.service" ];
                    description = "cgroup v2 paths: every process in them or below is restricted, whatever its uid. A rule needs users or cgroups.";
                  };
                  binaries = mkOption {
                    type = types.nullOr (
                      types.listOf (
                        types.either types.str (
                          types.submodule {
                            options = {
                              path = mkOption {
                                type = types.str;
                                description = "Absolute path of the client.";
                              };
                              client = mkOption {
                                type = types.enum [
                                  "docker"
                                  "docker-compose"
                                ];
                                description = "Which command line the client parses.";
                              };
                            };
                          }
                        )
                      )
                    );
                    default = null;
                    description = "The docker clients to vet (absolute paths); null: those found in PATH and the usual places. On NixOS use `config.services.enforcer.dockerBinaries`.";
                  };
                  sockets = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    description = ''The docker API's unix sockets only vetted clients may connect to; null: [ "/var/run/docker.sock" "/run/docker.sock" ].'';
                  };
                  hosts = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    example = [ "127.0.0.1:2375" ];
                    description = "TCP endpoints of the docker API, gated the same way.";
                  };
                  deny = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    description = ''Docker commands denied (everything else allowed), e.g. "exec", "compose exec". Set deny or allow.'';
                  };
                  allow = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    description = "Docker commands allowed (everything else denied). Set deny or allow.";
                  };
                  api_gate = mkOption {
                    type = types.nullOr types.bool;
                    default = null;
                    description = ''The API gate (on when null or true): the rule's identities reach docker only through /run/enforcer/gate/<name>.sock, which judges every request (docs/api-gate.md). Before Linux 6.7, give the agent's services DOCKER_HOST with `services.enforcer.gateServices`. false: the argv check alone (weaker: allowed commands keep their flags' power).'';
                  };
                  api_clients = mkOption {
                    type = types.nullOr (types.enum [ "vetted" "any" ]);
                    default = null;
                    description = ''Who may use the rule's gate: "vetted" (the default: the rule's docker binaries) or "any" (SDKs, docker-compose v1, testcontainers).'';
                  };
                  bind_paths = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    example = [ "/home/ai-worker/work" ];
                    description = "Host directories the gate lets bind mounts come from (default: none).";
                  };
                  api_powers = mkOption {
                    type = types.nullOr (types.listOf types.str);
                    default = null;
                    example = [ "devices" ];
                    description = "Container powers the gate grants the rule beyond the defaults (docs/api-gate.md lists them).";
                  };
                };
              }
            );
          };
        };
      };
    };

    checkPolicy = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Check the rendered policy at build time with the package's `enforcer validate`, so
        that nixos-rebuild fails with file:line:column. Turn off only when the package cannot
        run on the build machine (cross compilation).
      '';
    };

    lsms = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      description = ''
        NixOS before 25.05 only: the whole `lsm=` kernel parameter, "bpf" added when missing
        (null: ${lib.concatStringsSep "," defaultLsms}). It replaces the kernel's built-in list,
        so list every LSM to keep (compare `cat /sys/kernel/security/lsm`). On NixOS 25.05 and
        later leave it null: NixOS renders `lsm=` from `security.lsm`, which lists bpf by
        default (asserted). Takes effect at the next boot.
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

    gateServices = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { ai-agent = "ai-worker-docker"; };
      description = ''
        Services (by name, without .service) whose environment gets
        `DOCKER_HOST=unix:///run/enforcer/gate/<rule>.sock` for the named rule's API gate: the
        kernel refuses the rule's identities the real docker socket; before Linux 6.7 this is
        how their docker finds the gate (6.7 and later route the docker socket's path to the
        gate in the kernel, and the variable does no harm there).
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

    metrics = {
      listen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:9477";
        description = ''
          Serve the counters in the Prometheus text format on http://ADDRESS/metrics, from a
          service of its own (enforcer-metrics.service; the daemon itself has no network).
          Keep it on a local address: the counters tell who was denied what.
        '';
      };
      textfile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/prometheus-node-exporter-text-files/enforcer.prom";
        description = ''
          Write the counters in the Prometheus text format to this file every
          `metrics.interval`, for node-exporter's textfile collector
          (`--collector.textfile.directory`). Written atomically (a rename).
        '';
      };
      interval = mkOption {
        type = types.str;
        default = "15s";
        description = "How often the textfile is rewritten (a systemd time span).";
      };
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = supported;
            message = "services.enforcer needs NixOS ${minimumRelease} or later (systemd reloadTriggers); this is NixOS ${release}";
          }
        ];
      }

      (lib.mkIf supported {
        assertions = [
          {
            assertion = builtins.length lsmParams == 1 && lsmParamHasBpf (builtins.head lsmParams);
            message = "services.enforcer: the kernel needs exactly one lsm= parameter listing bpf; boot.kernelParams has ${builtins.toJSON lsmParams}";
          }
          {
            # A service pointed at a gate that will not exist would only see "no such file".
            assertion = gateServicesWithoutGate == { };
            message = "services.enforcer.gateServices: ${
              lib.concatMapStringsSep "; " (
                unit:
                let
                  rule = gateServicesWithoutGate.${unit};
                in
                "${unit} names rule ${builtins.toJSON rule}, which ${
                  if rulesByName ? ${rule} then "sets api_gate = false" else "is not in services.enforcer.settings.rule"
                }"
              ) (builtins.attrNames gateServicesWithoutGate)
            }: name a rule with the API gate on";
          }
          {
            assertion = !(builtins.elem "enforcer.service" cfg.before);
            message = "services.enforcer.before cannot contain enforcer.service itself";
          }
          {
            assertion = !nixosHasSecurityLsm || cfg.lsms == null;
            message = "services.enforcer.lsms is for NixOS before 25.05; this NixOS renders lsm= from security.lsm: set that instead";
          }
          {
            assertion = !nixosHasSecurityLsm || builtins.elem "bpf" config.security.lsm;
            message = "services.enforcer: security.lsm must list bpf (NixOS lists it by default; was it overridden?); it is ${builtins.toJSON config.security.lsm}";
          }
        ];

        warnings = lib.optional (cfg.dockerBinaries != [ ] && rulesWithoutBinaries != [ ]) (
          "services.enforcer: rule(s) ${
            lib.concatMapStringsSep ", " (rule: builtins.toJSON rule.name) rulesWithoutBinaries
          } have no `binaries`: the daemon then finds bin/docker, a wrapper script, and not "
          + "libexec/docker/docker, the real CLI, which the restricted user can run directly. "
          + "Set binaries = config.services.enforcer.dockerBinaries;"
        );

        environment.systemPackages = [ cfg.package ];

        environment.etc."enforcer/policy.toml".source = policyFile;

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
          };
          startLimitIntervalSec = 30;
          startLimitBurst = 5;
          # A new policy is applied with `systemctl reload` (no restart) on nixos-rebuild switch.
          reloadTriggers = [ policyFile ];
          # A new docker package is a new binary (a new inode): restart to vet it. The old
          # one stays in the Nix store, unvetted: the socket gate refuses its connections.
          restartTriggers = lib.optional (config.virtualisation.docker.enable or false) config.virtualisation.docker.package;
          # Restart after activation instead of stop before / start after: the pins keep
          # enforcing either way, this only shortens the time without denial logging.
          stopIfChanged = false;
          serviceConfig = commonHardening // {
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
            RuntimeDirectoryMode = "0711"; # gate/ must be reachable; control.sock is 0600
            UMask = "0077";
            LimitMEMLOCK = "infinity";
            OOMScoreAdjust = -900;

            ReadWritePaths = "/sys/fs/bpf";
            ProtectHome = "read-only";
            # Not ProtectKernelTunables: it leaves /sys/fs/bpf read-only whatever
            # ReadWritePaths says, and the daemon cannot pin (contrib/systemd/enforcer.service).
            ReadOnlyPaths = "/proc/sys /proc/sysrq-trigger -/proc/latency_stats -/proc/acpi -/proc/timer_stats -/proc/asound -/proc/bus -/proc/fs -/proc/irq /sys";
            InaccessiblePaths = "-/proc/kallsyms -/proc/kcore -/sys/kernel/debug";
            PrivateNetwork = true;
            RestrictAddressFamilies = "AF_UNIX";
          };
        };
      })

      (lib.mkIf supported {
        # The agent (and any other listed service) starts only once the policy is enforced.
        systemd.services = lib.listToAttrs (
          map (
            unit:
            lib.nameValuePair (serviceName unit) {
              after = [ "enforcer.service" ];
              requires = [ "enforcer.service" ];
            }
          ) cfg.before
        );

        # Before 25.05, NixOS has no security.lsm: this module writes the one lsm= itself.
        boot.kernelParams = lib.mkIf (!nixosHasSecurityLsm) [ "lsm=${lib.concatStringsSep "," lsmsWithBpf}" ];
      })

      (lib.mkIf supported {
        # The agent's services reach docker through their rule's gate (docs/api-gate.md).
        systemd.services = builtins.mapAttrs (_: rule: {
          environment.DOCKER_HOST = "unix:///run/enforcer/gate/${rule}.sock";
        }) cfg.gateServices;
      })

      (lib.mkIf (supported && cfg.metrics.listen != null) {
        systemd.services.enforcer-metrics = lib.recursiveUpdate metricsService {
          wantedBy = [ "multi-user.target" ];
          serviceConfig = {
            ExecStart = "${enforcer} metrics --listen ${cfg.metrics.listen}";
            Restart = "on-failure";
            RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
          };
        };
      })

      (lib.mkIf (supported && cfg.metrics.textfile != null) {
        systemd.services.enforcer-metrics-textfile = lib.recursiveUpdate metricsService {
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${enforcer} metrics --textfile ${cfg.metrics.textfile}";
            ReadWritePaths = builtins.dirOf cfg.metrics.textfile;
            RestrictAddressFamilies = "AF_UNIX";
            PrivateNetwork = true;
          };
        };
        # The collector's directory, world-readable: node-exporter runs as its own user.
        systemd.tmpfiles.rules = [ "d ${builtins.dirOf cfg.metrics.textfile} 0755 root root -" ];
        systemd.timers.enforcer-metrics-textfile = {
          wantedBy = [ "timers.target" ];
          timerConfig = {
            OnActiveSec = "0s";
            OnUnitActiveSec = cfg.metrics.interval;
            AccuracySec = "1s";
          };
        };
      })
    ]
  );
}
