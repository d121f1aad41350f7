//! The docker API's endpoints as the gate knows them: path normalisation as dockerd's
//! router does it, and the table of endpoints with the CLI commands that use each.
//!
//! dockerd (20.10 to 28) serves its API through gorilla/mux. Each route of each router is
//! registered twice, as `/v{version:[0-9.]+}` + pattern and as the bare pattern, in the
//! order of `initRouter` (checkpoint, container, image, system, volume, build, session,
//! swarm, plugin, distribution, grpc, network); mux tries them in that order and the first
//! whose path *and* method match wins. It matches the percent-decoded path (`URL.Path`,
//! not `RawPath`), and redirects a path that `path.Clean` changes instead of serving it.
//! [`route`] does the same: decode, clean, then match [`ENDPOINTS`] in dockerd's order, so
//! that a spelling routes to the endpoint dockerd would serve for it. The gate forwards
//! [`Route::target`] (the canonical spelling), never the client's, so dockerd serves exactly
//! the endpoint that was judged.
//!
//! One difference, on purpose: mux keeps a trailing `/` (so a route ending in a literal no
//! longer matches, and one ending in `{name:.*}` reads `x/`); [`route`] drops it, and the
//! gate forwards the path without it, so dockerd serves the endpoint that was judged.
//!
//! Patterns keep mux's syntax: `{name}` is one segment (`[^/]+`), `{name:.*}` and `{id:.+}`
//! any run of segments (image names contain `/`). On a cleaned path a parameter is never
//! empty, so `.*` and `.+` match the same.
//!
//! Not listed (so [`route`] answers `Unknown` and the gate denies them): dockerd's `/debug/`
//! routes (pprof, expvar; no docker client uses them) and routes of forks.

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::judge::Power;

/// What the gate reads of a request's body before it forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyJudge {
    /// Streamed, never read (build contexts, archives, attach streams).
    Stream,
    ContainerCreate,
    ContainerUpdate,
    ExecCreate,
    VolumeCreate,
    NetworkCreate,
    NetworkConnect,
    /// `POST /build`: judged on its query (network mode, labels); the context streams.
    Build,
}

/// One endpoint of the docker API.
#[derive(Debug)]
pub struct Endpoint {
    pub method: &'static str,
    /// dockerd's route without the version prefix: `/containers/{name}/exec`.
    pub pattern: &'static str,
    /// Canonical command paths of the CLI tree (`enforcer_common::tree`) that use it, the
    /// endpoint's own command first (`container attach` for `/attach`, which `container run`
    /// also uses on the way): when a rule denies the first, the gate admits the endpoint only
    /// on the rule's own containers.
    /// `&[ANY_COMMAND]`: every command that talks to the daemon uses it (see
    /// [`ANY_COMMAND`]). `&[]`: no command uses it, the gate denies it.
    pub commands: &'static [&'static str],
    pub body: BodyJudge,
    /// The power a restricted identity needs for it at all (plugins, swarm services).
    pub power: Option<Power>,
}

/// The one entry of [`Endpoint::commands`] that stands for every command of the tree:
/// `/_ping` (the CLI's and every SDK's version negotiation, before any request),
/// `/version` and `/info` (read by SDKs, compose and buildx before they start). The gate
/// admits such an endpoint for any identity its rule lets use the API at all.
pub const ANY_COMMAND: &str = "*";

impl Endpoint {
    /// Whether every command uses this endpoint ([`ANY_COMMAND`]).
    pub fn any_command(&self) -> bool {
        self.commands.contains(&ANY_COMMAND)
    }
}

/// A request matched to its endpoint.
#[derive(Debug)]
pub struct Route {
    pub endpoint: &'static Endpoint,
    /// The normalised path, without the version prefix, each segment percent-encoded where
    /// a URI needs it (so `route(method, &route.path)` routes the same).
    pub path: String,
    /// The `{name}`/`{id}` parts, in order, percent-decoded.
    pub params: Vec<String>,
    /// The API version of a `/v1.41/...` prefix (`"1.41"`), if the request had one.
    pub version: Option<String>,
}

impl Route {
    /// The request target to forward to dockerd: the version prefix (if any) and the
    /// normalised path. dockerd routes it to [`Route::endpoint`] and nothing else.
    pub fn target(&self) -> String {
        match &self.version {
            Some(version) => format!("/v{version}{}", self.path),
            None => self.path.clone(),
        }
    }
}

impl Route {
    /// [`Route::target`] with the first parameter replaced by `value` (the full id the gate
    /// resolved a name or id prefix to), so that dockerd acts on the object that was judged
    /// even if the name is given to another in between. None when the new path would not
    /// route to the same endpoint with the same other parameters (the caller refuses).
    pub fn target_with_first_param(&self, value: &str) -> Option<String> {
        let mut params = std::iter::once(value).chain(self.params.iter().skip(1).map(String::as_str));
        let mut segments: Vec<&str> = Vec::new();
        for piece in parse_pattern(self.endpoint.pattern) {
            match piece {
                Piece::Literal(literal) => segments.push(literal),
                Piece::One | Piece::Many => segments.extend(params.next()?.split('/')),
            }
        }
        let path = encode_path(&segments);
        let rerouted = route(self.endpoint.method, &path).ok()?;
        let same = std::ptr::eq(rerouted.endpoint, self.endpoint)
            && rerouted.params.first().map(String::as_str) == Some(value)
            && rerouted.params.get(1..) == self.params.get(1..);
        same.then(|| match &self.version {
            Some(version) => format!("/v{version}{path}"),
            None => path,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// 400: a path dockerd would not route the same way (bad percent-encoding, NUL, ...).
    Malformed(String),
    /// 403: no command of the CLI tree uses this endpoint.
    Unknown { method: String, path: String },
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Malformed(why) => write!(f, "malformed request path: {why}"),
            RouteError::Unknown { method, path } => {
                write!(f, "{method} {path} is not an endpoint any allowed docker command uses")
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// An endpoint with no request body to judge and no power.
const fn ep(method: &'static str, pattern: &'static str, commands: &'static [&'static str]) -> Endpoint {
    Endpoint { method, pattern, commands, body: BodyJudge::Stream, power: None }
}

/// An endpoint whose body the judge reads.
const fn judged(
    method: &'static str,
    pattern: &'static str,
    commands: &'static [&'static str],
    body: BodyJudge,
) -> Endpoint {
    Endpoint { method, pattern, commands, body, power: None }
}

/// An endpoint that needs a power of the rule.
const fn powered(
    method: &'static str,
    pattern: &'static str,
    commands: &'static [&'static str],
    power: Power,
) -> Endpoint {
    Endpoint { method, pattern, commands, body: BodyJudge::Stream, power: Some(power) }
}

const ANY: &[&str] = &[ANY_COMMAND];

// Command sets shared by several endpoints. The gate admits an endpoint when one of its
// commands is admitted, so an endpoint with a denied command's power (exec, cp, attach,
// commit, export, push, tag, save, load, import) lists only the commands with that power:
// listing one more would let the API do what the denial is for.

/// Commands that list containers (compose finds its project's containers by label).
const LIST_CONTAINERS: &[&str] = &[
    "container ls",
    "container stats",
    "compose attach",
    "compose commit",
    "compose cp",
    "compose create",
    "compose down",
    "compose exec",
    "compose export",
    "compose images",
    "compose kill",
    "compose logs",
    "compose ls",
    "compose pause",
    "compose port",
    "compose ps",
    "compose restart",
    "compose rm",
    "compose run",
    "compose scale",
    "compose start",
    "compose stats",
    "compose stop",
    "compose top",
    "compose unpause",
    "compose up",
    "compose wait",
    "compose watch",
    "compose alpha generate",
];

/// Commands that inspect a container.
const INSPECT_CONTAINERS: &[&str] = &[
    "inspect",
    "container inspect",
    "container attach",
    "container cp",
    "container exec",
    "container logs",
    "container port",
    "container run",
    "container start",
    "container stats",
    "compose attach",
    "compose cp",
    "compose create",
    "compose down",
    "compose exec",
    "compose logs",
    "compose port",
    "compose ps",
    "compose restart",
    "compose run",
    "compose scale",
    "compose start",
    "compose stop",
    "compose up",
    "compose wait",
    "compose watch",
    "compose alpha generate",
];

/// Commands that create containers (the body is judged field by field).
const CREATE_CONTAINERS: &[&str] = &[
    "container create",
    "container run",
    "compose create",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
    "compose bridge convert",
    "compose bridge transformations create",
];

/// Commands that start containers.
const START_CONTAINERS: &[&str] = &[
    "container start",
    "container run",
    "compose start",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
    "compose bridge convert",
];

/// Commands that attach to a container's streams: `attach`, and the commands that run
/// a container in the foreground. `compose start` attaches when compose's `up` drives it.
const ATTACH: &[&str] = &[
    "container attach",
    "container run",
    "container start",
    "compose attach",
    "compose run",
    "compose start",
    "compose up",
];

/// Commands that resize a container's TTY (those that attach to one).
const RESIZE: &[&str] =
    &["container attach", "container run", "container start", "compose attach", "compose run", "compose up"];

/// Commands that run a process in a running container (compose's watch syncs files with
/// `tar` run by exec, and runs its `exec` actions).
const EXEC: &[&str] = &["container exec", "compose exec", "compose watch"];

/// Commands that read a container's files.
const CP_FROM: &[&str] = &["container cp", "compose cp"];
/// Commands that write or stat a container's files (compose's watch syncs into them).
const CP_TO: &[&str] = &["container cp", "compose cp", "compose watch"];

/// Commands that pull images and `image import`, which creates one from a tarball or URL
/// through the same endpoint (`fromSrc`): [`commands_for`] tells them apart.
const PULL: &[&str] = &[
    "image pull",
    "image import",
    "container create",
    "container run",
    "compose create",
    "compose pull",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
    "compose bridge convert",
    "compose bridge transformations create",
];

/// `POST /images/create` without `fromSrc`: the pulls of [`PULL`].
const PULL_ONLY: &[&str] = &[
    "image pull",
    "container create",
    "container run",
    "compose create",
    "compose pull",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
    "compose bridge convert",
    "compose bridge transformations create",
];

/// `POST /images/create` with `fromSrc`.
const IMPORT: &[&str] = &["image import"];

/// Commands that push an image.
const PUSH: &[&str] =
    &["image push", "compose push", "compose publish", "compose alpha publish", "trust sign"];

/// Commands that inspect an image.
const INSPECT_IMAGES: &[&str] = &[
    "inspect",
    "image inspect",
    "image build",
    "buildx build",
    "builder build",
    "compose build",
    "compose create",
    "compose images",
    "compose pull",
    "compose push",
    "compose publish",
    "compose alpha publish",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
    "trust sign",
];

/// Commands that build (the classic `/build`, `BuildKit` through `/session` and `/grpc`).
const BUILD: &[&str] = &[
    "image build",
    "buildx build",
    "builder build",
    "buildx bake",
    "builder bake",
    "buildx debug build",
    "builder debug build",
    "buildx dap build",
    "builder dap build",
    "compose build",
    "compose create",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
];

/// Commands that talk to `BuildKit`'s control API through `/grpc` (the docker driver):
/// builds and buildx's cache, history and worker commands.
const GRPC: &[&str] = &[
    "image build",
    "buildx build",
    "builder build",
    "buildx bake",
    "builder bake",
    "buildx debug build",
    "builder debug build",
    "buildx dap build",
    "builder dap build",
    "buildx dial-stdio",
    "builder dial-stdio",
    "buildx du",
    "builder du",
    "buildx prune",
    "builder prune",
    "buildx inspect",
    "builder inspect",
    "buildx ls",
    "builder ls",
    "buildx history export",
    "builder history export",
    "buildx history import",
    "builder history import",
    "buildx history inspect",
    "builder history inspect",
    "buildx history logs",
    "builder history logs",
    "buildx history ls",
    "builder history ls",
    "buildx history open",
    "builder history open",
    "buildx history rm",
    "builder history rm",
    "buildx history trace",
    "builder history trace",
    "compose build",
    "compose create",
    "compose run",
    "compose scale",
    "compose up",
    "compose watch",
];

/// Every endpoint dockerd 20.10 to 28 (API 1.41 to 1.51) serves, in dockerd's own order
/// (the order decides which route a path reaches). Routes of only some of those versions
/// are included (`/containers/{name:.*}/copy` of 20.10, `PUT /volumes/{name:.*}` of 23+):
/// for the others a path of such a route reaches no other endpoint.
pub static ENDPOINTS: &[Endpoint] = &[
    // checkpoint (before container, or the container DELETE would mask its DELETE)
    ep("GET", "/containers/{name:.*}/checkpoints", &["checkpoint ls"]),
    ep("POST", "/containers/{name:.*}/checkpoints", &["checkpoint create"]),
    ep("DELETE", "/containers/{name}/checkpoints/{checkpoint}", &["checkpoint rm"]),
    // container
    ep("HEAD", "/containers/{name:.*}/archive", CP_TO),
    ep("GET", "/containers/json", LIST_CONTAINERS),
    ep("GET", "/containers/{name:.*}/export", &["container export", "compose export"]),
    ep("GET", "/containers/{name:.*}/changes", &["container diff"]),
    ep("GET", "/containers/{name:.*}/json", INSPECT_CONTAINERS),
    ep("GET", "/containers/{name:.*}/top", &["container top", "compose top"]),
    ep("GET", "/containers/{name:.*}/logs", &["container logs", "compose logs", "compose up"]),
    ep("GET", "/containers/{name:.*}/stats", &["container stats", "compose stats"]),
    // The websocket attach: no docker client uses it.
    ep("GET", "/containers/{name:.*}/attach/ws", &[]),
    ep("GET", "/exec/{id:.*}/json", EXEC),
    ep("GET", "/containers/{name:.*}/archive", CP_FROM),
    judged("POST", "/containers/create", CREATE_CONTAINERS, BodyJudge::ContainerCreate),
    // `run`, `attach` and `start -a` forward signals (sig-proxy) as kills.
    ep(
        "POST",
        "/containers/{name:.*}/kill",
        &[
            "container kill",
            "container run",
            "container attach",
            "container start",
            "compose kill",
            "compose run",
            "compose up",
        ],
    ),
    ep("POST", "/containers/{name:.*}/pause", &["container pause", "compose pause"]),
    ep("POST", "/containers/{name:.*}/unpause", &["container unpause", "compose unpause"]),
    ep("POST", "/containers/{name:.*}/restart", &["container restart", "compose restart", "compose watch"]),
    ep("POST", "/containers/{name:.*}/start", START_CONTAINERS),
    ep(
        "POST",
        "/containers/{name:.*}/stop",
        &[
            "container stop",
            "compose down",
            "compose rm",
            "compose scale",
            "compose stop",
            "compose up",
            "compose watch",
        ],
    ),
    ep(
        "POST",
        "/containers/{name:.*}/wait",
        &[
            "container wait",
            "container run",
            "container start",
            "container attach",
            "compose run",
            "compose up",
            "compose wait",
            "compose bridge convert",
        ],
    ),
    ep("POST", "/containers/{name:.*}/resize", RESIZE),
    ep("POST", "/containers/{name:.*}/attach", ATTACH),
    // Removed from the API long ago (errors since 1.24), still routed by 20.10.
    ep("POST", "/containers/{name:.*}/copy", &[]),
    judged("POST", "/containers/{name:.*}/exec", EXEC, BodyJudge::ExecCreate),
    ep("POST", "/exec/{name:.*}/start", EXEC),
    ep("POST", "/exec/{name:.*}/resize", EXEC),
    // compose renames the old container while it recreates one.
    ep(
        "POST",
        "/containers/{name:.*}/rename",
        &[
            "container rename",
            "compose create",
            "compose run",
            "compose scale",
            "compose up",
            "compose watch",
        ],
    ),
    judged("POST", "/containers/{name:.*}/update", &["container update"], BodyJudge::ContainerUpdate),
    ep("POST", "/containers/prune", &["container prune", "system prune"]),
    // The container router's in 20.10 to 28 (the image router's later): one literal path.
    ep("POST", "/commit", &["container commit", "compose commit"]),
    ep("PUT", "/containers/{name:.*}/archive", CP_TO),
    ep(
        "DELETE",
        "/containers/{name:.*}",
        &[
            "container rm",
            "compose create",
            "compose down",
            "compose rm",
            "compose run",
            "compose scale",
            "compose up",
            "compose watch",
            "compose bridge convert",
            "compose bridge transformations create",
        ],
    ),
    // image
    ep(
        "GET",
        "/images/json",
        &["image ls", "compose create", "compose down", "compose images", "compose run", "compose up"],
    ),
    ep("GET", "/images/search", &["search"]),
    ep("GET", "/images/get", &["image save"]),
    ep("GET", "/images/{name:.*}/get", &["image save"]),
    ep("GET", "/images/{name:.*}/history", &["image history"]),
    ep("GET", "/images/{name:.*}/json", INSPECT_IMAGES),
    ep("POST", "/images/load", &["image load"]),
    ep("POST", "/images/create", PULL),
    ep("POST", "/images/{name:.*}/push", PUSH),
    ep("POST", "/images/{name:.*}/tag", &["image tag"]),
    ep("POST", "/images/prune", &["image prune", "system prune"]),
    ep("DELETE", "/images/{name:.*}", &["image rm", "compose down"]),
    // system
    // CORS pre-flight for every path: no docker client sends it.
    ep("OPTIONS", "/{anyroute:.*}", &[]),
    ep("GET", "/_ping", ANY),
    ep("HEAD", "/_ping", ANY),
    ep(
        "GET",
        "/events",
        &[
            "system events",
            "container stats",
            "compose events",
            "compose logs",
            "compose stats",
            "compose up",
            "compose watch",
        ],
    ),
    ep("GET", "/info", ANY),
    ep("GET", "/version", ANY),
    ep("GET", "/system/df", &["system df"]),
    ep("POST", "/auth", &["login"]),
    // volume
    ep(
        "GET",
        "/volumes",
        &[
            "volume ls",
            "compose create",
            "compose down",
            "compose run",
            "compose scale",
            "compose up",
            "compose volumes",
            "compose watch",
        ],
    ),
    ep(
        "GET",
        "/volumes/{name:.*}",
        &[
            "inspect",
            "volume inspect",
            "compose create",
            "compose run",
            "compose scale",
            "compose up",
            "compose watch",
        ],
    ),
    judged(
        "POST",
        "/volumes/create",
        &["volume create", "compose create", "compose run", "compose scale", "compose up", "compose watch"],
        BodyJudge::VolumeCreate,
    ),
    ep("POST", "/volumes/prune", &["volume prune", "system prune"]),
    // Cluster volumes only (API 1.42+).
    powered("PUT", "/volumes/{name:.*}", &["volume update"], Power::Swarm),
    ep("DELETE", "/volumes/{name:.*}", &["volume rm", "compose down"]),
    // build
    judged("POST", "/build", BUILD, BodyJudge::Build),
    ep("POST", "/build/prune", &["buildx prune", "builder prune", "system prune"]),
    // The classic builder's cancel (Ctrl-C of a build).
    ep("POST", "/build/cancel", &["image build"]),
    // session (BuildKit's file sync and auth, hijacked)
    // The gate cannot read what travels inside (HTTP/2): only for a rule with the power.
    powered("POST", "/session", BUILD, Power::BuildKit),
    // swarm: creating or changing anything needs the swarm power
    powered("POST", "/swarm/init", &["swarm init"], Power::Swarm),
    powered("POST", "/swarm/join", &["swarm join"], Power::Swarm),
    powered("POST", "/swarm/leave", &["swarm leave"], Power::Swarm),
    ep(
        "GET",
        "/swarm",
        &["swarm ca", "swarm join-token", "swarm unlock-key", "swarm update", "stack deploy"],
    ),
    // The key that decrypts the managers' raft log: a secret, not a listing.
    powered("GET", "/swarm/unlockkey", &["swarm unlock-key"], Power::Swarm),
    powered(
        "POST",
        "/swarm/update",
        &["swarm update", "swarm ca", "swarm join-token", "swarm unlock-key"],
        Power::Swarm,
    ),
    powered("POST", "/swarm/unlock", &["swarm unlock"], Power::Swarm),
    ep("GET", "/services", &["service ls", "stack deploy", "stack rm", "stack services", "stack ls"]),
    ep(
        "GET",
        "/services/{id}",
        &[
            "inspect",
            "service inspect",
            "service logs",
            "service ps",
            "service rollback",
            "service scale",
            "service update",
            "stack deploy",
        ],
    ),
    powered("POST", "/services/create", &["service create", "stack deploy"], Power::Swarm),
    powered(
        "POST",
        "/services/{id}/update",
        &["service update", "service rollback", "service scale", "stack deploy"],
        Power::Swarm,
    ),
    powered("DELETE", "/services/{id}", &["service rm", "stack rm"], Power::Swarm),
    ep("GET", "/services/{id}/logs", &["service logs"]),
    ep("GET", "/nodes", &["node ls", "node ps", "service ps", "stack ps"]),
    ep(
        "GET",
        "/nodes/{id}",
        &["inspect", "node inspect", "node ps", "node promote", "node demote", "node update", "service ps"],
    ),
    powered("DELETE", "/nodes/{id}", &["node rm"], Power::Swarm),
    powered("POST", "/nodes/{id}/update", &["node update", "node promote", "node demote"], Power::Swarm),
    ep(
        "GET",
        "/tasks",
        &["service ps", "node ps", "stack ps", "service create", "service update", "stack rm"],
    ),
    ep("GET", "/tasks/{id}", &["inspect", "service ps"]),
    ep("GET", "/tasks/{id}/logs", &["service logs"]),
    ep("GET", "/secrets", &["secret ls", "service create", "service update", "stack deploy", "stack rm"]),
    powered("POST", "/secrets/create", &["secret create", "stack deploy"], Power::Swarm),
    powered("DELETE", "/secrets/{id}", &["secret rm", "stack rm"], Power::Swarm),
    ep("GET", "/secrets/{id}", &["inspect", "secret inspect", "service create", "service update"]),
    powered("POST", "/secrets/{id}/update", &["stack deploy"], Power::Swarm),
    ep("GET", "/configs", &["config ls", "service create", "service update", "stack deploy", "stack rm"]),
    powered("POST", "/configs/create", &["config create", "stack deploy"], Power::Swarm),
    powered("DELETE", "/configs/{id}", &["config rm", "stack rm"], Power::Swarm),
    ep("GET", "/configs/{id}", &["inspect", "config inspect", "service create", "service update"]),
    powered("POST", "/configs/{id}/update", &["stack deploy"], Power::Swarm),
    // plugin: a plugin runs as root with the privileges it asks for; managing them (an
    // authorization plugin among them) needs the plugins power.
    ep("GET", "/plugins", &["plugin ls"]),
    ep("GET", "/plugins/{name:.*}/json", &["inspect", "plugin inspect", "plugin upgrade"]),
    ep("GET", "/plugins/privileges", &["plugin install", "plugin upgrade"]),
    powered("DELETE", "/plugins/{name:.*}", &["plugin rm"], Power::Plugins),
    powered("POST", "/plugins/{name:.*}/enable", &["plugin enable", "plugin install"], Power::Plugins),
    powered("POST", "/plugins/{name:.*}/disable", &["plugin disable", "plugin upgrade"], Power::Plugins),
    powered("POST", "/plugins/pull", &["plugin install"], Power::Plugins),
    powered("POST", "/plugins/{name:.*}/push", &["plugin push"], Power::Plugins),
    powered("POST", "/plugins/{name:.*}/upgrade", &["plugin upgrade"], Power::Plugins),
    powered("POST", "/plugins/{name:.*}/set", &["plugin set"], Power::Plugins),
    powered("POST", "/plugins/create", &["plugin create"], Power::Plugins),
    // distribution (an image's digest and platforms, from its registry)
    ep(
        "GET",
        "/distribution/{name:.*}/json",
        &[
            "service create",
            "service update",
            "stack deploy",
            "compose config",
            "compose publish",
            "compose alpha publish",
            "compose pull",
            "compose up",
        ],
    ),
    // grpc (BuildKit's control API, hijacked)
    powered("POST", "/grpc", GRPC, Power::BuildKit),
    // network
    ep(
        "GET",
        "/networks",
        &[
            "network ls",
            "compose create",
            "compose down",
            "compose run",
            "compose scale",
            "compose up",
            "compose watch",
        ],
    ),
    // Only a client's spelling: after normalisation `/networks/` is `/networks` above.
    ep("GET", "/networks/", &["network ls"]),
    ep(
        "GET",
        "/networks/{id:.+}",
        &[
            "inspect",
            "network inspect",
            "compose create",
            "compose run",
            "compose scale",
            "compose up",
            "compose watch",
        ],
    ),
    judged(
        "POST",
        "/networks/create",
        &["network create", "compose create", "compose run", "compose scale", "compose up", "compose watch"],
        BodyJudge::NetworkCreate,
    ),
    // The CLI connects a container's further networks after creating it for an API < 1.44.
    judged(
        "POST",
        "/networks/{id:.*}/connect",
        &[
            "network connect",
            "container create",
            "container run",
            "compose create",
            "compose run",
            "compose scale",
            "compose up",
            "compose watch",
        ],
        BodyJudge::NetworkConnect,
    ),
    // The body names a container, as a connect's does: the same judge (the container must
    // be the rule's own).
    judged(
        "POST",
        "/networks/{id:.*}/disconnect",
        &["network disconnect", "compose down", "compose up", "compose scale"],
        BodyJudge::NetworkConnect,
    ),
    ep("POST", "/networks/prune", &["network prune", "system prune"]),
    ep("DELETE", "/networks/{id:.*}", &["network rm", "compose down"]),
];

/// The commands that use a request of `endpoint` with this query string (without the `?`):
/// the endpoint's, except where the query decides which command it is. `POST
/// /images/create` with a `fromSrc` (any case, any value: fail closed) is `image import`,
/// without one a pull. An undecodable query counts as an import too (dockerd refuses it).
///
/// The gate must also refuse requests whose `Content-Type` is
/// `application/x-www-form-urlencoded`: dockerd's `ParseForm` would read parameters from
/// such a body as well, ahead of the query's.
pub fn commands_for(endpoint: &Endpoint, query: &str) -> &'static [&'static str] {
    if endpoint.method == "POST" && endpoint.pattern == "/images/create" {
        let imports = query.split('&').any(|pair| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            form_decode(key).is_none_or(|key| key.eq_ignore_ascii_case("fromsrc"))
        });
        return if imports { IMPORT } else { PULL_ONLY };
    }
    endpoint.commands
}

/// `application/x-www-form-urlencoded` decoding of a query key or value as Go's
/// `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad escape or bytes that are not
/// UTF-8 are `None`. The router, the build-query judge and the prune filters share it.
pub fn form_decode(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                out.push(hex_pair(bytes.get(i + 1..i + 3)?)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Normalises `path` (the request target's path, without the query) as dockerd's router
/// does and finds its endpoint.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    let decoded = decode(path)?;
    let segments = clean(&decoded);
    // mux tries each route with the version prefix, then without, in registration order.
    let versioned = segments.split_first().and_then(|(first, rest)| Some((version_of(first)?, rest)));
    for (index, endpoint) in ENDPOINTS.iter().enumerate() {
        if endpoint.method != method {
            continue;
        }
        let pattern = patterns().get(index).map_or(&[][..], Vec::as_slice);
        if let Some((version, rest)) = versioned
            && let Some(params) = match_segments(pattern, rest)
        {
            return Ok(found(endpoint, rest, params, Some(version)));
        }
        if let Some(params) = match_segments(pattern, &segments) {
            return Ok(found(endpoint, &segments, params, None));
        }
    }
    Err(RouteError::Unknown { method: method.to_owned(), path: encode_path(&segments) })
}

fn found(
    endpoint: &'static Endpoint,
    segments: &[&str],
    params: Vec<String>,
    version: Option<&str>,
) -> Route {
    Route { endpoint, path: encode_path(segments), params, version: version.map(str::to_owned) }
}

/// The version of a segment `v` + one or more of `[0-9.]`: mux's `/v{version:[0-9.]+}`.
fn version_of(segment: &str) -> Option<&str> {
    segment
        .strip_prefix('v')
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// Percent-decodes a path as Go's `url.ParseRequestURI` does, refusing what it refuses
/// (bad escapes) and what would let a spelling reach dockerd as another path than the one
/// judged: an encoded `/` (Go decodes it into a separator; no docker client sends one),
/// NUL and other control characters (Go's regexp `.` does not match `\n`, so mux would
/// route such a name differently), and bytes that do not decode to UTF-8.
fn decode(path: &str) -> Result<String, RouteError> {
    if !path.starts_with('/') {
        return Err(RouteError::Malformed("the path does not start with /".into()));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| bad_escape(path))?;
            let value = hex_pair(hex).ok_or_else(|| bad_escape(path))?;
            if value == b'/' {
                return Err(RouteError::Malformed(
                    "an encoded / (%2F) would split a path segment in two".into(),
                ));
            }
            out.push(value);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if let Some(c) = out.iter().find(|b| b.is_ascii_control()) {
        return Err(RouteError::Malformed(format!("control character 0x{c:02x} in the path")));
    }
    String::from_utf8(out).map_err(|_| RouteError::Malformed("the path is not UTF-8".into()))
}

fn bad_escape(path: &str) -> RouteError {
    RouteError::Malformed(format!("invalid percent-encoding in {path:?}"))
}

fn hex_pair(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    match hex {
        [high, low] => Some((digit(*high)? * 16 + digit(*low)?) as u8),
        _ => None,
    }
}

/// `path.Clean` as segments: empty and `.` segments dropped, `..` removes the one before
/// (at the root it is dropped). A trailing `/` goes too (see the module's doc).
fn clean(path: &str) -> Vec<&str> {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    segments
}

/// Bytes a path segment may carry as they are (RFC 3986 `pchar` without `%`).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

fn encode_path(segments: &[&str]) -> String {
    if segments.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        for &b in segment.as_bytes() {
            if is_pchar(b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// [`ENDPOINTS`]' patterns, parsed once, by index.
fn patterns() -> &'static [Vec<Piece<'static>>] {
    static PATTERNS: OnceLock<Vec<Vec<Piece<'static>>>> = OnceLock::new();
    PATTERNS.get_or_init(|| ENDPOINTS.iter().map(|e| parse_pattern(e.pattern)).collect())
}

/// A piece of a route pattern.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    /// `{name}`: one segment.
    One,
    /// `{name:.*}`, `{name:.+}`: one or more segments.
    Many,
}

fn parse_pattern(pattern: &'static str) -> Vec<Piece<'static>> {
    pattern
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(var) if var.ends_with(":.*") || var.ends_with(":.+") => Piece::Many,
            Some(_) => Piece::One,
            None => Piece::Literal(s),
        })
        .collect()
}

/// Matches segments against a pattern, the parameters joined with `/`. A `Many` takes as
/// many segments as it can (Go's greedy `.*`).
fn match_segments(pattern: &[Piece], segments: &[&str]) -> Option<Vec<String>> {
    let Some((first, rest)) = pattern.split_first() else {
        return segments.is_empty().then(Vec::new);
    };
    match first {
        Piece::Literal(lit) => {
            let (seg, more) = segments.split_first()?;
            (seg == lit).then(|| match_segments(rest, more)).flatten()
        }
        Piece::One => {
            let (seg, more) = segments.split_first()?;
            let mut params = match_segments(rest, more)?;
            params.insert(0, (*seg).to_owned());
            Some(params)
        }
        Piece::Many => (1..=segments.len()).rev().find_map(|take| {
            let (taken, more) = segments.split_at(take);
            let mut params = match_segments(rest, more)?;
            params.insert(0, taken.join("/"));
            Some(params)
        }),
    }
}

#[cfg(test)]
mod tests {
    use enforcer_common::grammar::node_by_path;
    use proptest::prelude::*;

    use super::*;

    fn pattern_of(method: &str, path: &str) -> &'static str {
        route(method, path).map_or("<none>", |r| r.endpoint.pattern)
    }

    #[test]
    fn every_listed_command_is_in_the_tree() {
        for endpoint in ENDPOINTS {
            for command in endpoint.commands {
                if *command == ANY_COMMAND {
                    continue;
                }
                assert!(
                    node_by_path(command).is_some(),
                    "{} {}: {command:?} is not a command of the tree",
                    endpoint.method,
                    endpoint.pattern
                );
            }
        }
    }

    #[test]
    fn endpoints_are_unique_and_well_formed() {
        for (i, a) in ENDPOINTS.iter().enumerate() {
            assert!(a.pattern.starts_with('/'), "{}", a.pattern);
            for b in &ENDPOINTS[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{} {} twice",
                    a.method,
                    a.pattern
                );
            }
        }
    }

    #[test]
    fn spellings_of_one_endpoint_route_the_same() {
        for path in [
            "/containers/gitea/exec",
            "/v1.41/containers/gitea/exec",
            "/v1.51/containers/gitea/exec",
            "/containers/%67itea/exec",
            "/containers/%67%69%74%65%61/exec",
            "/v1.41/containers//gitea/exec/",
            "//containers/gitea/exec",
            "/containers/./gitea/exec",
            "/containers/x/../gitea/exec",
            "/images/../containers/gitea/exec",
            "/v1.41/../containers/gitea/exec",
            "/%76%31.41/containers/gitea/exec",
            "/containers/gitea/%65xec",
            "/containers/gitea/x/%2E%2E/exec",
        ] {
            let r = route("POST", path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(r.endpoint.pattern, "/containers/{name:.*}/exec", "{path}");
            assert_eq!(r.params, vec!["gitea".to_owned()], "{path}");
            assert_eq!(r.path, "/containers/gitea/exec", "{path}");
        }
    }

    #[test]
    fn the_version_prefix_is_kept_for_forwarding() {
        let r = route("GET", "/v1.41/containers/json").unwrap();
        assert_eq!(r.version.as_deref(), Some("1.41"));
        assert_eq!(r.path, "/containers/json");
        assert_eq!(r.target(), "/v1.41/containers/json");
        let r = route("GET", "/containers/json").unwrap();
        assert_eq!(r.version, None);
        assert_eq!(r.target(), "/containers/json");
        // `..` is resolved before the prefix is read, as mux cleans the whole path first.
        let r = route("GET", "/v1.41/../v1.40/containers/json").unwrap();
        assert_eq!(r.version.as_deref(), Some("1.40"));
        // Only one prefix: `/v1.41/v1.41/...` is no route.
        assert!(matches!(route("GET", "/v1.41/v1.41/containers/json"), Err(RouteError::Unknown { .. })));
        // `v` alone, or letters, are no version.
        assert!(route("GET", "/v/containers/json").is_err());
        assert!(route("GET", "/v1.41a/containers/json").is_err());
    }

    #[test]
    fn encoded_slashes_bad_escapes_and_control_characters_are_malformed() {
        for path in [
            "/containers/a%2Fb/json",
            "/containers/a%2fb/json",
            "/images/library%2Fbusybox/json",
            "/containers/%zz/json",
            "/containers/%6/json",
            "/containers/abc%",
            "/containers/a%00b/json",
            "/containers/a\0b/json",
            "/containers/a%0Ab/json",
            "/containers/%ff/json",
            "containers/json",
            "",
        ] {
            assert!(
                matches!(route("GET", path), Err(RouteError::Malformed(_))),
                "{path:?}: {:?}",
                route("GET", path)
            );
        }
    }

    #[test]
    fn unknown_paths_and_methods() {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/nope"),
            ("GET", "/debug/pprof/"),
            ("PATCH", "/containers/json"),
            ("get", "/containers/json"),
            ("POST", "/containers/json"),
            // mux answers HEAD only where it is registered.
            ("HEAD", "/containers/json"),
            ("HEAD", "/version"),
            // A parameter is never empty.
            ("DELETE", "/containers"),
            ("DELETE", "/containers/"),
        ] {
            assert!(
                matches!(route(method, path), Err(RouteError::Unknown { .. })),
                "{method} {path}: {:?}",
                route(method, path)
            );
        }
    }

    #[test]
    fn head_routes() {
        assert_eq!(pattern_of("HEAD", "/_ping"), "/_ping");
        assert_eq!(pattern_of("HEAD", "/v1.45/_ping"), "/_ping");
        assert_eq!(pattern_of("HEAD", "/containers/x/archive"), "/containers/{name:.*}/archive");
        assert!(route("HEAD", "/_ping").unwrap().endpoint.any_command());
    }

    #[test]
    fn image_names_with_slashes() {
        let r = route("POST", "/v1.47/images/registry.example:5000/team/app:1.2/push").unwrap();
        assert_eq!(r.endpoint.pattern, "/images/{name:.*}/push");
        assert_eq!(r.params, vec!["registry.example:5000/team/app:1.2".to_owned()]);
        let r = route("DELETE", "/images/library/busybox:latest").unwrap();
        assert_eq!(r.endpoint.pattern, "/images/{name:.*}");
        assert_eq!(r.params, vec!["library/busybox:latest".to_owned()]);
        assert_eq!(pattern_of("GET", "/images/a/b/json"), "/images/{name:.*}/json");
        assert_eq!(pattern_of("GET", "/images/a/b/get"), "/images/{name:.*}/get");
        assert_eq!(pattern_of("GET", "/images/get"), "/images/get");
        assert_eq!(pattern_of("GET", "/distribution/a/b/json"), "/distribution/{name:.*}/json");
        assert_eq!(pattern_of("POST", "/plugins/vieux/sshfs:latest/enable"), "/plugins/{name:.*}/enable");
        // dockerd's order decides: the push route comes before the tag route.
        assert_eq!(pattern_of("POST", "/images/x/tag/push"), "/images/{name:.*}/push");
        assert_eq!(pattern_of("POST", "/images/x/push/tag"), "/images/{name:.*}/tag");
    }

    #[test]
    fn container_names_route_as_mux_does() {
        // `{name:.*}` spans segments: dockerd reads a container named "a/exec".
        let r = route("POST", "/containers/a/exec/kill").unwrap();
        assert_eq!(r.endpoint.pattern, "/containers/{name:.*}/kill");
        assert_eq!(r.params, vec!["a/exec".to_owned()]);
        assert_eq!(pattern_of("GET", "/containers/json"), "/containers/json");
        assert_eq!(pattern_of("GET", "/containers/x/json"), "/containers/{name:.*}/json");
        assert_eq!(pattern_of("GET", "/containers/x/attach/ws"), "/containers/{name:.*}/attach/ws");
        assert_eq!(pattern_of("POST", "/containers/create"), "/containers/create");
        assert_eq!(pattern_of("POST", "/exec/abc/start"), "/exec/{name:.*}/start");
        // The checkpoint router's DELETE comes first, but only for one-segment names.
        assert_eq!(
            pattern_of("DELETE", "/containers/c/checkpoints/k"),
            "/containers/{name}/checkpoints/{checkpoint}"
        );
        assert_eq!(pattern_of("DELETE", "/containers/c/d/checkpoints/k"), "/containers/{name:.*}");
        assert_eq!(pattern_of("GET", "/networks/"), "/networks");
        assert_eq!(pattern_of("GET", "/networks/a/b"), "/networks/{id:.+}");
        assert_eq!(pattern_of("OPTIONS", "/anything/at/all"), "/{anyroute:.*}");
    }

    #[test]
    fn bodies_and_powers() {
        let body = |m, p| route(m, p).unwrap().endpoint.body;
        assert_eq!(body("POST", "/containers/create"), BodyJudge::ContainerCreate);
        assert_eq!(body("POST", "/containers/x/update"), BodyJudge::ContainerUpdate);
        assert_eq!(body("POST", "/containers/x/exec"), BodyJudge::ExecCreate);
        assert_eq!(body("POST", "/volumes/create"), BodyJudge::VolumeCreate);
        assert_eq!(body("POST", "/networks/create"), BodyJudge::NetworkCreate);
        assert_eq!(body("POST", "/networks/n/connect"), BodyJudge::NetworkConnect);
        assert_eq!(body("POST", "/build"), BodyJudge::Build);
        assert_eq!(body("POST", "/exec/x/start"), BodyJudge::Stream);
        let power = |m, p| route(m, p).unwrap().endpoint.power;
        assert_eq!(power("POST", "/services/create"), Some(Power::Swarm));
        assert_eq!(power("POST", "/swarm/init"), Some(Power::Swarm));
        assert_eq!(power("POST", "/plugins/pull"), Some(Power::Plugins));
        assert_eq!(power("POST", "/plugins/p/set"), Some(Power::Plugins));
        assert_eq!(power("GET", "/services"), None);
        assert_eq!(power("POST", "/containers/create"), None);
    }

    #[test]
    fn denied_powers_are_used_only_by_their_commands() {
        // Listing another command on these would let the API do what a denial forbids.
        let commands = |m, p| route(m, p).unwrap().endpoint.commands;
        assert_eq!(commands("POST", "/containers/x/exec"), EXEC);
        assert_eq!(commands("POST", "/exec/x/start"), EXEC);
        assert_eq!(commands("GET", "/containers/x/archive"), CP_FROM);
        assert_eq!(commands("PUT", "/containers/x/archive"), CP_TO);
        assert_eq!(commands("POST", "/commit"), &["container commit", "compose commit"]);
        assert_eq!(commands("GET", "/containers/x/export"), &["container export", "compose export"]);
        assert_eq!(commands("GET", "/images/get"), &["image save"]);
        assert_eq!(commands("POST", "/images/load"), &["image load"]);
        assert_eq!(commands("POST", "/images/x/tag"), &["image tag"]);
        assert!(commands("GET", "/containers/x/attach/ws").is_empty());
        assert!(commands("GET", "/_ping").contains(&ANY_COMMAND));
    }

    #[test]
    fn imports_are_told_from_pulls_by_the_query() {
        let create = route("POST", "/images/create").unwrap().endpoint;
        assert_eq!(commands_for(create, "fromImage=busybox&tag=latest"), PULL_ONLY);
        assert_eq!(commands_for(create, ""), PULL_ONLY);
        for query in
            ["fromSrc=-&repo=x", "fromImage=a&fromSrc=http%3A%2F%2Fx", "FROMSRC=", "from%53rc=-", "%zz=1"]
        {
            assert_eq!(commands_for(create, query), IMPORT, "{query}");
        }
        assert!(!PULL_ONLY.contains(&"image import"));
        assert!(PULL_ONLY.iter().all(|c| PULL.contains(c)));
        let exec = route("POST", "/containers/x/exec").unwrap().endpoint;
        assert_eq!(commands_for(exec, "fromSrc=-"), EXEC);
    }

    #[test]
    fn long_paths_route_in_linear_time() {
        let path = format!("/containers/{}/json", "a/".repeat(50_000));
        let started = std::time::Instant::now();
        let r = route("GET", &path).unwrap();
        assert_eq!(r.endpoint.pattern, "/containers/{name:.*}/json");
        assert!(route("POST", &path).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }

    #[test]
    fn odd_characters_are_re_encoded() {
        let r = route("GET", "/containers/a%20b%25c/json").unwrap();
        assert_eq!(r.params, vec!["a b%c".to_owned()]);
        assert_eq!(r.path, "/containers/a%20b%25c/json");
        let again = route("GET", &r.path).unwrap();
        assert_eq!(again.params, r.params);
    }

    proptest! {
        #[test]
        fn route_never_panics_and_is_idempotent(method in "(GET|POST|HEAD|PUT|DELETE|OPTIONS)", path in "\\PC{0,80}") {
            if let Ok(r) = route(&method, &path) {
                let again = route(&method, &r.target()).expect("the target routes");
                prop_assert!(std::ptr::eq(again.endpoint, r.endpoint));
                prop_assert_eq!(&again.path, &r.path);
                prop_assert_eq!(&again.params, &r.params);
                prop_assert_eq!(&again.version, &r.version);
            }
        }

        #[test]
        fn docker_like_paths_are_idempotent(
            version in "(/v1\\.4[1-9]|/v1\\.5[01]|)",
            parts in proptest::collection::vec("(containers|images|exec|json|x|a%2Eb|\\.\\.|\\.|%67|v1\\.41|push|tag|archive|_ping|networks|)", 0..6),
            method in "(GET|POST|HEAD|PUT|DELETE)",
        ) {
            let path = format!("{version}/{}", parts.join("/"));
            if let Ok(r) = route(&method, &path) {
                let again = route(&method, &r.target()).expect("the target routes");
                prop_assert!(std::ptr::eq(again.endpoint, r.endpoint));
                prop_assert_eq!(&again.params, &r.params);
                let bare = route(&method, &r.path).expect("the path routes");
                prop_assert!(std::ptr::eq(bare.endpoint, r.endpoint));
            }
        }
    }
}
