//! The judge of request bodies that create containers or change what one can reach.
//!
//! INTERFACE STUB: replaced by the full judge.

use std::path::{Path, PathBuf};

use super::route::BodyJudge;

/// The label the gate puts on what a restricted identity creates: its rule's name.
pub const OWNER_LABEL: &str = "enforcer.owner";

/// The largest body the gate reads to judge (larger: 413).
pub const MAX_BODY: usize = 1 << 20;

/// A power restricted identities do not have unless their rule's `api_powers` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Power {
    Privileged,
    CapAdd,
    Devices,
    SecurityOpt,
    HostNamespaces,
    CgroupParent,
    Runtime,
    Sysctls,
    BuildInsecure,
    BuildHostNetwork,
    Plugins,
    Swarm,
}

impl Power {
    pub const ALL: &[Power] = &[];
    /// The name a policy's `api_powers` uses.
    pub fn name(self) -> &'static str {
        ""
    }
    pub fn from_name(_name: &str) -> Option<Power> {
        None
    }
}

/// What a rule lets its identities do through the gate.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub rule: String,
    /// Powers the rule grants (relaxed defaults).
    pub powers: Vec<Power>,
    /// Host directories bind mounts may come from (resolved, absolute).
    pub bind_paths: Vec<PathBuf>,
    /// Paths no bind mount may reach, whatever `bind_paths` says (the docker sockets,
    /// enforcer's own files), resolved.
    pub never_bind: Vec<PathBuf>,
}

/// A refusal: the request's field and what to change, for the 403's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// JSON path or query parameter: `HostConfig.Privileged`, `HostConfig.Binds[0]`.
    pub field: String,
    /// The whole sentence for the agent: what is refused and what to change.
    pub message: String,
}

/// Objects a request names whose owner the gate must check before forwarding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// (field, container name or id): `VolumesFrom`, `container:X` namespaces, links.
    pub containers: Vec<(String, String)>,
    /// (field, volume name): named volumes mounted.
    pub volumes: Vec<(String, String)>,
}

/// A body the gate admits: what to forward (owner label added to creates) and what to check.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub body: Vec<u8>,
    pub needs: Needs,
}

/// Judges a request body of kind `kind`. `resolve` resolves a bind source as the daemon
/// will (symlinks, `..`): [`resolve_source`] in the gate, a fake in tests.
pub fn judge_body(
    _kind: BodyJudge,
    _body: &[u8],
    _limits: &Limits,
    _resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Judged, Refusal> {
    Err(Refusal { field: String::new(), message: "not implemented".into() })
}

/// Judges `POST /build`'s query string and returns the query to forward (owner label added).
pub fn judge_build_query(_query: &str, _limits: &Limits) -> Result<String, Refusal> {
    Err(Refusal { field: String::new(), message: "not implemented".into() })
}

/// Resolves a bind mount's source as dockerd will: symlinks of the existing part followed,
/// `..` removed.
pub fn resolve_source(path: &Path) -> PathBuf {
    path.to_path_buf()
}
