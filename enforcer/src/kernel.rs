//! What the running kernel must offer, and the struct offsets the BPF programs need,
//! read from its BTF.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use enforcer_common::abi::KernelOffsets;

use crate::btf::Btf;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Fails with the fix when the kernel cannot run BPF LSM programs.
pub fn check_bpf_lsm() -> Result<()> {
    if !Path::new(LSM_LIST).exists() {
        // securityfs is not mounted everywhere (minimal systems, containers).
        mount_securityfs();
    }
    check_bpf_lsm_at(Path::new(VMLINUX_BTF), Path::new(LSM_LIST))
}

fn check_bpf_lsm_at(btf: &Path, lsm_list: &Path) -> Result<()> {
    if !btf.exists() {
        bail!(
            "this kernel has no BTF ({} is missing): enforcer needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y",
            btf.display()
        );
    }
    let lsms = std::fs::read_to_string(lsm_list).with_context(|| {
        format!(
            "cannot read {} to check that the BPF LSM is active (is securityfs mounted?)",
            lsm_list.display()
        )
    })?;
    let lsms = lsms.trim();
    if !lsms.split(',').any(|lsm| lsm == "bpf") {
        bail!(
            "the BPF LSM is not active (active LSMs: {lsms}). Boot the kernel with \"bpf\" added \
             to the lsm= parameter, keeping the others: lsm={lsms},bpf (on NixOS: \
             boot.kernelParams = [ \"lsm={lsms},bpf\" ];)"
        );
    }
    Ok(())
}

fn mount_securityfs() {
    let target = c"/sys/kernel/security";
    // SAFETY: constant, NUL-terminated arguments. Failure is reported by the read after.
    unsafe {
        libc::mount(c"securityfs".as_ptr(), target.as_ptr(), c"securityfs".as_ptr(), 0, std::ptr::null());
    }
}

/// The running kernel's BTF, read once: the offsets and the programs' hook ids come from it.
pub fn read_btf() -> Result<Btf> {
    Btf::from_file(Path::new(VMLINUX_BTF)).with_context(|| format!("cannot parse BTF {VMLINUX_BTF}"))
}

/// Offsets for the BPF programs from a kernel's BTF.
pub fn offsets_from_btf(btf: &Btf) -> Result<KernelOffsets> {
    let field = |s: &str, m: &str, size: Option<usize>| -> Result<u32> {
        let (offset, actual) = btf.member(s, m)?;
        if size.is_some() && actual != size {
            bail!("{s}.{m} has size {actual:?} in this kernel, expected {size:?}");
        }
        Ok(offset)
    };
    Ok(KernelOffsets {
        binprm_file: field("linux_binprm", "file", None)?,
        binprm_argc: field("linux_binprm", "argc", Some(4))?,
        binprm_filename: field("linux_binprm", "filename", None)?,
        binprm_interp: field("linux_binprm", "interp", None)?,
        file_inode: field("file", "f_inode", None)?,
        inode_ino: field("inode", "i_ino", Some(8))?,
        inode_sb: field("inode", "i_sb", None)?,
        sb_dev: field("super_block", "s_dev", Some(4))?,
        regs_orig_ax: field("pt_regs", "orig_ax", Some(8))?,
        regs_si: field("pt_regs", "si", Some(8))?,
        regs_dx: field("pt_regs", "dx", Some(8))?,
        regs_r10: field("pt_regs", "r10", Some(8))?,
        binprm_p: field("linux_binprm", "p", Some(8))?,
        binprm_envc: field("linux_binprm", "envc", Some(4))?,
        task_ptrace: field("task_struct", "ptrace", Some(4))?,
        task_mm: field("task_struct", "mm", None)?,
        task_tgid: field("task_struct", "tgid", Some(4))?,
        mm_exe_file: field("mm_struct", "exe_file", None)?,
        unix_path_dentry: field("unix_sock", "path", None)? + field("path", "dentry", None)?,
        dentry_inode: field("dentry", "d_inode", None)?,
        unix_addr: field("unix_sock", "addr", None)?,
        unix_address_name: field("unix_address", "name", None)?,
        task_seccomp_filter: field("task_struct", "seccomp", None)? + field("seccomp", "filter", None)?,
        seccomp_filter_prev: field("seccomp_filter", "prev", None)?,
        seccomp_filter_notif: field("seccomp_filter", "notif", None)?,
        seccomp_filter_prog: field("seccomp_filter", "prog", None)?,
        bpf_prog_orig_prog: field("bpf_prog", "orig_prog", None)?,
        fprog_len: field("sock_fprog_kern", "len", Some(2))?,
        fprog_filter: field("sock_fprog_kern", "filter", None)?,
        msghdr_name: field("msghdr", "msg_name", None)?,
        task_cred: field("task_struct", "cred", None)?,
        cred_user_ns: field("cred", "user_ns", None)?,
        user_ns_level: field("user_namespace", "level", Some(4))?,
        // Only kernels with `cgroup/connect_unix` (6.7+) have `uaddrlen`; the others never
        // load the routing program.
        sock_addr_uaddr: field("bpf_sock_addr_kern", "uaddr", None).unwrap_or(0),
        sock_addr_uaddrlen: field("bpf_sock_addr_kern", "uaddrlen", Some(4)).unwrap_or(0),
        task_nsproxy: field("task_struct", "nsproxy", None).unwrap_or(0),
        nsproxy_mnt_ns: field("nsproxy", "mnt_ns", None).unwrap_or(0),
        task_real_parent: field("task_struct", "real_parent", None).unwrap_or(0),
        valid: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own BTF is a real kernel's: every offset must resolve, and the ones
    /// that are ABI (`pt_regs`) must have their `x86_64` values.
    #[test]
    fn offsets_resolve_from_host_btf() {
        let offsets = offsets_from_btf(&read_btf().unwrap()).expect("host BTF has the offsets");
        assert_eq!(offsets.regs_orig_ax, 120);
        assert_eq!(offsets.regs_si, 104);
        assert_eq!(offsets.regs_dx, 96);
        assert_eq!(offsets.valid, 1);
    }

    /// Routing needs the kfuncs and `bpf_sock_addr_kern.uaddrlen` together (both came in
    /// 6.7): the host kernel has both or neither, and an unknown function is no id.
    #[test]
    fn routing_support_is_read_from_btf() {
        let btf = read_btf().unwrap();
        let offsets = offsets_from_btf(&btf).unwrap();
        let kfuncs = crate::routing::Kfuncs::find(&btf, &offsets);
        assert_eq!(kfuncs.is_ok(), offsets.sock_addr_uaddrlen != 0, "{kfuncs:?}");
        if kfuncs.is_ok() {
            assert!(offsets.sock_addr_uaddr != 0 && offsets.sock_addr_uaddr != offsets.sock_addr_uaddrlen);
        }
        let [hook, missing] = btf.func_ids(["bpf_lsm_bprm_check_security", "enforcer_no_such_function"]);
        assert!(hook.is_some());
        assert_eq!(missing, None);
    }

    #[test]
    fn bpf_lsm_check_says_what_to_fix() {
        let dir = std::env::temp_dir().join(format!("enforcer-lsm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let btf = dir.join("vmlinux");
        let lsm = dir.join("lsm");
        let missing_btf = check_bpf_lsm_at(&btf, &lsm).unwrap_err().to_string();
        assert!(missing_btf.contains("CONFIG_DEBUG_INFO_BTF=y"), "{missing_btf}");
        std::fs::write(&btf, b"").unwrap();
        let unreadable = check_bpf_lsm_at(&btf, &lsm).unwrap_err().to_string();
        assert!(unreadable.contains("is securityfs mounted?"), "{unreadable}");
        std::fs::write(&lsm, b"lockdown,capability,yama,apparmor\n").unwrap();
        let inactive = check_bpf_lsm_at(&btf, &lsm).unwrap_err().to_string();
        assert!(inactive.contains("lsm=lockdown,capability,yama,apparmor,bpf"), "{inactive}");
        std::fs::write(&lsm, b"lockdown,capability,bpf\n").unwrap();
        check_bpf_lsm_at(&btf, &lsm).unwrap();
        // "bpf" must be a whole entry, not part of one.
        std::fs::write(&lsm, b"lockdown,notbpf\n").unwrap();
        assert!(check_bpf_lsm_at(&btf, &lsm).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_member_is_a_clear_error() {
        let btf = Btf::from_file(Path::new(VMLINUX_BTF)).unwrap();
        let error = btf.member("linux_binprm", "no_such_field").unwrap_err().to_string();
        assert_eq!(error, "struct linux_binprm has no member no_such_field in this kernel's BTF");
    }
}
