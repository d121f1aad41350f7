//! File identities from `stat()`, where the filesystem's `stat()` is known to report what
//! the kernel's hooks see: the superblock's device (`sb->s_dev`) and the inode number of
//! the inode an exec or a connect resolves to. Elsewhere (btrfs gives each subvolume an
//! anonymous device, overlayfs reports the layer's file, any filesystem not listed) only
//! the kernel can say, and `bpf::Programs::kernel_identities` asks it with the `file_open`
//! probe. Skipping the probe when every file is on such a filesystem saves loading,
//! attaching and detaching it at start-up and at each re-learn.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use enforcer_common::abi::FileId;

/// `statfs` magic numbers of the filesystems whose `stat()` fills `st_dev` from the
/// superblock and `st_ino` from the inode itself (`generic_fillattr`, or xfs's own, which
/// does the same), with the name the start-up log uses.
const STAT_MATCHES_KERNEL: &[(i64, &str)] = &[(0xef53, "ext4"), (0x5846_5342, "xfs"), (0x0102_1994, "tmpfs")];

/// Which listed filesystem a `statfs` type is, if any.
pub fn stat_filesystem(f_type: i64) -> Option<&'static str> {
    STAT_MATCHES_KERNEL.iter().find(|(magic, _)| *magic == f_type).map(|(_, name)| *name)
}

/// The kernel's encoding of a device number (`MKDEV`: 12 bits of major, 20 of minor), as
/// `sb->s_dev` holds it, from the userspace encoding `stat()` returns.
pub fn kernel_dev(st_dev: u64) -> u64 {
    (u64::from(libc::major(st_dev)) << 20) | u64::from(libc::minor(st_dev))
}

/// The identity of `path` from `stat()`, when its filesystem reports the kernel's own;
/// None when only the probe can tell (or the path cannot be examined: the probe then
/// reports why). Both calls go to one `O_PATH` descriptor, so they describe one file even
/// if the path is replaced meanwhile; `O_PATH` also works on a socket, which cannot be
/// opened.
pub fn by_stat(path: &Path) -> Option<(FileId, &'static str)> {
    let name = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path; the descriptor is closed below on every path.
    let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `statfs` and `stat` are plain data, for which all zero bytes are valid.
    let (mut fs, mut st): (libc::statfs, libc::stat) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: `fd` is open; `fs` and `st` are live out-parameters of the right types.
    let ok = unsafe { libc::fstatfs(fd, &raw mut fs) == 0 && libc::fstat(fd, &raw mut st) == 0 };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if !ok {
        return None;
    }
    let filesystem = stat_filesystem(fs.f_type)?;
    Some((FileId { dev: kernel_dev(st.st_dev), ino: st.st_ino }, filesystem))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn device_numbers_in_the_kernel_encoding() {
        // 8:1 (sda1), 259:300 (an NVMe partition with a minor above 255), 0:45 (tmpfs).
        assert_eq!(kernel_dev(libc::makedev(8, 1)), 0x0080_0001);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (0x103 << 20) | 0x12c);
        assert_eq!(kernel_dev(libc::makedev(0, 45)), 45);
    }

    #[test]
    fn only_filesystems_whose_stat_is_the_kernels() {
        assert_eq!(stat_filesystem(0xef53), Some("ext4"));
        assert_eq!(stat_filesystem(0x5846_5342), Some("xfs"));
        assert_eq!(stat_filesystem(0x0102_1994), Some("tmpfs"));
        // btrfs, overlayfs, the initramfs's ramfs, squashfs, nfs, fuse: the probe.
        for magic in [0x9123_683e, 0x794c_7630, 0x8584_58f6, 0x7371_7368, 0x6969, 0x6573_5546] {
            assert_eq!(stat_filesystem(magic), None, "{magic:#x}");
        }
    }

    #[test]
    fn a_file_on_a_listed_filesystem_is_identified_by_stat() {
        // The test's own executable lives under target/, on whatever the host has; /proc is
        // never listed.
        let exe = std::env::current_exe().unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        let mut fs: libc::statfs =
            // SAFETY: plain data, all zero bytes valid.
            unsafe { std::mem::zeroed() };
        let name = CString::new(exe.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a live out-parameter.
        assert_eq!(unsafe { libc::statfs(name.as_ptr(), &raw mut fs) }, 0);
        match by_stat(&exe) {
            Some((id, filesystem)) => {
                assert_eq!(stat_filesystem(fs.f_type), Some(filesystem));
                assert_eq!(id, FileId { dev: kernel_dev(meta.dev()), ino: meta.ino() });
            }
            None => assert_eq!(stat_filesystem(fs.f_type), None),
        }
        assert_eq!(by_stat(Path::new("/proc/self/status")), None);
        assert_eq!(by_stat(Path::new("/nonexistent/docker")), None);
    }
}
