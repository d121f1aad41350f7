//! `cargo xtask lint`: formatting and clippy, on the host crates and on the BPF crate for its
//! own target (host clippy never sees it: it only builds for `bpfel-unknown-none`). Part of
//! `cargo xtask test`, so CI fails on a lint as on a test.

use std::process::Command;

use anyhow::Result;

use crate::{quiet, say, target_dir, workspace_root};

/// The components the lints need, on both toolchains (the BPF crate builds with nightly).
pub fn setup_components() -> Result<()> {
    for (toolchain, component, probe) in [
        ("stable", "rustfmt", ["fmt", "--version"]),
        ("stable", "clippy", ["clippy", "--version"]),
        ("nightly", "clippy", ["clippy", "--version"]),
    ] {
        let present = Command::new("rustup")
            .args(["run", toolchain, "cargo"])
            .args(probe)
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            say(&format!("{component} ({toolchain}): present"));
            continue;
        }
        quiet(
            &format!("rustup component add {component} --toolchain {toolchain}"),
            Command::new("rustup").args(["component", "add", component, "--toolchain", toolchain]),
        )?;
    }
    Ok(())
}

/// Fails on unformatted code and on any clippy warning (the workspace lints of Cargo.toml
/// decide what warns).
pub fn lint() -> Result<()> {
    say("lint: cargo fmt --all --check");
    crate::run(Command::new(env!("CARGO")).args(["fmt", "--all", "--check"]).current_dir(workspace_root()))?;
    say("lint: cargo clippy (host crates, all targets)");
    crate::run(
        Command::new(env!("CARGO"))
            .args(["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"])
            .current_dir(workspace_root()),
    )?;
    say("lint: cargo clippy (enforcer-ebpf for bpfel-unknown-none)");
    // Flags as enforcer/build.rs (aya-build) builds it; its own target dir, so neither build
    // invalidates the other.
    crate::run(
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "clippy", "--quiet", "--package", "enforcer-ebpf", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--target-dir"])
            .arg(target_dir().join("lint-ebpf"))
            .args(["--", "-D", "warnings"])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env("CARGO_ENCODED_RUSTFLAGS", "--cfg=bpf_target_arch=\"x86_64\"")
            .current_dir(workspace_root()),
    )
}
