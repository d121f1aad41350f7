//! Builds the BPF programs (enforcer-ebpf) with the nightly toolchain and bpf-linker, so a
//! plain `cargo build` produces a complete `enforcer`. `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../enforcer-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "enforcer-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
