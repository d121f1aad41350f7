//! The VM scenario groups, one module each: its script (what runs inside the VM and only
//! observes), its steps (the names the script prints and its checks read) and its checks
//! (what the host judges from the report).

use std::path::Path;

use anyhow::Result;

use crate::{suite::Group, vm::Artifacts};

mod api_gate;
mod api_gate_attacks;
mod api_gate_compose;
mod api_gate_own;
mod api_gate_route;
mod audit_mode;
mod bypass;
mod commands;
mod daemon;
mod default_policy;
mod filesystems;
mod no_bpf_lsm;
mod subvert;
mod systemd;

/// Every group, in the order the suite boots them.
pub fn all(work: &Path, artifacts: &Artifacts) -> Result<Vec<Group>> {
    Ok(vec![
        default_policy::group(),
        api_gate::group(),
        api_gate_attacks::group(),
        api_gate_route::group(),
        api_gate_own::group(),
        filesystems::group(work, &artifacts.docker)?,
        audit_mode::group(),
        commands::group(),
        daemon::group(),
        bypass::group(),
        subvert::group(work)?,
        systemd::group(),
        api_gate_compose::group(),
        no_bpf_lsm::group(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checks::Checks, report::Report, suite::CheckFn, vm::HELPERS};

    /// Every group's script and checks (the files a group boots with need a work directory
    /// and mkfs.ext4, which these tests do without).
    fn scripts_and_checks() -> Vec<(&'static str, String, CheckFn)> {
        vec![
            ("default-policy", default_policy::script(), default_policy::check),
            ("api-gate", api_gate::script(), api_gate::check),
            ("api-gate-attacks", api_gate_attacks::script(), api_gate_attacks::check),
            ("api-gate-route", api_gate_route::script(), api_gate_route::check),
            ("api-gate-own", api_gate_own::script(), api_gate_own::check),
            ("filesystems", filesystems::script(), filesystems::check),
            ("audit-mode", audit_mode::script(), audit_mode::check),
            ("commands", commands::script(), commands::check),
            ("daemon", daemon::script(), daemon::check),
            ("bypass", bypass::script(), bypass::check),
            ("subvert", subvert::script(), subvert::check),
            ("systemd", systemd::script(), systemd::check),
            ("api-gate-compose", api_gate_compose::script(), api_gate_compose::check),
            ("no-bpf-lsm", no_bpf_lsm::script(), no_bpf_lsm::check),
        ]
    }

    /// A step the checks read is one the script (or a helper it calls) prints: the checks
    /// run here against an empty report, which reads every step they ever read.
    #[test]
    fn every_step_a_check_reads_is_printed_by_its_script() {
        let artifacts = Artifacts {
            enforcer: "/nonexistent/enforcer".into(),
            mock_api: "/nonexistent".into(),
            exec_helper: "/nonexistent".into(),
            docker: "/nonexistent".into(),
            daemon_root: "/nonexistent".into(),
            systemd_root: "/nonexistent".into(),
        };
        let report = Report::default();
        for (group, script, check) in scripts_and_checks() {
            let mut checks = Checks::new(&report, &artifacts);
            check(&mut checks);
            let read = checks.steps_read();
            assert!(!read.is_empty(), "{group}: the checks read no step");
            for step in read {
                let printed = |text: &str| {
                    text.lines().any(|l| {
                        let l = l.trim_start();
                        l.starts_with(&format!("step {step} ")) || l.contains(&format!("@@step {step} "))
                    })
                };
                assert!(
                    printed(&script) || printed(HELPERS),
                    "{group}: step {step} is read but never printed"
                );
            }
        }
    }

    /// Two steps of one name would overwrite each other in the report.
    #[test]
    fn no_script_prints_a_step_twice() {
        for (group, script, _) in scripts_and_checks() {
            let mut seen = std::collections::BTreeSet::new();
            for line in script.lines() {
                let Some(name) = line.trim_start().strip_prefix("step ").and_then(|l| l.split(' ').next())
                else {
                    continue;
                };
                assert!(seen.insert(name.to_string()), "{group}: step {name} is printed twice");
            }
        }
    }
}
