//! Step names: the one string that joins a group's script to its checks. The script prints
//! `@@step NAME EXIT OUTPUT` (`step NAME USER CMD…` in vm/helpers.sh) and the checks look
//! the step up by the same [`Step`], so a misspelt name is a compile error rather than a
//! check that reads a step nobody ran.

use std::fmt;

/// A step's name, as the script prints it and the report keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    name: &'static str,
    /// For one of a family of steps (`blocked-exec`, `blocked-cp`): the member's name.
    member: Option<&'static str>,
}

impl Step {
    pub const fn new(name: &'static str) -> Step {
        Step { name, member: None }
    }

    /// The member of this family for `member`: `NAME-MEMBER`.
    #[must_use]
    pub const fn of(self, member: &'static str) -> Step {
        Step { name: self.name, member: Some(member) }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.member {
            None => f.write_str(self.name),
            Some(member) => write!(f, "{}-{member}", self.name),
        }
    }
}

/// Printed by `start_enforcer` and `start_enforcer_wait` (vm/helpers.sh).
pub const ENFORCER_START: Step = Step::new("enforcer-start");
/// Printed by `stop_enforcer`: the daemon's exit status after SIGTERM.
pub const ENFORCER_EXIT: Step = Step::new("enforcer-exit");
/// Printed by `start_dockerd`: the real daemon's version.
pub const DOCKERD_START: Step = Step::new("dockerd-start");
/// Printed by `start_dockerd`: the gitea stand-in container.
pub const GITEA_START: Step = Step::new("gitea-start");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_member_is_named_after_its_family() {
        assert_eq!(Step::new("blocked").of("exec").to_string(), "blocked-exec");
        assert_eq!(ENFORCER_START.to_string(), "enforcer-start");
    }

    /// The helpers' steps are printed by shell, not by Rust: this keeps the two in step.
    #[test]
    fn the_helpers_print_their_steps() {
        for printed in [
            format!("step {ENFORCER_START} root"),
            format!("echo \"@@step {ENFORCER_EXIT} $?"),
            format!("step {DOCKERD_START} root"),
            format!("step {GITEA_START} root"),
        ] {
            assert!(crate::vm::HELPERS.contains(&printed), "vm/helpers.sh does not print {printed:?}");
        }
    }
}
