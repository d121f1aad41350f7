//! The current task: its address, its exec syscall's arguments, whether it is traced or in
//! a user namespace of its own, and the signal that kills it.

use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_send_signal, bpf_task_pt_regs};
use enforcer_common::{
    abi::{KernelOffsets, NR_EXECVE, NR_EXECVEAT},
    engine::Reason,
};

use crate::kernel::read_kernel;

const SIGKILL: u32 = 9;

/// The address of the current task's `task_struct`.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper takes no arguments and returns the running task.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// Kills the current task (the re-check's verdict: the exec is past the point of no return).
#[inline(always)]
pub fn kill_current() {
    // SAFETY: the helper takes only the signal number, and signals the current task.
    unsafe { bpf_send_signal(SIGKILL) };
}

/// The caller's argv and envp, from the saved registers of the exec syscall running.
/// `UnsupportedExecPath` for an exec entry whose registers the program does not know
/// (the 32-bit one): only the re-check can see that exec's argv.
#[inline(always)]
pub fn caller_exec(off: &KernelOffsets) -> Result<(u64, u64), Reason> {
    // SAFETY: `bpf_task_pt_regs` takes a BTF task pointer, which is exactly what
    // `bpf_get_current_task_btf` (no arguments) returns.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if regs == 0 {
        return Err(Reason::UnsupportedExecPath);
    }
    let nr: u64 = read_kernel(regs, off.regs_orig_ax).map_err(|_| Reason::UnreadableArgv)?;
    let (argv_reg, envp_reg) = if nr == NR_EXECVE {
        (off.regs_si, off.regs_dx)
    } else if nr == NR_EXECVEAT {
        (off.regs_dx, off.regs_r10)
    } else {
        return Err(Reason::UnsupportedExecPath);
    };
    let argv = read_kernel(regs, argv_reg).map_err(|_| Reason::UnreadableArgv)?;
    let envp = read_kernel(regs, envp_reg).map_err(|_| Reason::UnreadableArgv)?;
    Ok((argv, envp))
}

/// Whether the current task runs in a user namespace other than the initial one, where it
/// can mount over (or chroot away from) the loader and libraries a vetted client loads.
/// The check holds for namespaces created by the caller and for ones it joined alike: an
/// unprivileged task can change its mount namespace or root only inside a user namespace
/// of its own (`mntns_install` and `chroot` need the capability in the initial one
/// otherwise), and `setns`/`unshare` of a user namespace need an unshared `fs_struct`.
#[inline(always)]
pub fn foreign_user_namespace(off: &KernelOffsets) -> Result<bool, i32> {
    let cred: u64 = read_kernel(current_task(), off.task_cred)?;
    let user_ns: u64 = read_kernel(cred, off.cred_user_ns)?;
    let level: u32 = read_kernel(user_ns, off.user_ns_level)?;
    Ok(level != 0)
}

/// Whether the current task is being traced (its tracer could rewrite the client).
#[inline(always)]
pub fn traced(off: &KernelOffsets) -> Result<bool, i32> {
    let ptrace: u32 = read_kernel(current_task(), off.task_ptrace)?;
    Ok(ptrace != 0)
}
