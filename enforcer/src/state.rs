//! The daemon's record of what it put in force, for `enforcer status` when the daemon is
//! gone and for the next daemon that adopts the pins.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";

/// A vetted binary: the kernel's identity of the file and the path the policy resolved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedBinary {
    pub dev: u64,
    pub ino: u64,
    pub path: String,
}

/// One policy generation: its rules by index, and its binaries (to name them in records).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Generation {
    pub rules: Vec<String>,
    pub binaries: Vec<NamedBinary>,
}

impl Generation {
    /// The vetted path of a file identity.
    pub fn binary(&self, file: &enforcer_common::FileId) -> Option<String> {
        self.binaries.iter().find(|b| b.dev == file.dev && b.ino == file.ino).map(|b| b.path.clone())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// When enforcement began (kept across daemon restarts that adopt the pins), RFC 3339.
    pub enforcing_since: String,
    /// The daemon that last started, and when.
    pub daemon_pid: u32,
    pub daemon_started: String,
    pub policy_source: String,
    pub policy_digest: String,
    pub mode: String,
    /// When the policy in force was loaded, RFC 3339.
    pub policy_loaded: String,
    pub active_generation: u32,
    pub generations: [Generation; 2],
    /// Rotated denial logs the daemon keeps, so `status` reads all of them.
    #[serde(default = "default_log_keep")]
    pub log_keep: usize,
}

fn default_log_keep() -> usize {
    crate::events::DEFAULT_LOG_KEEP
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

pub fn load(state_dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the state atomically (temporary file, then rename).
pub fn save(state_dir: &Path, state: &State) -> Result<()> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let target = path(state_dir);
    let temporary = state_dir.join(format!(".{STATE_FILE}.tmp"));
    {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        file.write_all(&serde_json::to_vec_pretty(state)?)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
    }
    std::fs::rename(&temporary, &target).with_context(|| format!("cannot write {}", target.display()))
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
