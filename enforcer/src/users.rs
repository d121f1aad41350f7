//! User database look-ups through the C library (so NSS sources configured on the host,
//! such as NixOS's, are honoured).

use std::ffi::{CStr, CString};

/// The uid of user `name`.
pub fn uid_of(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `passwd` is plain data (integers and pointers), for which all zero bytes are a
    // valid value; the call below fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given; result is checked before use.
    let rc = unsafe {
        libc::getpwnam_r(name.as_ptr(), &raw mut pwd, buf.as_mut_ptr(), buf.len(), &raw mut result)
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// The name of user `uid`.
pub fn name_of(uid: u32) -> Option<String> {
    // SAFETY: `passwd` is plain data (integers and pointers), for which all zero bytes are a
    // valid value; the call below fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as above.
    let rc = unsafe { libc::getpwuid_r(uid, &raw mut pwd, buf.as_mut_ptr(), buf.len(), &raw mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points at a NUL-terminated string in buf.
    Some(unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned())
}
