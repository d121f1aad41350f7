# The enforcer package, two ways:
#
# 1. From source (the default), with rustPlatform.buildRustPackage. enforcer's build.rs builds
#    the BPF programs (enforcer-ebpf) through aya-build, which runs a second cargo for the
#    bpfel-unknown-none target with `-Z build-std=core`. That needs, in the build sandbox:
#      - a Rust toolchain that allows -Z flags and has the rust-src component in its sysroot:
#        pass `rustPlatform` made from a nightly (rust-overlay or fenix, e.g.
#        `makeRustPlatform { cargo = nightly; rustc = nightly; }` with
#        `nightly = rust-bin.nightly.latest.default.override { extensions = [ "rust-src" ]; }`);
#        with a stable rustc, RUSTC_BOOTSTRAP=1 (set below) allows -Z but rust-src is missing;
#      - bpf-linker on PATH, built against the same LLVM major version as that rustc
#        (nixpkgs' bpf-linker uses nixpkgs' LLVM, which may differ from a nightly's);
#      - every crate the BPF build needs, offline: the workspace's Cargo.lock covers aya-ebpf
#        and enforcer-common, but -Z build-std also resolves the standard library's own
#        Cargo.lock (library/Cargo.lock in rust-src), whose crates are not in the vendor
#        directory that buildRustPackage makes from our Cargo.lock.
#    NOT TESTED: nothing here has been built with Nix (CI has no Nix store or nixpkgs; only
#    this file's syntax and its arguments are checked, by tests/tests/packaging.rs). Expect
#    to work on the last point in particular.
#
# 2. From a binary built elsewhere (tested way to build the binary: `cargo xtask build` on
#    Debian 12, which embeds the BPF object): `pkgs.callPackage ./package.nix { prebuilt =
#    ./enforcer; }`. autoPatchelfHook points the binary at the Nix store's glibc and libgcc_s
#    (a Debian-built binary looks for /lib64/ld-linux-x86-64.so.2, which NixOS does not have).
#    Also not built with Nix in CI.
{
  lib,
  stdenv,
  rustPlatform,
  autoPatchelfHook,
  bpf-linker,
  # A prebuilt `enforcer` binary (a path). When given, nothing is compiled.
  prebuilt ? null,
}:

let
  version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).workspace.package.version;

  meta = {
    description = "Denies chosen docker CLI commands to restricted users, in the kernel (BPF LSM)";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "enforcer";
    # The exec hook reads execve's argv from x86-64 registers.
    platforms = [ "x86_64-linux" ];
  };

  # The workspace without build outputs (target/, result links) and version control files.
  source = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = path: type: !(type == "directory" && baseNameOf path == "target");
  };
in
if prebuilt != null then
  stdenv.mkDerivation {
    pname = "enforcer";
    inherit version meta;
    src = prebuilt;
    dontUnpack = true;
    nativeBuildInputs = [ autoPatchelfHook ];
    # libgcc_s (unwinding); glibc comes with stdenv.
    buildInputs = [ stdenv.cc.cc.lib ];
    installPhase = ''
      runHook preInstall
      install -D -m 755 $src $out/bin/enforcer
      runHook postInstall
    '';
  }
else
  rustPlatform.buildRustPackage {
    pname = "enforcer";
    inherit version meta;
    src = source;
    cargoLock.lockFile = ../Cargo.lock;
    # Only the daemon; xtask and the VM test bench are development tools.
    cargoBuildFlags = [
      "-p"
      "enforcer"
    ];
    nativeBuildInputs = [ bpf-linker ];
    # aya-build passes -Z build-std=core to the BPF build only when rustc is a nightly or
    # RUSTC_BOOTSTRAP allows unstable flags.
    env.RUSTC_BOOTSTRAP = "1";
    # The host tests run in CI with `cargo xtask test`; the workspace's tests include the VM
    # bench and the packaging checks, which need QEMU, Debian kernels, systemd and Nix.
    doCheck = false;
  }
