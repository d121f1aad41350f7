//! `enforcer_fopen`: the identity probe. While the loader resolves paths it reports the
//! identity the kernel itself uses for each file the loader opens; it never refuses.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};

use crate::{
    kernel::file_identity,
    maps::{OFFSETS, PROBE_TGID, PROBED},
};

#[lsm(hook = "file_open")]
pub fn enforcer_fopen(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != PROBE_TGID.load() {
        return previous;
    }
    let off = OFFSETS.load();
    let file: u64 = ctx.arg(0);
    if let Ok(identity) = file_identity(file, &off) {
        // The first open of the loader's request only: a stacking filesystem (overlayfs)
        // opens its layer's file from inside that open, and that second `file_open` names
        // the layer's inode, while an exec or a connect sees the overlay's. Userspace clears
        // the entry before each request.
        let _ = PROBED.insert(pid_tgid as u32, identity, u64::from(BPF_NOEXIST));
    }
    previous
}
