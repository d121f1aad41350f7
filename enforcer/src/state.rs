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
    pub fn binary(&self, file: &enforcer_common::abi::FileId) -> Option<String> {
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

/// The saved state: `Ok(None)` when there is none yet, an error naming the file when it
/// cannot be read or parsed (a truncated write, a hand edit).
pub fn load(state_dir: &Path) -> Result<Option<State>> {
    let file = path(state_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    serde_json::from_str(&text).map(Some).with_context(|| format!("{} is corrupt", file.display()))
}

/// Moves a corrupt state file aside (to `state.json.corrupt`), so the next save starts a
/// fresh record and the bad one stays for a post-mortem. Returns where it went.
pub fn quarantine(state_dir: &Path) -> Result<PathBuf> {
    let file = path(state_dir);
    let aside = state_dir.join(format!("{STATE_FILE}.corrupt"));
    std::fs::rename(&file, &aside).with_context(|| format!("cannot move {} aside", file.display()))?;
    Ok(aside)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_corrupt_and_good_state() {
        let dir = std::env::temp_dir().join(format!("enforcer-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        std::fs::write(path(&dir), b"{\"enforcing_since\": \"2026").unwrap();
        let error = format!("{:#}", load(&dir).unwrap_err());
        assert!(error.contains("state.json is corrupt"), "{error}");
        let aside = quarantine(&dir).unwrap();
        assert!(aside.ends_with("state.json.corrupt") && aside.exists());
        assert!(load(&dir).unwrap().is_none());
        let state = State { daemon_pid: 42, ..Default::default() };
        save(&dir, &state).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(state));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
