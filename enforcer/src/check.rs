//! `enforcer check`: the kernel's decision, computed in userspace by the same engine.

use std::{path::Path, process::ExitCode};

use anyhow::Result;
use enforcer_common::{
    abi::ArgBuf,
    engine::{Decision, Scan, SliceArgv, Verdict, decide},
};

use enforcer_common::grammar;

use crate::{
    gate::ContainerFacts,
    policy::{Policy, UserSpec, profile_for_path},
};

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
    let start = grammar::profile_start(profile).expect("profiles come from profile_by_name");
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

/// What the gate of `rule` would decide for `command` (a node; None: a read no rule key
/// restricts) on the container `facts` describes, and why. Mirrors the gate's order:
/// protect, then the command list, then `own_only`'s owner check.
pub fn container_decision(
    rule: &crate::policy::Rule,
    command: Option<u32>,
    facts: &ContainerFacts,
) -> (bool, String) {
    use enforcer_common::grammar::{covers, node_path};
    if let Some(entry) = rule.protect.iter().find(|p| p.matches(&facts.name, &facts.labels)) {
        return (
            false,
            format!("protected by rule {:?} ({entry:?}): no request on it is admitted", rule.name),
        );
    }
    let Some(node) = command else {
        return (true, "no command given: reads the rule does not restrict are admitted".to_owned());
    };
    let listed = rule.commands.iter().any(|&entry| covers(entry, node));
    let allowed = match rule.kind {
        crate::policy::ListKind::Allow => listed,
        crate::policy::ListKind::Deny => !listed,
    };
    if !allowed {
        return (false, format!("rule {:?} denies docker {}", rule.name, node_path(node)));
    }
    if rule.own_only.iter().any(|&entry| covers(entry, node)) {
        return match facts.owner() {
            Some(owner) if owner == rule.name => {
                (true, format!("docker {} is own_only and the container is the rule's own", node_path(node)))
            }
            Some(owner) => (
                false,
                format!("docker {} is own_only; the container's owner is rule {owner:?}", node_path(node)),
            ),
            None => (false, format!("docker {} is own_only; the container has no owner", node_path(node))),
        };
    }
    (
        true,
        format!(
            "docker {} is allowed (the gate still admits changes, such as rm, stop, exec, only on the rule's \
             own containers)",
            node_path(node)
        ),
    )
}

/// `enforcer check --container NAME [--command CMD] [--user U]`: asks dockerd (on the rule's
/// socket) who the container is and prints its owner and the gate's decision.
pub fn check_container(
    config: Option<&Path>,
    user: Option<&str>,
    container: &str,
    command: Option<&str>,
) -> Result<ExitCode> {
    let policy = Policy::load(config)?;
    let gated: Vec<&crate::policy::Rule> = policy
        .rules
        .iter()
        .filter(|r| r.api_gate && user.is_none_or(|u| r.users.iter().any(|(spec, _)| names_user(spec, u))))
        .collect();
    let Some(rule) = gated.first() else {
        return Err(crate::exit::Usage(format!(
            "no gated rule of {} {}",
            policy.source,
            user.map_or_else(|| "at all".to_owned(), |u| format!("names user {u:?}"))
        ))
        .into());
    };
    if gated.len() > 1 {
        eprintln!(
            "enforcer: note: several gated rules apply; judging by the first, {:?} (use --user)",
            rule.name
        );
    }
    let node = match command {
        Some(text) => Some(
            grammar::resolve_entry(crate::grammar::get(), text.trim())
                .ok_or_else(|| crate::exit::Usage(format!("--command {text:?}: unknown docker command")))?,
        ),
        None => None,
    };
    let upstream = crate::gate::upstream_of(rule);
    let facts = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::gate::inspect_container(&upstream, container))?;
    let (admitted, why) = container_decision(rule, node, &facts);
    println!("container: {} ({})", facts.name, facts.id);
    println!(
        "owner: {}",
        facts
            .owner()
            .map_or_else(|| "none (not created through a gate)".to_owned(), |o| format!("rule {o:?}"))
    );
    println!("rule: {}", rule.name);
    println!("gate: {}", if admitted { "admit" } else { "refuse" });
    println!("why: {why}");
    Ok(ExitCode::from(if admitted { crate::exit::OK } else { crate::exit::DENY }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_decisions_by_owner_and_protect() {
        let policy = Policy::parse("hardened-policy.toml", crate::policy::HARDENED_POLICY).unwrap();
        let rule = &policy.rules[0];
        let facts = |name: &str, owner: Option<&str>| ContainerFacts {
            name: name.into(),
            id: "0".repeat(64),
            labels: owner
                .map(|o| serde_json::Map::from_iter([("enforcer.owner".to_owned(), serde_json::json!(o))]))
                .unwrap_or_default(),
        };
        let exec = grammar::node_by_path("container exec");
        let commit = grammar::node_by_path("container commit");
        assert!(container_decision(rule, exec, &facts("mine", Some("ai-worker-docker"))).0);
        let (ok, why) = container_decision(rule, exec, &facts("web", None));
        assert!(!ok && why.contains("no owner"), "{why}");
        let (ok, why) = container_decision(rule, exec, &facts("web", Some("other")));
        assert!(!ok && why.contains("\"other\""), "{why}");
        let (ok, why) = container_decision(rule, commit, &facts("mine", Some("ai-worker-docker")));
        assert!(!ok && why.contains("denies"), "{why}");
        // Protected whatever the owner and the command.
        let (ok, why) = container_decision(rule, None, &facts("gitea", Some("ai-worker-docker")));
        assert!(!ok && why.contains("protected"), "{why}");
        let value = serde_json::json!({"Id": "a".repeat(64), "Name": "/gitea", "Config": {"Labels": null}});
        let read = ContainerFacts::from_inspect(&value).unwrap();
        assert_eq!((read.name.as_str(), read.owner()), ("gitea", None));
        assert!(ContainerFacts::from_inspect(&serde_json::json!({"Id": "abc"})).is_err());
        assert!(
            ContainerFacts::from_inspect(&serde_json::json!({"Id": "a".repeat(64), "Config": {"Labels": 3}}))
                .is_err()
        );
    }

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
