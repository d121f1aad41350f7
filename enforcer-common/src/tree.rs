//! The docker CLI's command tree: every command, its aliases and top-level shortcuts,
//! the flags each command group accepts before its subcommand, and which commands give
//! the same power as another.
//!
//! Read off the docker CLI 28 (`docker <group> --help`, cobra's hidden commands from its
//! source), the compose v2 plugin and the buildx plugin. Userspace turns this table into
//! the kernel's grammar map; the engine walks it through [`crate::grammar::Grammar`], so
//! the kernel and `enforcer check` decide with the same data. docs/commands.md explains
//! each entry that matters to the default policy.

/// A flag a command group accepts between its own name and its subcommand
/// (`docker compose -f x.yml exec`, `docker container --help exec`).
pub struct FlagSpec {
    /// Long name without the dashes: `file` for `--file`.
    pub long: &'static str,
    /// One-letter shorthand, if any: `b'f'` for `-f`.
    pub short: Option<u8>,
    pub takes_value: bool,
}

/// One command of the tree.
pub struct NodeSpec {
    /// Canonical path from the root, words separated by one space: `"container exec"`.
    /// A node's parent (`"container"`) comes before it in [`NODES`].
    pub path: &'static str,
    /// Other words that name this node under the same parent (cobra aliases):
    /// `"container ls"` has `["list", "ps"]`.
    pub aliases: &'static [&'static str],
    /// Words directly under the root that run this node (the CLI's top-level shortcuts):
    /// `"container exec"` has `["exec"]`, `"image ls"` has `["images"]`.
    pub shortcuts: &'static [&'static str],
    /// For a group: the flags it accepts before its subcommand. Leaves: `&[]`.
    pub flags: &'static [FlagSpec],
    /// Canonical path of the node whose power this one has (`"compose exec"` runs a
    /// command in a running container like `"container exec"`): a policy entry naming
    /// that node covers this one too.
    pub same_as: Option<&'static str>,
    /// Hidden from `--help` (cobra `Hidden: true`), but runs all the same.
    pub hidden: bool,
    /// For a leaf: flags that give it another command's power (`start --attach` is an
    /// attach). The engine reads the leaf's arguments for them.
    pub power_flags: &'static [PowerFlag],
}

/// A flag of a leaf command that makes it do what another command does.
pub struct PowerFlag {
    /// Long name without the dashes.
    pub long: &'static str,
    pub short: Option<u8>,
    /// Canonical path of the command whose power the flag gives.
    pub same_as: &'static str,
}

/// `container start`: `-a/--attach` attaches to the container's streams, `-i/--interactive`
/// to its stdin (cli/command/container/start.go: `if opts.Attach || opts.OpenStdin`).
const START_POWER: &[PowerFlag] = &[
    PowerFlag { long: "attach", short: Some(b'a'), same_as: "container attach" },
    PowerFlag { long: "interactive", short: Some(b'i'), same_as: "container attach" },
];

/// Builds: `--push` pushes the result (`--output=type=registry`), a push of whatever image
/// the build starts `FROM`.
const BUILD_POWER: &[PowerFlag] = &[PowerFlag { long: "push", short: None, same_as: "image push" }];

/// `compose up --watch/-w` runs compose's watch (cp and exec into the services).
const COMPOSE_UP_POWER: &[PowerFlag] =
    &[PowerFlag { long: "watch", short: Some(b'w'), same_as: "compose watch" }];

/// Every cobra command group has `-h/--help`.
pub const HELP_ONLY: &[FlagSpec] = &[FlagSpec { long: "help", short: Some(b'h'), takes_value: false }];

/// `docker compose`: the flags of compose's root command (docker/compose v2.30-v2.40, 5.x:
/// cmd/compose/compose.go `addProjectFlags` and `RootCommand`), hidden ones included, its
/// persistent `--dry-run`, and `-h/--help`. `--insecure-registry` is 5.x only.
const COMPOSE_FLAGS: &[FlagSpec] = &[
    FlagSpec { long: "all-resources", short: None, takes_value: false },
    FlagSpec { long: "ansi", short: None, takes_value: true },
    FlagSpec { long: "compatibility", short: None, takes_value: false },
    FlagSpec { long: "dry-run", short: None, takes_value: false },
    FlagSpec { long: "env-file", short: None, takes_value: true },
    FlagSpec { long: "file", short: Some(b'f'), takes_value: true },
    FlagSpec { long: "help", short: Some(b'h'), takes_value: false },
    FlagSpec { long: "insecure-registry", short: None, takes_value: true },
    FlagSpec { long: "no-ansi", short: None, takes_value: false },
    FlagSpec { long: "parallel", short: None, takes_value: true },
    FlagSpec { long: "profile", short: None, takes_value: true },
    FlagSpec { long: "progress", short: None, takes_value: true },
    FlagSpec { long: "project-directory", short: None, takes_value: true },
    FlagSpec { long: "project-name", short: Some(b'p'), takes_value: true },
    FlagSpec { long: "verbose", short: None, takes_value: false },
    FlagSpec { long: "version", short: Some(b'v'), takes_value: false },
    FlagSpec { long: "workdir", short: None, takes_value: true },
];

/// Groups below `compose` (`alpha`, `bridge`, ...): compose's local flags do not reach
/// them, its persistent `--dry-run` does.
const COMPOSE_CHILD_FLAGS: &[FlagSpec] = &[
    FlagSpec { long: "dry-run", short: None, takes_value: false },
    FlagSpec { long: "help", short: Some(b'h'), takes_value: false },
];

/// `docker buildx` and its nested groups (and `docker builder`, which the CLI forwards to
/// buildx): buildx's persistent `--builder` and `-D/--debug` (commands/root.go), `-h/--help`.
const BUILDX_FLAGS: &[FlagSpec] = &[
    FlagSpec { long: "builder", short: None, takes_value: true },
    FlagSpec { long: "debug", short: Some(b'D'), takes_value: false },
    FlagSpec { long: "help", short: Some(b'h'), takes_value: false },
];

/// `docker buildx debug` (experimental): buildx's flags and its own `--invoke`, `--on`, and
/// (v0.24) `--progress`.
const BUILDX_DEBUG_FLAGS: &[FlagSpec] = &[
    FlagSpec { long: "builder", short: None, takes_value: true },
    FlagSpec { long: "debug", short: Some(b'D'), takes_value: false },
    FlagSpec { long: "help", short: Some(b'h'), takes_value: false },
    FlagSpec { long: "invoke", short: None, takes_value: true },
    FlagSpec { long: "on", short: None, takes_value: true },
    FlagSpec { long: "progress", short: None, takes_value: true },
];

/// `docker stack`: its persistent `--orchestrator` (deprecated and ignored, still parsed).
const STACK_FLAGS: &[FlagSpec] = &[
    FlagSpec { long: "help", short: Some(b'h'), takes_value: false },
    FlagSpec { long: "orchestrator", short: None, takes_value: true },
];

/// A command without subcommands.
const fn leaf(path: &'static str) -> NodeSpec {
    NodeSpec {
        path,
        aliases: &[],
        shortcuts: &[],
        flags: &[],
        same_as: None,
        hidden: false,
        power_flags: &[],
    }
}

/// A command group and the flags it accepts before its subcommand.
const fn group(path: &'static str, flags: &'static [FlagSpec]) -> NodeSpec {
    NodeSpec { flags, ..leaf(path) }
}

/// The tree, parents before their children.
///
/// Group flags: a word inside a group is read the way cobra's `Traverse` reads it, with
/// the flags the group knows at that point (its local and persistent flags and its
/// ancestors' persistent ones: cobra's `Find`, which the CLI runs first, merges them).
/// Docker's own groups know only `-h/--help`; `stack` also `--orchestrator`.
///
/// `same_as` is set only where the power is the same as the target's, not merely
/// included in it (an allow list naming the target admits the node too); commands with
/// more power are separate policy entries (docs/commands.md, "Default policy additions").
/// A `same_as` target may itself have one (`builder imagetools create` -> `buildx
/// imagetools create` -> `image push`); `grammar::covers` follows the chain.
pub const NODES: &[NodeSpec] = &[
    // Root-level commands that run no group's subcommand (docker CLI 28.2,
    // cli/command/commands/commands.go).
    leaf("login"),
    leaf("logout"),
    leaf("search"),
    leaf("version"),
    // `docker inspect`: any object type (system.NewInspectCommand); not `container inspect`.
    leaf("inspect"),
    // cobra's own: `help [command]`, and the completion commands (`completion` is hidden,
    // HiddenDefaultCmd; `__complete`/`__completeNoDesc` are added when invoked and only
    // complete words).
    leaf("help"),
    NodeSpec { hidden: true, ..leaf("__complete") },
    NodeSpec { hidden: true, ..leaf("__completeNoDesc") },
    NodeSpec { hidden: true, ..group("completion", HELP_ONLY) },
    leaf("completion bash"),
    leaf("completion fish"),
    leaf("completion powershell"),
    leaf("completion zsh"),
    // builder: with the buildx plugin installed (the usual case) the CLI rewrites
    // `docker builder ...` to `docker buildx ...` (cmd/docker/builder.go forwardBuilder), so
    // its subcommands and flags are buildx's (docker's own `build` and `prune` among them),
    // each the same as its buildx twin. A config-file alias (`{"aliases": {"builder":
    // "compose"}}`) may point it at another plugin instead: keep every compose command with a
    // denied power (exec, cp, attach, commit, export, push, publish, watch, alpha) out of
    // this list, so that those spellings stay undecidable.
    NodeSpec { same_as: Some("buildx"), ..group("builder", BUILDX_FLAGS) },
    NodeSpec {
        aliases: &["f"],
        same_as: Some("buildx bake"),
        power_flags: BUILD_POWER,
        ..leaf("builder bake")
    },
    NodeSpec {
        aliases: &["b"],
        same_as: Some("buildx build"),
        power_flags: BUILD_POWER,
        ..leaf("builder build")
    },
    NodeSpec { same_as: Some("buildx create"), ..leaf("builder create") },
    NodeSpec { same_as: Some("buildx dap"), ..group("builder dap", BUILDX_FLAGS) },
    NodeSpec { same_as: Some("buildx dap attach"), hidden: true, ..leaf("builder dap attach") },
    NodeSpec { same_as: Some("buildx dap build"), ..leaf("builder dap build") },
    NodeSpec { same_as: Some("buildx debug"), ..group("builder debug", BUILDX_DEBUG_FLAGS) },
    NodeSpec { aliases: &["b"], same_as: Some("buildx debug build"), ..leaf("builder debug build") },
    NodeSpec { same_as: Some("buildx dial-stdio"), ..leaf("builder dial-stdio") },
    NodeSpec { same_as: Some("buildx du"), ..leaf("builder du") },
    NodeSpec { same_as: Some("buildx history"), ..group("builder history", BUILDX_FLAGS) },
    NodeSpec { same_as: Some("buildx history export"), ..leaf("builder history export") },
    NodeSpec { same_as: Some("buildx history import"), ..leaf("builder history import") },
    NodeSpec { same_as: Some("buildx history inspect"), ..leaf("builder history inspect") },
    NodeSpec { same_as: Some("buildx history logs"), ..leaf("builder history logs") },
    NodeSpec { same_as: Some("buildx history ls"), ..leaf("builder history ls") },
    NodeSpec { same_as: Some("buildx history open"), ..leaf("builder history open") },
    NodeSpec { same_as: Some("buildx history rm"), ..leaf("builder history rm") },
    NodeSpec { same_as: Some("buildx history trace"), ..leaf("builder history trace") },
    NodeSpec { same_as: Some("buildx imagetools"), ..group("builder imagetools", BUILDX_FLAGS) },
    NodeSpec { same_as: Some("buildx imagetools create"), ..leaf("builder imagetools create") },
    NodeSpec { same_as: Some("buildx imagetools inspect"), ..leaf("builder imagetools inspect") },
    NodeSpec { same_as: Some("buildx inspect"), ..leaf("builder inspect") },
    NodeSpec { same_as: Some("buildx install"), hidden: true, ..leaf("builder install") },
    NodeSpec { same_as: Some("buildx ls"), ..leaf("builder ls") },
    NodeSpec { same_as: Some("buildx policy"), ..group("builder policy", BUILDX_FLAGS) },
    NodeSpec { same_as: Some("buildx policy eval"), ..leaf("builder policy eval") },
    NodeSpec { same_as: Some("buildx policy test"), ..leaf("builder policy test") },
    NodeSpec { same_as: Some("buildx prune"), ..leaf("builder prune") },
    NodeSpec { same_as: Some("buildx rm"), ..leaf("builder rm") },
    NodeSpec { same_as: Some("buildx stop"), ..leaf("builder stop") },
    NodeSpec { same_as: Some("buildx uninstall"), hidden: true, ..leaf("builder uninstall") },
    NodeSpec { same_as: Some("buildx use"), ..leaf("builder use") },
    NodeSpec { same_as: Some("buildx version"), ..leaf("builder version") },
    // checkpoint (experimental daemons with CRIU). `create` dumps a running container's
    // memory: a default policy entry of its own.
    group("checkpoint", HELP_ONLY),
    leaf("checkpoint create"),
    NodeSpec { aliases: &["list"], ..leaf("checkpoint ls") },
    NodeSpec { aliases: &["remove"], ..leaf("checkpoint rm") },
    // config (swarm configs).
    group("config", HELP_ONLY),
    leaf("config create"),
    leaf("config inspect"),
    NodeSpec { aliases: &["list"], ..leaf("config ls") },
    NodeSpec { aliases: &["remove"], ..leaf("config rm") },
    // container: the legacy top-level words are shortcuts (cli/command/commands/commands.go).
    group("container", HELP_ONLY),
    NodeSpec { shortcuts: &["attach"], ..leaf("container attach") },
    NodeSpec { shortcuts: &["commit"], ..leaf("container commit") },
    NodeSpec { shortcuts: &["cp"], ..leaf("container cp") },
    NodeSpec { shortcuts: &["create"], ..leaf("container create") },
    NodeSpec { shortcuts: &["diff"], ..leaf("container diff") },
    NodeSpec { shortcuts: &["exec"], ..leaf("container exec") },
    NodeSpec { shortcuts: &["export"], ..leaf("container export") },
    leaf("container inspect"),
    NodeSpec { shortcuts: &["kill"], ..leaf("container kill") },
    NodeSpec { shortcuts: &["logs"], ..leaf("container logs") },
    NodeSpec { aliases: &["list", "ps"], shortcuts: &["ps"], ..leaf("container ls") },
    NodeSpec { shortcuts: &["pause"], ..leaf("container pause") },
    NodeSpec { shortcuts: &["port"], ..leaf("container port") },
    leaf("container prune"),
    NodeSpec { shortcuts: &["rename"], ..leaf("container rename") },
    NodeSpec { shortcuts: &["restart"], ..leaf("container restart") },
    NodeSpec { aliases: &["remove"], shortcuts: &["rm"], ..leaf("container rm") },
    NodeSpec { shortcuts: &["run"], ..leaf("container run") },
    NodeSpec { shortcuts: &["start"], power_flags: START_POWER, ..leaf("container start") },
    NodeSpec { shortcuts: &["stats"], ..leaf("container stats") },
    NodeSpec { shortcuts: &["stop"], ..leaf("container stop") },
    NodeSpec { shortcuts: &["top"], ..leaf("container top") },
    NodeSpec { shortcuts: &["unpause"], ..leaf("container unpause") },
    NodeSpec { shortcuts: &["update"], ..leaf("container update") },
    NodeSpec { shortcuts: &["wait"], ..leaf("container wait") },
    // context.
    group("context", HELP_ONLY),
    leaf("context create"),
    leaf("context export"),
    leaf("context import"),
    leaf("context inspect"),
    NodeSpec { aliases: &["list"], ..leaf("context ls") },
    NodeSpec { aliases: &["remove"], ..leaf("context rm") },
    leaf("context show"),
    leaf("context update"),
    leaf("context use"),
    // image. `docker build` and `docker image build` run `buildx build` when buildx is
    // installed.
    group("image", HELP_ONLY),
    NodeSpec { shortcuts: &["build"], power_flags: BUILD_POWER, ..leaf("image build") },
    NodeSpec { shortcuts: &["history"], ..leaf("image history") },
    NodeSpec { shortcuts: &["import"], ..leaf("image import") },
    leaf("image inspect"),
    NodeSpec { shortcuts: &["load"], ..leaf("image load") },
    NodeSpec { aliases: &["list"], shortcuts: &["images"], ..leaf("image ls") },
    leaf("image prune"),
    NodeSpec { shortcuts: &["pull"], ..leaf("image pull") },
    NodeSpec { shortcuts: &["push"], ..leaf("image push") },
    NodeSpec { aliases: &["remove", "rmi"], shortcuts: &["rmi"], ..leaf("image rm") },
    NodeSpec { shortcuts: &["save"], ..leaf("image save") },
    NodeSpec { shortcuts: &["tag"], ..leaf("image tag") },
    // manifest. `push` uploads a manifest list to a registry: a push.
    group("manifest", HELP_ONLY),
    leaf("manifest annotate"),
    leaf("manifest create"),
    leaf("manifest inspect"),
    NodeSpec { same_as: Some("image push"), ..leaf("manifest push") },
    leaf("manifest rm"),
    // network.
    group("network", HELP_ONLY),
    leaf("network connect"),
    leaf("network create"),
    leaf("network disconnect"),
    leaf("network inspect"),
    NodeSpec { aliases: &["list"], ..leaf("network ls") },
    leaf("network prune"),
    NodeSpec { aliases: &["remove"], ..leaf("network rm") },
    // node (swarm).
    group("node", HELP_ONLY),
    leaf("node demote"),
    leaf("node inspect"),
    NodeSpec { aliases: &["list"], ..leaf("node ls") },
    leaf("node promote"),
    leaf("node ps"),
    NodeSpec { aliases: &["remove"], ..leaf("node rm") },
    leaf("node update"),
    // plugin (daemon plugins). `push` uploads a plugin to a registry: a push.
    group("plugin", HELP_ONLY),
    leaf("plugin create"),
    leaf("plugin disable"),
    leaf("plugin enable"),
    leaf("plugin inspect"),
    leaf("plugin install"),
    NodeSpec { aliases: &["list"], ..leaf("plugin ls") },
    NodeSpec { same_as: Some("image push"), ..leaf("plugin push") },
    NodeSpec { aliases: &["remove"], ..leaf("plugin rm") },
    leaf("plugin set"),
    leaf("plugin upgrade"),
    // secret (swarm).
    group("secret", HELP_ONLY),
    leaf("secret create"),
    leaf("secret inspect"),
    NodeSpec { aliases: &["list"], ..leaf("secret ls") },
    NodeSpec { aliases: &["remove"], ..leaf("secret rm") },
    // service (swarm).
    group("service", HELP_ONLY),
    leaf("service create"),
    leaf("service inspect"),
    leaf("service logs"),
    NodeSpec { aliases: &["list"], ..leaf("service ls") },
    leaf("service ps"),
    NodeSpec { aliases: &["remove"], ..leaf("service rm") },
    leaf("service rollback"),
    leaf("service scale"),
    leaf("service update"),
    // stack (swarm): its persistent `--orchestrator` (deprecated, ignored) may come before
    // the subcommand.
    group("stack", STACK_FLAGS),
    leaf("stack config"),
    NodeSpec { aliases: &["up"], ..leaf("stack deploy") },
    NodeSpec { aliases: &["list"], ..leaf("stack ls") },
    leaf("stack ps"),
    NodeSpec { aliases: &["down", "remove"], ..leaf("stack rm") },
    leaf("stack services"),
    // swarm.
    group("swarm", HELP_ONLY),
    leaf("swarm ca"),
    leaf("swarm init"),
    leaf("swarm join"),
    leaf("swarm join-token"),
    leaf("swarm leave"),
    leaf("swarm unlock"),
    leaf("swarm unlock-key"),
    leaf("swarm update"),
    // system. `dial-stdio` (hidden) pipes stdin/stdout to the daemon's socket: the whole API,
    // more than exec, so a default policy entry of its own.
    group("system", HELP_ONLY),
    leaf("system df"),
    NodeSpec { hidden: true, ..leaf("system dial-stdio") },
    NodeSpec { shortcuts: &["events"], ..leaf("system events") },
    NodeSpec { shortcuts: &["info"], ..leaf("system info") },
    leaf("system prune"),
    // trust (Docker Content Trust). `sign` signs and pushes the image (ImagePush): a push.
    group("trust", HELP_ONLY),
    leaf("trust inspect"),
    group("trust key", HELP_ONLY),
    leaf("trust key generate"),
    leaf("trust key load"),
    leaf("trust revoke"),
    NodeSpec { same_as: Some("image push"), ..leaf("trust sign") },
    group("trust signer", HELP_ONLY),
    leaf("trust signer add"),
    leaf("trust signer remove"),
    // volume.
    group("volume", HELP_ONLY),
    leaf("volume create"),
    leaf("volume inspect"),
    NodeSpec { aliases: &["list"], ..leaf("volume ls") },
    leaf("volume prune"),
    NodeSpec { aliases: &["remove"], ..leaf("volume rm") },
    leaf("volume update"),
    // compose plugin (docker/compose v2.30-v2.40 and 5.x, cmd/compose/compose.go):
    // `docker compose [FLAGS] COMMAND`. The spellings of the container commands act on a
    // service's containers. `watch` copies files into running containers and runs commands
    // in them (cp and exec): a default policy entry of its own.
    group("compose", COMPOSE_FLAGS),
    NodeSpec { same_as: Some("container attach"), ..leaf("compose attach") },
    NodeSpec { power_flags: BUILD_POWER, ..leaf("compose build") },
    NodeSpec { same_as: Some("container commit"), ..leaf("compose commit") },
    leaf("compose config"),
    NodeSpec { same_as: Some("container cp"), ..leaf("compose cp") },
    leaf("compose create"),
    leaf("compose down"),
    leaf("compose events"),
    NodeSpec { same_as: Some("container exec"), ..leaf("compose exec") },
    NodeSpec { same_as: Some("container export"), ..leaf("compose export") },
    leaf("compose images"),
    leaf("compose kill"),
    leaf("compose logs"),
    leaf("compose ls"),
    leaf("compose pause"),
    leaf("compose port"),
    leaf("compose ps"),
    NodeSpec { same_as: Some("image push"), ..leaf("compose publish") },
    leaf("compose pull"),
    NodeSpec { same_as: Some("image push"), ..leaf("compose push") },
    leaf("compose restart"),
    leaf("compose rm"),
    leaf("compose run"),
    leaf("compose scale"),
    leaf("compose start"),
    leaf("compose stats"),
    leaf("compose stop"),
    leaf("compose top"),
    leaf("compose unpause"),
    NodeSpec { power_flags: COMPOSE_UP_POWER, ..leaf("compose up") },
    leaf("compose version"),
    leaf("compose volumes"),
    leaf("compose wait"),
    leaf("compose watch"),
    // compose alpha (hidden, experimental): inherits --dry-run and -h/--help only.
    NodeSpec { hidden: true, ..group("compose alpha", COMPOSE_CHILD_FLAGS) },
    leaf("compose alpha generate"),
    NodeSpec { same_as: Some("image push"), ..leaf("compose alpha publish") },
    leaf("compose alpha viz"),
    // compose bridge (2.37+): converts the model by running transformation containers.
    group("compose bridge", COMPOSE_CHILD_FLAGS),
    leaf("compose bridge convert"),
    group("compose bridge transformations", COMPOSE_CHILD_FLAGS),
    leaf("compose bridge transformations create"),
    NodeSpec { aliases: &["ls"], ..leaf("compose bridge transformations list") },
    // buildx plugin (docker/buildx v0.24-v0.36, commands/root.go):
    // `docker buildx [FLAGS] COMMAND`.
    // Group flags: the persistent --builder and -D/--debug, inherited by the nested groups,
    // and -h/--help. `debug` and (before 0.36) `dap` need BUILDX_EXPERIMENTAL=1, which the
    // caller sets; `policy` is 0.36+. `history inspect` has one subcommand, `attachment`, but
    // also takes a build ref itself, so it is a leaf here (`attachment` is one of its args).
    // `imagetools create` writes a new manifest to a registry: a push. `dial-stdio` pipes
    // to the builder (BuildKit), which gives what `build` gives.
    group("buildx", BUILDX_FLAGS),
    NodeSpec { aliases: &["f"], shortcuts: &["bake"], power_flags: BUILD_POWER, ..leaf("buildx bake") },
    NodeSpec { aliases: &["b"], power_flags: BUILD_POWER, ..leaf("buildx build") },
    leaf("buildx create"),
    group("buildx dap", BUILDX_FLAGS),
    NodeSpec { hidden: true, ..leaf("buildx dap attach") },
    leaf("buildx dap build"),
    group("buildx debug", BUILDX_DEBUG_FLAGS),
    NodeSpec { aliases: &["b"], ..leaf("buildx debug build") },
    leaf("buildx dial-stdio"),
    leaf("buildx du"),
    group("buildx history", BUILDX_FLAGS),
    leaf("buildx history export"),
    leaf("buildx history import"),
    leaf("buildx history inspect"),
    leaf("buildx history logs"),
    leaf("buildx history ls"),
    leaf("buildx history open"),
    leaf("buildx history rm"),
    leaf("buildx history trace"),
    group("buildx imagetools", BUILDX_FLAGS),
    NodeSpec { same_as: Some("image push"), ..leaf("buildx imagetools create") },
    leaf("buildx imagetools inspect"),
    leaf("buildx inspect"),
    NodeSpec { hidden: true, ..leaf("buildx install") },
    leaf("buildx ls"),
    group("buildx policy", BUILDX_FLAGS),
    leaf("buildx policy eval"),
    leaf("buildx policy test"),
    leaf("buildx prune"),
    leaf("buildx rm"),
    leaf("buildx stop"),
    NodeSpec { hidden: true, ..leaf("buildx uninstall") },
    leaf("buildx use"),
    leaf("buildx version"),
];
