//! The docker API's endpoints as the gate knows them: path normalisation as dockerd's
//! router does it, and the table of endpoints with the CLI commands that use each.
//!
//! INTERFACE STUB: replaced by the full router.

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
    /// Canonical command paths of the CLI tree (`enforcer_common::tree`) that use it.
    pub commands: &'static [&'static str],
    pub body: BodyJudge,
    /// The power a restricted identity needs for it at all (plugins, swarm services).
    pub power: Option<super::judge::Power>,
}

/// A request matched to its endpoint.
#[derive(Debug)]
pub struct Route {
    pub endpoint: &'static Endpoint,
    /// The normalised path, without the version prefix.
    pub path: String,
    /// The `{name}`/`{id}` parts, in order, percent-decoded.
    pub params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// 400: a path dockerd would not route the same way (bad percent-encoding, NUL, ...).
    Malformed(String),
    /// 403: no command of the CLI tree uses this endpoint.
    Unknown { method: String, path: String },
}

/// `Endpoint::commands` of endpoints every command uses (`/_ping`, `/version`).
pub const ANY_COMMAND: &[&str] = &["*"];

pub static ENDPOINTS: &[Endpoint] = &[];

/// Normalises `path` (the request target's path, without the query) as dockerd's router
/// does and finds its endpoint.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    Err(RouteError::Unknown { method: method.to_owned(), path: path.to_owned() })
}
