//! Reads of kernel and user memory, and the file identities built from them.
//!
//! Every read goes through the BPF probe-read helpers, which accept any address: a bad
//! one makes them return an error (and zero the destination), never fault. That is what
//! makes the wrappers below safe for any `u64` address the programs come up with.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_user,
    generated::{
        bpf_probe_read_kernel as probe_read_kernel_raw, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
    },
};
use enforcer_common::abi::{FileId, KernelOffsets};

/// A type every bit pattern is a value of, so a probe read may fill it from any memory.
///
/// # Safety
/// Implement only for such types (integers, arrays of them): no padding, no invalid
/// values.
pub unsafe trait Plain: Copy {}

// SAFETY: integers have no invalid bit patterns and no padding.
unsafe impl Plain for u8 {}
// SAFETY: as for u8.
unsafe impl Plain for u16 {}
// SAFETY: as for u8.
unsafe impl Plain for u32 {}
// SAFETY: as for u8.
unsafe impl Plain for u64 {}
// SAFETY: as for u8.
unsafe impl Plain for i32 {}
// SAFETY: an array of plain values has no padding and no invalid values either.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// The `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read_kernel<T: Plain>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: the helper tolerates any address (see the module), and any bytes it copies
    // are a valid `T` (`Plain`).
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// The `T` at `addr` in the current task's user memory.
#[inline(always)]
pub fn read_user<T: Plain>(addr: u64) -> Result<T, i32> {
    // SAFETY: as in `read_kernel`.
    unsafe { bpf_probe_read_user(addr as *const T) }
}

/// Copies the NUL-terminated kernel string at `src` into `dst` (cut short, and always
/// NUL-terminated, when it does not fit); the helper's result: bytes copied with the NUL,
/// or a negative error.
#[inline(always)]
pub fn read_kernel_str<const N: usize>(dst: &mut [u8; N], src: u64) -> i64 {
    read_kernel_str_max(dst, N as u32, src)
}

/// [`read_kernel_str`] of at most `max - 1` bytes (then the NUL), `max` <= `N`: a string
/// that also ends at a known length. A `max` over `N` copies nothing (-1).
#[inline(always)]
pub fn read_kernel_str_max<const N: usize>(dst: &mut [u8; N], max: u32, src: u64) -> i64 {
    if max as usize > N {
        return -1;
    }
    // SAFETY: `dst` is valid for `max` <= `N` bytes of writes; the helper tolerates any `src`.
    unsafe { bpf_probe_read_kernel_str(dst.as_mut_ptr().cast::<c_void>(), max, src as *const c_void) }
}

/// [`read_kernel_str`] from the current task's user memory.
#[inline(always)]
pub fn read_user_str<const N: usize>(dst: &mut [u8; N], src: u64) -> i64 {
    // SAFETY: as in `read_kernel_str`.
    unsafe { bpf_probe_read_user_str(dst.as_mut_ptr().cast::<c_void>(), N as u32, src as *const c_void) }
}

/// Copies `size` bytes of kernel memory at `src` to `dst`, for the copies whose size is
/// only known at run time; the helper's result (0, or a negative error).
///
/// # Safety
/// `dst` is valid for writes of `size` bytes and no reference to them is in use.
#[inline(always)]
pub unsafe fn read_kernel_bytes(dst: *mut u8, size: u32, src: u64) -> i64 {
    // SAFETY: the caller vouches for `dst`; the helper tolerates any `src`.
    unsafe { probe_read_kernel_raw(dst.cast::<c_void>(), size, src as *const c_void) }
}

/// The identity of `file` (a `struct file *`).
#[inline(always)]
pub fn file_identity(file: u64, off: &KernelOffsets) -> Result<FileId, i32> {
    let inode: u64 = read_kernel(file, off.file_inode)?;
    inode_identity(inode, off)
}

/// The identity of `inode` (a `struct inode *`): its device and inode number.
#[inline(always)]
pub fn inode_identity(inode: u64, off: &KernelOffsets) -> Result<FileId, i32> {
    if inode == 0 {
        return Err(-1);
    }
    let ino: u64 = read_kernel(inode, off.inode_ino)?;
    let sb: u64 = read_kernel(inode, off.inode_sb)?;
    let dev: u32 = read_kernel(sb, off.sb_dev)?;
    Ok(FileId { dev: dev as u64, ino })
}

/// The identity of the executable `task` runs (`task->mm->exe_file`).
#[inline(always)]
pub fn exe_identity(task: u64, off: &KernelOffsets) -> Result<FileId, i32> {
    let mm: u64 = read_kernel(task, off.task_mm)?;
    if mm == 0 {
        return Err(-1);
    }
    let exe: u64 = read_kernel(mm, off.mm_exe_file)?;
    if exe == 0 {
        return Err(-1);
    }
    file_identity(exe, off)
}
