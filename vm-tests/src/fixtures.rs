//! What the VM's stage holds that several groups (and the bench) name.

/// The seed blacklist of the wrapper script enforcer replaces (the default policy).
pub const SEED_DENY_LIST: &[&str] =
    &["exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag"];

/// What `start_dockerd` (vm/helpers.sh) writes into the gitea container's volume.
pub const GITEA_SECRET: &str = "gitea-admin-token-s3cret";

/// Script lines that start the daemon on the embedded default policy's argv layer alone
/// (`api_gate = false`): for groups on the mock API, which speaks only enough of the API for
/// `ps`, so the default's gate would stand between the agent and it (the api-gate groups
/// test the gate).
pub fn start_enforcer_argv_only() -> String {
    let default = include_str!("../../enforcer/src/default-policy.toml");
    format!(
        "cat > /tmp/argv-only.toml <<'POLICY'\n{default}api_gate = false\nPOLICY\nstart_enforcer --config /tmp/argv-only.toml"
    )
}
