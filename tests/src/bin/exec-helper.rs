//! Executes a program through the exec paths a shell does not use, for the VM tests.
//!
//!   exec-helper fexecve PATH ARGV...          open PATH, execveat(fd, "", AT_EMPTY_PATH)
//!   exec-helper execveat DIR NAME ARGV...     execveat(dirfd of DIR, NAME)
//!
//! ARGV includes argv[0]. On failure it prints the error (strerror) and exits 126.

use std::ffi::CString;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cstr = |s: &str| CString::new(s).expect("no NUL in arguments");
    let (fd, name, argv) = match args.first().map(String::as_str) {
        Some("fexecve") if args.len() >= 3 => {
            let fd = unsafe { libc_open(cstr(&args[1]).as_ptr(), 0o2000000 /* O_RDONLY|O_CLOEXEC */) };
            (fd, String::new(), &args[2..])
        }
        Some("execveat") if args.len() >= 4 => {
            let fd = unsafe { libc_open(cstr(&args[1]).as_ptr(), 0o200000 | 0o2000000 /* O_DIRECTORY|O_CLOEXEC */) };
            (fd, args[2].clone(), &args[3..])
        }
        _ => {
            eprintln!("usage: exec-helper fexecve PATH ARGV... | execveat DIR NAME ARGV...");
            std::process::exit(2);
        }
    };
    if fd < 0 {
        eprintln!("exec-helper: open: {}", std::io::Error::last_os_error());
        std::process::exit(126);
    }
    let argv_c: Vec<CString> = argv.iter().map(|a| cstr(a)).collect();
    let mut argv_p: Vec<*const i8> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let envp: [*const i8; 1] = [std::ptr::null()];
    let flags = if name.is_empty() { 0x1000 /* AT_EMPTY_PATH */ } else { 0 };
    let name = cstr(&name);
    unsafe { syscall(322 /* execveat */, fd as i64, name.as_ptr(), argv_p.as_ptr(), envp.as_ptr(), flags as i64) };
    eprintln!("exec-helper: execveat: {}", std::io::Error::last_os_error());
    std::process::exit(126);
}

unsafe extern "C" {
    #[link_name = "open"]
    fn libc_open(path: *const i8, flags: i32, ...) -> i32;
    fn syscall(number: i64, ...) -> i64;
}
