//! The command line as scripts meet it: exit codes, `validate`, completions and man pages,
//! and the NixOS module's build-time policy check run with this binary. Host only: nothing
//! here loads BPF.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_enforcer");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("enforcer-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn enforcer(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        // Never the machine's daemon or state.
        .env("ENFORCER_RUNTIME_DIR", dir.join("run"))
        .env("ENFORCER_STATE_DIR", dir.join("state"))
        .output()
        .expect("run enforcer")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const GOOD: &str = "mode = \"enforce\"\n[[rule]]\nname = \"r\"\nusers = [\"ai-worker\"]\ndeny = [\"exec\"]\n";

#[test]
fn check_verdicts_and_errors_have_distinct_codes() {
    let dir = TempDir::new("check");
    let good = dir.0.join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, GOOD.replace("deny", "deyn")).unwrap();
    let good = good.to_str().unwrap();
    let bad = bad.to_str().unwrap();

    let verdict = |argv: &[&str]| {
        let mut args = vec!["check", "--config", good, "--user", "ai-worker", "--"];
        args.extend(argv);
        code(&enforcer(&dir.0, &args))
    };
    assert_eq!(verdict(&["docker", "ps"]), 0, "allow");
    assert_eq!(verdict(&["docker", "exec", "web", "sh"]), 1, "deny");
    assert_eq!(verdict(&["docker", "--frobnicate", "ps"]), 2, "undecidable");

    // A policy it cannot read: 65, with file:line:column, never the denial's 1.
    let out = enforcer(&dir.0, &["check", "--config", bad, "--", "docker", "exec", "x"]);
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{bad}:5:1: unknown field `deyn`")), "{}", stderr(&out));
    let missing = dir.0.join("missing.toml");
    let out = enforcer(&dir.0, &["check", "--config", missing.to_str().unwrap(), "--", "docker", "ps"]);
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));

    // A bad command line: 64 (clap's own 2 would read as undecidable).
    let out = enforcer(&dir.0, &["check", "--client", "podman", "--", "docker", "ps"]);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert_eq!(code(&enforcer(&dir.0, &["check", "--frobnicate", "--", "docker", "ps"])), 64);
    assert_eq!(code(&enforcer(&dir.0, &["no-such-command"])), 64);
    let help = enforcer(&dir.0, &["check", "--help"]);
    assert_eq!(code(&help), 0);
    assert!(
        stdout(&help).contains("Exit status:") && stdout(&help).contains("65  the policy cannot be read"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn validate_reports_the_place() {
    let dir = TempDir::new("validate");
    let good = dir.0.join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let out = enforcer(&dir.0, &["validate", "--config", good.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid:") && stdout(&out).contains("1 rule, mode enforce"),
        "{}",
        stdout(&out)
    );
    // Users need not exist here (the NixOS build sandbox has none of the system's).
    std::fs::write(&good, GOOD.replace("ai-worker", "no-such-user-here")).unwrap();
    assert_eq!(code(&enforcer(&dir.0, &["validate", "--config", good.to_str().unwrap()])), 0);

    for (text, place, message) in [
        (GOOD.replace("\"exec\"", "\"exce\""), "5:9", "unknown docker command \"exce\""),
        (GOOD.replace("enforce", "enforcing"), "1:8", "unknown mode \"enforcing\""),
        (GOOD.replace("users", "usres"), "4:1", "unknown field `usres`"),
    ] {
        let bad = dir.0.join("bad.toml");
        std::fs::write(&bad, &text).unwrap();
        let out = enforcer(&dir.0, &["validate", "--config", bad.to_str().unwrap()]);
        assert_eq!(code(&out), 65, "{text}: {}", stderr(&out));
        let expected = format!("{}:{place}: {message}", bad.display());
        assert!(stderr(&out).contains(&expected), "expected {expected:?} in {}", stderr(&out));
    }
}

#[test]
fn reload_without_a_daemon_is_unavailable() {
    let dir = TempDir::new("reload");
    let out = enforcer(&dir.0, &["reload"]);
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("no daemon is running"), "{}", stderr(&out));
}

#[test]
fn status_filters_are_usage_errors() {
    let dir = TempDir::new("status");
    let out = enforcer(&dir.0, &["status", "--since", "yesterday-ish"]);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    let out = enforcer(&dir.0, &["status", "--follow", "--user", "no-such-user-here"]);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
}

#[test]
fn completions_and_man_pages() {
    let dir = TempDir::new("generate");
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef enforcer"), ("fish", "complete -c enforcer")]
    {
        let out = enforcer(&dir.0, &["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        // Subcommands and their flags are in it.
        assert!(script.contains("validate") && script.contains("--follow"), "{shell}");
    }
    assert_eq!(code(&enforcer(&dir.0, &["completions", "tcsh"])), 64);

    let man = dir.0.join("man");
    let out = enforcer(&dir.0, &["manpages", man.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut pages: Vec<String> =
        std::fs::read_dir(&man).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    for page in
        ["enforcer.1", "enforcer-status.1", "enforcer-check.1", "enforcer-metrics.1", "enforcer-validate.1"]
    {
        assert!(pages.contains(&page.to_string()), "{page} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("manpages")), "the hidden generator has no page: {pages:?}");
    let main = std::fs::read_to_string(man.join("enforcer.1")).unwrap();
    assert!(main.starts_with(".ie") || main.contains(".TH enforcer 1"), "roff: {main}");
    assert!(main.contains("Exit status") && main.contains("65"), "exit codes in the page");
    let status = std::fs::read_to_string(man.join("enforcer-status.1")).unwrap();
    assert!(status.contains("follow"), "{status}");
}

// ---- the NixOS module's build-time check, run with this binary ---------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn nixpkgs() -> PathBuf {
    let path =
        std::env::var_os("ENFORCER_NIXPKGS").map_or_else(|| repo().join("../shared/nixpkgs"), PathBuf::from);
    assert!(
        path.join("lib/default.nix").is_file(),
        "{}: no nixpkgs lib; set ENFORCER_NIXPKGS (.ci/run sets it)",
        path.display()
    );
    path
}

/// The module's settings and check script for `settings` (a Nix expression), evaluated with
/// nixpkgs' own module system (vm-tests/nix/eval-nixos.nix).
fn module_check(dir: &Path, settings: &str) -> serde_json::Value {
    let expression = format!(
        r#"let e = import {repo}/vm-tests/nix/eval-nixos.nix {{
             nixpkgs = {nixpkgs}; security = "master"; release = "26.05"; module = {repo}/nix/module.nix;
             configuration = {{ services.enforcer = {{ enable = true; settings = {settings}; }}; }};
           }};
           policy = e.config.environment.etc."enforcer/policy.toml".source;
           exe = e.lib.getExe e.config.services.enforcer.package;
         in {{ inherit exe; inherit (policy) buildCommand; settings = policy.rendered.settingsValue; }}"#,
        repo = repo().display(),
        nixpkgs = nixpkgs().canonicalize().unwrap().display()
    );
    let mut command = Command::new("nix-instantiate");
    for (var, sub) in [
        ("HOME", "home"),
        ("NIX_STATE_DIR", "state"),
        ("NIX_STORE_DIR", "store"),
        ("NIX_LOG_DIR", "log"),
        ("NIX_CONF_DIR", "conf"),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        command.env(var, dir.join(sub));
    }
    let out = command
        .env_remove("NIX_PATH")
        .args(["--option", "build-users-group", "", "--eval", "--strict", "--json", "-E", &expression])
        .output()
        .expect("nix-instantiate (Debian: nix-bin; `cargo xtask setup` installs it)");
    assert!(out.status.success(), "nix-instantiate: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the module's check script as the Nix builder would, with this binary standing in for
/// the package's, over the settings rendered as TOML (what pkgs.formats.toml writes).
fn run_check(dir: &Path, module: &serde_json::Value) -> Output {
    let toml = toml::Table::try_from(&module["settings"]).unwrap().to_string();
    let rendered = dir.join("enforcer-policy-unchecked.toml");
    std::fs::write(&rendered, toml).unwrap();
    let script = module["buildCommand"].as_str().unwrap().replace(module["exe"].as_str().unwrap(), BIN);
    Command::new("bash")
        .args(["-euc", &script])
        .env("rendered", &rendered)
        .env("out", dir.join("out.toml"))
        .output()
        .unwrap()
}

#[test]
fn nixos_rebuild_fails_on_a_bad_policy_with_its_place() {
    let dir = TempDir::new("module-check");
    let good = module_check(
        &dir.0,
        r#"{ rule = [ { name = "r"; users = [ "ai-worker" ]; deny = [ "exec" "compose watch" ]; } ]; }"#,
    );
    let out = run_check(&dir.0, &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(dir.0.join("out.toml")).unwrap().contains("compose watch"));

    // A misspelt command evaluates (it is a string) and must fail the build, with the place.
    let _ = std::fs::remove_file(dir.0.join("out.toml"));
    let bad = module_check(
        &dir.0,
        r#"{ rule = [ { name = "r"; users = [ "ai-worker" ]; deny = [ "exec" "exce" ]; } ]; }"#,
    );
    let out = run_check(&dir.0, &bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("enforcer-policy-unchecked.toml:") && err.contains("unknown docker command \"exce\""),
        "{err}"
    );
    assert!(err.contains("the rendered policy is rejected"), "{err}");
    assert!(!dir.0.join("out.toml").exists(), "no policy file out of a failed check");
}
