//! `enforcer check`: the kernel's decision, computed in userspace by the same engine.

use std::{path::Path, process::ExitCode};

use anyhow::Result;
use enforcer_common::{
    abi::ArgBuf,
    engine::{Decision, Scan, SliceArgv, Verdict, decide},
};

use crate::policy::{Policy, UserSpec, profile_for_path};

/// Whether the policy's user entry `spec` is `user` (a name or a uid, compared as given
/// and through the user database).
fn names_user(spec: &UserSpec, user: &str) -> bool {
    match spec {
        UserSpec::Name(name) => {
            name == user
                || user.parse::<u32>().ok().is_some_and(|uid| crate::users::uid_of(name) == Some(uid))
        }
        UserSpec::Uid(uid) => {
            user.parse::<u32>().ok() == Some(*uid) || crate::users::uid_of(user) == Some(*uid)
        }
    }
}

/// The decision for `argv` under `policy`, as `user` (None: every rule applies), and what
/// the scan found.
pub fn decide_argv(policy: &Policy, user: Option<&str>, profile: u32, argv: &[String]) -> (Scan, Decision) {
    let mut mask = 0u32;
    for (index, rule) in policy.rules.iter().enumerate() {
        if user.is_none_or(|user| rule.users.iter().any(|(spec, _)| names_user(spec, user))) {
            mask |= 1 << index;
        }
    }
    let start = enforcer_common::grammar::profile_start(profile).expect("profiles come from profile_by_name");
    let rules = crate::compile::rule_configs(policy);
    decide(
        start,
        &mut SliceArgv(argv),
        argv.len() as u32,
        &mut ArgBuf::new(),
        crate::grammar::get(),
        mask,
        &rules[..],
    )
}

pub fn check(
    config: Option<&Path>,
    user: Option<&str>,
    client: Option<&str>,
    argv: &[String],
) -> Result<ExitCode> {
    let policy = Policy::load(config)?;
    let profile = match client {
        Some(name) => match crate::grammar::profile_by_name(name) {
            Some(profile) => profile,
            None => {
                return Err(crate::exit::Usage(format!(
                    "--client {name:?}: unknown client, expected docker or docker-compose"
                ))
                .into());
            }
        },
        None => profile_for_path(Path::new(argv.first().map_or("docker", String::as_str))),
    };
    if let Some(user) = user
        && !policy.rules.iter().any(|r| r.users.iter().any(|(spec, _)| names_user(spec, user)))
    {
        eprintln!("enforcer: note: no rule of {} names user {user:?}: everything is allowed", policy.source);
    }
    let (scan, decision) = decide_argv(&policy, user, profile, argv);
    let rule = policy.rules.get(decision.rule as usize).map_or("-", |r| r.name.as_str());
    let (verdict, code) = match decision.verdict {
        Verdict::Allow => ("allow", crate::exit::OK),
        Verdict::Deny { .. } => ("deny", crate::exit::DENY),
        Verdict::Undecidable(_) => ("undecidable", crate::exit::UNDECIDABLE),
    };
    println!("verdict: {verdict}");
    if decision.verdict != Verdict::Allow {
        println!("rule: {rule}");
        println!("reason: {}", decision.verdict.reason().as_str());
        if decision.audit {
            println!("mode: audit (the kernel records this exec and lets it run)");
        }
    }
    // The command the argv names, whatever the verdict, when the engine found one.
    let command = match scan {
        Scan::Command(node) => crate::grammar::command_path(node),
        _ => None,
    };
    println!("command: {}", command.unwrap_or("-"));
    if let (Scan::Command(node), Some(rule)) = (scan, policy.rules.get(decision.rule as usize))
        && decision.verdict != Verdict::Allow
        && crate::compile::implicit_tunnel(rule, node)
    {
        println!(
            "why: {} pipes raw requests to the whole docker API, so every rule that denies any command \
             denies it too, listed or not",
            command.unwrap_or("this command")
        );
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn default_policy_decisions() {
        let policy = Policy::default_policy();
        let verdict = |line: &str| decide_argv(&policy, Some("ai-worker"), 0, &argv(line)).1.verdict;
        assert!(matches!(verdict("docker exec -it web sh"), Verdict::Deny { .. }));
        assert!(matches!(verdict("docker container exec web sh"), Verdict::Deny { .. }));
        assert!(matches!(verdict("docker compose exec web sh"), Verdict::Deny { .. }));
        assert_eq!(verdict("docker ps"), Verdict::Allow);
        assert!(matches!(verdict("docker --frobnicate ps"), Verdict::Undecidable(_)));
        // Another user is not restricted by the default policy.
        assert_eq!(
            decide_argv(&policy, Some("bob"), 0, &argv("docker exec web sh")).1.verdict,
            Verdict::Allow
        );
    }

    /// The differential corpus's expected verdicts hold on the host too (the VM test then
    /// holds the kernel to the same verdicts).
    #[test]
    fn corpus_verdicts_under_the_default_policy() {
        let policy = Policy::default_policy();
        let corpus = ::vm_tests::corpus::corpus();
        let mut wrong = Vec::new();
        for (number, expected, args) in &corpus {
            let mut argv = vec![String::from("docker")];
            argv.extend(::vm_tests::corpus::split_words(args));
            let got = match decide_argv(&policy, Some("ai-worker"), 0, &argv).1.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny { .. } => "deny",
                Verdict::Undecidable(_) => "undecidable",
            };
            if got != expected {
                wrong.push(format!("line {number}: docker {args}: {got}, expected {expected}"));
            }
        }
        let lines = corpus.len();
        assert!(lines >= 200, "{lines} corpus lines");
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
