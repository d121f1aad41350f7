//! What the VM's stage holds that several groups (and the bench) name.

/// The seed blacklist of the wrapper script enforcer replaces (the default policy).
pub const SEED_DENY_LIST: &[&str] =
    &["exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag"];

/// What `start_dockerd` (vm/helpers.sh) writes into the gitea container's volume.
pub const GITEA_SECRET: &str = "gitea-admin-token-s3cret";
