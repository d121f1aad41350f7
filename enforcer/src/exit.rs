//! Exit codes that scripts can rely on: the verdicts and states keep 0-3, errors take the
//! sysexits.h codes, so that "denied" (1) is never confused with "could not tell" (64-70).

use crate::policy::PolicyError;

/// Allowed (`check`), enforcing (`status`), done.
pub const OK: u8 = 0;
/// `check`: denied. `status`: nothing enforces.
pub const DENY: u8 = 1;
/// `check`: undecidable (the kernel denies it too).
pub const UNDECIDABLE: u8 = 2;
/// `run`: stopped by `enforcer stop` (the unit's SuccessExitStatus=3).
pub const DETACHED: u8 = 3;
/// The command line is wrong (`EX_USAGE`).
pub const USAGE: u8 = 64;
/// The policy cannot be read or is invalid, with <file:line:column> (`EX_DATAERR`); `reload`:
/// the daemon rejected it and keeps the policy in force.
pub const POLICY: u8 = 65;
/// `reload`, `metrics --listen`: no daemon, or the address cannot be used (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// Any other error: permissions, the kernel, I/O (`EX_SOFTWARE`).
pub const ERROR: u8 = 70;

/// The table in `--help` and in the man page.
pub const HELP: &str = "\
Exit status:
  0   allowed (check); enforcing (status); done
  1   denied (check); nothing enforces (status)
  2   undecidable (check): the kernel denies it too
  3   detached by `enforcer stop` (run)
  64  a bad command line
  65  the policy cannot be read or is invalid (file:line:column);
      reload: rejected, the policy in force stays
  69  no daemon is running (reload); the address is taken (metrics)
  70  any other error (permissions, the kernel, I/O)";

/// A bad command line found after parsing (an unknown --client, --user or --since).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Something that must be running or free is not.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// The daemon rejected a policy (its message is already printed).
#[derive(Debug)]
pub struct PolicyRejected(pub String);

impl std::fmt::Display for PolicyRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyRejected {}

/// The exit code for an error, from the first typed error in its chain.
pub fn code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<PolicyError>() || cause.is::<PolicyRejected>() {
            return POLICY;
        }
        if cause.is::<Usage>() {
            return USAGE;
        }
        if cause.is::<Unavailable>() {
            return UNAVAILABLE;
        }
    }
    ERROR
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn errors_map_to_their_codes() {
        let policy = PolicyError { file: "p.toml".into(), position: Some((2, 1)), message: "x".into() };
        assert_eq!(code_of(&anyhow::Error::from(policy.clone())), POLICY);
        // Context on top does not hide the cause.
        let wrapped = Err::<(), _>(policy).context("loading").unwrap_err();
        assert_eq!(code_of(&wrapped), POLICY);
        assert_eq!(code_of(&Usage("bad".into()).into()), USAGE);
        assert_eq!(code_of(&Unavailable("no daemon".into()).into()), UNAVAILABLE);
        assert_eq!(code_of(&PolicyRejected("r".into()).into()), POLICY);
        assert_eq!(code_of(&anyhow::anyhow!("EPERM")), ERROR);
        // Errors never take a verdict's code.
        for code in [POLICY, USAGE, UNAVAILABLE, ERROR] {
            assert!(![OK, DENY, UNDECIDABLE, DETACHED].contains(&code));
        }
    }
}
